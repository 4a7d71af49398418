//! `driver: tokio-postgres`: what is particular to the second PostgreSQL driver (the
//! cross-backend behaviour is the conformance suite's, `tests/conformance.rs`): its key's
//! validation, the layers it offers and refuses, the native pool and its prepared-statement
//! cache, libpq's `sslmode` meanings over rustls, the application's hooks, and a rotated
//! `password_file` on a private scram-sha-256 cluster.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dbmanager::config::EnvSource;
use dbmanager::{
    ConnectPolicy, ConnectionConfig, DefaultOrm, ErrorKind, HookConnection, Hooks, Manager,
    ManagerConfig, PostgresDriver, SslMode, TokioPgPool, Value,
};
use support::{PrivateCluster, TestDb, admin_sql, eventually, fast_config};

fn tokio_config(db: &TestDb, name: &str) -> ConnectionConfig {
    let mut c = db.config(name);
    c.driver = Some(PostgresDriver::TokioPostgres);
    c
}

async fn connected(c: ConnectionConfig) -> Manager {
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    manager
}

#[test]
fn the_driver_key_is_validated_with_its_path_and_shown() {
    let yaml = r#"
dbmanager:
  connections:
    a: {type: postgres, host: h, database: d, driver: diesel}
    b: {type: mysql, host: h, driver: tokio-postgres}
    c: {type: postgres, host: h, database: d, driver: tokio-postgres, default_orm: sea-orm}
    d: {type: postgres, host: h, database: d, driver: sqlx}
    e: {type: postgres, hosts: ["h:1", "h:2"], database: d, driver: tokio-postgres, pooler: session, replicas: [{host: r}]}
"#;
    let problems = ManagerConfig::from_yaml_str(yaml).unwrap_err();
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for want in [
        "connections.a.driver: `diesel` is not valid; expected one of sqlx, tokio-postgres",
        "connections.b.driver: not used by mysql (only by postgres)",
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "missing {want:?} in {texts:#?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("connections.c.default_orm:") && t.contains("sqlx")),
        "{texts:#?}"
    );
    assert!(
        !texts.iter().any(|t| t.starts_with("connections.d.")),
        "{texts:#?}"
    );
    // `pooler`, `replicas` and `hosts` are read by both drivers (tests/pooler.rs,
    // tests/replicas.rs, tests/failover.rs).
    for key in [
        "connections.e.pooler",
        "connections.e.replicas",
        "connections.e.hosts",
    ] {
        assert!(!texts.iter().any(|t| t.starts_with(key)), "{texts:#?}");
    }

    let shown = ManagerConfig::explain_yaml_str(
        "dbmanager:\n  connections:\n    p: {type: postgres, host: h, database: d, driver: tokio-postgres}\n",
        &EnvSource::empty(),
    )
    .unwrap();
    let driver = shown
        .settings
        .iter()
        .find(|s| s.key == "driver")
        .map(|s| s.value.clone());
    assert_eq!(
        driver,
        Some(dbmanager::reexports::serde_json::json!("tokio-postgres"))
    );
}

#[tokio::test]
async fn postgres_and_sea_orm_are_unsupported_with_a_reason() {
    let db = TestDb::create();
    let manager = connected(tokio_config(&db, "tp")).await;
    let conn = manager.get("tp").unwrap();
    let err = conn.postgres().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("`driver`"), "{err}");
    let err = conn.sea_orm().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("driver: sqlx"), "{err}");
    // The neutral handle works and reports the layer it runs on.
    let sql = conn.database().unwrap();
    assert_eq!(sql.layer(), DefaultOrm::Native);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_native_pool_hands_out_clients_with_a_statement_cache() {
    let db = TestDb::create();
    let manager = connected(tokio_config(&db, "tp")).await;
    let conn = manager.get("tp").unwrap();
    let pool: TokioPgPool = conn.tokio_postgres().unwrap();
    let same: TokioPgPool = conn.native::<TokioPgPool>().unwrap();
    assert_eq!(pool.status().max_size, same.status().max_size);
    let client = pool.get().await.unwrap();
    let cached = client.statement_cache.size();
    client.prepare_cached("SELECT $1::int8 + 1").await.unwrap();
    let again = client.prepare_cached("SELECT $1::int8 + 1").await.unwrap();
    assert_eq!(
        client.statement_cache.size(),
        cached + 1,
        "the second prepare is a cache hit"
    );
    let n: i64 = client.query_one(&again, &[&41i64]).await.unwrap().get(0);
    assert_eq!(n, 42);
    drop(client);
    manager.close(Duration::from_secs(5)).await;
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() == 0).await,
        "close closes the native layer's clients"
    );
}

