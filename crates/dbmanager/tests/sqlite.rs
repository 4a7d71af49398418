//! SQLite: files in WAL mode, PRAGMAs on every pooled connection, one shared in-memory
//! database behind a pool, clear errors for a missing directory, the layers on one pool.

mod support;

use std::time::Duration;

use dbmanager::reexports::sqlx::{self, Sqlite, pool::PoolConnection};
use dbmanager::{ConnectPolicy, ConnectionConfig, DefaultOrm, ErrorKind, Manager};
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

#[tokio::test]
async fn file_databases_use_wal_and_every_connection_gets_the_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::sqlite("lite", dir.path().join("app.db"));
    c.max_open_conns = Some(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let pool = manager.get("lite").unwrap().sqlite().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.unwrap());
    }
    assert_eq!(pool.size(), 3, "three distinct pooled connections");
    for conn in &mut held {
        assert_eq!(pragma(conn, "journal_mode").await, "wal");
        assert_eq!(pragma(conn, "busy_timeout").await, "5000");
        assert_eq!(pragma(conn, "foreign_keys").await, "1");
    }
    drop(held);

    let sql = manager.database("lite").unwrap();
    sql.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    sql.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))",
        &[],
    )
    .await
    .unwrap();
    let err = sql
        .execute("INSERT INTO child VALUES (1, 42)", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Query);
    manager.close(Duration::from_secs(5)).await;
    assert!(dir.path().join("app.db").exists());
}

