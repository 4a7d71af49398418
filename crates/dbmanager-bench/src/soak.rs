//! Soak: the library under a steady query load while its server is restarted again and again,
//! sampling what would grow if something leaked: resident memory, open file descriptors, live
//! tokio tasks, and the server's session count.
//!
//! `dbmanager-bench soak [minutes] [restart_every_s]` (defaults 10 and 30): 64 tasks query one
//! `Database` handle (pool of 8) on a private PostgreSQL cluster, which is restarted every
//! interval, alternating a fast shutdown and `kill -9`. A sample every 10 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dbmanager::{Manager, ManagerConfig};

use crate::support::PrivateCluster;

const WORKERS: usize = 64;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn sessions(cluster: &PrivateCluster) -> i64 {
    cluster
        .sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        .trim()
        .parse()
        .unwrap_or(-1)
}

/// Reads one measure off a sample.
type Measure = dyn Fn(&Sample) -> f64;

struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    tasks: usize,
    sessions: i64,
    ok: u64,
    failed: u64,
}

pub async fn run(minutes: f64, restart_every: Duration) {
    println!("## Soak: {minutes} min, a restart every {restart_every:?}\n");
    let cluster = Arc::new(PrivateCluster::start());
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.max_open_conns = Some(8);
    c.max_idle_conns = Some(8);
    c.connect_timeout = Duration::from_secs(5);
    let mut config = ManagerConfig::default().with_connection(c);
    config.health_check_interval = Duration::from_secs(2);
    let manager = Manager::new(config).expect("config");
    manager.connect().await.expect("connect");
    let sql = manager.database("pg").expect("handle");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (sql, stop, ok, failed) = (sql.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    match sql.fetch_one("SELECT 1", &[]).await {
                        Ok(_) => ok.fetch_add(1, Relaxed),
                        Err(_) => failed.fetch_add(1, Relaxed),
                    };
                }
            })
        })
        .collect();

    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut samples = Vec::new();
    let mut restarts = Vec::new();
    let mut next_sample = started + SAMPLE_EVERY;
    let mut next_restart = started + restart_every;
    println!("| t | RSS | fds | tokio tasks | server sessions | queries ok | failed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    while started.elapsed() < total {
        let now = Instant::now();
        if now >= next_restart {
            next_restart += restart_every;
            let kill = restarts.len() % 2 == 1;
            let before = failed.load(Relaxed);
            let c = cluster.clone();
            let up = tokio::task::spawn_blocking(move || {
                if kill {
                    c.kill9_and_restart()
                } else {
                    c.restart()
                }
            })
            .await
            .expect("restart");
            // Failures attributed to this restart: until queries succeed again.
            let ok_before = ok.load(Relaxed);
            while ok.load(Relaxed) == ok_before && up.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            restarts.push((
                if kill { "kill -9" } else { "fast" },
                failed.load(Relaxed) - before,
                up.elapsed(),
            ));
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let c = cluster.clone();
            let sessions = tokio::task::spawn_blocking(move || sessions(&c))
                .await
                .unwrap_or(-1);
            let s = Sample {
                at: started.elapsed(),
                rss: resident_kib(),
                fds: open_fds(),
                tasks: metrics.num_alive_tasks(),
                sessions,
                ok: ok.load(Relaxed),
                failed: failed.load(Relaxed),
            };
            println!(
                "| {:.0} s | {} KiB | {} | {} | {} | {} | {} |",
                s.at.as_secs_f64(),
                s.rss,
                s.fds,
                s.tasks,
                s.sessions,
                s.ok,
                s.failed
            );
            samples.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Relaxed);
    for w in workers {
        let _ = w.await;
    }

    println!("\n| restart | kind | failed queries | first success after it was back |");
    println!("|---:|---|---:|---:|");
    for (i, (kind, n, back)) in restarts.iter().enumerate() {
        println!(
            "| {} | {kind} | {n} | {:.0} ms |",
            i + 1,
            back.as_secs_f64() * 1000.0
        );
    }
    // Flatness: the second half against the first (the start includes warm-up growth).
    let half = samples.len() / 2;
    if half > 0 {
        let range = |f: &Measure, part: &[Sample]| {
            let v: Vec<f64> = part.iter().map(f).collect();
            (
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        println!("\n| measure | first half min..max | second half min..max |");
        println!("|---|---|---|");
        let rows: [(&str, &Measure); 4] = [
            ("RSS (KiB)", &|s| s.rss as f64),
            ("open fds", &|s| s.fds as f64),
            ("tokio tasks", &|s| s.tasks as f64),
            ("server sessions", &|s| s.sessions as f64),
        ];
        for (name, f) in rows {
            let (a0, a1) = range(f, &samples[..half]);
            let (b0, b1) = range(f, &samples[half..]);
            println!("| {name} | {a0:.0}..{a1:.0} | {b0:.0}..{b1:.0} |");
        }
    }
    manager.close(Duration::from_secs(5)).await;
}
