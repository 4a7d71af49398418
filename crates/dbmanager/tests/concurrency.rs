//! Many tasks looking up and querying while the default connection flips.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dbmanager::{ConnectionConfig, Manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_query_while_the_default_flips() {
    let db = support::TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = db.config("pg");
    pg.max_open_conns = Some(8);
    pg.max_idle_conns = Some(8);
    let mut lite = ConnectionConfig::sqlite("lite", dir.path().join("c.db"));
    lite.max_open_conns = Some(4);
    let manager = Manager::new(
        support::fast_config()
            .with_connection(pg)
            .with_connection(lite)
            .with_default("pg"),
    )
    .unwrap();
    manager.connect().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (manager, stop, flips) = (manager.clone(), stop.clone(), flips.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                manager
                    .set_default(if i.is_multiple_of(2) { "lite" } else { "pg" })
                    .unwrap();
                flips.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::task::yield_now().await;
            }
        })
    };

    let workers: Vec<_> = (0..64)
        .map(|w| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for i in 0..20i64 {
                    let sql = if (w + i) % 3 == 0 {
                        manager.database(if w % 2 == 0 { "pg" } else { "lite" })?
                    } else {
                        manager.default_database()?
                    };
                    let row = sql
                        .fetch_one("SELECT $1 AS v", &[(w * 100 + i).into()])
                        .await?;
                    let v = match row.value("v") {
                        Some(dbmanager::Value::Int(v)) => *v,
                        Some(dbmanager::Value::Text(t)) => t.parse().unwrap_or(-1),
                        other => panic!("unexpected {other:?}"),
                    };
                    assert_eq!(v, w * 100 + i);
                }
                Ok::<_, dbmanager::Error>(())
            })
        })
        .collect();

    let all = tokio::time::timeout(Duration::from_secs(120), futures_join(workers)).await;
    stop.store(true, Ordering::Relaxed);
    flipper.await.unwrap();
    let results = all.expect("no deadlock: all workers finished");
    for r in results {
        r.unwrap().unwrap();
    }
    assert!(flips.load(Ordering::Relaxed) > 0);
    let stats = manager.stats();
    assert!(stats.connections["pg"].open <= 8);
    manager.close(Duration::from_secs(5)).await;
}

async fn futures_join<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}