#[tokio::test]
async fn memory_database_is_shared_by_the_pool_and_outlives_idle_closes() {
    let mut c = ConnectionConfig::sqlite("mem", ":memory:");
    c.max_open_conns = Some(3);
    // Keep no idle connection: every release closes, yet the database must survive.
    c.max_idle_conns = Some(0);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("mem").unwrap();
    sql.execute("CREATE TABLE t (v TEXT)", &[]).await.unwrap();
    sql.execute("INSERT INTO t VALUES ($1)", &["kept".into()])
        .await
        .unwrap();
    let pool = manager.get("mem").unwrap().sqlite().unwrap();
    // Release runs in the background, so give it a moment.
    assert!(
        support::eventually(Duration::from_secs(5), || pool.size() == 0).await,
        "max_idle_conns: 0 keeps no idle connection"
    );
    assert!(manager.get("mem").unwrap().stats().closed_max_idle >= 2);

    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    for conn in [&mut a, &mut b] {
        let v: String = sqlx::query_scalar("SELECT v FROM t")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(v, "kept");
    }
    drop((a, b));

    // A second memory connection is a different database.
    let other =
        Manager::new(fast_config().with_connection(ConnectionConfig::sqlite("mem2", ":memory:")))
            .unwrap();
    other.connect().await.unwrap();
    let err = other
        .database("mem2")
        .unwrap()
        .fetch_all("SELECT * FROM t", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    other.close(Duration::from_secs(1)).await;
    manager.close(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_missing_parent_directory_is_a_clear_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("app.db");
    let mut config = fast_config().with_connection(ConnectionConfig::sqlite("lite", &path));
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(
        report.attempts["lite"], 1,
        "configuration errors are not retried"
    );
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Configuration);
    let text = err.to_string();
    assert!(
        text.starts_with("connection `lite`: connect failed:"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the directory `{}`",
            dir.path().join("missing").display()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn layers_share_the_sqlite_pool() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::sqlite("lite", dir.path().join("l.db"));
    c.max_open_conns = Some(1);
    c.default_orm = DefaultOrm::SeaOrm;
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("lite").unwrap();
    let sql = conn.database().unwrap();
    assert_eq!(sql.layer(), DefaultOrm::SeaOrm);
    sql.execute("CREATE TABLE t (n INTEGER)", &[])
        .await
        .unwrap();
    sql.execute("INSERT INTO t VALUES ($1), ($2)", &[1.into(), 2.into()])
        .await
        .unwrap();

    let held = conn.sqlite().unwrap().acquire().await.unwrap();
    assert_eq!(
        conn.sea_orm().unwrap().get_sqlite_connection_pool().size(),
        1
    );
    let waiting =
        tokio::spawn(async move { sql.fetch_all("SELECT n FROM t ORDER BY n", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the SeaORM layer waits for the one pooled connection"
    );
    drop(held);
    let rows = waiting.await.unwrap().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<i64>("n").unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    manager.close(Duration::from_secs(1)).await;
}

/// A NaN float parameter is a query error on both layers: SQLite stores a NaN as NULL, so it
/// was stored (and echoed) as NULL without an error. The infinities are kept.
#[tokio::test]
async fn a_nan_parameter_is_refused_not_stored_as_null() {
    use dbmanager::Value;

    for layer in [DefaultOrm::Native, DefaultOrm::SeaOrm] {
        let mut c = ConnectionConfig::sqlite("lite", ":memory:");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let db = manager.database("lite").unwrap();
        db.execute("CREATE TABLE floats (x REAL)", &[])
            .await
            .unwrap();
        let err = db
            .execute(
                "INSERT INTO floats (x) VALUES ($1)",
                &[Value::Float(f64::NAN)],
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{layer:?}: {err}");
        assert!(err.to_string().contains("$1"), "{layer:?}: {err}");
        let err = db
            .fetch_one(
                "SELECT $1 AS v, $2 AS w",
                &[Value::Int(1), Value::Float(-f64::NAN)],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("$2"), "{layer:?}: {err}");
        for x in [f64::INFINITY, f64::NEG_INFINITY] {
            db.execute("INSERT INTO floats (x) VALUES ($1)", &[Value::Float(x)])
                .await
                .unwrap();
        }
        let rows = db.fetch_all("SELECT x FROM floats", &[]).await.unwrap();
        let stored: Vec<f64> = rows.iter().map(|r| r.get("x").unwrap()).collect();
        assert_eq!(
            stored,
            [f64::INFINITY, f64::NEG_INFINITY],
            "{layer:?}: nothing stored for the NaN"
        );
        manager.close(Duration::from_secs(5)).await;
    }
}

/// A database file deleted under a running pool is not silently replaced: connections the pool
/// opens afterwards fail (`unable to open database file`) rather than each creating a new,
/// empty database beside the connections still on the deleted one, where writes would go to
/// a file nobody else sees. A connection open on the old file keeps its data; `close` and
/// `connect` start over with a new file.
#[tokio::test]
async fn a_database_file_deleted_under_the_pool_is_not_recreated_empty() {
    use sqlx::Row as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let mut c = ConnectionConfig::sqlite("lite", &path);
    c.connect_timeout = Duration::from_secs(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("lite").unwrap();
    db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
    db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let pool = manager.get("lite").unwrap().sqlite().unwrap();
    let mut kept = pool.acquire().await.unwrap();
    // sqlx returns a released connection in a background task: wait until every connection but
    // `kept` is back idle, so that the reconnect below discards them all (CI once saw the write
    // below succeed on the INSERT's connection, released only after the reconnect).
    assert!(
        support::eventually(Duration::from_secs(5), || pool.size() as usize
            == pool.num_idle() + 1)
        .await,
        "size {} idle {}",
        pool.size(),
        pool.num_idle()
    );

    std::fs::remove_file(&path).unwrap();
    // Drops the idle connections and checks a new one; then statements need new ones too.
    let reconnect = manager.reconnect("lite").await;
    let write = db.execute("INSERT INTO t VALUES (2)", &[]).await;
    assert!(
        !path.exists(),
        "a new connection created a new, empty database file; reconnect: {reconnect:?}, write: {write:?}"
    );
    let err = write.unwrap_err();
    assert!(!err.to_string().contains("no such table"), "{err}");
    assert!(
        err.to_string().contains("unable to open database file"),
        "{err}"
    );
    // The connection opened before the delete still has the data.
    let row = sqlx::query("SELECT count(*) FROM t")
        .fetch_one(&mut *kept)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 1);
    drop(kept);

    manager.close(Duration::from_secs(1)).await;
    let manager =
        Manager::new(fast_config().with_connection(ConnectionConfig::sqlite("lite", &path)))
            .unwrap();
    manager.connect().await.unwrap();
    assert!(path.exists());
    manager.close(Duration::from_secs(1)).await;
}

/// Transactions through the neutral handle that read and then write, from several tasks at
/// once on one file database: SQLite's default (deferred) `BEGIN` starts as a reader, and a
/// reader that then writes while another connection writes fails at once with SQLITE_BUSY
/// ("database is locked"), without waiting `busy_timeout`, since waiting could deadlock. The
/// handle's `begin` takes the write lock up front (`BEGIN IMMEDIATE`), where `busy_timeout`
/// applies, so every transaction commits and no increment is lost, on both layers, in a file
/// and in the pool's shared in-memory database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_then_write_transactions_all_commit() {
    use dbmanager::Value;

    const TASKS: i64 = 8;
    const ROUNDS: i64 = 25;
    let dir = tempfile::tempdir().unwrap();
    for (layer, path) in [
        (DefaultOrm::Native, ":memory:".into()),
        (DefaultOrm::Native, dir.path().join("native.db")),
        (DefaultOrm::SeaOrm, dir.path().join("orm.db")),
        (DefaultOrm::SeaOrm, ":memory:".into()),
    ] {
        let mut c = ConnectionConfig::sqlite("lite", &path);
        c.max_open_conns = Some(4);
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let db = manager.database("lite").unwrap();
        db.execute("CREATE TABLE counter (n INTEGER NOT NULL)", &[])
            .await
            .unwrap();
        db.execute("INSERT INTO counter VALUES (0)", &[])
            .await
            .unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        let mut tx = db.begin().await?;
                        let n: i64 = tx
                            .fetch_one("SELECT n FROM counter", &[])
                            .await?
                            .get("n")
                            .unwrap();
                        tx.execute("UPDATE counter SET n = $1", &[Value::Int(n + 1)])
                            .await?;
                        tx.commit().await?;
                    }
                    Ok::<_, dbmanager::Error>(())
                })
            })
            .collect();
        let mut errors = Vec::new();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                errors.push(format!("{:?}: {e}", e.kind()));
            }
        }
        assert!(errors.is_empty(), "{layer:?} {path:?}: {errors:#?}");
        let n: i64 = db
            .fetch_one("SELECT n FROM counter", &[])
            .await
            .unwrap()
            .get("n")
            .unwrap();
        assert_eq!(n, TASKS * ROUNDS, "{layer:?} {path:?}: every increment");
        manager.close(Duration::from_secs(5)).await;
    }
}

