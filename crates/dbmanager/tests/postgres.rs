//! PostgreSQL on the machine's real server: connect, lookups, default switching, stats, close,
//! the three layers on one pool, and the settings that reach the server.

mod support;

use std::time::Duration;

use dbmanager::reexports::sea_orm::{self, TransactionTrait};
use dbmanager::{ConnectPolicy, DefaultOrm, Error, ErrorKind, Manager, SslMode, Value};
use support::{TestDb, fast_config};

#[tokio::test]
async fn connect_get_default_switch_stats_close() {
    let db = TestDb::create();
    let config = fast_config()
        .with_connection(db.config("primary"))
        .with_connection(db.config("analytics"))
        .with_connection(dbmanager::ConnectionConfig::sqlite("cache", ":memory:"))
        .with_default("primary");
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();

    let primary = manager.get("primary").unwrap();
    let one: i32 = dbmanager::reexports::sqlx::query_scalar("SELECT 1")
        .fetch_one(&primary.postgres().unwrap())
        .await
        .unwrap();
    assert_eq!(one, 1);

    assert_eq!(manager.default_connection().unwrap().name(), "primary");
    let row = manager
        .default_database()
        .unwrap()
        .fetch_one("SELECT current_database() AS db", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("db").unwrap(), db.name);

    manager.set_default("cache").unwrap();
    assert_eq!(manager.default_connection().unwrap().name(), "cache");
    let row = manager
        .default_database()
        .unwrap()
        .fetch_one("SELECT sqlite_version() AS v", &[])
        .await
        .unwrap();
    assert!(row.get::<String>("v").unwrap().starts_with('3'));

    let err = manager.set_default("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "connection `nope` not found; known connections: analytics, cache, primary"
    );
    assert_eq!(
        manager.default_connection().unwrap().name(),
        "cache",
        "a failed switch changes nothing"
    );

    // sqlx returns a connection to the pool in a background task: let it land.
    let primary_conn = manager.get("primary").unwrap();
    assert!(support::eventually(Duration::from_secs(5), || primary_conn.stats().in_use == 0).await);
    let stats = manager.stats();
    assert_eq!((stats.total, stats.healthy, stats.unhealthy), (3, 3, 0));
    let p = &stats.connections["primary"];
    assert_eq!(p.max_open, 4);
    assert!(p.open >= 1 && p.open <= 4, "{p:?}");
    assert_eq!(p.in_use, 0);
    assert_eq!(p.idle, p.open);
    assert!(p.opened_total >= 1);

    let names: Vec<String> = manager
        .connections()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(names, ["analytics", "cache", "primary"]);

    let report = manager.close(Duration::from_secs(5)).await;
    assert!(report.still_in_use.is_empty());
    for name in ["primary", "cache"] {
        let err = manager.get(name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    }
    assert_eq!(
        manager.default_database().unwrap_err().kind(),
        ErrorKind::Closed
    );
    // A handle taken before close reports Closed too.
    assert_eq!(primary.postgres().unwrap_err().kind(), ErrorKind::Closed);
    // Idempotent.
    manager.close(Duration::from_secs(1)).await;
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() == 0).await,
        "server sessions remain"
    );
}

