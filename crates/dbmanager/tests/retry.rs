//! Connect retry: transient errors follow the configured backoff; authentication failures are
//! tried exactly once. Escaping proven against a real server with a scram-sha-256 login.

mod support;

use std::time::{Duration, Instant};

use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, Error, ErrorKind, Manager};
use support::{PrivateCluster, fast_config, free_port};

#[tokio::test]
async fn a_refusing_port_is_retried_with_backoff() {
    let mut c = ConnectionConfig::new("down", DatabaseType::Postgres);
    c.host = Some("127.0.0.1".into());
    c.port = Some(free_port());
    c.database = Some("x".into());
    c.user = Some("u".into());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 4;
    config.retry_delay = Duration::from_millis(100);
    config.retry_max_delay = Duration::from_millis(300);
    let manager = Manager::new(config).unwrap();

    let started = Instant::now();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.attempts["down"], 4);
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        err.to_string().contains("refused"),
        "the real cause is kept: {err}"
    );
    // Delays are 100, 200, 300 ms nominal, each jittered to [half, full].
    let floor = Duration::from_millis(50 + 100 + 150);
    assert!(
        elapsed >= floor,
        "elapsed {elapsed:?} is under the backoff floor {floor:?}"
    );
    println!("4 attempts against a refusing port took {elapsed:?} (backoff window 300-600 ms)");
    assert!(elapsed < Duration::from_secs(5), "elapsed {elapsed:?}");
}

#[tokio::test]
async fn fail_fast_lists_every_failure_and_closes_what_it_opened() {
    let db = support::TestDb::create();
    let mut bad = ConnectionConfig::new("bad", DatabaseType::Postgres);
    bad.host = Some("127.0.0.1".into());
    bad.port = Some(free_port());
    bad.database = Some("x".into());
    let config = fast_config()
        .with_connection(db.config("good"))
        .with_connection(bad)
        .with_connection(ConnectionConfig::sqlite(
            "also-bad",
            "/nonexistent-dir/x.db",
        ));
    let manager = Manager::new(config).unwrap();
    let err = manager.connect().await.unwrap_err();
    let Error::ConnectFailed { failures } = &err else {
        panic!("{err}")
    };
    let names: Vec<_> = failures.iter().map(|e| e.connection().unwrap()).collect();
    assert_eq!(names, ["also-bad", "bad"]);
    let text = err.to_string();
    assert!(
        text.starts_with("2 connection(s) failed to connect:"),
        "{text}"
    );
    assert!(
        text.contains("connection `bad`: connect failed:")
            && text.contains("connection `also-bad`"),
        "{text}"
    );
    let good = manager.get("good").unwrap();
    assert!(!good.is_connected(), "fail-fast closes the pools it opened");
    assert!(support::eventually(Duration::from_secs(5), || db.backends() == 0).await);

    // Connecting twice leaks nothing: the partial policy keeps the good one, once.
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    good.database()
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();
    assert!(db.backends() <= 4);
    manager.close(Duration::from_secs(5)).await;
}

/// One private cluster for the authentication and escaping checks (it takes a few seconds).
#[tokio::test]
async fn authentication_and_escaping_against_scram() {
    let cluster = PrivateCluster::start();
    let user = "we\"ird user@:/?#%&=é";
    let password = "p@ss:w/rd?#%&= \"'é日本";
    let database = "my db/é?#";
    cluster.sql(&format!(
        "CREATE ROLE \"{}\" LOGIN PASSWORD '{}'",
        user.replace('"', "\"\""),
        password.replace('\'', "''")
    ));
    cluster.sql(&format!(
        "CREATE DATABASE \"{database}\" OWNER \"{}\"",
        user.replace('"', "\"\"")
    ));

    // Every field with reserved characters reaches the server intact.
    let manager = Manager::new(
        fast_config().with_connection(cluster.config("nasty", user, password, database)),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let row = manager
        .database("nasty")
        .unwrap()
        .fetch_one(
            "SELECT current_user::text AS u, current_database()::text AS d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String>("u").as_deref(), Some(user));
    assert_eq!(row.get::<String>("d").as_deref(), Some(database));
    manager.close(Duration::from_secs(5)).await;

    // The password from a file, with its trailing newline removed.
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let mut c = cluster.config("from-file", user, password, database);
    c.password = None;
    c.password_file = Some(pw_file);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    manager.close(Duration::from_secs(5)).await;

    // A wrong password: one attempt, an authentication error.
    let mut config =
        fast_config().with_connection(cluster.config("wrong", user, "not-the-password", database));
    config.retry_attempts = 5;
    config.retry_delay = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(
        report.attempts["wrong"], 1,
        "authentication failures are not retried"
    );
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn an_empty_password_keeps_the_database() {
    // The machine's cluster trusts local logins, so an empty password must still connect to the
    // named database (the reference's DSN lost it).
    let db = support::TestDb::create();
    let mut c = db.config("empty");
    c.password = Some(String::new().into());
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let row = manager
        .database("empty")
        .unwrap()
        .fetch_one("SELECT current_database()::text AS d", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("d"), Some(db.name.clone()));
    manager.close(Duration::from_secs(5)).await;
}
