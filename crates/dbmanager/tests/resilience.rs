//! Leak detection and circuit breaking, on real servers.

mod support;

use std::time::{Duration, Instant};

use dbmanager::{ConnectionConfig, ErrorKind, Manager};
use support::proxy::{Fault, FaultProxy};

fn capture() -> (support::LogCapture, tracing::subscriber::DefaultGuard) {
    let capture = support::LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_transaction_held_past_the_threshold_is_reported_once_with_where_it_was_taken() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::sqlite("lite", dir.path().join("l.db"));
    c.leak_detection_threshold = Some(Duration::from_millis(200));
    let manager = Manager::new(support::fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("lite").unwrap();

    // Shorter than the threshold: nothing.
    let tx = db.begin().await.unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(manager.get("lite").unwrap().stats().leaks_detected, 0);

    let line = line!() + 1;
    let tx = db.begin().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = manager.get("lite").unwrap().stats();
    assert_eq!(
        stats.leaks_detected, 1,
        "exactly one report for one held checkout"
    );
    tx.rollback().await.unwrap();
    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("longer than leak_detection_threshold"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("connection=\"lite\"") || warnings[0].contains("connection=lite"),
        "{text}"
    );
    assert!(
        warnings[0].contains(&format!("resilience.rs:{line}")),
        "the caller's location is reported: {text}"
    );
    assert!(
        text.contains("reported as possibly leaked was returned"),
        "{text}"
    );
    assert!(
        manager
            .metrics_text()
            .contains("dbmanager_connection_leaks_total{connection=\"lite\",type=\"sqlite\"} 1")
    );
    manager.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_fails_fast_and_closes_when_the_server_is_back() {
    let cluster = support::PrivateCluster::start();
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.connect_timeout = Duration::from_secs(2);
    c.circuit_breaker_failures = Some(2);
    let mut config = support::fast_config().with_connection(c);
    config.health_check_interval = Duration::from_millis(300);
    config.retry_max_delay = Duration::from_secs(60);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("pg").unwrap();
    db.fetch_one("SELECT 1", &[]).await.unwrap();

    let c2 = std::sync::Arc::new(cluster);
    let cluster = c2.clone();
    tokio::task::spawn_blocking(move || cluster.stop_server("fast"))
        .await
        .unwrap();
    // Until the circuit opens, each statement waits for its checkout to give up.
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !manager.get("pg").unwrap().stats().circuit_open && Instant::now() < deadline {
        if db.fetch_one("SELECT 1", &[]).await.is_err() {
            failures += 1;
        }
    }
    assert!(
        manager.get("pg").unwrap().stats().circuit_open,
        "the circuit opened"
    );
    assert!(failures >= 1);
    // Open: callers fail at once, well under the 2 s connect timeout.
    let started = Instant::now();
    for _ in 0..20 {
        let err = db.fetch_one("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(err.to_string().contains("circuit open"), "{err}");
        // The connection is configured and was connected: the error says the request was
        // refused, not that the connection is missing.
        assert!(matches!(err, dbmanager::Error::Refused { .. }), "{err:?}");
        assert!(!err.to_string().contains("not connected"), "{err}");
    }
    // Twenty refused calls together take less than one connect timeout (without the breaker
    // each would wait for it).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "20 calls took {:?}",
        started.elapsed()
    );
    assert!(
        manager
            .metrics_text()
            .contains("dbmanager_circuit_open{connection=\"pg\",type=\"postgres\"} 1")
    );

    let cluster = c2.clone();
    tokio::task::spawn_blocking(move || cluster.start_server())
        .await
        .unwrap();
    // The health loop's check is the probe that closes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while manager.get("pg").unwrap().stats().circuit_open && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = manager.get("pg").unwrap().stats();
    assert!(
        !stats.circuit_open,
        "the circuit closed once the server answered"
    );
    assert_eq!(stats.circuit_opened_total, 1);
    db.fetch_one("SELECT 1", &[]).await.unwrap();
    manager.close(Duration::from_secs(2)).await;
}

/// A checkout watched for leaks and returned long before the threshold leaves nothing behind:
/// with a one-hour threshold, a busy connection used to keep one sleeping task per statement
/// alive for that hour.
#[tokio::test]
async fn a_returned_checkout_ends_its_leak_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::sqlite("lite", dir.path().join("l.db"));
    c.leak_detection_threshold = Some(Duration::from_secs(3600));
    let manager = Manager::new(support::fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("lite").unwrap();
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    for _ in 0..500 {
        db.fetch_one("SELECT 1", &[]).await.unwrap();
        let tx = db.begin().await.unwrap();
        tx.commit().await.unwrap();
    }
    // An aborted task is gone once the runtime has run its cancellation.
    assert!(
        support::eventually(Duration::from_secs(30), || runtime.num_alive_tasks()
            < before + 50)
        .await,
        "{} tasks alive after 1000 returned checkouts (before: {before})",
        runtime.num_alive_tasks()
    );
    assert_eq!(manager.get("lite").unwrap().stats().leaks_detected, 0);
    manager.close(Duration::from_secs(1)).await;
}

/// Only the transaction holding the pool's one connection is reported: one waiting in `begin`
/// for that connection holds nothing (it used to be reported too, blaming its caller's line
/// for the holder's leak).
#[tokio::test]
async fn a_begin_waiting_for_a_held_connection_is_not_reported_as_a_leak() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let mut c = ConnectionConfig::sqlite("lite", dir.path().join("l.db"));
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    c.leak_detection_threshold = Some(Duration::from_millis(200));
    let manager = Manager::new(support::fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("lite").unwrap();

    let holder_line = line!() + 1;
    let holder = db.begin().await.unwrap();
    let waiting = db.clone();
    let waiter = tokio::spawn(async move {
        let tx = waiting.begin().await?;
        tx.commit().await
    });
    // The holder is reported while the waiter waits.
    let conn = manager.get("lite").unwrap();
    assert!(
        support::eventually(Duration::from_secs(30), || conn.stats().leaks_detected >= 1).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.commit().await.unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(conn.stats().leaks_detected, 1, "{}", logs.text());
    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("longer than leak_detection_threshold"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains(&format!("resilience.rs:{holder_line}")),
        "the holder is the one reported: {text}"
    );
    manager.close(Duration::from_secs(1)).await;
}

/// Only the transaction holding the pool's one connection is reported: statements waiting for
/// that connection hold nothing (each used to be reported too, with its own caller's line),
/// and their watch starts once they have it. On both PostgreSQL drivers.
#[tokio::test]
async fn statements_waiting_for_a_held_connection_are_not_reported_as_leaks() {
    for driver in [
        dbmanager::PostgresDriver::Sqlx,
        dbmanager::PostgresDriver::TokioPostgres,
    ] {
        let db = support::TestDb::create();
        let mut c = db.config("pg");
        c.driver = Some(driver);
        c.max_open_conns = Some(1);
        c.max_idle_conns = Some(1);
        c.connect_timeout = Duration::from_secs(30);
        c.leak_detection_threshold = Some(Duration::from_millis(200));
        let manager = Manager::new(support::fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let database = manager.database("pg").unwrap();

        let holder = database.begin().await.unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let database = database.clone();
                tokio::spawn(async move { database.fetch_one("SELECT 1", &[]).await.map(|_| ()) })
            })
            .collect();
        let conn = manager.get("pg").unwrap();
        assert!(
            support::eventually(Duration::from_secs(30), || conn.stats().leaks_detected >= 1).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        holder.commit().await.unwrap();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(conn.stats().leaks_detected, 1, "{driver:?}");

        // A statement that really holds its connection past the threshold is still reported.
        database.execute("SELECT pg_sleep(0.6)", &[]).await.unwrap();
        assert_eq!(conn.stats().leaks_detected, 2, "{driver:?}");
        manager.close(Duration::from_secs(2)).await;
    }
}

/// The statement let through to probe an open circuit may never finish (the caller's own
/// timeout drops it): the next statement after the pause probes again, so the circuit closes
/// once the server answers, without a health loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_before_it_answers_lets_a_later_statement_probe() {
    let db = support::TestDb::create();
    let (proxy, manager) = breaker_behind_a_proxy(&db, Duration::from_secs(2)).await;
    let db_handle = manager.database("pg").unwrap();
    db_handle.fetch_one("SELECT 1", &[]).await.unwrap();

    // Unreachable: checkouts hang until the connect timeout, and the circuit opens.
    proxy.set(Fault::Blackhole);
    proxy.cut_all();
    let conn = manager.get("pg").unwrap();
    for _ in 0..20 {
        if conn.stats().circuit_open {
            break;
        }
        db_handle.fetch_one("SELECT 1", &[]).await.unwrap_err();
    }
    assert!(conn.stats().circuit_open);
    // After the pause a statement is let through as the probe; its caller gives up first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        db_handle.fetch_one("SELECT 1", &[]),
    )
    .await;
    assert!(
        probe.is_err(),
        "the probe hangs on the blackhole: {probe:?}"
    );

    proxy.set(Fault::Forward);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        match db_handle.fetch_one("SELECT 1", &[]).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last.is_none(),
        "the server answers again but statements still fail: {last:?}"
    );
    assert!(!conn.stats().circuit_open);
    manager.close(Duration::from_secs(2)).await;
}

