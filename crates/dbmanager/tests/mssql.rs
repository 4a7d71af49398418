//! SQL Server-specific behaviour through tiberius and bb8, against the test server that
//! `scripts/test-servers.sh` starts: a YAML config with an ADO.NET-hostile password, the native
//! tiberius layer next to the neutral handle, the pool limit shared by both, login and retry
//! classification. What every SQL backend shares is in the conformance suite
//! (`tests/conformance.rs`).

mod support;

use std::time::{Duration, Instant};

use dbmanager::{ConnectPolicy, ErrorKind, Manager};
use support::{fast_config, free_port, mssql_config, unique};

fn yaml() -> String {
    format!(
        "dbmanager:
  retry_attempts: 1
  health_check_interval: 0s
  default_connection: ms
  connections:
    ms:
      type: mssql
      host: 127.0.0.1
      port: {port}
      user: sa
      password: \"{password}\"
      database: master
      sslmode: disable
      max_open_conns: 3
      application_name: dbm-tests
",
        port = support::mssql_port(),
        password = support::mssql_password()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

#[tokio::test]
async fn a_yaml_config_connects_and_both_layers_see_the_same_data() {
    let manager = Manager::from_yaml_str_with_env(&yaml(), &dbmanager::EnvSource::empty()).unwrap();
    manager.connect().await.unwrap();
    let table = unique("item");
    let sql = manager.default_database().unwrap();
    sql.execute(
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, name NVARCHAR(50))"),
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        &format!("INSERT INTO {table} (id, name) VALUES ($1, $2)"),
        &[3.into(), "committed".into()],
    )
    .await
    .unwrap();

    // The native layer: a tiberius client from the same pool.
    let pool = manager.get("ms").unwrap().mssql().unwrap();
    let mut client = pool.acquire().await.unwrap();
    let row = client
        .query(
            format!("SELECT name FROM {table} WHERE id = @P1").as_str(),
            &[&3i32],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<&str, _>(0), Some("committed"));
    drop(client);
    sql.execute(&format!("DROP TABLE {table}"), &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_pool_limit_makes_the_next_checkout_wait() {
    let mut c = mssql_config("ms");
    c.max_open_conns = Some(2);
    c.max_idle_conns = Some(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("ms").unwrap();
    let pool = conn.mssql().unwrap();
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let stats = conn.stats();
    assert_eq!(
        (stats.open, stats.in_use, stats.max_open),
        (2, 2, 2),
        "{stats:?}"
    );
    let sql = conn.database().unwrap();
    let waiting = tokio::spawn(async move { sql.fetch_one("SELECT 5 AS n", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the third checkout waits");
    drop(a);
    let row = waiting.await.unwrap().unwrap();
    assert_eq!(row.get::<i64>("n"), Some(5));
    drop(b);
    let stats = conn.stats();
    assert!(stats.open <= 2);
    assert!(stats.wait_count >= 1, "{stats:?}");
    conn.health_check().await.unwrap();
    assert_eq!(conn.status(), dbmanager::Status::Healthy);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wrong_password_is_one_attempt_and_an_authentication_error() {
    let mut c = mssql_config("ms");
    c.password = Some("not-the-password".to_owned().into());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 4;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["ms"], 1);
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(!err.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn an_unreachable_port_retries_with_backoff() {
    let mut c = mssql_config("ms");
    c.port = Some(free_port());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    config.retry_delay = Duration::from_millis(100);
    config.retry_max_delay = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    let started = Instant::now();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["ms"], 3);
    assert_eq!(report.failed[0].1.kind(), ErrorKind::Transient);
    assert!(
        started.elapsed() >= Duration::from_millis(50 + 100),
        "backoff was slept"
    );
}