/// Statements of the neutral handle are prepared once per connection: the server holds one
/// prepared statement for a statement run many times, and a second for another text.
#[tokio::test]
async fn the_neutral_handle_reuses_prepared_statements() {
    let db = TestDb::create();
    let mut c = tokio_config(&db, "tp");
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    let manager = connected(c).await;
    let sql = manager.database("tp").unwrap();
    const STATEMENT: &str = "SELECT $1::int8 + 1 AS n";
    for i in 0..5i64 {
        let row = sql.fetch_one(STATEMENT, &[Value::Int(i)]).await.unwrap();
        assert_eq!(row.get::<i64>("n"), Some(i + 1));
    }
    let count = |text: &'static str| {
        let sql = sql.clone();
        async move {
            sql.fetch_one(
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = $1",
                &[Value::Text(text.into())],
            )
            .await
            .unwrap()
            .get::<i64>("n")
        }
    };
    assert_eq!(count(STATEMENT).await, Some(1));
    sql.execute("SELECT 2", &[]).await.unwrap();
    sql.execute("SELECT 2", &[]).await.unwrap();
    assert_eq!(count("SELECT 2").await, Some(1));
    // The same text with other parameter types is another statement (NULL is left untyped).
    sql.fetch_one(STATEMENT, &[Value::Null]).await.unwrap();
    assert_eq!(count(STATEMENT).await, Some(2));
    manager.close(Duration::from_secs(5)).await;
}

/// The shared server has TLS on with a self-signed certificate: `prefer` and `require`
/// encrypt without verifying it, `verify-ca` and `verify-full` refuse it (a configuration
/// error, not retried), `disable` stays plain.
#[tokio::test]
async fn sslmodes_keep_their_libpq_meaning_over_rustls() {
    let db = TestDb::create();
    let tls_in_use = async |mode: SslMode| {
        let mut c = tokio_config(&db, "tls");
        c.sslmode = Some(mode);
        let manager = connected(c).await;
        let row = manager
            .database("tls")
            .unwrap()
            .fetch_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        manager.close(Duration::from_secs(5)).await;
        row.get::<bool>("ssl")
    };
    assert_eq!(tls_in_use(SslMode::Disable).await, Some(false));
    assert_eq!(tls_in_use(SslMode::Allow).await, Some(true));
    assert_eq!(tls_in_use(SslMode::Prefer).await, Some(true));
    assert_eq!(tls_in_use(SslMode::Require).await, Some(true));
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let mut c = tokio_config(&db, "tls");
        c.sslmode = Some(mode);
        let mut config = fast_config().with_connection(c);
        config.retry_attempts = 5;
        let manager = Manager::new(config).unwrap();
        let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
        let (_, err) = &report.failed[0];
        assert_eq!(err.kind(), ErrorKind::Configuration, "{mode:?}: {err}");
        assert!(err.to_string().contains("TLS"), "{mode:?}: {err}");
    }
}

