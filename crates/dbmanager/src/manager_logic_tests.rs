//! The manager's own logic on the fake driver: retry, the health state machine, reconnects,
//! the close deadline and default switching, with no server and tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::backends::fake::{FakeServer, resolve};
use crate::config::{ConnectionConfig, DatabaseType, ManagerConfig};
use crate::{ConnectPolicy, ErrorKind, Manager, Status};

fn connection(name: &str, host: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, DatabaseType::Postgres);
    c.host = Some(host.to_owned());
    c.database = Some("d".to_owned());
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn config(connections: &[(&str, &str)]) -> ManagerConfig {
    let mut config = ManagerConfig {
        retry_attempts: 4,
        retry_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(1),
        health_check_interval: Duration::ZERO,
        ..ManagerConfig::default()
    };
    for (name, host) in connections {
        config = config.with_connection(connection(name, host));
    }
    config
}

fn manager(config: ManagerConfig) -> Manager {
    config.validate().unwrap();
    Manager::with_drivers(config, resolve).unwrap()
}

#[tokio::test(start_paused = true)]
async fn transient_connect_failures_are_retried_until_success() {
    let server = FakeServer::start("retry-ok");
    server.connect_failures.store(2, SeqCst);
    let m = manager(config(&[("a", "retry-ok")]));
    let report = m.connect_with(ConnectPolicy::FailFast).await.unwrap();
    assert_eq!(report.attempts["a"], 3);
    assert_eq!(server.connects.load(SeqCst), 3);
    assert_eq!(m.get("a").unwrap().status(), Status::Healthy);
    let stats = m.stats().connections["a"].clone();
    let transient = stats
        .connect_errors
        .iter()
        .find(|(k, _)| *k == ErrorKind::Transient)
        .map(|(_, n)| *n);
    assert_eq!(transient, Some(2));
}

