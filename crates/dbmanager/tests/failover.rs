//! Primary failover with a `hosts:` list, on a real streaming-replication set (a private
//! primary and a `pg_basebackup -R` standby): the library connects to the server that accepts
//! writes whatever the list's order, follows a promotion after the primary dies (through handles
//! obtained before), leaves a server that became read-only, fails like any down server when no
//! server answers, and reports bad lists as configuration problems with their paths. Each
//! scenario runs on both PostgreSQL drivers (`driver: sqlx` and `driver: tokio-postgres`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmanager::{
    ConnectionConfig, ErrorKind, ListenerEvent, Manager, ManagerConfig, PostgresDriver,
    TargetSessionAttrs,
};
use support::replication::{ReplicationSet, Write, spawn_writer};
use support::{PrivateCluster, fast_config, free_port};

fn address(cluster: &PrivateCluster) -> String {
    format!("127.0.0.1:{}", cluster.port)
}

/// A connection over `hosts` with the set's superuser, on `driver`.
fn config(set: &ReplicationSet, hosts: &[String], driver: PostgresDriver) -> ConnectionConfig {
    let mut c = set
        .primary
        .config("pg", "admin", &set.primary.password, "postgres");
    c.driver = Some(driver);
    c.host = None;
    c.port = None;
    c.hosts = Some(hosts.to_vec());
    c.connect_timeout = Duration::from_secs(3);
    c
}

fn manager(c: ConnectionConfig) -> Manager {
    Manager::new(fast_config().with_connection(c)).unwrap()
}