/// The after-connect hook runs on every new connection; the after-release hook (when a released
/// client is next taken: deadpool has no release callback) and then the before-checkout hook on
/// reuse, through the neutral handle and the native pool alike; an after-release refusal closes
/// the client (its server session ends) and a new one is opened in its place.
#[tokio::test]
async fn lifecycle_hooks_run_on_tokio_postgres_connections() {
    let db = TestDb::create();
    let mut c = tokio_config(&db, "tp");
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let checkouts = Arc::new(AtomicU64::new(0));
    let releases = Arc::new(AtomicU64::new(0));
    let refuse_release = Arc::new(AtomicBool::new(false));
    // The order the reuse hooks ran in: `r` after-release, `c` before-checkout.
    let order = Arc::new(std::sync::Mutex::new(String::new()));
    let (seen, order_c) = (checkouts.clone(), order.clone());
    let (released, refuse, order_r) = (releases.clone(), refuse_release.clone(), order.clone());
    manager
        .set_hooks(
            "tp",
            Hooks::new()
                .after_connect(|mut conn: HookConnection<'_>| {
                    Box::pin(async move {
                        conn.execute("SET application_name = 'hooked'", &[]).await?;
                        Ok(())
                    })
                })
                .before_checkout(move |_conn: HookConnection<'_>| {
                    let (seen, order) = (seen.clone(), order_c.clone());
                    Box::pin(async move {
                        seen.fetch_add(1, Ordering::Relaxed);
                        order.lock().unwrap().push('c');
                        Ok(true)
                    })
                })
                .after_release(move |mut conn: HookConnection<'_>| {
                    let (released, refuse, order) =
                        (released.clone(), refuse.clone(), order_r.clone());
                    Box::pin(async move {
                        released.fetch_add(1, Ordering::Relaxed);
                        order.lock().unwrap().push('r');
                        // The hook can run SQL on the very client.
                        conn.execute("RESET ROLE", &[]).await?;
                        Ok(!refuse.load(Ordering::Relaxed))
                    })
                }),
        )
        .unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("tp").unwrap();
    for _ in 0..3 {
        let row = sql
            .fetch_one("SELECT current_setting('application_name') AS a", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<String>("a").as_deref(), Some("hooked"));
    }
    assert!(checkouts.load(Ordering::Relaxed) >= 3);
    assert!(releases.load(Ordering::Relaxed) >= 3);
    let ran = order.lock().unwrap().clone();
    assert!(
        ran.starts_with("rc") && !ran.contains("cc") && !ran.contains("rr"),
        "{ran}"
    );

    // The native pool goes through the same hooks.
    let pool = manager.get("tp").unwrap().tokio_postgres().unwrap();
    let first = {
        let client = pool.get().await.unwrap();
        backend_pid(&client).await
    };
    let before = releases.load(Ordering::Relaxed);
    let closed_by_hook = manager.get("tp").unwrap().stats().closed_by_hook;
    refuse_release.store(true, Ordering::Relaxed);
    let second = {
        let client = pool.get().await.unwrap();
        backend_pid(&client).await
    };
    refuse_release.store(false, Ordering::Relaxed);
    assert!(releases.load(Ordering::Relaxed) > before);
    assert_ne!(
        first, second,
        "the refused client was closed, a new one opened"
    );
    assert!(manager.get("tp").unwrap().stats().closed_by_hook > closed_by_hook);
    let alive = |pid: i32| {
        let count = support::admin_sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        );
        count == "1"
    };
    assert!(
        support::eventually(Duration::from_secs(5), || !alive(first)).await,
        "the refused client's session ended"
    );
    assert!(alive(second));
    manager.close(Duration::from_secs(5)).await;
}

/// The server process of a client's session.
async fn backend_pid(client: &dbmanager::reexports::tokio_postgres::Client) -> i32 {
    let row = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    row.get(0)
}

/// A private scram-sha-256 cluster: the role's password changes and the `password_file` is
/// rewritten while 16 tasks query; existing sessions keep working; then the role's sessions are
/// terminated and the pool's new connections log in with the new password. Only statements of
/// the killed sessions fail, each a transient error; nothing reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_password_file_is_read_by_each_new_connection() {
    let cluster = PrivateCluster::start();
    cluster.sql("CREATE ROLE tp_rot LOGIN PASSWORD 'Old-Tp-Pw-1'");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "Old-Tp-Pw-1\n").unwrap();
    let mut c = cluster.config("rot", "tp_rot", "unused", "postgres");
    c.driver = Some(PostgresDriver::TokioPostgres);
    c.password = None;
    c.password_file = Some(file.clone());
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(4);
    c.min_open_conns = Some(4);
    let manager = connected(c).await;
    let conn = manager.get("rot").unwrap();
    let sql = manager.database("rot").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (sql, stop, ok) = (sql.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match sql.fetch_one("SELECT 1 AS one", &[]).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                errors
            })
        })
        .collect();
    let succeed = async |more: u64| {
        let target = ok.load(Ordering::Relaxed) + more;
        assert!(
            support::eventually(Duration::from_secs(60), || ok.load(Ordering::Relaxed)
                >= target)
            .await
        );
    };
    succeed(300).await;
    cluster.sql("ALTER ROLE tp_rot PASSWORD 'New-Tp-Pw-2'");
    std::fs::write(&file, "New-Tp-Pw-2\n").unwrap();
    succeed(300).await;

    let opened_before = conn.stats().opened_total;
    let killed: usize = cluster
        .sql(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = 'tp_rot') t",
        )
        .parse()
        .unwrap();
    assert!(killed > 0);
    succeed(1000).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(errors.len() <= killed, "{killed} killed: {texts:#?}");
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }
    let stats = conn.stats();
    assert!(stats.opened_total > opened_before, "{stats:?}");
    assert_eq!((stats.reconnects_ok, stats.reconnects_failed), (0, 0));
    let shown = format!("{manager:?} {conn:?} {stats:?} {texts:?}");
    assert!(!shown.contains("Tp-Pw"), "{shown}");
    manager.close(Duration::from_secs(5)).await;
}