#[tokio::test(start_paused = true)]
async fn non_transient_failures_are_not_retried_and_attempts_are_bounded() {
    let auth = FakeServer::start("auth-fail");
    auth.connect_failures.store(10, SeqCst);
    *auth.connect_error.lock().unwrap() = Some(ErrorKind::Authentication);
    let flaky = FakeServer::start("always-down");
    flaky.connect_failures.store(100, SeqCst);
    let m = manager(config(&[("auth", "auth-fail"), ("down", "always-down")]));
    let report = m.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(
        report.attempts["auth"], 1,
        "authentication is never retried"
    );
    assert_eq!(
        report.attempts["down"], 4,
        "retry_attempts counts every attempt"
    );
    let kinds: Vec<_> = report
        .failed
        .iter()
        .map(|(n, e)| (n.as_str(), e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("auth", ErrorKind::Authentication),
            ("down", ErrorKind::Transient)
        ]
    );
    assert_eq!(m.get("down").unwrap().status(), Status::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_closes_what_it_opened() {
    let ok = FakeServer::start("ff-ok");
    let bad = FakeServer::start("ff-bad");
    bad.connect_failures.store(100, SeqCst);
    let m = manager(config(&[("ok", "ff-ok"), ("bad", "ff-bad")]));
    let err = m.connect().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(!m.get("ok").unwrap().is_connected());
    assert_eq!(ok.closes.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn health_moves_between_healthy_degraded_unhealthy_and_back() {
    let server = FakeServer::start("health");
    let m = manager(config(&[("a", "health")]));
    m.connect().await.unwrap();
    let c = m.get("a").unwrap();
    assert_eq!(c.status(), Status::Healthy);

    // Slower than half the 2 s connect timeout: degraded, still up.
    server.ping_delay_ms.store(1_500, SeqCst);
    c.health_check().await.unwrap();
    assert_eq!(c.status(), Status::Degraded);
    assert!(c.status().is_up());

    // Slower than the whole bound: a timeout, unhealthy.
    server.ping_delay_ms.store(5_000, SeqCst);
    let err = c.health_check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(c.status(), Status::Unhealthy);

    server.ping_delay_ms.store(0, SeqCst);
    server.down.store(true, SeqCst);
    c.health_check().await.unwrap_err();
    let report = c.health();
    assert_eq!(report.consecutive_failures, 2);
    assert!(report.last_error.unwrap().contains("fake server down"));

    server.down.store(false, SeqCst);
    c.reconnect().await.unwrap();
    assert_eq!(c.status(), Status::Healthy);
    assert_eq!(c.health().consecutive_failures, 0);
    assert_eq!(
        server.discards.load(SeqCst),
        1,
        "a reconnect discards idle connections"
    );
    assert_eq!(c.stats().reconnects_ok, 1);
}

#[tokio::test(start_paused = true)]
async fn the_health_loop_brings_a_failed_connection_up() {
    let server = FakeServer::start("loop");
    server.connect_failures.store(6, SeqCst);
    let mut config = config(&[("a", "loop")]);
    config.health_check_interval = Duration::from_secs(1);
    config.retry_attempts = 1;
    let m = manager(config);
    let report = m.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    let c = m.get("a").unwrap();
    for _ in 0..600 {
        if c.status() == Status::Healthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.status(), Status::Healthy);
    assert_eq!(server.connects.load(SeqCst), 7);
    assert!(c.stats().reconnects_failed >= 5);
    m.close(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_checkouts_up_to_the_deadline_and_is_idempotent() {
    let server = FakeServer::start("close");
    server.stuck_in_use.store(2, SeqCst);
    let m = manager(config(&[("a", "close")]));
    m.connect().await.unwrap();
    let started = tokio::time::Instant::now();
    let report = m.close(Duration::from_secs(3)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(report.still_in_use, [("a".to_owned(), 2)]);
    assert!(m.is_closed());
    assert_eq!(m.get("a").unwrap_err().kind(), ErrorKind::Closed);

    // Closing again does nothing and returns at once.
    let again = m.close(Duration::from_secs(3)).await;
    assert!(again.still_in_use.is_empty());
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(server.closes.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn defaults_switch_only_to_known_connections() {
    let _a = FakeServer::start("def-a");
    let _b = FakeServer::start("def-b");
    let m = manager(config(&[("a", "def-a"), ("b", "def-b")]));
    assert_eq!(
        m.default_connection().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    m.set_default("b").unwrap();
    assert_eq!(m.default_connection().unwrap().name(), "b");
    assert_eq!(m.set_default("zz").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(m.default_connection().unwrap().name(), "b");
    m.connect().await.unwrap();
    let server: Arc<FakeServer> = m.default_connection().unwrap().native().unwrap();
    assert_eq!(server.connects.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connect_while_another_is_in_flight_reports_its_outcome() {
    let server = FakeServer::start("concurrent");
    server.connect_delay_ms.store(1_000, SeqCst);
    server.connect_failures.store(100, SeqCst);
    let mut config = config(&[("a", "concurrent")]);
    config.retry_attempts = 1;
    let m = manager(config);
    let (first, second) = tokio::join!(
        m.connect_with(ConnectPolicy::Partial),
        m.connect_with(ConnectPolicy::Partial)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.failed.len(), 1, "{first:?}");
    assert_eq!(
        second.failed.len(),
        1,
        "the second call must not report success for a connection that is down: {second:?}"
    );
    assert_eq!(server.connects.load(SeqCst), 1, "one attempt, not two");
    assert!(m.connect().await.is_err());

    // And when the in-flight connect succeeds, the waiter sees the open pool.
    let ok = FakeServer::start("concurrent-ok");
    ok.connect_delay_ms.store(1_000, SeqCst);
    let m = manager(config_one("concurrent-ok"));
    let (a, b) = tokio::join!(m.connect(), m.connect());
    a.unwrap();
    b.unwrap();
    assert_eq!(ok.connects.load(SeqCst), 1);
}

fn config_one(host: &str) -> ManagerConfig {
    config(&[("a", host)])
}

#[tokio::test(start_paused = true)]
async fn connect_during_close_does_not_reopen_the_closing_manager() {
    let server = FakeServer::start("closing");
    server.stuck_in_use.store(1, SeqCst);
    let mut config = config_one("closing");
    config.health_check_interval = Duration::from_secs(1);
    let m = manager(config);
    m.connect().await.unwrap();
    let closing = tokio::spawn({
        let m = m.clone();
        async move { m.close(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = m.connect().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    let report = closing.await.unwrap();
    assert_eq!(report.still_in_use.len(), 1);
    assert!(m.is_closed(), "the close finished with the manager closed");
    assert!(!m.connections()[0].is_connected());
    // No health loop came back to life: nothing reconnects in the background.
    server.stuck_in_use.store(0, SeqCst);
    let connects = server.connects.load(SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(server.connects.load(SeqCst), connects);
    // Once closed, connect reopens as documented.
    m.connect().await.unwrap();
    assert!(!m.is_closed());
}

#[tokio::test(start_paused = true)]
async fn stats_count_a_degraded_connection_as_up_like_the_metrics() {
    let fast = FakeServer::start("stats-fast");
    let slow = FakeServer::start("stats-slow");
    let down = FakeServer::start("stats-down");
    let m = manager(config(&[
        ("fast", "stats-fast"),
        ("slow", "stats-slow"),
        ("down", "stats-down"),
    ]));
    m.connect().await.unwrap();
    // Slower than half the 2 s connect timeout: degraded, which serves.
    slow.ping_delay_ms.store(1_500, SeqCst);
    m.get("slow").unwrap().health_check().await.unwrap();
    down.down.store(true, SeqCst);
    m.get("down").unwrap().health_check().await.unwrap_err();
    assert_eq!(m.get("slow").unwrap().status(), Status::Degraded);

    let stats = m.stats();
    assert_eq!(stats.total, 3);
    assert_eq!(stats.healthy, 2, "healthy and degraded are both up");
    assert_eq!(stats.unhealthy, 1);
    let up = stats
        .connections
        .values()
        .filter(|c| c.status.is_up())
        .count();
    assert_eq!(stats.healthy, up, "the same rule as the status gauge");
    #[cfg(feature = "metrics")]
    {
        let text = m.metrics_text();
        let gauge_up = text
            .lines()
            .filter(|l| l.starts_with("dbmanager_connection_status{"))
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0))
            .count();
        assert_eq!(stats.healthy, gauge_up, "{text}");
    }
    drop(fast);
}
