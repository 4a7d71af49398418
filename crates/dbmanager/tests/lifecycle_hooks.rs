//! The application's lifecycle hooks (`Hooks`: after-connect, before-checkout, after-release)
//! on real servers: PostgreSQL, MariaDB, SQLite and the SQL Server test server
//! (`scripts/test-servers.sh start`). Each hook is installed in the pool, so what after-connect
//! sets is seen through every layer; a refusal discards or closes the physical connection; a
//! failing after-connect fails checkouts with its own error and stops when the hook recovers;
//! and hooks survive `reconnect`, `replace` and `reload`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use dbmanager::reexports::sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use dbmanager::reexports::sqlx;
use dbmanager::{
    ConnectionConfig, DatabaseType, ErrorKind, HookConnection, Hooks, Manager, ManagerConfig,
};
use support::mysql::MysqlTestDb;
use support::{TestDb, eventually, fast_config, mssql_config};

/// What a test needs to know of one backend.
struct Backend {
    config: ConnectionConfig,
    /// Run by after-connect on every new connection: leaves a per-session marker.
    setup: &'static [&'static str],
    /// Reads the marker back as the text column `v`.
    probe: &'static str,
    /// What `probe` reads (compared in lower case) on a connection after-connect set up.
    marker: &'static str,
    /// Sessions the server has open for this test's database, where it can tell.
    sessions: Option<Box<dyn Fn() -> i64 + Send + Sync>>,
    /// Keeps the test database alive.
    _db: Option<Box<dyn std::any::Any + Send + Sync>>,
}

fn small(mut c: ConnectionConfig) -> ConnectionConfig {
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    c.min_open_conns = Some(0);
    c.connect_timeout = Duration::from_secs(1);
    c
}

fn postgres() -> Backend {
    let db = Arc::new(TestDb::create());
    let probe = db.clone();
    Backend {
        config: small(db.config("h")),
        setup: &["SET application_name = 'hooked'"],
        probe: "SELECT current_setting('application_name') AS v",
        marker: "hooked",
        sessions: Some(Box::new(move || probe.backends())),
        _db: Some(Box::new(db)),
    }
}

fn mariadb() -> Backend {
    let db = Arc::new(MysqlTestDb::create());
    let probe = db.clone();
    Backend {
        config: small(db.config("h")),
        setup: &["SET @hook_marker = 'hooked'"],
        probe: "SELECT CAST(@hook_marker AS CHAR) AS v",
        marker: "hooked",
        sessions: Some(Box::new(move || probe.backends())),
        _db: Some(Box::new(db)),
    }
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::new("h", DatabaseType::Sqlite);
    c.filepath = Some(dir.path().join("hooks.db"));
    Backend {
        config: small(c),
        // A temporary view lives in its connection only.
        setup: &["CREATE TEMP VIEW hook_marker AS SELECT 'hooked' AS v"],
        probe: "SELECT v FROM hook_marker",
        marker: "hooked",
        sessions: None,
        _db: Some(Box::new(dir)),
    }
}

fn mssql() -> Backend {
    Backend {
        config: small(mssql_config("h")),
        // A session option (the default is us_english).
        setup: &["SET LANGUAGE British"],
        probe: "SELECT @@LANGUAGE AS v",
        marker: "british",
        sessions: None,
        _db: None,
    }
}

/// Counts of each hook's calls, and switches the test flips.
#[derive(Default)]
struct Probe {
    connects: AtomicU32,
    checkouts: AtomicU32,
    releases: AtomicU32,
    /// After-connect fails while set.
    fail_connect: AtomicBool,
    /// Before-checkout refuses this many more connections.
    refuse_checkouts: AtomicU32,
    /// After-release closes every connection while set.
    close_on_release: AtomicBool,
    /// After-connect panics while set.
    panic_connect: AtomicBool,
}