/// deadpool has no release callback: the neutral handle's releases keep `max_idle_conns`, and
/// the health check trims what the native layer returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_minimum_bounds_hold_without_a_release_callback() {
    let db = TestDb::create();
    let mut c = tokio_config(&db, "tp");
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(1);
    c.min_open_conns = Some(1);
    let manager = connected(c).await;
    let conn = manager.get("tp").unwrap();
    let sql = manager.database("tp").unwrap();
    let sleepers: Vec<_> = (0..4)
        .map(|_| {
            let sql = sql.clone();
            tokio::spawn(async move { sql.execute("SELECT pg_sleep(0.3)", &[]).await })
        })
        .collect();
    for s in sleepers {
        s.await.unwrap().unwrap();
    }
    // Releases racing each other may each see room for one more; the health check restores the
    // bound. Either way the three clients beyond it were closed as idle beyond the cap.
    conn.health_check().await.unwrap();
    let stats = conn.stats();
    assert_eq!((stats.open, stats.idle), (1, 1), "{stats:?}");
    assert_eq!(stats.closed_max_idle, 3, "{stats:?}");

    // The native layer's clients come back without the check; the health check trims them.
    let pool = conn.tokio_postgres().unwrap();
    let clients = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    drop(clients);
    assert_eq!(conn.stats().idle, 4);
    conn.health_check().await.unwrap();
    let stats = conn.stats();
    assert_eq!((stats.idle, stats.closed_max_idle), (1, 6), "{stats:?}");
    manager.close(Duration::from_secs(5)).await;
}