fn current_host(manager: &Manager) -> Option<String> {
    manager.get("pg").unwrap().stats().current_host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_listed_first_is_passed_over_for_the_primary_on_sqlx() {
    a_standby_listed_first_is_passed_over_for_the_primary(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_listed_first_is_passed_over_for_the_primary_on_tokio_postgres() {
    a_standby_listed_first_is_passed_over_for_the_primary(PostgresDriver::TokioPostgres).await;
}

async fn a_standby_listed_first_is_passed_over_for_the_primary(driver: PostgresDriver) {
    let set = ReplicationSet::start(1);
    let standby = &set.standbys[0];
    let hosts = [address(standby), address(&set.primary)];
    let manager = manager(config(&set, &hosts, driver));
    manager.connect().await.unwrap();
    let db = manager.database("pg").unwrap();
    db.execute("CREATE TABLE written (id int)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO written VALUES (1)", &[])
        .await
        .unwrap();
    let recovery = db
        .fetch_one("SELECT pg_is_in_recovery() AS standby", &[])
        .await
        .unwrap();
    assert_eq!(recovery.get::<bool>("standby"), Some(false));
    let stats = manager.get("pg").unwrap().stats();
    assert_eq!(
        stats.current_host.as_deref(),
        Some(address(&set.primary).as_str())
    );
    assert_eq!(stats.host_switches, 0);
    assert_eq!(
        manager.get("pg").unwrap().health().current_host,
        Some(address(&set.primary))
    );
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["current_host"], address(&set.primary));

    // `any` takes the first server that answers: the standby, where writes fail.
    let mut c = config(&set, &hosts, driver);
    c.name = "any".into();
    c.target_session_attrs = Some(TargetSessionAttrs::Any);
    let any = Manager::new(fast_config().with_connection(c)).unwrap();
    any.connect().await.unwrap();
    assert_eq!(
        any.get("any").unwrap().stats().current_host,
        Some(address(standby))
    );
    let err = any
        .database("any")
        .unwrap()
        .execute("CREATE TABLE refused (id int)", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    any.close(Duration::from_secs(5)).await;
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_on_the_promoted_standby_through_handles_taken_before_on_sqlx() {
    writes_resume_on_the_promoted_standby_through_handles_taken_before(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_on_the_promoted_standby_through_handles_taken_before_on_tokio_postgres() {
    writes_resume_on_the_promoted_standby_through_handles_taken_before(
        PostgresDriver::TokioPostgres,
    )
    .await;
}

async fn writes_resume_on_the_promoted_standby_through_handles_taken_before(
    driver: PostgresDriver,
) {
    let set = ReplicationSet::start(1);
    let standby = &set.standbys[0];
    let manager = manager(config(
        &set,
        &[address(&set.primary), address(standby)],
        driver,
    ));
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let db = conn.database().unwrap();
    let native = Native::take(&conn, driver);
    // A LISTEN session follows too (a standby would refuse LISTEN).
    let listener = conn.listener().await.unwrap();
    listener.listen("moved").await.unwrap();
    db.execute("CREATE TABLE written (id int8)", &[])
        .await
        .unwrap();
    set.wait_caught_up(Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let writes = spawn_writer(db.clone(), stop.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| set.primary.crash());
    let promoted = Instant::now();
    let ready = tokio::task::block_in_place(|| standby.promote());
    // Until a write reaches the new primary, or 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let port = db
            .fetch_one("SELECT inet_server_port() AS port", &[])
            .await
            .ok()
            .and_then(|row| row.get::<i32>("port"));
        if port == Some(i32::from(standby.port)) || Instant::now() > deadline {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writes.await.unwrap();
    let on_new = writes
        .iter()
        .find(|w| w.server == Some(i32::from(standby.port)));
    let Some(first) = on_new else {
        panic!("no write reached the promoted standby: {:?}", conn.health());
    };
    let failed: Vec<&Write> = writes.iter().filter(|w| w.server.is_none()).collect();
    let last_before = writes
        .iter()
        .filter(|w| w.server == Some(i32::from(set.primary.port)))
        .map(|w| w.ended)
        .max();
    println!(
        "failover (manual promotion): promotion ordered → first write on the new primary {:?} \
         (pg_ctl promote -w took {:?}); write outage as the application saw it {:?}; {} write(s) failed",
        first.ended - promoted,
        ready - promoted,
        last_before.map(|last| first.ended - last),
        failed.len()
    );
    let stats = conn.stats();
    assert_eq!(stats.current_host, Some(address(standby)));
    assert_eq!(stats.host_switches, 1);
    // The native pool obtained before the failover follows it too.
    native.insert_zero().await;
    // The listener lost its session, found the new primary, and hears what is sent there.
    listener_follows(listener).await;
    manager.close(Duration::from_secs(5)).await;
}

/// A driver's native pool, taken before a failover.
enum Native {
    Sqlx(dbmanager::reexports::sqlx::PgPool),
    TokioPostgres(dbmanager::TokioPgPool),
}

impl Native {
    fn take(conn: &dbmanager::Connection, driver: PostgresDriver) -> Self {
        match driver {
            PostgresDriver::TokioPostgres => Native::TokioPostgres(conn.tokio_postgres().unwrap()),
            _ => Native::Sqlx(conn.postgres().unwrap()),
        }
    }

    /// Writes through the native pool: only the primary accepts it.
    async fn insert_zero(&self) {
        match self {
            Native::Sqlx(pool) => {
                dbmanager::reexports::sqlx::query("INSERT INTO written VALUES (0)")
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Native::TokioPostgres(pool) => {
                let client = pool.get().await.unwrap();
                client
                    .execute("INSERT INTO written VALUES (0)", &[])
                    .await
                    .unwrap();
            }
        }
    }
}

/// A listener whose server was lost: it reconnects to the new primary and hears what is sent
/// there.
async fn listener_follows(mut listener: dbmanager::Listener) {
    let notifier = listener.handle();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("the listener yields an item")
            .expect("the stream is open")
    };
    assert!(matches!(next().await, ListenerEvent::Disconnected { .. }));
    assert_eq!(next().await, ListenerEvent::Reconnected);
    notifier.notify("moved", "after").await.unwrap();
    match next().await {
        ListenerEvent::Notification(n) => assert_eq!(n.payload, "after"),
        other => panic!("expected the notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_becomes_read_only_is_left_on_sqlx() {
    a_server_that_becomes_read_only_is_left(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_becomes_read_only_is_left_on_tokio_postgres() {
    a_server_that_becomes_read_only_is_left(PostgresDriver::TokioPostgres).await;
}

async fn a_server_that_becomes_read_only_is_left(driver: PostgresDriver) {
    let set = ReplicationSet::start(1);
    let standby = &set.standbys[0];
    let mut c = config(&set, &[address(&set.primary), address(standby)], driver);
    c.min_open_conns = Some(3);
    let manager = manager(c);
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let db = conn.database().unwrap();
    db.execute("CREATE TABLE written (id int8)", &[])
        .await
        .unwrap();
    set.wait_caught_up(Duration::from_secs(30));
    assert!(set.primary.backends("postgres") >= 3);

    // The old primary stays up but refuses writes; the standby takes over.
    tokio::task::block_in_place(|| {
        set.primary
            .sql("ALTER SYSTEM SET default_transaction_read_only = on");
        set.primary.sql("SELECT pg_reload_conf()");
        standby.promote();
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        match db.execute("INSERT INTO written VALUES (1)", &[]).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "writes never resumed: {e}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!("read-only primary: {refused} write(s) refused before the switch");
    assert_eq!(conn.stats().current_host, Some(address(standby)));
    assert_eq!(conn.stats().host_switches, 1);
    // Metrics: the server in use, and the switch.
    let metrics = manager.metrics_text();
    let sample = |name: &str, label: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let host_label = format!("host=\"{}\"", address(standby));
    assert_eq!(
        sample("dbmanager_current_host", &host_label),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("dbmanager_host_switches_total", "connection=\"pg\""),
        Some(1.0),
        "{metrics}"
    );
    // The pooled connections to the read-only server are closed as they come up.
    for _ in 0..8 {
        db.execute("INSERT INTO written VALUES (2)", &[])
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while set.primary.backends("postgres") > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connection(s) left on the read-only server",
            set.primary.backends("postgres")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn no_server_answering_fails_like_a_down_server_on_sqlx() {
    no_server_answering_fails_like_a_down_server(PostgresDriver::Sqlx).await;
}

#[tokio::test]
async fn no_server_answering_fails_like_a_down_server_on_tokio_postgres() {
    no_server_answering_fails_like_a_down_server(PostgresDriver::TokioPostgres).await;
}

async fn no_server_answering_fails_like_a_down_server(driver: PostgresDriver) {
    let (a, b) = (free_port(), free_port());
    let mut m = fast_config();
    m.retry_attempts = 2;
    let mut c = ConnectionConfig::new("pg", dbmanager::DatabaseType::Postgres);
    c.hosts = Some(vec![format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")]);
    c.user = Some("u".into());
    c.password = Some("Pw-Hidden".to_owned().into());
    c.database = Some("d".into());
    c.sslmode = Some(dbmanager::SslMode::Disable);
    c.connect_timeout = Duration::from_secs(2);
    c.driver = Some(driver);
    let manager = Manager::new(m.with_connection(c)).unwrap();
    let err = manager.connect().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Transient, "{text}");
    for port in [a, b] {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
    assert!(text.contains("no server of 2 accepts writes"), "{text}");
    assert!(!text.contains("Pw-Hidden"), "{text}");
    // The retry policy ran: two attempts, each failing on both servers at once.
    let stats = manager.get("pg").unwrap().stats();
    let transient = stats
        .connect_errors
        .iter()
        .find(|(kind, _)| *kind == ErrorKind::Transient)
        .map(|(_, n)| *n);
    assert_eq!(transient, Some(2));
    assert!(!manager.get("pg").unwrap().is_connected());
}

#[test]
fn bad_lists_are_configuration_problems_with_their_paths_on_sqlx() {
    bad_lists_are_configuration_problems_with_their_paths("sqlx");
}

#[test]
fn bad_lists_are_configuration_problems_with_their_paths_on_tokio_postgres() {
    bad_lists_are_configuration_problems_with_their_paths("tokio-postgres");
}

fn bad_lists_are_configuration_problems_with_their_paths(driver: &str) {
    let yaml = r#"
dbmanager:
  connections:
    both: {type: postgres, host: db, hosts: ["db-1"], database: app}
    empty: {type: postgres, hosts: [], database: app}
    bad:
      type: postgres
      database: app
      hosts: ["db-1:5432", "db-2:99999", "u:Pw-Hidden@db-3", "[db-4]:5432", "db-1:5432", "db 5", "db-6:"]
    attrs: {type: postgres, hosts: ["db-1"], database: app, target_session_attrs: primary}
    lite: {type: sqlite, filepath: ":memory:", hosts: ["db-1"]}
    dsn: {type: postgres, dsn: "postgres://u@h/d", hosts: ["db-1"]}
    fine: {type: postgres, hosts: ["db-1", "db-2:5433", "[::1]:5434", "::1"], database: app}
"#
    .replace("{type: postgres,", &format!("{{type: postgres, driver: {driver},"))
    .replace(
        "      type: postgres\n",
        &format!("      type: postgres\n      driver: {driver}\n"),
    );
    assert_eq!(yaml.matches("driver:").count(), 6, "{yaml}");
    let problems = ManagerConfig::from_yaml_str(&yaml).unwrap_err();
    let text = problems.to_string();
    assert!(!text.contains("Pw-Hidden"), "{text}");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "connections.both.hosts",
        "connections.empty.hosts",
        "connections.bad.hosts[1]",
        "connections.bad.hosts[2]",
        "connections.bad.hosts[3]",
        "connections.bad.hosts[4]",
        "connections.bad.hosts[5]",
        "connections.bad.hosts[6]",
        "connections.attrs.target_session_attrs",
        "connections.lite.hosts",
        "connections.dsn.dsn",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from\n{text}");
    }
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("connections.fine") || *p == "connections.bad.hosts[0]"),
        "{text}"
    );
    assert!(text.contains("set either host or hosts"), "{text}");
    assert!(text.contains("names the same server as hosts[0]"), "{text}");
    assert!(
        text.contains("not used by sqlite (only by postgres"),
        "{text}"
    );
    // No host required when a list is given.
    assert!(!text.contains("connections.fine.host:"), "{text}");
    assert!(!text.contains("connections.empty.host:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_may_list_the_servers_on_sqlx() {
    a_dsn_may_list_the_servers(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_may_list_the_servers_on_tokio_postgres() {
    a_dsn_may_list_the_servers(PostgresDriver::TokioPostgres).await;
}

async fn a_dsn_may_list_the_servers(driver: PostgresDriver) {
    let set = ReplicationSet::start(1);
    let standby = &set.standbys[0];
    let dsn = format!(
        "postgres://admin:{}@{},{}/postgres?sslmode=disable&target_session_attrs=read-write",
        set.primary.password,
        address(standby),
        address(&set.primary)
    );
    let mut c = ConnectionConfig::from_dsn("pg", dbmanager::DatabaseType::Postgres, dsn);
    c.driver = Some(driver);
    let manager = manager(c);
    manager.connect().await.unwrap();
    assert_eq!(current_host(&manager), Some(address(&set.primary)));
    manager
        .database("pg")
        .unwrap()
        .execute("CREATE TABLE written (id int)", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
}

#[test]
fn replicas_name_their_own_server_and_do_not_inherit_the_list() {
    let yaml = r#"
dbmanager:
  connections:
    main:
      type: postgres
      hosts: ["db-1", "db-2"]
      target_session_attrs: read-write
      database: app
      replicas:
        - host: db-3
"#;
    let config = ManagerConfig::from_yaml_str(yaml).unwrap();
    let main = &config.connections["main"];
    assert_eq!(main.hosts.as_ref().map(Vec::len), Some(2));
    let replica = &main.replicas[0];
    assert_eq!(replica.host.as_deref(), Some("db-3"));
    assert_eq!(replica.hosts, None);
    assert_eq!(replica.target_session_attrs, None);
}

/// A server written once with and once without its port is listed twice all the same: the
/// backend's default port counts (5432, 3306) when `port` is not set.
#[test]
fn a_server_listed_with_and_without_its_default_port_is_listed_twice() {
    let yaml = r#"
dbmanager:
  connections:
    pg: {type: postgres, hosts: ["db-1", "db-2", "db-1:5432"], database: app}
    tp: {type: postgres, driver: tokio-postgres, hosts: ["db-1:5432", "db-1"], database: app}
    my: {type: mysql, hosts: ["db-1:3306", "db-2", "db-1"], database: app}
    other_port: {type: postgres, hosts: ["db-1", "db-1:5433"], database: app}
"#;
    let problems = ManagerConfig::from_yaml_str(yaml).unwrap_err();
    let text = problems.to_string();
    for expected in [
        "connections.pg.hosts[2]: names the same server as hosts[0]",
        "connections.tp.hosts[1]: names the same server as hosts[0]",
        "connections.my.hosts[2]: names the same server as hosts[0]",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(!text.contains("other_port"), "{text}");
}
