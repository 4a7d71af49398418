//! Chaos through a fault-injecting proxy in front of the machine's PostgreSQL: blackhole,
//! latency, connections reset in the middle of a transaction, a listener's session gone silent.
//! Each scenario runs on both PostgreSQL drivers (`driver: sqlx` and `driver: tokio-postgres`).

mod support;

use std::time::{Duration, Instant};

use dbmanager::{ConnectPolicy, Error, ErrorKind, ListenerEvent, Manager, PostgresDriver, Status};
use support::proxy::{Fault, FaultProxy};
use support::{TestDb, fast_config};

fn via_proxy(
    driver: PostgresDriver,
    db: &TestDb,
    proxy: &FaultProxy,
) -> dbmanager::ConnectionConfig {
    let mut c = db.config("pg");
    c.driver = Some(driver);
    c.host = Some("127.0.0.1".into());
    c.port = Some(proxy.port);
    c.sslmode = Some(dbmanager::SslMode::Disable);
    c
}

async fn blackhole_marks_unhealthy_and_queries_fail_within_query_timeout(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = via_proxy(driver, &db, &proxy);
    c.connect_timeout = Duration::from_millis(800);
    c.query_timeout = Duration::from_millis(500);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let sql = conn.database().unwrap();
    sql.execute("SELECT 1", &[]).await.unwrap();

    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let err = conn.health_check().await.unwrap_err();
    println!(
        "blackhole: health check failed after {:?}: {err}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(conn.status(), Status::Unhealthy);
    assert!(conn.health().last_error.is_some());

    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), sql.execute("SELECT 1", &[]))
        .await
        .expect("the query must not hang")
        .unwrap_err();
    println!(
        "blackhole: query failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(500)),
        "{err}"
    );
    manager.close(Duration::from_millis(200)).await;
}

async fn latency_fires_connect_and_query_timeouts_at_their_values(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;

    // Connect timeout: each attempt is bounded by connect_timeout.
    proxy.set(Fault::Latency(Duration::from_secs(1)));
    let mut c = via_proxy(driver, &db, &proxy);
    c.connect_timeout = Duration::from_millis(300);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    let err = &report.failed[0].1;
    assert!(
        matches!(err, Error::Timeout { operation: dbmanager::Operation::Connect, after, .. } if *after == Duration::from_millis(300)),
        "{err}"
    );

    // Query timeout: connected without latency, then every round trip takes a second.
    proxy.set(Fault::Forward);
    let mut c = via_proxy(driver, &db, &proxy);
    c.query_timeout = Duration::from_millis(300);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("pg").unwrap();
    sql.execute("SELECT 1", &[]).await.unwrap();
    proxy.set(Fault::Latency(Duration::from_secs(1)));
    let err = sql.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { operation: dbmanager::Operation::Query, after, .. } if after == Duration::from_millis(300)),
        "{err}"
    );
    proxy.set(Fault::Forward);
    manager.close(Duration::from_secs(2)).await;
}

async fn a_reset_in_a_transaction_discards_that_connection(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = via_proxy(driver, &db, &proxy);
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("pg").unwrap();
    sql.execute("CREATE TABLE t (v int8)", &[]).await.unwrap();

    let mut tx = sql.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    proxy.cut_all();
    let err = tx
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    drop(tx);

    // With a pool of one, the very next statement (inside the liveness window, so without a
    // ping) would fail if the reset connection had gone back to the pool.
    for _ in 0..5 {
        sql.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    }
    let rows = sql
        .fetch_all("SELECT v FROM t ORDER BY v", &[])
        .await
        .unwrap();
    let values: Vec<i64> = rows.iter().map(|r| r.get::<i64>("v").unwrap()).collect();
    assert_eq!(
        values,
        [3, 3, 3, 3, 3],
        "the interrupted transaction left nothing"
    );
    manager.close(Duration::from_secs(2)).await;
}

/// Regression: a connect cancelled mid-way (here by the caller's timeout) left the connection
/// marked as connecting, so every later connect silently did nothing.
async fn a_cancelled_connect_does_not_block_the_next_one(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    proxy.set(Fault::Blackhole);
    let mut c = via_proxy(driver, &db, &proxy);
    c.connect_timeout = Duration::from_secs(30);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(200), manager.connect()).await;
    assert!(
        cancelled.is_err(),
        "the blackholed connect is still pending when cancelled"
    );

    proxy.cut_all();
    proxy.set(Fault::Forward);
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    assert!(conn.is_connected());
    conn.database()
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(2)).await;
}