/// Health follows the breaker without a health loop: while the circuit is open every statement
/// fails fast, so the connection is not reported up (status, stats, readiness) and its last
/// error says why; once a statement reaches the server again it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_is_unhealthy_until_the_server_answers() {
    let db = support::TestDb::create();
    let (proxy, manager) = breaker_behind_a_proxy(&db, Duration::from_secs(1)).await;
    let conn = manager.get("pg").unwrap();
    let handle = manager.database("pg").unwrap();
    handle.fetch_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(conn.status(), dbmanager::Status::Healthy);

    proxy.set(Fault::Blackhole);
    proxy.cut_all();
    for _ in 0..20 {
        if conn.stats().circuit_open {
            break;
        }
        handle.fetch_one("SELECT 1", &[]).await.unwrap_err();
    }
    assert!(conn.stats().circuit_open);
    assert_eq!(conn.status(), dbmanager::Status::Unhealthy);
    let health = conn.health();
    assert_eq!(health.status, dbmanager::Status::Unhealthy);
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("circuit open")),
        "{health:?}"
    );
    assert_eq!(
        manager.stats().connections["pg"].status,
        dbmanager::Status::Unhealthy
    );

    proxy.set(Fault::Forward);
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.fetch_one("SELECT 1", &[]).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!conn.stats().circuit_open);
    assert_eq!(conn.status(), dbmanager::Status::Healthy);
    manager.close(Duration::from_secs(2)).await;
}

/// A connection to `db` through a fault proxy whose circuit opens at the first unreachable
/// failure, without a health loop (statements are the only probes), connected.
async fn breaker_behind_a_proxy(
    db: &support::TestDb,
    connect_timeout: Duration,
) -> (FaultProxy, Manager) {
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = db.config("pg");
    c.port = Some(proxy.port);
    c.connect_timeout = connect_timeout;
    c.circuit_breaker_failures = Some(1);
    let mut config = support::fast_config().with_connection(c);
    config.health_check_interval = Duration::ZERO;
    config.retry_max_delay = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    (proxy, manager)
}
