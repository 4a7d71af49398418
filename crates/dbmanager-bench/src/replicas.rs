//! Read replicas: read throughput with 0, 1 and 2 replicas on a private streaming-replication
//! set (`replicas`), and the cost of routing one read (`replica-count`, for instruction
//! counting under callgrind).
//!
//! Every server of the set runs on this machine, so the replicas share its cores with the
//! primary and with the benchmark: the spread shows that reads leave the primary, not a
//! scale-out a real set of separate hosts would give.

use std::time::Duration;

use dbmanager::{ConnectionConfig, Manager, SslMode};

use crate::harness::{fmt_rate, median, op, throughput};
use crate::support::TestDb;
use crate::support::replication::ReplicationSet;

/// A read with a little server work, so the servers, not the client, are what is measured.
const READ: &str = "SELECT count(*) FROM generate_series(1, 2000)";

const WORKERS: usize = 32;

fn with_replicas(mut c: ConnectionConfig, ports: &[u16]) -> ConnectionConfig {
    for port in ports {
        let replica = c.replica("127.0.0.1", Some(*port));
        c.replicas.push(replica);
    }
    c
}

async fn connected(c: ConnectionConfig) -> Manager {
    let manager =
        Manager::new(dbmanager::ManagerConfig::default().with_connection(c)).expect("config");
    manager.connect().await.expect("connect");
    manager
}

/// Throughput of [`READ`] through the neutral handle with 0, 1 and 2 replicas.
pub async fn run() {
    let set = ReplicationSet::start(2);
    let ports: Vec<u16> = set.standbys.iter().map(|s| s.port).collect();
    let mut base = set
        .primary
        .config("pg", "admin", &set.primary.password, "postgres");
    base.max_open_conns = Some(8);
    base.max_idle_conns = Some(8);
    base.sslmode = Some(SslMode::Disable);
    println!("## Reads over replicas\n");
    println!(
        "`{READ}` through `Connection::database()`, {WORKERS} tasks, pools of 8 per server; \
         primary and standbys are private clusters on this machine (same cores).\n"
    );
    println!("| replicas | reads/s | on the primary |");
    println!("|---|---|---|");
    for n in 0..=2 {
        let manager = connected(with_replicas(base.clone(), &ports[..n])).await;
        let db = manager.database("pg").expect("handle");
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let db = db.clone();
            rounds.push(
                throughput(
                    WORKERS,
                    crate::cell_duration(),
                    op(move || {
                        let db = db.clone();
                        async move {
                            db.fetch_optional(READ, &[]).await.expect("read");
                        }
                    }),
                )
                .await,
            );
        }
        let stats = manager.stats();
        let routed = stats.connections["pg"]
            .routing
            .as_ref()
            .map_or(0, |r| r.to_replica);
        let on_primary = if n == 0 {
            "all".to_owned()
        } else {
            format!("{} routed to replicas", routed)
        };
        println!("| {n} | {} | {on_primary} |", fmt_rate(median(rounds)));
        manager.close(Duration::from_secs(5)).await;
    }
    println!();
}

/// Runs exactly `per_worker` reads (`SELECT 1`) on each of 16 tasks, through a connection
/// without replicas (`variant` 0) or one whose single replica is the very same server
/// (`variant` 1): the same round trips, so the difference in instructions per read is the
/// routing. `dbmanager-bench replica-count <variant> <n>` under `valgrind --tool=callgrind`.
pub async fn count(variant: usize, per_worker: u64) {
    let db = TestDb::create();
    let mut c = db.config("pg");
    c.max_open_conns = Some(8);
    c.max_idle_conns = Some(8);
    c.connect_timeout = Duration::from_secs(30);
    if variant == 1 {
        let host = c.host.clone().unwrap_or_default();
        let mut replica = c.replica(host, c.port);
        replica.max_open_conns = Some(8);
        c.replicas.push(replica);
        // The primary's own pool is not read from: keep it to one connection, so both
        // variants hold eight connections that serve reads.
        c.max_open_conns = Some(1);
        c.max_idle_conns = Some(1);
    }
    let manager = connected(c).await;
    let handle = manager.database("pg").expect("handle");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let db = handle.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    db.fetch_optional("SELECT 1", &[]).await.expect("read");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    let routed = manager.stats().connections["pg"]
        .routing
        .as_ref()
        .map_or(0, |r| r.to_replica);
    println!(
        "variant {variant}: {} reads, {routed} routed to the replica",
        16 * per_worker
    );
    manager.close(Duration::from_secs(5)).await;
}
