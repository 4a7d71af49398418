//! Connect and close cycles, idempotent close, close with a checked-out connection.

mod support;

use std::time::Duration;

use dbmanager::{ErrorKind, Manager};

#[tokio::test]
async fn connect_close_cycles_work_and_leak_nothing() {
    let db = support::TestDb::create();
    let manager = Manager::new(support::fast_config().with_connection(db.config("pg"))).unwrap();
    let conn = manager.get("pg").unwrap();
    for cycle in 0..100 {
        manager.connect().await.unwrap();
        assert!(!manager.is_closed());
        let sql = manager.database("pg").unwrap();
        let row = sql
            .fetch_one("SELECT $1::int8 AS c", &[cycle.into()])
            .await
            .unwrap();
        assert_eq!(row.get::<i64>("c"), Some(cycle));
        let report = manager.close(Duration::from_secs(5)).await;
        assert!(report.still_in_use.is_empty());
        assert!(manager.is_closed());
        assert_eq!(manager.get("pg").unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(
            sql.execute("SELECT 1", &[]).await.unwrap_err().kind(),
            ErrorKind::Closed
        );
        manager.close(Duration::from_secs(1)).await;
    }
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() == 0).await,
        "no server session is left"
    );
    let metrics = tokio::runtime::Handle::current().metrics();
    assert!(
        support::eventually(Duration::from_secs(5), || metrics.num_alive_tasks() == 0).await,
        "no task is left behind: {} alive",
        metrics.num_alive_tasks()
    );
    let stats = conn.stats();
    assert_eq!(stats.open, 0);
    assert_eq!(
        stats.closed_max_idle_time, 0,
        "closes by shutdown are not idle-time closes: {stats:?}"
    );
}

#[tokio::test]
async fn close_reports_connections_still_checked_out_at_the_deadline() {
    let db = support::TestDb::create();
    let manager = Manager::new(support::fast_config().with_connection(db.config("pg"))).unwrap();
    manager.connect().await.unwrap();
    let pool = manager.get("pg").unwrap().postgres().unwrap();
    let held = pool.acquire().await.unwrap();
    // And one idle: closed at the deadline although `held` is still out (sqlx closed idle
    // connections only once every checkout was back).
    drop(pool.acquire().await.unwrap());
    // The connect's closed probe session may still be listed for a moment.
    assert!(
        support::eventually(Duration::from_secs(5), || db.backends() == 2).await,
        "one held and one idle session"
    );
    let report = manager.close(Duration::from_millis(300)).await;
    assert_eq!(report.still_in_use, vec![("pg".to_owned(), 1)]);
    assert!(
        support::eventually(Duration::from_secs(3), || db.backends() == 1).await,
        "only the checked-out connection's session is left, not {}",
        db.backends()
    );
    // New checkouts are refused at once.
    let err = pool.acquire().await.unwrap_err();
    assert!(
        matches!(err, dbmanager::reexports::sqlx::Error::PoolClosed),
        "{err}"
    );
    drop(held);
    assert!(support::eventually(Duration::from_secs(5), || db.backends() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_racing_with_queries_never_panics_or_hangs() {
    let db = support::TestDb::create();
    let manager = Manager::new(support::fast_config().with_connection(db.config("pg"))).unwrap();
    manager.connect().await.unwrap();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    match manager.database("pg") {
                        Ok(sql) => match sql.execute("SELECT 1", &[]).await {
                            Ok(_) => {}
                            Err(e) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
                        },
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let closing = tokio::time::timeout(
        Duration::from_secs(10),
        manager.close(Duration::from_secs(2)),
    )
    .await;
    assert!(closing.is_ok(), "close returned by its deadline");
    for w in workers {
        w.await.unwrap();
    }
    assert!(support::eventually(Duration::from_secs(5), || db.backends() == 0).await);
}

/// A read replica's checked-out connection is reported by `close` under the replica's member
/// name, and counted by `remove` (both left it out: a close with a replica connection still in
/// use said nothing was in use).
#[tokio::test]
async fn close_and_remove_report_a_replica_connection_still_checked_out() {
    let db = support::TestDb::create();
    let mut config = db.config("pg");
    config
        .replicas
        .push(config.replica(support::pg_host(), Some(support::pg_port())));
    let replica = format!("pg/replica:{}:{}", support::pg_host(), support::pg_port());
    for step in ["close", "remove"] {
        let manager = Manager::new(support::fast_config().with_connection(config.clone())).unwrap();
        manager.connect().await.unwrap();
        let reader = manager.get("pg").unwrap().reader().unwrap();
        assert_eq!(reader.name(), replica);
        let held = reader.postgres().unwrap().acquire().await.unwrap();
        if step == "close" {
            let report = manager.close(Duration::from_millis(200)).await;
            assert_eq!(report.still_in_use, vec![(replica.clone(), 1)]);
        } else {
            let in_use = manager.remove("pg", Duration::from_millis(200)).await;
            assert_eq!(in_use.unwrap(), 1);
            manager.close(Duration::from_secs(5)).await;
        }
        drop(held);
    }
    assert!(support::eventually(Duration::from_secs(5), || db.backends() == 0).await);
}
