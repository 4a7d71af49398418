//! Measurement 5: Recovery: after a PostgreSQL restart, how long until a handle obtained before the restart
//! answers again, and how many queries failed, with 64 workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dbmanager::Manager;

use crate::support::PrivateCluster;

pub async fn run() {
    println!("## 5. Recovery after a PostgreSQL restart\n");
    println!(
        "Private cluster, fast shutdown + start, 64 workers on a `Database` handle taken before the restart, pool of 8. Time from \"server accepts connections\" (`pg_ctl start -w` returned) to the first successful query.\n"
    );
    let cluster = Arc::new(PrivateCluster::start());
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.max_open_conns = Some(8);
    c.max_idle_conns = Some(8);
    c.connect_timeout = Duration::from_secs(10);
    let manager =
        Manager::new(dbmanager::ManagerConfig::default().with_connection(c)).expect("config");
    manager.connect().await.expect("connect");
    let sql = manager.database("pg").expect("handle");

    println!("| run | recovery | failed queries |");
    println!("|---:|---:|---:|");
    let mut recoveries = Vec::new();
    for run in 1..=5 {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let first_ok_after = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let up = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let (sql, stop, failed, first, up) = (
                    sql.clone(),
                    stop.clone(),
                    failed.clone(),
                    first_ok_after.clone(),
                    up.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        match sql.fetch_one("SELECT 1", &[]).await {
                            Ok(_) => {
                                let now = Instant::now();
                                let back = *up.lock().expect("lock");
                                if let Some(back) = back {
                                    let mut first = first.lock().expect("lock");
                                    if first.is_none() && now >= back {
                                        *first = Some(now);
                                    }
                                }
                            }
                            Err(_) => {
                                failed.fetch_add(1, Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = cluster.clone();
        let back = tokio::task::spawn_blocking(move || c.restart())
            .await
            .expect("restart");
        *up.lock().expect("lock") = Some(back);
        let deadline = Instant::now() + Duration::from_secs(30);
        while first_ok_after.lock().expect("lock").is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Relaxed);
        for w in workers {
            let _ = w.await;
        }
        let recovery = first_ok_after
            .lock()
            .expect("lock")
            .map(|t| t.duration_since(back));
        match recovery {
            Some(r) => {
                recoveries.push(r.as_secs_f64());
                println!(
                    "| {run} | {:.1} ms | {} |",
                    r.as_secs_f64() * 1000.0,
                    failed.load(Relaxed)
                );
            }
            None => println!(
                "| {run} | no recovery within 30 s | {} |",
                failed.load(Relaxed)
            ),
        }
    }
    println!(
        "\nMedian recovery: {:.1} ms\n",
        crate::harness::median(recoveries) * 1000.0
    );
    manager.close(Duration::from_secs(5)).await;
}