fn hooks(setup: &'static [&'static str], probe: &Arc<Probe>) -> Hooks {
    let (on_connect, on_checkout, on_release) = (probe.clone(), probe.clone(), probe.clone());
    Hooks::new()
        .after_connect(move |mut conn: HookConnection<'_>| {
            let probe = on_connect.clone();
            Box::pin(async move {
                probe.connects.fetch_add(1, SeqCst);
                assert_eq!(conn.name(), "h");
                assert_eq!(conn.age(), Duration::ZERO);
                if probe.panic_connect.load(SeqCst) {
                    panic!("the hook panicked on purpose");
                }
                if probe.fail_connect.load(SeqCst) {
                    return Err("the hook refused the session on purpose".into());
                }
                for statement in setup {
                    conn.execute(statement, &[]).await?;
                }
                Ok(())
            })
        })
        .before_checkout(move |mut conn: HookConnection<'_>| {
            let probe = on_checkout.clone();
            Box::pin(async move {
                probe.checkouts.fetch_add(1, SeqCst);
                // The hook can run SQL on the very connection being checked out.
                let row = conn.fetch_optional("SELECT 1 AS one", &[]).await?;
                assert!(row.is_some());
                let refuse = probe
                    .refuse_checkouts
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                Ok(!refuse)
            })
        })
        .after_release(move |conn: HookConnection<'_>| {
            let probe = on_release.clone();
            Box::pin(async move {
                probe.releases.fetch_add(1, SeqCst);
                assert_eq!(conn.name(), "h");
                Ok(!probe.close_on_release.load(SeqCst))
            })
        })
}

/// The marker through the native pool (and SeaORM where the backend has it).
async fn native_marker(manager: &Manager, kind: DatabaseType, probe: &str) -> Vec<String> {
    let sql = || sqlx::AssertSqlSafe(probe.to_owned());
    let orm = |backend: DbBackend| async move {
        let db = manager.sea_orm("h").unwrap();
        let row = db
            .query_one_raw(Statement::from_string(backend, probe.to_owned()))
            .await
            .unwrap()
            .expect("one row");
        row.try_get::<String>("", "v").unwrap()
    };
    match kind {
        DatabaseType::Postgres => vec![
            sqlx::query_scalar::<sqlx::Postgres, String>(sql())
                .fetch_one(&manager.postgres("h").unwrap())
                .await
                .unwrap(),
            orm(DbBackend::Postgres).await,
        ],
        DatabaseType::Mysql => vec![
            sqlx::query_scalar::<sqlx::MySql, String>(sql())
                .fetch_one(&manager.get("h").unwrap().mysql().unwrap())
                .await
                .unwrap(),
            orm(DbBackend::MySql).await,
        ],
        DatabaseType::Sqlite => vec![
            sqlx::query_scalar::<sqlx::Sqlite, String>(sql())
                .fetch_one(&manager.sqlite("h").unwrap())
                .await
                .unwrap(),
            orm(DbBackend::Sqlite).await,
        ],
        DatabaseType::Mssql => {
            let pool = manager.get("h").unwrap().mssql().unwrap();
            let mut client = pool.acquire().await.unwrap();
            let row = client
                .simple_query(probe)
                .await
                .unwrap()
                .into_row()
                .await
                .unwrap()
                .expect("one row");
            vec![row.get::<&str, _>("v").unwrap().to_owned()]
        }
        other => panic!("no native layer for {other}"),
    }
}

/// The marker through the neutral handle.
async fn neutral_marker(manager: &Manager, probe: &str) -> String {
    let row = manager
        .database("h")
        .unwrap()
        .fetch_one(probe, &[])
        .await
        .unwrap();
    row.get::<String>("v").unwrap()
}

/// After-connect's marker is seen through every layer, on every new connection.
async fn assert_marked(manager: &Manager, backend: &Backend) {
    let kind = manager.get("h").unwrap().kind();
    assert_eq!(
        neutral_marker(manager, backend.probe).await.to_lowercase(),
        backend.marker
    );
    for seen in native_marker(manager, kind, backend.probe).await {
        assert_eq!(seen.to_lowercase(), backend.marker);
    }
}

/// Waits until every connection is back in the pool (a release runs in a task).
async fn settled(conn: &dbmanager::Connection) {
    assert!(
        eventually(Duration::from_secs(5), || conn.stats().in_use == 0).await,
        "{:?}",
        conn.stats()
    );
}

/// Runs a statement through the neutral handle.
async fn query(manager: &Manager) -> dbmanager::Result<()> {
    manager
        .database("h")
        .unwrap()
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .map(drop)
}