/// The handle's transactions begin with `BEGIN IMMEDIATE` (see above), which a database that
/// cannot be written refuses (SQLITE_READONLY): a read-only `dsn`, an immutable one and
/// `PRAGMA query_only` still get read transactions, on both layers, and a write in one is the
/// database's own read-only error.
#[tokio::test]
async fn read_only_databases_still_begin_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    let setup =
        Manager::new(fast_config().with_connection(ConnectionConfig::sqlite("rw", &file))).unwrap();
    setup.connect().await.unwrap();
    let db = setup.database("rw").unwrap();
    db.execute("CREATE TABLE t (v TEXT)", &[]).await.unwrap();
    db.execute("INSERT INTO t VALUES ('x')", &[]).await.unwrap();
    setup.close(Duration::from_secs(5)).await;

    let query_only = {
        let mut c = ConnectionConfig::sqlite("lite", &file);
        c.init_sql = vec!["PRAGMA query_only = ON".into()];
        c
    };
    for layer in [DefaultOrm::Native, DefaultOrm::SeaOrm] {
        for c in [
            ConnectionConfig::from_dsn(
                "lite",
                dbmanager::DatabaseType::Sqlite,
                format!("sqlite:{}?mode=ro", file.display()),
            ),
            ConnectionConfig::from_dsn(
                "lite",
                dbmanager::DatabaseType::Sqlite,
                format!("sqlite:{}?immutable=1", file.display()),
            ),
            query_only.clone(),
        ] {
            let mut c = c;
            c.default_orm = layer;
            let what = format!("{layer:?} {:?}", c.init_sql);
            let manager = Manager::new(fast_config().with_connection(c)).unwrap();
            manager.connect().await.unwrap();
            let db = manager.database("lite").unwrap();
            let mut tx = db.begin().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let row = tx.fetch_one("SELECT v FROM t", &[]).await.unwrap();
            assert_eq!(row.get::<String>("v").as_deref(), Some("x"), "{what}");
            let err = tx
                .execute("INSERT INTO t VALUES ('y')", &[])
                .await
                .unwrap_err();
            assert!(err.to_string().contains("readonly"), "{what}: {err}");
            tx.commit().await.unwrap();
            manager.close(Duration::from_secs(5)).await;
        }
    }
}

