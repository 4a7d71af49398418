//! Measurement 1: Lookup: `get(name)` plus reaching the pool, against cloning an `Arc` held directly.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use dbmanager::{ConnectionConfig, Manager, ManagerConfig};

const ITERATIONS: u64 = 1_000_000;

/// Median wall-clock ns per operation (all threads' operations together) of `f` run on
/// `threads` threads at once.
fn ns_per_op(threads: usize, f: impl Fn() + Sync) -> f64 {
    let runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..ITERATIONS {
                            f();
                        }
                    });
                }
            });
            started.elapsed().as_nanos() as f64 / (ITERATIONS * threads as u64) as f64
        })
        .collect();
    crate::harness::median(runs)
}

pub async fn run() {
    println!("## 1. Lookup\n");
    println!(
        "Reaching a pool by name vs `Arc::clone` of a pool held directly: wall-clock ns per operation (operations of all threads together; 8 threads share 2 cores), median of 5 runs of {ITERATIONS} operations per thread. `manager.sqlite(name)` is the shortest path; `get(name)?.sqlite()?` also clones the connection handle.\n"
    );
    println!(
        "| connections | threads | baseline `Arc::clone` | `manager.sqlite(name)` | ratio | `get(name)?.sqlite()?` | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().expect("temp dir");
    for n in [1usize, 100, 10_000] {
        let mut config = ManagerConfig::default();
        config.health_check_interval = std::time::Duration::ZERO;
        for i in 0..n {
            config = config.with_connection(ConnectionConfig::sqlite(
                format!("c{i}"),
                dir.path().join(format!("c{i}.db")),
            ));
        }
        let manager = Manager::new(config).expect("valid config");
        let target = format!("c{}", n / 2);
        // Only the looked-up connection needs a pool.
        manager.reconnect(&target).await.expect("connect");
        let direct = Arc::new(manager.get(&target).and_then(|c| c.sqlite()).expect("pool"));
        for threads in [1usize, 8] {
            let baseline = ns_per_op(threads, || {
                black_box(Arc::clone(black_box(&direct)));
            });
            let shortest = ns_per_op(threads, || {
                black_box(manager.sqlite(black_box(&target)).ok());
            });
            let via_handle = ns_per_op(threads, || {
                let pool = manager.get(black_box(&target)).and_then(|c| c.sqlite());
                black_box(pool.ok());
            });
            println!(
                "| {n} | {threads} | {baseline:.1} ns | {shortest:.1} ns | {:.2} | {via_handle:.1} ns | {:.2} |",
                shortest / baseline,
                via_handle / baseline
            );
        }
        manager.close(std::time::Duration::from_secs(5)).await;
    }
    println!();
}
