//! SQLite connect options: `filepath` is always a path, never a URI; a `dsn` gets the same
//! PRAGMAs as a file and WAL unless it is in memory, read-only or immutable; `:memory:` is one
//! database per open pool (a close drops it, `reconnect()` of an open pool keeps it).

mod support;

use std::time::Duration;

use dbmanager::reexports::sqlx::{self, Sqlite, pool::PoolConnection};
use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, ErrorKind, Manager};
use support::fast_config;

async fn pragma(conn: &mut PoolConnection<Sqlite>, name: &str) -> String {
    use sqlx::Row;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    match row.try_get::<i64, _>(0) {
        Ok(v) => v.to_string(),
        Err(_) => row.get::<String, _>(0),
    }
}

/// Removes the files a test may leave in the working directory.
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for base in &self.0 {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{base}{suffix}"));
            }
        }
    }
}

#[tokio::test]
async fn a_filepath_starting_with_file_colon_is_refused_not_taken_as_a_uri() {
    // On the old code `mode=memory` gave each pooled connection a private database that was
    // lost on close; `nolock=1` switched locking off.
    let name = support::unique("dbm-uri");
    let candidates = [
        format!("file:{name}.db?mode=memory"),
        format!("file:{name}-b.db?nolock=1"),
        format!("file:{name}-c.db"),
    ];
    let _cleanup = RemoveOnDrop(candidates.to_vec());
    for filepath in &candidates {
        let mut config = fast_config().with_connection(ConnectionConfig::sqlite("lite", filepath));
        config.retry_attempts = 3;
        let err = match Manager::new(config) {
            Err(e) => e,
            Ok(manager) => {
                let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
                assert!(
                    report.connected.is_empty(),
                    "`{filepath}` must not be opened as a URI"
                );
                assert_eq!(report.attempts["lite"], 1);
                report.failed.into_iter().next().unwrap().1
            }
        };
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
        let text = err.to_string();
        assert!(text.contains("filepath") && text.contains("dsn"), "{text}");
        assert!(!std::path::Path::new(filepath).exists());
    }
}

/// A `filepath` that can never be opened as written (empty, or `file:...`) is a problem of the
/// file when it is loaded, listed with every other one under its path (exit code 2 in the
/// CLI), not a connect failure found later (a connection "down", exit code 1).
#[test]
fn an_empty_or_uri_filepath_is_a_problem_when_the_config_is_loaded() {
    let yaml = "dbmanager:\n  connections:\n    a: {type: sqlite, filepath: ''}\n    \
                b: {type: sqlite, filepath: 'file:b.db?mode=memory'}\n    \
                c: {type: sqlite, filepath: ':memory:', max_open_conns: 0}\n";
    let problems: Vec<String> = dbmanager::ManagerConfig::from_yaml_str(yaml)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "connections.a.filepath: is empty; give a file or `:memory:`",
            "connections.b.filepath: starts with `file:`, which SQLite would read as a URI; \
             filepath is always a path: put a URI in `dsn` (`dsn: \"sqlite:file:...\"`), or \
             write `./file:...` for a file so named",
            "connections.c.max_open_conns: must be at least 1",
        ]
    );
}

#[tokio::test]
async fn a_filepath_with_uri_characters_is_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a?mode=memory&cache=private#x.db");
    let open = async || {
        let mut c = ConnectionConfig::sqlite("lite", &path);
        c.max_open_conns = Some(2);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        manager
    };
    let manager = open().await;
    let pool = manager.sqlite("lite").unwrap();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    sqlx::query("CREATE TABLE t (v TEXT)")
        .execute(&mut *a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES ('kept')")
        .execute(&mut *a)
        .await
        .unwrap();
    // Another pooled connection sees it: one database, not one per connection.
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut *b)
        .await
        .unwrap();
    assert_eq!(v, "kept");
    assert_eq!(pragma(&mut b, "journal_mode").await, "wal");
    drop((a, b));
    manager.close(Duration::from_secs(5)).await;
    assert!(path.is_file(), "the file is named exactly as written");

    let manager = open().await;
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&manager.sqlite("lite").unwrap())
        .await
        .unwrap();
    assert_eq!(v, "kept", "the data outlives a close");
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_sqlite_dsn_gets_wal_and_the_pragmas_unless_memory_read_only_or_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    let connect = async |dsn: String| {
        let mut c = ConnectionConfig::from_dsn("lite", DatabaseType::Sqlite, dsn);
        c.max_open_conns = Some(2);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        manager
    };

    for dsn in [
        format!("sqlite:{}?mode=rwc", file.display()),
        format!("sqlite://{}", file.display()),
    ] {
        let manager = connect(dsn.clone()).await;
        let pool = manager.sqlite("lite").unwrap();
        let mut held = vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        for conn in &mut held {
            assert_eq!(pragma(conn, "journal_mode").await, "wal", "{dsn}");
            assert_eq!(pragma(conn, "synchronous").await, "1", "NORMAL: {dsn}");
            assert_eq!(pragma(conn, "busy_timeout").await, "5000", "{dsn}");
            assert_eq!(pragma(conn, "foreign_keys").await, "1", "{dsn}");
        }
        drop(held);
        manager.close(Duration::from_secs(5)).await;
    }

    // What the URI says wins: read-only and immutable are opened as they are (setting WAL
    // would need a write), and still get the per-connection PRAGMAs.
    for dsn in [
        format!("sqlite:{}?mode=ro", file.display()),
        format!("sqlite:{}?immutable=1", file.display()),
    ] {
        let manager = connect(dsn.clone()).await;
        let mut conn = manager.sqlite("lite").unwrap().acquire().await.unwrap();
        assert_eq!(pragma(&mut conn, "busy_timeout").await, "5000", "{dsn}");
        assert_eq!(pragma(&mut conn, "foreign_keys").await, "1", "{dsn}");
        let err = sqlx::query("CREATE TABLE nope (x)")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{dsn}: {err}");
        drop(conn);
        manager.close(Duration::from_secs(5)).await;
    }

    // In memory: no WAL, one database for the whole pool.
    let manager = connect("sqlite::memory:".to_owned()).await;
    let pool = manager.sqlite("lite").unwrap();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    assert_eq!(pragma(&mut a, "journal_mode").await, "memory");
    assert_eq!(pragma(&mut a, "busy_timeout").await, "5000");
    sqlx::query("CREATE TABLE t (v)")
        .execute(&mut *a)
        .await
        .unwrap();
    sqlx::query("SELECT * FROM t")
        .fetch_all(&mut *b)
        .await
        .unwrap();
    drop((a, b));
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn memory_is_one_database_per_open_pool_dropped_by_close_kept_by_reconnect() {
    let mut c = ConnectionConfig::sqlite("mem", ":memory:");
    c.max_open_conns = Some(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("mem").unwrap();
    sql.execute("CREATE TABLE t (v TEXT)", &[]).await.unwrap();
    sql.execute("INSERT INTO t VALUES ('kept')", &[])
        .await
        .unwrap();

    // `reconnect()` of an open pool discards idle connections; the database stays.
    manager.reconnect("mem").await.unwrap();
    let row = sql.fetch_one("SELECT v FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<String>("v").as_deref(), Some("kept"));

    // `close()` then `connect()`: a new, empty database (documented).
    manager.close(Duration::from_secs(5)).await;
    manager.connect().await.unwrap();
    let err = manager
        .database("mem")
        .unwrap()
        .fetch_all("SELECT v FROM t", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    manager.close(Duration::from_secs(5)).await;
}