async fn every_hook(backend: Backend) {
    let probe = Arc::new(Probe::default());
    let manager = Manager::new(fast_config().with_connection(backend.config.clone())).unwrap();
    manager
        .set_hooks("h", hooks(backend.setup, &probe))
        .unwrap();
    assert!(manager.hooks("h").is_some());
    manager.connect().await.unwrap();
    assert!(
        probe.connects.load(SeqCst) >= 1,
        "after-connect ran on the connect's first connection"
    );

    // 1. After-connect's session setting is seen through the native pool, SeaORM and the
    //    neutral handle, which share the one pool.
    assert_marked(&manager, &backend).await;

    // 2. Before-checkout refusing an idle connection discards it: a new one is opened (and
    //    goes through after-connect) in its place. One connection at most, so the checkout
    //    below can only get the idle one first.
    query(&manager).await.unwrap();
    let stats = manager.get("h").unwrap().stats();
    let (connects, checkouts) = (probe.connects.load(SeqCst), probe.checkouts.load(SeqCst));
    probe.refuse_checkouts.store(1, SeqCst);
    assert_eq!(
        neutral_marker(&manager, backend.probe).await.to_lowercase(),
        backend.marker
    );
    assert!(probe.checkouts.load(SeqCst) > checkouts);
    assert_eq!(
        probe.refuse_checkouts.load(SeqCst),
        0,
        "the refusal was used"
    );
    assert_eq!(
        probe.connects.load(SeqCst),
        connects + 1,
        "the refused connection was replaced by a new one"
    );
    let after = manager.get("h").unwrap().stats();
    assert!(after.closed_by_hook > stats.closed_by_hook, "{after:?}");
    assert!(after.opened_total > stats.opened_total, "{after:?}");

    // 3. After-release saying no closes the connection instead of pooling it: every statement
    //    then needs a new physical connection, and the server sees the sessions end.
    probe.close_on_release.store(true, SeqCst);
    query(&manager).await.unwrap();
    let connects = probe.connects.load(SeqCst);
    for _ in 0..3 {
        query(&manager).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || probe.connects.load(SeqCst)
            == connects + 3)
        .await,
        "each statement got a new connection: {} after {connects}",
        probe.connects.load(SeqCst)
    );
    if let Some(sessions) = &backend.sessions {
        assert!(
            eventually(Duration::from_secs(5), || sessions() == 0).await,
            "the server still has {} sessions",
            sessions()
        );
    }
    assert!(probe.releases.load(SeqCst) >= 3);
    probe.close_on_release.store(false, SeqCst);

    // 4. A failing after-connect fails the checkouts that need a new connection with the
    //    hook's error, naming the connection; they work again once the hook does.
    probe.fail_connect.store(true, SeqCst);
    let conn = manager.get("h").unwrap();
    // Drop the idle connection so that the next checkout needs a new one.
    settled(&conn).await;
    let err = conn.reconnect().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    let err = query(&manager).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert_eq!(err.connection(), Some("h"));
    let text = err.to_string();
    assert!(
        text.contains("connection `h`")
            && text.contains("after_connect hook failed: the hook refused the session on purpose"),
        "{text}"
    );
    probe.fail_connect.store(false, SeqCst);
    query(&manager).await.unwrap();
    assert_marked(&manager, &backend).await;

    // A panicking hook is a hook error too, never a crash.
    probe.panic_connect.store(true, SeqCst);
    settled(&conn).await;
    conn.reconnect().await.unwrap_err();
    let err = query(&manager).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    probe.panic_connect.store(false, SeqCst);
    query(&manager).await.unwrap();

    // 5. Hooks survive reconnect, replace and reload, which open new connections or pools.
    conn.reconnect().await.unwrap();
    assert_marked(&manager, &backend).await;
    let mut changed = backend.config.clone();
    changed.max_open_conns = Some(2);
    let connects = probe.connects.load(SeqCst);
    manager
        .replace(changed.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_marked(&manager, &backend).await;
    assert!(
        probe.connects.load(SeqCst) > connects,
        "the new pool's connections went through after-connect"
    );
    changed.max_idle_conns = Some(2);
    let report = manager
        .reload(
            fast_config().with_connection(changed),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(report.replaced, ["h"]);
    assert_marked(&manager, &backend).await;

    // A connection removed and added again under the name gets the registered hooks.
    manager.remove("h", Duration::from_secs(5)).await.unwrap();
    manager.add(backend.config.clone()).await.unwrap();
    assert_marked(&manager, &backend).await;

    // Clearing them stops them: new connections are plain again.
    manager.set_hooks("h", Hooks::new()).unwrap();
    assert!(manager.hooks("h").is_none());
    let connects = probe.connects.load(SeqCst);
    manager.get("h").unwrap().reconnect().await.unwrap();
    query(&manager).await.unwrap();
    assert_eq!(probe.connects.load(SeqCst), connects);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn postgres_hooks_cover_every_layer_and_survive_replace() {
    every_hook(postgres()).await;
}

#[tokio::test]
async fn mariadb_hooks_cover_every_layer_and_survive_replace() {
    every_hook(mariadb()).await;
}

#[tokio::test]
async fn sqlite_hooks_cover_every_layer_and_survive_replace() {
    every_hook(sqlite()).await;
}

#[tokio::test]
async fn mssql_hooks_cover_every_layer_and_survive_replace() {
    every_hook(mssql()).await;
}

#[tokio::test]
async fn a_hook_failing_from_the_start_fails_the_connect_with_its_error() {
    let db = TestDb::create();
    let mut config = fast_config();
    config.retry_attempts = 3;
    let manager = Manager::new(config.with_connection(small(db.config("h")))).unwrap();
    let hooks = Hooks::new().after_connect(|_conn: HookConnection<'_>| {
        Box::pin(async { Err("no session for you".into()) })
    });
    manager.set_hooks("h", hooks).unwrap();
    let report = manager
        .connect_with(dbmanager::ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(report.attempts["h"], 1, "a hook failure is not retried");
    let err = &report.failed[0].1;
    assert_eq!(err.kind(), ErrorKind::Hook);
    assert_eq!(
        err.to_string(),
        "connection `h`: connect failed: after_connect hook failed: no session for you"
    );
    assert!(
        eventually(Duration::from_secs(5), || db.backends() == 0).await,
        "the probe connection was closed"
    );
}

#[tokio::test]
async fn a_hook_that_never_answers_is_bounded_and_closes_its_connection() {
    let db = TestDb::create();
    let mut c = small(db.config("h"));
    // Room for a second connection, so that the next statement does not wait for the stuck
    // release.
    c.max_open_conns = Some(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let hooks = Hooks::new().after_release(|_conn: HookConnection<'_>| {
        Box::pin(async {
            std::future::pending::<()>().await;
            Ok(true)
        })
    });
    manager.set_hooks("h", hooks).unwrap();
    manager.connect().await.unwrap();
    query(&manager).await.unwrap();
    let conn = manager.get("h").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || conn.stats().closed_by_hook == 1).await,
        "the release hook was given up on after connect_timeout and its connection closed: {:?}",
        conn.stats()
    );
    assert!(eventually(Duration::from_secs(5), || db.backends() == 0).await);
    query(&manager).await.unwrap();
    manager.close(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn hooks_are_refused_where_they_cannot_apply() {
    // MongoDB's driver offers no per-connection callbacks.
    let mut mongo = ConnectionConfig::new("m", DatabaseType::Mongodb);
    mongo.host = Some("127.0.0.1".into());
    let manager = Manager::new(fast_config().with_connection(mongo.clone())).unwrap();
    let hooks = Hooks::new().after_connect(|_conn: HookConnection<'_>| Box::pin(async { Ok(()) }));
    let err = manager.set_hooks("m", hooks.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("lifecycle hooks"), "{err}");

    // Registered ahead of a MongoDB connection added later under the name: its connect fails
    // with that error rather than ignoring them.
    let manager = Manager::new(ManagerConfig::default()).unwrap();
    manager.set_hooks("m", hooks.clone()).unwrap();
    let err = manager.add(mongo).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

    // An adopted pool keeps its own callbacks.
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlx::SqlitePool::connect_lazy(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("a.db").display()
    ))
    .unwrap();
    let manager = Manager::new(ManagerConfig::default()).unwrap();
    manager.adopt("mine", pool).unwrap();
    let err = manager.set_hooks("mine", hooks).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    manager.close(Duration::from_secs(1)).await;
}
