//! Changing a running manager's connections on the machine's PostgreSQL and SQLite: add,
//! remove, replace under load with handles that follow the swap, and reloading a whole config.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use dbmanager::{ConnectPolicy, ConnectionConfig, ErrorKind, Manager, PostgresDriver, Status};
use support::{TestDb, fast_config};

const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn add_and_remove_at_runtime_with_defined_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create();
    let manager = Manager::new(
        fast_config()
            .with_connection(ConnectionConfig::sqlite("cache", dir.path().join("c.db")))
            .with_default("cache"),
    )
    .unwrap();
    manager.connect().await.unwrap();

    manager.add(db.config("pg")).await.unwrap();
    assert_eq!(manager.names(), ["cache", "pg"]);
    assert_eq!(manager.config().connections.len(), 2);
    let pg = manager.database("pg").unwrap();
    let row = pg.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(row.get::<i64>("one"), Some(1));
    assert!(manager.metrics_text().contains("connection=\"pg\""));

    // A second add under the same name, and an invalid one, change nothing.
    let err = manager.add(db.config("pg")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    let mut bad = ConnectionConfig::sqlite("bad", dir.path().join("b.db"));
    bad.max_open_conns = Some(0);
    bad.host = Some("h".into());
    let err = manager.add(bad).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("connections.bad.max_open_conns") && text.contains("connections.bad.host"),
        "every problem at once: {text}"
    );
    // One that cannot connect is not added.
    let mut down = db.config("down");
    down.port = Some(support::free_port());
    assert_eq!(
        manager.add(down).await.unwrap_err().kind(),
        ErrorKind::Transient
    );
    assert_eq!(manager.names(), ["cache", "pg"]);

    // Removing a connection in use: the checkout in flight finishes, then handles are Closed.
    let pool = manager.postgres("pg").unwrap();
    let held = pool.acquire().await.unwrap();
    let remover = tokio::spawn({
        let m = manager.clone();
        async move { m.remove("pg", Duration::from_millis(500)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        manager.get("pg").unwrap_err().kind(),
        ErrorKind::NotFound,
        "lookups fail at once"
    );
    drop(held);
    remover.await.unwrap().unwrap();
    let err = pg.fetch_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    // The manager is still open: the message must not say it is closed.
    let text = err.to_string();
    assert!(
        !text.contains("manager is closed") && text.contains("removed"),
        "a removed connection's handle says why it is closed: {text}"
    );
    assert!(!manager.metrics_text().contains("connection=\"pg\""));
    assert!(!manager.stats().connections.contains_key("pg"));
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() == 0).await,
        "the removed pool's server sessions are gone"
    );

    // Removing the default leaves none.
    manager.remove("cache", DEADLINE).await.unwrap();
    assert_eq!(
        manager.default_connection().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        manager.remove("cache", DEADLINE).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    manager
        .add(ConnectionConfig::sqlite("kept", dir.path().join("k.db")))
        .await
        .unwrap();
    manager.close(DEADLINE).await;
    let err = manager.add(db.config("late")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.to_string().contains("the manager was closed"), "{err}");
    // Removing from a closed manager is refused the same way (it returned Ok, as if it had
    // drained something), and what close left is unchanged.
    let err = manager.remove("kept", DEADLINE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert_eq!(manager.names(), ["kept"]);
}

/// 64 tasks query through handles taken before the swap while the connection is replaced
/// several times: no query fails, and the handles run on the new pool afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_under_load_fails_nothing_and_handles_follow() {
    let db = TestDb::create();
    let mut first = db.config("pg");
    first.application_name = Some("gen-0".into());
    let manager = Manager::new(fast_config().with_connection(first)).unwrap();
    manager.connect().await.unwrap();
    let handle = manager.database("pg").unwrap();
    let conn = manager.get("pg").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..64)
        .map(|i| {
            let (handle, manager) = (handle.clone(), manager.clone());
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    // Half hold the handle taken before; half look it up each time.
                    let outcome = if i % 2 == 0 {
                        handle.fetch_one("SELECT 1", &[]).await
                    } else {
                        match manager.database("pg") {
                            Ok(db) => db.fetch_one("SELECT 1", &[]).await,
                            Err(e) => Err(e),
                        }
                    };
                    match outcome {
                        Ok(_) => {
                            ok.fetch_add(1, Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for generation in 1..=3 {
        let mut next = db.config("pg");
        next.application_name = Some(format!("gen-{generation}"));
        next.max_open_conns = Some(4 + generation);
        manager.replace(next, DEADLINE).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Relaxed) > 100);

    let row = handle
        .fetch_one("SELECT current_setting('application_name') AS app", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("app").as_deref(), Some("gen-3"));
    assert_eq!(
        conn.pool_settings().max_open,
        7,
        "the old Connection handle follows"
    );
    let stats = manager.stats();
    assert_eq!(stats.connections["pg"].max_open, 7);
    assert!(
        stats.connections["pg"].opened_total >= 4,
        "stats keep counting"
    );
    // A statement that lost the race with a swap and ran again on the new pool did not fail:
    // the query stats (and the metrics) count it once, as a success.
    let queries = &stats.connections["pg"].queries;
    let failed: u64 = queries.iter().flat_map(|q| &q.errors).map(|(_, n)| n).sum();
    let succeeded: u64 = queries.iter().map(|q| q.ok).sum();
    assert_eq!(failed, 0, "{queries:?}");
    assert_eq!(
        succeeded,
        ok.load(Relaxed) + 1,
        "the workers' and the one above: {queries:?}"
    );
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() <= 7).await,
        "old pools were drained and closed"
    );

    // A replacement that cannot connect changes nothing: not the pool, not the connection's
    // health (it was marked unavailable, so readiness and the status gauge said down while the
    // old pool served), not its circuit breaker (a threshold of 1 from the failed config
    // opened it, refusing every statement).
    let mut broken = db.config("pg");
    broken.port = Some(support::free_port());
    broken.circuit_breaker_failures = Some(1);
    assert_eq!(
        manager.replace(broken, DEADLINE).await.unwrap_err().kind(),
        ErrorKind::Transient
    );
    assert_eq!(conn.health().status, Status::Healthy);
    assert_eq!(manager.stats().healthy, 1);
    assert!(
        manager
            .metrics_text()
            .contains("dbmanager_connection_status{connection=\"pg\",type=\"postgres\"} 1")
    );
    handle.fetch_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        manager.config().connections["pg"].port,
        db.config("pg").port
    );
    manager.close(DEADLINE).await;
}

#[tokio::test]
async fn reload_diffs_by_name_and_leaves_the_unchanged_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create();
    let lite = |name: &str| ConnectionConfig::sqlite(name, dir.path().join(format!("{name}.db")));
    let manager = Manager::new(
        fast_config()
            .with_connection(db.config("keep"))
            .with_connection(lite("change"))
            .with_connection(lite("drop"))
            .with_default("drop"),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let keep_pool = manager.postgres("keep").unwrap();
    let pid: i32 = dbmanager::reexports::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&keep_pool)
        .await
        .unwrap();
    let opened_before = manager.get("keep").unwrap().stats().opened_total;

    // An invalid config changes nothing and lists every problem.
    let mut invalid = fast_config().with_connection(db.config("keep"));
    let mut bad = lite("new");
    bad.max_open_conns = Some(0);
    invalid = invalid.with_connection(bad).with_default("nope");
    let err = manager.reload(invalid, DEADLINE).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("default_connection") && text.contains("connections.new.max_open_conns"),
        "{text}"
    );
    assert_eq!(manager.names(), ["change", "drop", "keep"]);

    let mut changed = lite("change");
    changed.max_open_conns = Some(2);
    let next = fast_config()
        .with_connection(db.config("keep"))
        .with_connection(changed)
        .with_connection(lite("added"))
        .with_default("keep");
    let report = manager.reload(next, DEADLINE).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.added, ["added"]);
    assert_eq!(report.removed, ["drop"]);
    assert_eq!(report.replaced, ["change"]);
    assert_eq!(report.unchanged, ["keep"]);
    assert_eq!(manager.names(), ["added", "change", "keep"]);
    assert_eq!(manager.default_connection().unwrap().name(), "keep");
    assert_eq!(manager.get("change").unwrap().pool_settings().max_open, 2);

    // The unchanged connection was not touched: same pool, same server session, no connect.
    let same: i32 = dbmanager::reexports::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&manager.postgres("keep").unwrap())
        .await
        .unwrap();
    assert_eq!(same, pid);
    assert_eq!(
        manager.get("keep").unwrap().stats().opened_total,
        opened_before
    );

    // Reloading the same config again changes nothing.
    let again = manager
        .reload((*manager.config()).clone(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["added", "change", "keep"]);
    assert!(again.added.is_empty() && again.replaced.is_empty() && again.removed.is_empty());

    // `set_default` is part of the configuration now: a reload built from `config()` (to
    // change one setting, say) keeps it instead of switching back to the previous default.
    manager.set_default("added").unwrap();
    assert_eq!(
        manager.config().default_connection.as_deref(),
        Some("added")
    );
    manager
        .reload((*manager.config()).clone(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(manager.default_connection().unwrap().name(), "added");
    manager.close(DEADLINE).await;
}

/// Every setting counts as a change on reload, including those the connection's `Debug` once
/// left out (the leak threshold and the circuit breaker were ignored, so a reload that only
/// changed them kept the old pool).
#[tokio::test]
async fn reload_sees_a_change_of_any_single_setting() {
    let dir = tempfile::tempdir().unwrap();
    let lite = || ConnectionConfig::sqlite("lite", dir.path().join("lite.db"));
    let manager = Manager::new(fast_config().with_connection(lite())).unwrap();
    manager.connect().await.unwrap();

    let mut leak = lite();
    leak.leak_detection_threshold = Some(Duration::from_secs(7));
    let mut breaker = lite();
    breaker.circuit_breaker_failures = Some(3);
    for (what, next) in [
        ("leak_detection_threshold", leak),
        ("circuit_breaker", breaker),
    ] {
        let report = manager
            .reload(fast_config().with_connection(next), DEADLINE)
            .await
            .unwrap();
        assert_eq!(report.replaced, ["lite"], "{what}: {report:?}");
    }
    manager.close(DEADLINE).await;
}

/// `reload_with(.., ConnectPolicy::Partial)` (what `dbmanager serve` reloads with) treats a new
/// connection whose server is down as startup does: it is registered, unavailable (so
/// readiness and metrics show it), and the health loop connects it once the server answers. A
/// plain `reload` still leaves it out.
#[tokio::test]
async fn a_partial_reload_registers_an_added_connection_that_is_down_and_connects_it_later() {
    let db = TestDb::create();
    let mut config = fast_config().with_connection(ConnectionConfig::sqlite("lite", ":memory:"));
    config.health_check_interval = Duration::from_millis(100);
    let manager = Manager::new(config.clone()).unwrap();
    manager.connect().await.unwrap();
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    proxy.set(support::proxy::Fault::Refuse);
    let mut late = db.config("late");
    late.port = Some(proxy.port);
    let next = config.clone().with_connection(late);

    let report = manager.reload(next.clone(), DEADLINE).await.unwrap();
    assert!(report.added.is_empty(), "{report:?}");
    assert_eq!(manager.names(), ["lite"]);

    let report = manager
        .reload_with(next, DEADLINE, ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(report.added, ["late"], "{report:?}");
    assert_eq!(
        report.failed.len(),
        1,
        "its connect error is reported: {report:?}"
    );
    assert_eq!(report.failed[0].0, "late");
    assert_eq!(manager.names(), ["late", "lite"]);
    let late = manager.get("late").unwrap();
    assert_eq!(late.health().status, Status::Unavailable);
    assert!(manager.metrics_text().contains("connection=\"late\""));

    proxy.set(support::proxy::Fault::Forward);
    assert!(
        support::eventually(Duration::from_secs(10), || late.health().status
            == Status::Healthy)
        .await,
        "the health loop connects it once the server answers"
    );
    let row = manager
        .database("late")
        .unwrap()
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<i64>("one"), Some(1));
    manager.close(DEADLINE).await;
}

/// A reload that changes only `critical` or `tags` applies them in place: the pool is kept (not
/// even reconnected), and a connection that is down takes them too. Marking a down connection
/// `critical: false` is how an operator makes a service ready again; it used to need a new
/// pool, which could not connect, so the change failed and readiness stayed down.
#[tokio::test]
async fn a_reload_changing_only_critical_or_tags_applies_them_without_a_new_pool() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    proxy.set(support::proxy::Fault::Refuse);
    let lite = ConnectionConfig::sqlite("lite", dir.path().join("lite.db"));
    let mut down = db.config("down");
    down.port = Some(proxy.port);
    let config = fast_config()
        .with_connection(lite.clone())
        .with_connection(down.clone());
    let manager = Manager::new(config).unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert!(!manager.get("down").unwrap().status().is_up());
    let native = manager.get("lite").unwrap().sqlite().unwrap();

    let mut lite_tagged = lite.clone();
    lite_tagged.tags.insert("tier".into(), "cache".into());
    lite_tagged.critical = false;
    let mut down_optional = down.clone();
    down_optional.critical = false;
    down_optional.tags.insert("tier".into(), "reports".into());
    let next = fast_config()
        .with_connection(lite_tagged)
        .with_connection(down_optional);
    let report = manager
        .reload_with(next.clone(), DEADLINE, ConnectPolicy::Partial)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.replaced.is_empty(), "no new pool: {report:?}");
    assert_eq!(report.updated, ["down", "lite"], "{report:?}");

    let down_now = manager.get("down").unwrap();
    assert!(!down_now.is_critical() && !down_now.config().critical);
    assert_eq!(
        down_now.tags().get("tier").map(String::as_str),
        Some("reports")
    );
    assert!(!manager.config().connections["down"].critical);
    let lite_now = manager.get("lite").unwrap();
    assert!(!lite_now.is_critical());
    assert_eq!(
        manager
            .connections_tagged("tier", "cache")
            .iter()
            .map(|c| c.name().to_owned())
            .collect::<Vec<_>>(),
        ["lite"]
    );
    // The very same pool: a native handle taken before still works.
    let one: i64 = dbmanager::reexports::sqlx::query_scalar("SELECT 1")
        .fetch_one(&native)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(manager.metrics_text().contains("connection=\"down\""));

    // The same file again is no change at all.
    let again = manager
        .reload_with(next, DEADLINE, ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["down", "lite"], "{again:?}");
    assert!(again.updated.is_empty(), "{again:?}");

    // A real change still opens a new pool, with the labels it brings.
    let mut lite_bigger = lite.clone();
    lite_bigger.max_open_conns = Some(3);
    let report = manager
        .reload_with(
            fast_config()
                .with_connection(lite_bigger)
                .with_connection(down),
            DEADLINE,
            ConnectPolicy::Partial,
        )
        .await
        .unwrap();
    assert_eq!(report.replaced, ["lite"], "{report:?}");
    assert_eq!(report.updated, ["down"], "{report:?}");
    assert!(manager.get("lite").unwrap().is_critical());
    assert!(manager.get("lite").unwrap().tags().is_empty());
    assert!(manager.get("down").unwrap().is_critical());
    manager.close(DEADLINE).await;
}