#[tokio::test]
async fn the_three_layers_share_one_pool() {
    let db = TestDb::create();
    let mut c = db.config("primary");
    c.max_open_conns = Some(2);
    c.max_idle_conns = Some(2);
    c.connect_timeout = Duration::from_secs(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("primary").unwrap();
    let pool = conn.postgres().unwrap();
    let orm = conn.sea_orm().unwrap();
    let neutral = conn.database().unwrap();

    // One connection held through sqlx, one through a SeaORM transaction.
    let held_native = pool.acquire().await.unwrap();
    let held_orm = orm.begin().await.unwrap();
    let stats = conn.stats();
    assert_eq!(
        (stats.open, stats.in_use, stats.idle),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(
        orm.get_postgres_connection_pool().size(),
        2,
        "SeaORM sees the same pool"
    );

    // The neutral handle has to wait: max_open_conns bounds all layers together.
    let waiting = tokio::spawn(async move { neutral.fetch_one("SELECT 7::int8 AS n", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third checkout must wait while two are held"
    );
    drop(held_native);
    let row = waiting.await.unwrap().unwrap();
    assert_eq!(row.get::<i64>("n"), Some(7));
    held_orm.rollback().await.unwrap();

    let stats = conn.stats();
    assert!(stats.open <= 2, "{stats:?}");
    assert_eq!(
        stats.wait_count, 1,
        "the neutral checkout waited once: {stats:?}"
    );
    assert!(stats.wait_duration > Duration::ZERO);
    assert!(db.backends() <= 2);
    manager.close(Duration::from_secs(5)).await;
}

async fn crud_through(layer: DefaultOrm) {
    let db = TestDb::create();
    let mut c = db.config("primary");
    c.default_orm = layer;
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("primary").unwrap();
    assert_eq!(sql.layer(), layer);

    sql.execute(
        "CREATE TABLE item (id int8 PRIMARY KEY, name text, price float8, ok bool, data bytea, note text)",
        &[],
    )
    .await
    .unwrap();
    let n = sql
        .execute(
            "INSERT INTO item VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                1i64.into(),
                "first".into(),
                1.5f64.into(),
                true.into(),
                vec![1u8, 2].into(),
                Value::Null,
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);

    let mut tx = sql.begin().await.unwrap();
    tx.execute(
        "INSERT INTO item (id, name) VALUES ($1, $2)",
        &[2i64.into(), "rolled back".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.fetch_all("SELECT id FROM item", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    tx.rollback().await.unwrap();

    let mut tx = sql.begin().await.unwrap();
    tx.execute(
        "INSERT INTO item (id, name) VALUES ($1, $2)",
        &[3i64.into(), "committed".into()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let rows = sql
        .fetch_all(
            "SELECT id, name, price, ok, data, note FROM item ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].columns(),
        ["id", "name", "price", "ok", "data", "note"]
    );
    assert_eq!(rows[0].get::<i64>("id"), Some(1));
    assert_eq!(rows[0].get::<String>(1), Some("first".into()));
    assert_eq!(rows[0].get::<f64>("price"), Some(1.5));
    assert_eq!(rows[0].get::<bool>("ok"), Some(true));
    assert_eq!(rows[0].get::<Vec<u8>>("data"), Some(vec![1, 2]));
    assert_eq!(rows[0].value("note"), Some(&Value::Null));
    assert_eq!(rows[1].get::<String>("name"), Some("committed".into()));

    let err = sql.execute("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query, "{err}");
    assert!(
        err.to_string()
            .starts_with("connection `primary`: query failed:"),
        "{err}"
    );
    let err = sql.fetch_all("SELECT now()", &[]).await.unwrap_err();
    assert!(err.to_string().contains("cast it in SQL"), "{err}");
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn neutral_handle_crud_and_transactions_native() {
    crud_through(DefaultOrm::Native).await;
}

#[tokio::test]
async fn neutral_handle_crud_and_transactions_sea_orm() {
    crud_through(DefaultOrm::SeaOrm).await;
}

#[tokio::test]
async fn settings_reach_the_server() {
    let db = TestDb::create();
    support::admin_sql(&db.name, "CREATE SCHEMA \"My Schema\"");
    let mut c = db.config("primary");
    c.schema = Some("My Schema".into());
    c.query_timeout = Duration::from_millis(300);
    c.application_name = Some("dbm-test-app".into());
    c.sslmode = Some(SslMode::Require);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let pool = manager.get("primary").unwrap().postgres().unwrap();
    let (schema, timeout, app, ssl): (String, String, String, bool) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_schema(), current_setting('statement_timeout'), current_setting('application_name'), \
         (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(schema, "My Schema");
    assert_eq!(timeout, "300ms");
    assert_eq!(app, "dbm-test-app");
    assert!(ssl, "sslmode=require must encrypt");
    let (idle, user_timeout): (String, String) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (idle.as_str(), user_timeout.as_str()),
        ("5", "15000"),
        "the server drops dead clients fast"
    );

    let err = manager
        .database("primary")
        .unwrap()
        .execute("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("statement timeout") || text.contains("timed out"),
        "{text}"
    );
    manager.close(Duration::from_secs(5)).await;

    // disable: plain; absent: `prefer`, as libpq, so TLS with a server that offers it.
    for (mode, expect_tls) in [(Some(SslMode::Disable), false), (None, true)] {
        let mut c = db.config("other");
        c.sslmode = mode;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let ssl: bool = dbmanager::reexports::sqlx::query_scalar(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&manager.get("other").unwrap().postgres().unwrap())
        .await
        .unwrap();
        assert_eq!(ssl, expect_tls, "sslmode {mode:?}");
        manager.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_given_dsn_is_used_and_structured_settings_still_apply() {
    let db = TestDb::create();
    let dsn = format!(
        "postgres://{}@{}:{}/{}?sslmode=disable",
        support::pg_user(),
        support::pg_host(),
        support::pg_port(),
        db.name
    );
    let mut c =
        dbmanager::ConnectionConfig::from_dsn("viadsn", dbmanager::DatabaseType::Postgres, dsn);
    c.max_open_conns = Some(3);
    c.application_name = Some("from-fields".into());
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("viadsn").unwrap();
    let pool = conn.postgres().unwrap();
    let (database, app): (String, String) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_database(), current_setting('application_name')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(database, db.name);
    assert_eq!(app, "from-fields");
    assert_eq!(pool.options().get_max_connections(), 3);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unknown_database_is_a_configuration_error_tried_once() {
    let mut c = TestDb::create().config("ghost");
    c.database = Some("dbm_does_not_exist".into());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["ghost"], 1);
    let (name, err) = &report.failed[0];
    assert_eq!(name, "ghost");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let err = manager.get("ghost").unwrap().postgres().unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn wrong_layer_requests_are_typed_errors() {
    let db = TestDb::create();
    let manager = Manager::new(fast_config().with_connection(db.config("pg"))).unwrap();
    manager.connect().await.unwrap();
    let err = manager.get("pg").unwrap().sqlite().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.to_string(),
        "connection `pg`: the SQLite pool is not available for postgres: the connection is of another backend"
    );
    let orm = manager.get("pg").unwrap().sea_orm().unwrap();
    assert_eq!(orm.get_database_backend(), sea_orm::DbBackend::Postgres);
    manager.close(Duration::from_secs(5)).await;
}
