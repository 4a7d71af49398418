//! Pools the application built, adopted as named connections: every layer, stats, health,
//! metrics and close work on them; a reconnect never replaces them.

mod support;

use std::time::Duration;

use dbmanager::reexports::sqlx;
use dbmanager::{DatabaseType, ErrorKind, Manager, ManagerConfig, Value};

/// A manager whose only pools are adopted ones: the application's own PostgreSQL, SQLite and
/// MySQL sqlx pools, a SQL Server pool and a MongoDB client, each built by another manager or
/// by hand, as an application would.
#[tokio::test]
async fn every_backend_adopted_works_through_every_layer_and_closes() {
    let pg_db = support::TestDb::create();
    let my_db = support::mysql::MysqlTestDb::create();
    let dir = tempfile::tempdir().unwrap();

    // Built outside the adopting manager.
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&format!(
            "postgres://{}@{}:{}/{}?sslmode=disable",
            support::pg_user(),
            support::pg_host(),
            support::pg_port(),
            pg_db.name
        ))
        .await
        .unwrap();
    let lite = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("a.db"))
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let my = sqlx::mysql::MySqlPoolOptions::new()
        .connect(&format!(
            "mysql://root@{}:{}/{}?ssl-mode=disabled",
            support::mysql::mysql_host(),
            support::mysql::mysql_port(),
            my_db.name
        ))
        .await
        .unwrap();
    let builder = Manager::new(
        support::fast_config()
            .with_connection(support::mssql_config("ms"))
            .with_connection(support::mongo_config("mg", "adopted")),
    )
    .unwrap();
    builder.connect().await.unwrap();
    let ms = builder.get("ms").unwrap().mssql().unwrap();
    let mg = builder.get("mg").unwrap().mongodb().unwrap();

    let manager = Manager::new(ManagerConfig::default()).unwrap();
    manager.adopt("pg", pg.clone()).unwrap();
    manager.adopt("lite", lite.clone()).unwrap();
    manager.adopt("my", my.clone()).unwrap();
    manager.adopt("ms", ms).unwrap();
    manager.adopt("mg", mg).unwrap();
    assert_eq!(
        manager.adopt("pg", pg.clone()).unwrap_err().kind(),
        ErrorKind::Configuration,
        "a taken name"
    );
    assert_eq!(manager.names(), ["lite", "mg", "ms", "my", "pg"]);

    for (name, kind) in [
        ("pg", DatabaseType::Postgres),
        ("lite", DatabaseType::Sqlite),
        ("my", DatabaseType::Mysql),
        ("ms", DatabaseType::Mssql),
    ] {
        let conn = manager.get(name).unwrap();
        assert!(conn.is_adopted() && conn.is_connected());
        assert_eq!(conn.kind(), kind);
        let db = manager.database(name).unwrap();
        let row = db
            .fetch_one("SELECT $1 AS v", &[Value::Int(7)])
            .await
            .unwrap();
        assert_eq!(row.get::<i64>("v"), Some(7), "{name}");
        conn.health_check().await.unwrap();
        conn.reconnect().await.unwrap();
        assert!(conn.stats().open >= 1, "{name}: {:?}", conn.stats());
    }
    // The very pools, not copies: sqlx pools compare by identity of their shared state.
    assert!(manager.postgres("pg").unwrap().size() >= 1);
    manager.sea_orm("pg").unwrap();
    let pg_via = manager.get("pg").unwrap().postgres().unwrap();
    assert_eq!(
        pg_via.options().get_max_connections(),
        3,
        "the pool's own settings"
    );
    manager
        .get("mg")
        .unwrap()
        .mongodb_database()
        .unwrap()
        .list_collection_names()
        .await
        .unwrap();
    manager.get("mg").unwrap().health_check().await.unwrap();

    let text = manager.metrics_text();
    for name in ["pg", "lite", "my", "ms", "mg"] {
        assert!(
            text.contains(&format!("connection=\"{name}\"")),
            "{name}: {text}"
        );
    }

    // A reload that does not name them leaves them.
    let report = manager
        .reload(ManagerConfig::default(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");

    manager.close(Duration::from_secs(5)).await;
    assert!(
        pg.is_closed(),
        "closing the manager closes the adopted pool"
    );
    assert!(my.is_closed() && lite.is_closed());
    // Reopening the manager does not reopen an adopted pool.
    let report = manager
        .connect_with(dbmanager::ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 5, "{report:?}");
    assert!(report.failed[0].1.to_string().contains("adopted pool"));
    builder.close(Duration::from_secs(5)).await;
}

fn pg_url(db: &support::TestDb) -> String {
    format!(
        "postgres://{}@{}:{}/{}?sslmode=disable",
        support::pg_user(),
        support::pg_host(),
        support::pg_port(),
        db.name
    )
}

/// Stats and metrics give an adopted pool's own cap, not the manager's default
/// `max_open_conns` its placeholder configuration carries.
#[tokio::test]
async fn an_adopted_pool_reports_its_own_cap() {
    let db = support::TestDb::create();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(7)
        .connect(&pg_url(&db))
        .await
        .unwrap();
    let manager = Manager::new(ManagerConfig::default()).unwrap();
    manager.adopt("pg", pool).unwrap();
    manager
        .database("pg")
        .unwrap()
        .fetch_one("SELECT 1", &[])
        .await
        .unwrap();
    assert_eq!(manager.get("pg").unwrap().stats().max_open, 7);
    assert_eq!(manager.stats().connections["pg"].max_open, 7);
    let text = manager.metrics_text();
    assert!(
        text.contains(
            "dbmanager_connection_pool_size{connection=\"pg\",type=\"postgres\",state=\"max\"} 7"
        ),
        "{text}"
    );
    manager.close(Duration::from_secs(5)).await;
}

/// A pool the application closed already would never serve: adopting it is refused (it used
/// to be registered as connected and healthy, every statement then failing with `Closed`);
/// so is an empty name, as in a configuration.
#[tokio::test]
async fn adopting_a_closed_pool_or_an_empty_name_is_refused() {
    let db = support::TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::new(ManagerConfig::default()).unwrap();

    let pg = sqlx::PgPool::connect(&pg_url(&db)).await.unwrap();
    pg.close().await;
    let err = manager.adopt("pg", pg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("closed"), "{err}");
    let lite = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("a.db"))
                .create_if_missing(true),
        )
        .await
        .unwrap();
    lite.close().await;
    assert_eq!(
        manager.adopt("lite", lite).unwrap_err().kind(),
        ErrorKind::Configuration
    );
    assert!(manager.names().is_empty(), "{:?}", manager.names());

    let open = sqlx::PgPool::connect_lazy(&pg_url(&db)).unwrap();
    assert_eq!(
        manager.adopt("", open.clone()).unwrap_err().kind(),
        ErrorKind::Configuration
    );
    // The name is still free for an open pool.
    manager.adopt("pg", open).unwrap();
    manager
        .database("pg")
        .unwrap()
        .fetch_one("SELECT 1", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
}
