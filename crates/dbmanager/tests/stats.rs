//! Pool settings enforced and counted: lifetime and idle-time closes, the idle cap, the
//! minimum kept open, waits.

mod support;

use std::time::Duration;

use dbmanager::Manager;
use support::{TestDb, fast_config};

#[tokio::test]
async fn lifetime_and_idle_time_closes_are_enforced_and_counted() {
    let db = TestDb::create();
    let mut c = db.config("pg");
    c.conn_max_lifetime = Some(Duration::from_millis(300));
    c.conn_max_idle_time = Some(Duration::from_millis(300));
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let sql = conn.database().unwrap();

    // Keep one connection busy past its lifetime: it is closed when released.
    let mut tx = sql.begin().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    tx.execute("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        support::eventually(Duration::from_secs(5), || conn.stats().closed_max_lifetime
            >= 1)
        .await,
        "{:?}",
        conn.stats()
    );

    // A connection left idle past conn_max_idle_time is closed by the pool's reaper.
    sql.execute("SELECT 1", &[]).await.unwrap();
    assert!(
        support::eventually(Duration::from_secs(5), || {
            let s = conn.stats();
            s.open == 0 && s.closed_max_idle_time >= 1
        })
        .await,
        "{:?}",
        conn.stats()
    );
    assert!(support::eventually(Duration::from_secs(5), || db.backends() == 0).await);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn min_open_conns_are_kept_and_max_idle_conns_caps_the_idle() {
    let db = TestDb::create();
    let mut c = db.config("pg");
    c.min_open_conns = Some(2);
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    assert!(
        support::eventually(Duration::from_secs(5), || conn.stats().open >= 2).await,
        "min_open_conns opens connections without demand: {:?}",
        conn.stats()
    );

    let pool = conn.postgres().unwrap();
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(conn.stats().in_use, 4);
    drop(held);
    assert!(support::eventually(Duration::from_secs(5), || conn.stats().in_use == 0).await);
    // Releases racing each other may each keep theirs; the health check trims the excess.
    conn.health_check().await.unwrap();
    assert!(
        support::eventually(Duration::from_secs(5), || {
            let s = conn.stats();
            s.in_use == 0 && s.idle == 3 && s.closed_max_idle == 1
        })
        .await,
        "{:?}",
        conn.stats()
    );
    manager.close(Duration::from_secs(5)).await;
}