/// A credential provider set for a SQLite connection was never asked and the connection
/// opened as if it were not there: SQLite has no login. Its connect (and `add`) now fail with a
/// clear `Unsupported` error, not retried, instead of ignoring it silently.
#[tokio::test]
async fn a_credential_provider_on_sqlite_is_refused_not_ignored() {
    use dbmanager::{CredentialRequest, Credentials};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let provider = |asked: Arc<AtomicUsize>| {
        move |_request: CredentialRequest| {
            asked.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, dbmanager::BoxError>(Credentials::password("Secret-Hidden")) }
        }
    };

    let mut config =
        fast_config().with_connection(ConnectionConfig::sqlite("lite", dir.path().join("a.db")));
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    manager.set_credential_provider("lite", provider(asked.clone()));
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["lite"], 1, "not retried");
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let text = err.to_string();
    assert!(text.contains("credential provider"), "{text}");
    assert!(!text.contains("Secret-Hidden"), "{text}");

    // `add` of a connection whose name has a provider fails the same way and adds nothing.
    manager.set_credential_provider("later", provider(asked.clone()));
    let err = manager
        .add(ConnectionConfig::sqlite("later", dir.path().join("b.db")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(
        manager.get("later").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        asked.load(Ordering::Relaxed),
        0,
        "the provider is never asked"
    );
    manager.close(Duration::from_secs(1)).await;
}

/// SQLite rolls a whole transaction back on some errors (`INSERT OR ROLLBACK`, a trigger's
/// `RAISE(ROLLBACK, ...)`, a full disk, an I/O error) and carries on in autocommit: the
/// transaction's later statements were committed one by one, and only `commit` failed ("no
/// transaction is active"), so a failed transaction left part of its writes behind. Now every
/// later statement and `commit` fail, and nothing of the transaction is kept, on both layers.
#[tokio::test]
async fn a_transaction_sqlite_rolled_back_does_not_go_on_in_autocommit() {
    for layer in [DefaultOrm::Native, DefaultOrm::SeaOrm] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ConnectionConfig::sqlite("lite", dir.path().join("a.db"));
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let db = manager.database("lite").unwrap();
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
            .await
            .unwrap();
        db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        let ids = async || {
            db.fetch_all("SELECT id FROM t ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<i64>("id").unwrap())
                .collect::<Vec<_>>()
        };

        let mut tx = db.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
        let err = tx
            .execute("INSERT OR ROLLBACK INTO t VALUES (1)", &[])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{layer:?}: {err}");
        let later = tx.execute("INSERT INTO t VALUES (3)", &[]).await;
        assert!(later.is_err(), "{layer:?}: ran in autocommit: {later:?}");
        let read = tx.fetch_all("SELECT id FROM t", &[]).await;
        assert!(read.is_err(), "{layer:?}: {read:?}");
        let err = tx.commit().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{layer:?}: {err}");
        assert_eq!(
            ids().await,
            [1],
            "{layer:?}: nothing of the transaction kept"
        );

        // Rolling back such a transaction is fine, and so is dropping it; the connections go
        // back to the pool clean.
        let mut tx = db.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
        tx.execute("INSERT OR ROLLBACK INTO t VALUES (1)", &[])
            .await
            .unwrap_err();
        tx.rollback().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        tx.execute("INSERT OR ROLLBACK INTO t VALUES (1)", &[])
            .await
            .unwrap_err();
        drop(tx);
        // A failed statement that does not end the transaction leaves it usable.
        let mut tx = db.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", &[])
            .await
            .unwrap_err();
        tx.execute("INSERT INTO t VALUES (5)", &[]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(ids().await, [1, 5], "{layer:?}");
        manager.close(Duration::from_secs(1)).await;
    }
}

/// A `filepath` naming a file that is not a SQLite database is a configuration error (as a
/// missing directory is), not a query error: nothing about a statement is wrong.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a database, ".repeat(64)).unwrap();
    let mut config = fast_config().with_connection(ConnectionConfig::sqlite("lite", &path));
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["lite"], 1, "not retried");
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("not a database"), "{err}");
}

/// With a `query_timeout` below SQLite's 5 s `busy_timeout`, a statement waiting for a lock was
/// abandoned by the handle at `query_timeout` (the caller got a timeout) but went on waiting
/// in SQLite's worker thread, and ran once the lock was free: a write reported as failed was
/// committed later. `busy_timeout` is now at most `query_timeout`, so the wait ends with it.
#[tokio::test]
async fn a_write_abandoned_at_query_timeout_does_not_land_later() {
    use sqlx::Row as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut c = ConnectionConfig::sqlite("lite", &path);
    c.query_timeout = Duration::from_millis(300);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("lite").unwrap();
    db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
    let pool = manager.get("lite").unwrap().sqlite().unwrap();
    let mut holder = pool.acquire().await.unwrap();
    assert_eq!(pragma(&mut holder, "busy_timeout").await, "300");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let err = db
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    // Long past the abandoned statement's own lock wait (at most `busy_timeout` = 0.3 s, ten
    // times over, for a loaded machine), the lock is released; a statement still waiting (the
    // old 5 s) would now run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    drop(holder);
    // Closing waits for every connection, so whatever was still queued has run.
    manager.close(Duration::from_secs(10)).await;

    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite:{}",
        path.display()
    ))
    .await
    .unwrap();
    let n = sqlx::query("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(n, 0, "the write reported as failed was committed later");
}