async fn a_slow_server_is_degraded_not_unhealthy(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = via_proxy(driver, &db, &proxy);
    c.connect_timeout = Duration::from_secs(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    conn.database()
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();
    // The pooled connection is back and fresh (so no liveness ping precedes the check).
    assert!(support::eventually(Duration::from_secs(5), || conn.stats().idle == 1).await);

    // Each direction delayed 650 ms: the ping takes ~1.3 s, over half of its 2 s bound.
    proxy.set(Fault::Latency(Duration::from_millis(650)));
    conn.health_check().await.unwrap();
    assert_eq!(conn.status(), Status::Degraded);
    assert!(conn.status().is_up());
    assert_eq!(
        manager.stats().healthy,
        1,
        "a degraded connection is up: counted as healthy, like the status gauge"
    );

    proxy.set(Fault::Forward);
    conn.health_check().await.unwrap();
    assert_eq!(conn.status(), Status::Healthy);
    manager.close(Duration::from_secs(2)).await;
}

/// A listener whose session goes silent (bytes vanish, nothing resets it) finds out with its
/// idle ping, keeps reconnecting while nothing answers, and once the network is back yields
/// `Reconnected` before the notifications sent after it, which all arrive.
async fn a_blackholed_listener_session_is_found_by_its_ping_and_replaced(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = via_proxy(driver, &db, &proxy);
    c.driver = Some(driver);
    c.connect_timeout = Duration::from_secs(1);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let mut listener = manager.listener("pg").await.unwrap();
    listener.listen("silent").await.unwrap();
    let patience = Duration::from_secs(60);
    let mut next = async || {
        tokio::time::timeout(patience, listener.recv())
            .await
            .expect("the listener yields an item")
            .expect("the stream is open")
    };

    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let event = next().await;
    println!(
        "blackholed listener: {event:?} after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(event, ListenerEvent::Disconnected { .. }),
        "{event:?}"
    );
    // Reconnect attempts into the blackhole time out; the old, desynchronised sessions go.
    let conn = manager.get("pg").unwrap();
    assert!(
        support::eventually(patience, || {
            conn.stats().listeners.unwrap().reconnect_failures > 0
        })
        .await
    );
    proxy.cut_all();
    proxy.set(Fault::Forward);
    assert_eq!(next().await, ListenerEvent::Reconnected);
    println!(
        "blackholed listener: reconnected after {:?}",
        started.elapsed()
    );

    for i in 0..20 {
        let payload = i.to_string();
        let mut tries = 0;
        while let Err(e) = listener.notify("silent", &payload).await {
            assert!(e.is_retryable() && tries < 20, "{e}");
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for i in 0..20 {
        match tokio::time::timeout(patience, listener.recv()).await {
            Ok(Some(ListenerEvent::Notification(n))) => assert_eq!(n.payload, i.to_string()),
            other => panic!("expected notification {i}, got {other:?}"),
        }
    }
    manager.close(Duration::from_secs(2)).await;
}

/// A manager close while the listener's session hangs in a statement (its LISTEN went into a
/// blackhole, bounded only by a long `connect_timeout`) still ends the stream within the close
/// deadline, and the caller of that `listen` learns the listener closed.
async fn closing_ends_a_listener_stuck_in_a_blackholed_statement(driver: PostgresDriver) {
    let db = TestDb::create();
    let proxy = FaultProxy::start(support::pg_port()).await;
    let mut c = via_proxy(driver, &db, &proxy);
    c.connect_timeout = Duration::from_secs(60);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let mut listener = manager.listener("pg").await.unwrap();
    let handle = listener.handle();
    let reader = tokio::spawn(async move { listener.recv().await });

    proxy.set(Fault::Blackhole);
    let stuck = tokio::spawn({
        let handle = handle.clone();
        async move { handle.listen("never").await }
    });
    // The LISTEN is on its way into the blackhole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stuck.is_finished());

    let deadline = Duration::from_secs(1);
    let report = tokio::time::timeout(Duration::from_secs(10), manager.close(deadline))
        .await
        .expect("close returns");
    println!("close with a stuck listener: {report:?}");
    // Well before the 60 s the statement itself could take.
    let ended = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(ended, None);
    let outcome = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("the listen call returns")
        .unwrap();
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Closed);
    proxy.cut_all();
}

on_both_drivers!(a_blackholed_listener_session_is_found_by_its_ping_and_replaced);

on_both_drivers!(blackhole_marks_unhealthy_and_queries_fail_within_query_timeout);

on_both_drivers!(latency_fires_connect_and_query_timeouts_at_their_values);

on_both_drivers!(a_reset_in_a_transaction_discards_that_connection);

on_both_drivers!(a_cancelled_connect_does_not_block_the_next_one);

on_both_drivers!(a_slow_server_is_degraded_not_unhealthy);

on_both_drivers!(
    closing_ends_a_listener_stuck_in_a_blackholed_statement,
    flavor = "multi_thread",
    worker_threads = 2
);