/// A reload that changes only the manager's retry settings (`retry_attempts`, `retry_delay`,
/// `retry_max_delay`) applies them in place: the pools are kept (an in-memory SQLite keeps its
/// data), and a connection that is down takes the new policy for its next connects. It used to
/// replace every pool, which lost the in-memory data, and failed for the connection that was
/// down, which so kept the old policy.
#[tokio::test]
async fn a_reload_changing_only_the_retry_settings_keeps_the_pools() {
    let db = TestDb::create();
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    proxy.set(support::proxy::Fault::Refuse);
    let mem = ConnectionConfig::sqlite("mem", ":memory:");
    let mut down = db.config("down");
    down.port = Some(proxy.port);
    let config = fast_config()
        .with_connection(mem.clone())
        .with_connection(down.clone());
    let manager = Manager::new(config.clone()).unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    let kept = manager.database("mem").unwrap();
    kept.execute("CREATE TABLE kept (v INTEGER)", &[])
        .await
        .unwrap();
    kept.execute("INSERT INTO kept VALUES (7)", &[])
        .await
        .unwrap();
    let failed_attempts = |manager: &Manager| -> u64 {
        manager
            .get("down")
            .unwrap()
            .stats()
            .connect_errors
            .iter()
            .map(|(_, n)| n)
            .sum()
    };

    let mut next = config.clone();
    next.retry_attempts = 3;
    next.retry_delay = Duration::from_millis(10);
    next.retry_max_delay = Duration::from_millis(20);
    let report = manager
        .reload_with(next.clone(), DEADLINE, ConnectPolicy::Partial)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.replaced.is_empty(), "no new pool: {report:?}");
    assert_eq!(report.updated, ["down", "mem"], "{report:?}");
    let row = manager
        .database("mem")
        .unwrap()
        .fetch_one("SELECT v FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<i64>("v"), Some(7), "the in-memory data is kept");

    // The connection that is down connects with the new policy: three attempts, not one.
    let before = failed_attempts(&manager);
    assert!(manager.reconnect("down").await.is_err());
    assert_eq!(failed_attempts(&manager) - before, 3);
    assert_eq!(manager.config().retry_attempts, 3);

    // The same settings again are no change at all.
    let again = manager
        .reload_with(next, DEADLINE, ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["down", "mem"], "{again:?}");
    manager.close(DEADLINE).await;
}

