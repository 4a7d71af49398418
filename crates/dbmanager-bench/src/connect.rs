//! Measurement 4: Connect-all: N connections connected in parallel, against the sum and the slowest of
//! connecting each alone.

use std::time::{Duration, Instant};

use dbmanager::{ConnectionConfig, Manager, ManagerConfig, SslMode};

use crate::support::TestDb;

fn config(connections: Vec<ConnectionConfig>) -> ManagerConfig {
    let mut config = ManagerConfig::default();
    config.health_check_interval = Duration::ZERO;
    connections
        .into_iter()
        .fold(config, ManagerConfig::with_connection)
}

async fn connect_time(connections: Vec<ConnectionConfig>) -> Duration {
    let manager = Manager::new(config(connections)).expect("config");
    let started = Instant::now();
    manager.connect().await.expect("connect");
    let took = started.elapsed();
    manager.close(Duration::from_secs(5)).await;
    took
}

pub async fn run() {
    println!("## 4. Connect-all\n");
    println!(
        "Time for `connect()` of N connections (parallel) against connecting each alone one after another (sum) and the slowest single one.\n"
    );
    println!(
        "| backend | N | parallel | sum of singles | slowest single | parallel / slowest | parallel / sum |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::create();
    // A server 10 ms away (each packet delayed), as a remote database would be: connecting is
    // then waiting, not CPU, and parallel connects overlap.
    let proxy = crate::support::proxy::FaultProxy::start(crate::support::pg_port()).await;
    proxy.set(crate::support::proxy::Fault::Latency(
        Duration::from_millis(10),
    ));
    for backend in ["sqlite", "postgres", "postgres, 10 ms away"] {
        for n in [1usize, 10, 50] {
            let make = |i: usize| -> ConnectionConfig {
                if backend == "sqlite" {
                    ConnectionConfig::sqlite(
                        format!("c{i}"),
                        dir.path().join(format!("{n}-{i}.db")),
                    )
                } else {
                    let mut c = db.config(&format!("c{i}"));
                    if backend != "postgres" {
                        c.host = Some("127.0.0.1".into());
                        c.port = Some(proxy.port);
                    }
                    c.sslmode = Some(SslMode::Disable);
                    c.max_open_conns = Some(2);
                    c.max_idle_conns = Some(2);
                    c
                }
            };
            let mut singles = Vec::with_capacity(n);
            for i in 0..n {
                singles.push(connect_time(vec![make(i)]).await);
            }
            let parallel = connect_time((0..n).map(make).collect()).await;
            let sum: Duration = singles.iter().sum();
            let slowest = singles.iter().max().copied().unwrap_or_default();
            println!(
                "| {backend} | {n} | {parallel:.1?} | {sum:.1?} | {slowest:.1?} | {:.2} | {:.2} |",
                parallel.as_secs_f64() / slowest.as_secs_f64(),
                parallel.as_secs_f64() / sum.as_secs_f64()
            );
        }
    }
    println!();
}
