//! MongoDB through the official driver, against the test server that `scripts/test-servers.sh`
//! starts with authentication: YAML config, CRUD, the pool cap, auth and retry classification,
//! stats and health, misuse errors in both directions, all four backends at once.

mod support;

use std::time::Duration;

use dbmanager::reexports::mongodb::bson::{Document, doc};
use dbmanager::{ConnectPolicy, ConnectionConfig, ErrorKind, Manager, ReadPreference};
use futures_util::TryStreamExt;
use support::{fast_config, free_port, mongo_config, unique};

#[tokio::test]
async fn crud_through_the_configured_database() {
    let yaml = format!(
        "dbmanager:
  retry_attempts: 1
  health_check_interval: 0s
  connections:
    documents:
      type: mongodb
      host: 127.0.0.1:{port}
      database: {db}
      user: {user}
      password_file: {pw}
      auth_source: admin
      read_preference: primaryPreferred
      sslmode: disable
      max_open_conns: 4
      application_name: dbm-tests
",
        port = support::mongo_port(),
        db = unique("docs"),
        user = support::mongo_user(),
        pw = {
            let dir = std::env::temp_dir().join(unique("mongo-pw"));
            std::fs::write(&dir, support::mongo_password()).unwrap();
            dir.display().to_string()
        },
    );
    let manager = Manager::from_yaml_str_with_env(&yaml, &dbmanager::EnvSource::empty()).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("documents").unwrap();
    let db = conn.mongodb_database().unwrap();
    let articles = db.collection::<Document>("articles");
    articles
        .insert_many([
            doc! { "n": 1, "title": "one" },
            doc! { "n": 2, "title": "two" },
            doc! { "n": 3, "title": "three" },
        ])
        .await
        .unwrap();
    articles
        .update_one(doc! { "n": 2 }, doc! { "$set": { "title": "TWO" } })
        .await
        .unwrap();
    articles.delete_one(doc! { "n": 3 }).await.unwrap();
    let found: Vec<Document> = articles
        .find(doc! {})
        .sort(doc! { "n": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let titles: Vec<&str> = found.iter().map(|d| d.get_str("title").unwrap()).collect();
    assert_eq!(titles, ["one", "TWO"]);

    // The client reaches other databases on the same pool.
    let client = conn.mongodb().unwrap();
    let names = client.list_database_names().await.unwrap();
    assert!(names.contains(&db.name().to_owned()), "{names:?}");

    conn.health_check().await.unwrap();
    let stats = conn.stats();
    assert!(stats.open >= 1 && stats.opened_total >= 1, "{stats:?}");
    db.drop().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
    assert_eq!(conn.mongodb().unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn the_pool_never_exceeds_max_open_conns() {
    let mut c = mongo_config("m", &unique("cap"));
    c.max_open_conns = Some(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("m").unwrap();
    let coll = conn.mongodb_database().unwrap().collection::<Document>("c");
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let coll = coll.clone();
            tokio::spawn(async move { coll.insert_one(doc! { "i": i }).await.map(|_| ()) })
        })
        .collect();
    let mut max_open = 0;
    for t in tasks {
        t.await.unwrap().unwrap();
        max_open = max_open.max(conn.stats().open);
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 24);
    let stats = conn.stats();
    assert!(
        max_open <= 2 && stats.open <= 2,
        "{stats:?}, max seen {max_open}"
    );
    assert_eq!(stats.max_open, 2);
    coll.drop().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wrong_password_is_one_attempt_and_an_authentication_error() {
    let mut c = mongo_config("m", "admin");
    c.password = Some("not-the-password".to_owned().into());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 4;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["m"], 1);
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(!err.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn an_unreachable_port_retries_with_backoff() {
    let mut c = mongo_config("m", "admin");
    c.port = Some(free_port());
    c.connect_timeout = Duration::from_millis(300);
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    config.retry_delay = Duration::from_millis(50);
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["m"], 3);
    assert_eq!(
        report.failed[0].1.kind(),
        ErrorKind::Transient,
        "{}",
        report.failed[0].1
    );
}

#[tokio::test]
async fn misuse_in_both_directions_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = mongo_config("docs", "admin");
    m.read_preference = Some(ReadPreference::SecondaryPreferred);
    let manager = Manager::new(
        fast_config()
            .with_connection(m)
            .with_connection(ConnectionConfig::sqlite("lite", dir.path().join("l.db"))),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let docs = manager.get("docs").unwrap();
    for err in [
        docs.database().unwrap_err(),
        docs.postgres().unwrap_err(),
        docs.sqlite().unwrap_err(),
        docs.sea_orm().unwrap_err(),
        docs.mssql().unwrap_err(),
    ] {
        assert!(matches!(err, dbmanager::Error::NotSql { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "connection `docs` is mongodb, not a SQL database"
        );
    }
    let err = manager.get("lite").unwrap().mongodb().unwrap_err();
    assert!(matches!(err, dbmanager::Error::NotMongo { .. }), "{err}");
    assert_eq!(err.to_string(), "connection `lite` is sqlite, not MongoDB");
    // The health check pings with the configured read preference.
    docs.health_check().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn all_four_backends_connect_in_parallel() {
    let db = support::TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::new(
        fast_config()
            .with_connection(db.config("pg"))
            .with_connection(ConnectionConfig::sqlite("lite", dir.path().join("l.db")))
            .with_connection(support::mssql_config("ms"))
            .with_connection(mongo_config("docs", "admin")),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let stats = manager.stats();
    assert_eq!((stats.total, stats.healthy), (4, 4), "{stats:?}");
    assert!(manager.health_check().await.is_empty());
    for name in ["pg", "lite", "ms"] {
        manager
            .database(name)
            .unwrap()
            .fetch_one("SELECT 1 AS one", &[])
            .await
            .unwrap();
    }
    manager.close(Duration::from_secs(5)).await;
}

/// The driver's dsn errors quote the dsn's option values (`invalid mechanism string: <value>`,
/// `'<value>' is not a valid read preference`); a dsn is a secret as a whole (an option such
/// as `authMechanismProperties` may carry a token), so those values are not shown. The driver's
/// parser runs when the configuration is validated: such a dsn is a configuration problem
/// there, not a connection that fails at connect.
#[tokio::test]
async fn a_dsn_the_driver_refuses_is_reported_without_its_values() {
    for (option, secret) in [
        ("authMechanism", "Mech-Hidden-7"),
        ("readPreference", "Pref-Hidden-7"),
        ("maxPoolSize", "Size-Hidden-7"),
        ("tls", "Tls-Hidden-7"),
    ] {
        let dsn = format!(
            "mongodb://u:Pw-Hidden-7@127.0.0.1:{}/?{option}={secret}",
            free_port()
        );
        let c = ConnectionConfig::from_dsn("m", dbmanager::DatabaseType::Mongodb, dsn);
        let Err(err) = Manager::new(fast_config().with_connection(c)) else {
            panic!("{option}: a dsn the driver refuses was accepted");
        };
        let text = format!("{err} {err:?}");
        println!("{option}: {err}");
        assert!(text.contains("connections.m.dsn"), "{option}: {text}");
        for hidden in ["Hidden-7", "hidden-7", "Pw-Hidden"] {
            assert!(!text.contains(hidden), "{option}: {text}");
        }
        assert_eq!(err.kind(), ErrorKind::Configuration, "{option}: {err}");
    }
}