/// A partial reload (what `dbmanager serve` does) registers an added connection before it
/// connects, as startup does: while its server hangs, readiness and stats show it
/// `unavailable` with no attempt finished, instead of leaving it out (a critical connection
/// missing from readiness made it look ready) until every retry had timed out.
#[tokio::test]
async fn a_partial_reload_shows_an_added_connection_while_it_connects() {
    let db = TestDb::create();
    let config = fast_config().with_connection(ConnectionConfig::sqlite("lite", ":memory:"));
    let manager = Manager::new(config.clone()).unwrap();
    manager.connect().await.unwrap();
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    proxy.set(support::proxy::Fault::Blackhole);
    let mut slow = db.config("slow");
    slow.port = Some(proxy.port);
    slow.connect_timeout = Duration::from_secs(10);
    let next = config.with_connection(slow);

    let reload = tokio::spawn({
        let manager = manager.clone();
        async move {
            manager
                .reload_with(next, DEADLINE, ConnectPolicy::Partial)
                .await
        }
    });
    assert!(
        support::eventually(Duration::from_secs(10), || manager.get("slow").is_ok()).await,
        "the added connection is registered while it connects"
    );
    let slow = manager.get("slow").unwrap();
    assert_eq!(slow.status(), Status::Unavailable);
    assert!(slow.health().last_check.is_none(), "{:?}", slow.health());
    assert!(manager.stats().connections.contains_key("slow"));

    // Its one attempt times out: it stays, unavailable, and connects once the server answers.
    let report = tokio::time::timeout(Duration::from_secs(60), reload)
        .await
        .expect("the reload ends at the connect timeout")
        .unwrap()
        .unwrap();
    assert_eq!(report.added, ["slow"], "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(manager.names(), ["lite", "slow"]);
    proxy.set(support::proxy::Fault::Forward);
    manager.reconnect("slow").await.unwrap();
    assert!(slow.status().is_up(), "{:?}", slow.health());
    manager.close(DEADLINE).await;
}

/// Server sessions of `db` whose `application_name` is `app`.
fn sessions(db: &TestDb, app: &str) -> i64 {
    support::admin_sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = '{app}'",
            db.name
        ),
    )
    .parse()
    .unwrap_or(-1)
}

