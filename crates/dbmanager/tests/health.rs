//! Health status, the background loop, auto-reconnect on and off, manual reconnect.

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, ErrorKind, Manager, Status};
use support::{PrivateCluster, fast_config};

#[tokio::test]
async fn a_fresh_connection_is_healthy_at_once_and_reports_its_checks() {
    let db = support::TestDb::create();
    let manager = Manager::new(fast_config().with_connection(db.config("pg"))).unwrap();
    let conn = manager.get("pg").unwrap();
    assert_eq!(conn.status(), Status::Unavailable, "never connected");
    manager.connect().await.unwrap();
    assert_eq!(conn.status(), Status::Healthy);
    let report = conn.health();
    assert_eq!(report.consecutive_failures, 0);
    assert!(report.last_success.is_some() && report.last_check.is_some());
    assert!(manager.health_check().await.is_empty());
    manager.close(Duration::from_secs(5)).await;
    assert_eq!(conn.status(), Status::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_reconnect_a_connection_stays_down_until_reconnect() {
    let cluster = PrivateCluster::start();
    cluster.stop_server("fast");
    let mut config =
        fast_config().with_connection(cluster.config("pg", "admin", &cluster.password, "postgres"));
    config.health_check_interval = Duration::from_millis(100);
    config.enable_auto_reconnect = false;
    let manager = Manager::new(config).unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    cluster.start_server();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let conn = manager.get("pg").unwrap();
    assert!(!conn.is_connected(), "auto-reconnect is off");
    assert_eq!(conn.status(), Status::Unavailable);
    assert!(
        conn.health().consecutive_failures >= 2,
        "the loop kept checking"
    );

    manager.reconnect("pg").await.unwrap();
    assert!(conn.is_connected());
    assert_eq!(conn.status(), Status::Healthy);
    assert_eq!(conn.stats().reconnects_ok, 1);
    manager.close(Duration::from_secs(5)).await;
    assert_eq!(
        manager.reconnect("pg").await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_marks_a_stopped_server_unhealthy_and_recovers_it() {
    let cluster = PrivateCluster::start();
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.connect_timeout = Duration::from_secs(1);
    let mut config = fast_config().with_connection(c);
    config.health_check_interval = Duration::from_millis(150);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let pool = conn.postgres().unwrap();

    cluster.stop_server("fast");
    assert!(
        support::eventually(Duration::from_secs(10), || conn.status()
            == Status::Unhealthy)
        .await,
        "the loop notices the stopped server"
    );
    assert_eq!(manager.stats().unhealthy, 1);
    cluster.start_server();
    assert!(
        support::eventually(Duration::from_secs(15), || conn.status() == Status::Healthy).await,
        "the loop notices the server is back"
    );
    // A manual reconnect keeps the very same pool: the handle taken before still works.
    conn.reconnect().await.unwrap();
    let one: i32 = dbmanager::reexports::sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(conn.stats().reconnects_ok >= 1);
    manager.close(Duration::from_secs(5)).await;
}