/// A statement abandoned by `query_timeout` leaves its client busy on the server: the client is
/// closed, not pooled, and the next statement runs on a fresh connection.
#[tokio::test]
async fn a_timed_out_statement_closes_its_client() {
    let db = TestDb::create();
    let mut c = tokio_config(&db, "tp");
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    c.query_timeout = Duration::from_millis(300);
    let manager = connected(c).await;
    let conn = manager.get("tp").unwrap();
    let sql = manager.database("tp").unwrap();
    let pid = |sql: dbmanager::Database| async move {
        sql.fetch_one("SELECT pg_backend_pid()::int8 AS pid", &[])
            .await
            .unwrap()
            .get::<i64>("pid")
    };
    let before = pid(sql.clone()).await;
    // The server-side bound (`statement_timeout`, the same 300 ms) lifted for this session, so
    // that only the client-side one can end the statement.
    sql.execute("SELECT set_config('statement_timeout', '60s', false)", &[])
        .await
        .unwrap();
    let broken = conn.stats().closed_broken;
    let err = sql.execute("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert!(matches!(err, dbmanager::Error::Timeout { .. }), "{err}");
    assert_eq!(conn.stats().closed_broken, broken + 1);
    let after = pid(sql.clone()).await;
    assert_ne!(before, after, "the next statement runs on another session");
    manager.close(Duration::from_secs(5)).await;
}

/// tokio-postgres displays only an error's kind ("db error", "error connecting to server");
/// the crate's error says what the server said, or why the connect failed, as on sqlx, and
/// leaves out the server's DETAIL (it quotes row values).
#[tokio::test]
async fn errors_say_what_the_server_said_without_row_values() {
    let db = TestDb::create();
    let manager = connected(tokio_config(&db, "tpg")).await;
    let handle = manager.database("tpg").unwrap();
    let err = handle
        .execute("SELECT * FROM no_such_table_at_all", &[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ERROR: relation \"no_such_table_at_all\" does not exist"),
        "{text}"
    );
    assert_eq!(err.kind(), ErrorKind::Query);

    let mut tx = handle.begin().await.unwrap();
    tx.execute("CREATE TEMP TABLE emails (email text PRIMARY KEY)", &[])
        .await
        .unwrap();
    tx.execute(
        "INSERT INTO emails VALUES ($1)",
        &["Planted-Row-Value".into()],
    )
    .await
    .unwrap();
    let err = tx
        .execute(
            "INSERT INTO emails VALUES ($1)",
            &["Planted-Row-Value".into()],
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("duplicate key value violates unique constraint"),
        "{text}"
    );
    assert!(!text.contains("Planted-Row-Value"), "{text}");
    drop(tx);
    manager.close(Duration::from_secs(5)).await;

    let mut c = tokio_config(&db, "down");
    c.port = Some(support::free_port());
    let down = Manager::new(fast_config().with_connection(c)).unwrap();
    let report = down.connect_with(ConnectPolicy::Partial).await.unwrap();
    let (_, err) = &report.failed[0];
    assert!(err.to_string().contains("Connection refused"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Transient);
}

/// A statement that converts between `timestamptz` and `timestamp`, `date` or text answers the
/// same on both drivers on a server whose default `TimeZone` is not UTC: sqlx's sessions run at
/// `TimeZone=UTC` and `DateStyle=ISO, MDY` (its startup packet), tokio-postgres's ran at the
/// server's defaults, so `$1::date` of an instant near midnight was another day. A dsn's
/// `options` still choose otherwise.
#[tokio::test]
async fn sessions_run_at_sqlx_time_zone_and_date_style() {
    use dbmanager::reexports::chrono::{DateTime, NaiveDate};

    let db = TestDb::create();
    support::admin_sql(
        "postgres",
        &format!(
            "ALTER DATABASE \"{}\" SET timezone TO 'America/New_York'; \
             ALTER DATABASE \"{}\" SET datestyle TO 'German, DMY'",
            db.name, db.name
        ),
    );
    let instant = DateTime::parse_from_rfc3339("2020-06-01T02:00:00Z").unwrap();
    let query = "SELECT current_setting('TimeZone') AS zone, $1::date AS day, \
                 $1::timestamptz::text AS shown, DATE '2020-06-01'::text AS date_text";
    let mut answers = Vec::new();
    for c in [db.config("pg"), tokio_config(&db, "pg")] {
        let driver = c.driver;
        let manager = connected(c).await;
        let row = manager
            .database("pg")
            .unwrap()
            .fetch_one(query, &[Value::TimestampTz(instant)])
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        assert_eq!(
            row.get::<NaiveDate>("day"),
            NaiveDate::from_ymd_opt(2020, 6, 1),
            "{driver:?}: {row:?}"
        );
        assert_eq!(
            row.get::<String>("date_text").as_deref(),
            Some("2020-06-01"),
            "{driver:?}"
        );
        answers.push(row);
        manager.close(Duration::from_secs(5)).await;
    }
    assert_eq!(
        answers[0], answers[1],
        "sqlx and tokio-postgres answer alike"
    );
    // A dsn's own `options` win over the defaults.
    let mut c = tokio_config(&db, "pg");
    c.host = None;
    c.port = None;
    c.user = None;
    c.database = None;
    c.sslmode = None;
    c.dsn = Some(
        format!(
            "postgres://{}@{}:{}/{}?sslmode=disable&options=-c%20TimeZone%3DAsia/Tokyo",
            support::pg_user(),
            support::pg_host(),
            support::pg_port(),
            db.name
        )
        .into(),
    );
    let manager = connected(c).await;
    let row = manager
        .database("pg")
        .unwrap()
        .fetch_one("SELECT current_setting('TimeZone') AS zone", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("zone").as_deref(), Some("Asia/Tokyo"));
    manager.close(Duration::from_secs(5)).await;
}

/// A statement the neutral handle abandons at `query_timeout` is cancelled on the server, alone
/// and in a transaction. Its client was closed, but a server notices a client that left only
/// when it next writes to it: with the server's own bound lifted (`statement_timeout = 0`, as an
/// application may set it) the statement used to run on to its end, a minute here.
#[tokio::test]
async fn a_statement_past_query_timeout_is_cancelled_on_the_server() {
    let db = TestDb::create();
    let mut c = tokio_config(&db, "main");
    c.query_timeout = Duration::from_millis(500);
    c.init_sql = vec!["SET statement_timeout = 0".into()];
    let manager = connected(c).await;
    let h = manager.get("main").unwrap().database().unwrap();
    let running = || {
        admin_sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                db.name
            ),
        )
    };

    let e = h.execute("SELECT pg_sleep(60)", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(
        support::eventually(Duration::from_secs(10), || running() == "0").await,
        "the abandoned statement still runs on the server"
    );

    let mut tx = h.begin().await.unwrap();
    tx.execute("CREATE TABLE t (a int8)", &[]).await.unwrap();
    let e = tx.fetch_all("SELECT pg_sleep(60)", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    drop(tx);
    assert!(
        eventually(Duration::from_secs(10), || running() == "0").await,
        "the abandoned statement of a transaction still runs on the server"
    );
    // Nothing of the transaction stayed, and the pool serves on.
    let row = h
        .fetch_one("SELECT to_regclass('t') IS NULL AS gone", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<bool>("gone"), Some(true));

    // Ended by the caller rather than dropped: the rollback does not wait behind the abandoned
    // statement (it used to queue there, for the minute), and a commit says it did not commit.
    for commit in [false, true] {
        let mut tx = h.begin().await.unwrap();
        tx.execute("CREATE TABLE t (a int8)", &[]).await.unwrap();
        let e = tx.fetch_all("SELECT pg_sleep(60)", &[]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
        let end = async {
            if commit {
                tx.commit().await
            } else {
                tx.rollback().await
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(30), end)
            .await
            .expect("the transaction's end does not wait for the abandoned statement");
        if commit {
            let e = ended.unwrap_err();
            assert!(e.to_string().contains("not committed"), "{e}");
        } else {
            ended.unwrap();
        }
        assert!(
            eventually(Duration::from_secs(10), || running() == "0").await,
            "the abandoned statement still runs on the server (commit: {commit})"
        );
        let row = h
            .fetch_one("SELECT to_regclass('t') IS NULL AS gone", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<bool>("gone"), Some(true), "commit: {commit}");
    }
    manager.close(Duration::from_secs(5)).await;
}

/// `EXECUTE` or `DEALLOCATE` of a name the application never prepared fails with the SQLSTATE
/// of a statement the driver lost (26000); it was taken for one, and the client closed (and a
/// second one, after the statement ran again there). It is the application's `Query` error,
/// and the client stays pooled.
#[tokio::test]
async fn executing_an_unknown_prepared_statement_is_the_callers_error_and_keeps_the_client() {
    let db = TestDb::create();
    let manager = connected(tokio_config(&db, "main")).await;
    let connection = manager.get("main").unwrap();
    let h = connection.database().unwrap();
    for sql in ["EXECUTE never_prepared", "DEALLOCATE never_prepared"] {
        let e = h.execute(sql, &[]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Query, "{sql}: {e}");
        assert!(e.to_string().contains("never_prepared"), "{sql}: {e}");
    }
    assert_eq!(connection.stats().closed_broken, 0);
    manager.close(Duration::from_secs(5)).await;
}

/// After `DISCARD ALL` on a client, tokio-postgres's own type-lookup statement is gone too and
/// cannot be reset: a statement whose result has a type the client has not looked up yet
/// fails again once prepared again, and runs on another client (this one closed) instead of
/// failing with "prepared statement ... does not exist" on this client for good.
#[tokio::test]
async fn a_type_lookup_after_discard_all_runs_on_another_client() {
    let db = TestDb::create();
    admin_sql(
        &db.name,
        "CREATE TYPE mood AS ENUM ('ok'); CREATE TYPE hue AS ENUM ('red')",
    );
    let mut c = tokio_config(&db, "main");
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    let manager = connected(c).await;
    let connection = manager.get("main").unwrap();
    let h = connection.database().unwrap();
    // The neutral handle does not decode enums: the error after the lookup says so.
    let unsupported = |sql: &'static str| {
        let h = h.clone();
        async move {
            let e = h.fetch_one(sql, &[]).await.unwrap_err();
            assert!(e.to_string().contains("does not decode"), "{sql}: {e}");
        }
    };
    unsupported("SELECT 'ok'::mood AS v").await;
    h.execute("DISCARD ALL", &[]).await.unwrap();
    unsupported("SELECT 'red'::hue AS v").await;
    let row = h
        .fetch_one("SELECT 'ok'::mood::text AS v", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("v").as_deref(), Some("ok"));
    assert_eq!(connection.stats().closed_broken, 1);
    manager.close(Duration::from_secs(5)).await;
}