/// A replace or remove whose drain runs out its deadline (a transaction still open on the old
/// pool) closes the old pool's idle connections anyway, and the transaction's when it ends;
/// a deadline of zero too. sqlx closed idle connections only once every checkout was back, so
/// they, and their server sessions, stayed open for as long as a handle taken before held the
/// pool.
async fn a_drain_past_its_deadline_still_closes_the_idle_sessions(driver: PostgresDriver) {
    let db = TestDb::create();
    for drain in [Duration::from_millis(200), Duration::ZERO] {
        let mut config = db.config("pg");
        config.driver = Some(driver);
        config.application_name = Some("first".into());
        let manager = Manager::new(fast_config().with_connection(config.clone())).unwrap();
        manager.connect().await.unwrap();
        let handle = manager.database("pg").unwrap();
        for (step, app) in [("replace", "first"), ("remove", "second")] {
            let mut tx = handle.begin().await.unwrap();
            tx.execute("SELECT 1", &[]).await.unwrap();
            // A second connection, idle in the pool once this statement is done with it.
            handle.execute("SELECT 1", &[]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                sessions(&db, app),
                2,
                "{step}: one in the transaction, one idle"
            );
            if step == "replace" {
                config.application_name = Some("second".into());
                manager.replace(config.clone(), drain).await.unwrap();
            } else {
                assert_eq!(manager.remove("pg", drain).await.unwrap(), 1);
            }
            assert!(
                support::eventually(Duration::from_secs(3), || sessions(&db, app) == 1).await,
                "{step} ({drain:?}): only the transaction's session is left after the \
                 deadline, not {}",
                sessions(&db, app)
            );
            drop(tx);
            assert!(
                support::eventually(Duration::from_secs(3), || sessions(&db, app) == 0).await,
                "{step} ({drain:?}): the old pool's sessions are all gone, {} left",
                sessions(&db, app)
            );
        }
        drop(handle);
        manager.close(DEADLINE).await;
    }
}
on_both_drivers!(a_drain_past_its_deadline_still_closes_the_idle_sessions);

/// A replace still opening its new pool when the manager is closed, or the connection removed,
/// fails with `Closed` and closes that pool: it used to swap it in behind the close (an open
/// pool and its sessions in a closed manager) and, after a removal, to put the connection back
/// into `Manager::config()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_racing_a_close_or_a_removal_leaves_nothing_open() {
    let db = TestDb::create();
    // The new pool opens through a slow proxy, so the close or removal lands mid-way.
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    proxy.set(support::proxy::Fault::Latency(Duration::from_millis(150)));
    for step in ["close", "remove"] {
        let manager = Manager::new(fast_config().with_connection(db.config("pg"))).unwrap();
        manager.connect().await.unwrap();
        let conn = manager.get("pg").unwrap();
        let mut slow = db.config("pg");
        slow.port = Some(proxy.port);
        slow.application_name = Some("replacement".into());
        let replacer = tokio::spawn({
            let manager = manager.clone();
            async move { manager.replace(slow, DEADLINE).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if step == "close" {
            manager.close(DEADLINE).await;
        } else {
            manager.remove("pg", DEADLINE).await.unwrap();
        }
        let err = replacer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{step}: {err}");
        assert!(!conn.is_connected(), "{step}: no pool is left open");
        assert_eq!(
            conn.config().application_name,
            None,
            "{step}: the failed replace changed nothing"
        );
        assert!(
            support::eventually(Duration::from_secs(3), || db.backends() == 0).await,
            "{step}: {} server sessions left",
            db.backends()
        );
        if step == "remove" {
            assert!(
                !manager.config().connections.contains_key("pg"),
                "a removed connection stays out of the configuration"
            );
        } else {
            // Reopened, it runs with its configuration before the failed replace.
            manager.connect().await.unwrap();
            let row = manager
                .database("pg")
                .unwrap()
                .fetch_one("SELECT current_setting('application_name') AS app", &[])
                .await
                .unwrap();
            assert_ne!(row.get::<String>("app").as_deref(), Some("replacement"));
        }
        manager.close(DEADLINE).await;
    }
}

/// A reload whose new default is an addition that could not connect leaves no default, and
/// `Manager::config()` says so: it used to keep naming the missing connection, so a reload
/// built from `config()` was refused as invalid.
#[tokio::test]
async fn a_reload_whose_default_could_not_be_added_keeps_a_valid_configuration() {
    let db = TestDb::create();
    let manager = Manager::new(
        fast_config()
            .with_connection(db.config("pg"))
            .with_default("pg"),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let mut down = db.config("down");
    down.port = Some(support::free_port());
    let next = fast_config()
        .with_connection(db.config("pg"))
        .with_connection(down)
        .with_default("down");
    let report = manager.reload(next, DEADLINE).await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(
        manager.default_connection().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(manager.config().default_connection, None);
    let again = manager
        .reload((*manager.config()).clone(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["pg"]);
    manager.close(DEADLINE).await;
}

/// Handles follow a replace to another backend or driver: PostgreSQL on sqlx, on
/// tokio-postgres, SQLite, MySQL and back, while 8 tasks run statements and transactions
/// through a handle taken before. Nothing fails, each old pool's server sessions end (a
/// connection whose return to the old pool raced its close stayed open in it), and the
/// handle's `kind()` names the backend its next statement runs on (it named the one it was
/// taken on until a statement of its own re-bound it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_across_backends_under_load_fails_nothing() {
    let db = TestDb::create();
    let my = support::mysql::MysqlTestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::new(fast_config().with_connection(db.config("x"))).unwrap();
    manager.connect().await.unwrap();
    let handle = manager.database("x").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let handle = handle.clone();
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let outcome = if i % 2 == 0 {
                        handle
                            .fetch_one("SELECT $1 AS v", &[7i64.into()])
                            .await
                            .map(|row| row.get::<i64>("v") == Some(7))
                    } else {
                        match handle.begin().await {
                            Ok(mut tx) => match tx.execute("SELECT 1", &[]).await {
                                Ok(_) => tx.commit().await.map(|()| true),
                                Err(e) => Err(e),
                            },
                            Err(e) => Err(e),
                        }
                    };
                    match outcome {
                        Ok(true) => {
                            ok.fetch_add(1, Relaxed);
                        }
                        Ok(false) => failures.lock().unwrap().push("wrong value".to_owned()),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    let mut tokio_pg = db.config("x");
    tokio_pg.driver = Some(PostgresDriver::TokioPostgres);
    let steps = [
        (tokio_pg, dbmanager::DatabaseType::Postgres),
        (
            ConnectionConfig::sqlite("x", dir.path().join("x.db")),
            dbmanager::DatabaseType::Sqlite,
        ),
        (my.config("x"), dbmanager::DatabaseType::Mysql),
        (db.config("x"), dbmanager::DatabaseType::Postgres),
    ];
    for (next, kind) in steps {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = ok.load(Relaxed);
        // A deadline of zero: statements in flight on the old pool still finish there.
        manager.replace(next, Duration::ZERO).await.unwrap();
        assert_eq!(handle.kind(), kind, "the handle names its new backend");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            ok.load(Relaxed) > before,
            "statements run on the {kind} pool"
        );
        if kind == dbmanager::DatabaseType::Sqlite {
            assert!(
                support::eventually(Duration::from_secs(3), || db.backends() == 0).await,
                "the PostgreSQL pools are closed: {} sessions left",
                db.backends()
            );
        }
    }
    stop.store(true, Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        support::eventually(Duration::from_secs(3), || my.backends() == 0).await,
        "the MySQL pool is closed: {} sessions left",
        my.backends()
    );
    manager.close(DEADLINE).await;
    assert!(support::eventually(Duration::from_secs(3), || db.backends() == 0).await);
}

/// Reads through a handle taken before follow a replace of a connection with read replicas:
/// a read on its way to an old replica when the replicas were rebuilt runs again on the new
/// ones. It used to fail (`not connected`, a transient error) several times per replace under
/// load, although the README promises nothing fails because of a swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_connection_with_replicas_fails_no_read() {
    let db = TestDb::create();
    let config = |generation: usize| {
        let mut c = db.config("pg");
        c.application_name = Some(format!("gen-{generation}"));
        // The machine's server again, as a replica: reads go to its own pool.
        c.replicas
            .push(c.replica(support::pg_host(), Some(support::pg_port())));
        c
    };
    let manager = Manager::new(fast_config().with_connection(config(0))).unwrap();
    manager.connect().await.unwrap();
    let handle = manager.database("pg").unwrap();
    let reader = manager.get("pg").unwrap().reader().unwrap();
    assert_ne!(reader.name(), "pg", "a replica");
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let handle = handle.clone();
            let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    match handle.fetch_one("SELECT 1 AS one", &[]).await {
                        Ok(_) => {
                            reads.fetch_add(1, Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for generation in 1..=10 {
        manager.replace(config(generation), DEADLINE).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} reads failed: {:?}",
        failures.len(),
        reads.load(Relaxed) + failures.len() as u64,
        &failures[..failures.len().min(3)]
    );
    let routing = manager.stats().connections["pg"].routing.clone().unwrap();
    assert!(routing.to_replica > 0, "{routing:?}");
    // A replica's connection taken before (`reader()`) is the old replica's, and ends with
    // `Closed` as native pools taken before do (it said `not connected`, and `reconnect()`
    // reopened a pool nothing would close).
    let old = reader.database().unwrap_err();
    assert_eq!(old.kind(), ErrorKind::Closed, "{old}");
    assert_eq!(
        reader.reconnect().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    manager.close(DEADLINE).await;
    assert!(support::eventually(Duration::from_secs(3), || db.backends() == 0).await);
}

/// Removing a connection with read replicas takes its replicas out of service too: a read
/// through a handle taken before is `Closed`, like a write (it was a transient `not
/// connected`, which a caller retries forever), and a replica reached through `members()` is
/// not reopened (its `reconnect()` opened a pool for a connection that no longer exists).
#[tokio::test]
async fn removing_a_connection_with_replicas_retires_its_replicas() {
    let db = TestDb::create();
    let mut config = db.config("pg");
    config
        .replicas
        .push(config.replica(support::pg_host(), Some(support::pg_port())));
    let manager = Manager::new(fast_config().with_connection(config)).unwrap();
    manager.connect().await.unwrap();
    let handle = manager.database("pg").unwrap();
    let conn = manager.get("pg").unwrap();
    handle.fetch_one("SELECT 1", &[]).await.unwrap();
    assert!(
        manager.stats().connections["pg"]
            .routing
            .clone()
            .unwrap()
            .to_replica
            > 0
    );

    manager.remove("pg", DEADLINE).await.unwrap();
    let read = handle.fetch_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(read.kind(), ErrorKind::Closed, "{read}");
    let write = handle.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(write.kind(), ErrorKind::Closed, "{write}");
    let members = conn.members();
    assert_eq!(members.len(), 1);
    let reopened = members[0].reconnect().await.unwrap_err();
    assert_eq!(reopened.kind(), ErrorKind::Closed, "{reopened}");
    assert!(!members[0].is_connected());
    assert!(support::eventually(Duration::from_secs(3), || db.backends() == 0).await);
    manager.close(DEADLINE).await;
}

/// A connection may not be named like a read replica's member (`pg/replica:host:port`): `add`
/// took one, and its stats entry then replaced the replica's (`stats()` listed two of three
/// connections).
#[tokio::test]
async fn a_name_reserved_for_replicas_is_refused() {
    let db = TestDb::create();
    let mut config = db.config("pg");
    config
        .replicas
        .push(config.replica(support::pg_host(), Some(support::pg_port())));
    let manager = Manager::new(fast_config().with_connection(config)).unwrap();
    manager.connect().await.unwrap();
    let member = format!("pg/replica:{}:{}", support::pg_host(), support::pg_port());
    let err = manager.add(db.config(&member)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(manager.names(), ["pg"]);
    assert_eq!(manager.stats().total, 2, "the connection and its replica");
    let err = Manager::new(fast_config().with_connection(db.config(&member))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    manager.close(DEADLINE).await;
}
