//! Benchmarks of dbmanager against the baselines a user would otherwise write, side by side in
//! one run. `cargo run --release -p dbmanager-bench -- [all|lookup|query|acquire|connect|recovery|pgbench|soak|replicas]`
//! prints Markdown tables; `BENCHMARKS.md` records a run and what it means.

// The shared test support names the library's backend features, which this crate lacks.
#[path = "../../dbmanager/tests/support/mod.rs"]
#[allow(unused_imports, unused_variables, unexpected_cfgs)]
mod support;

mod connect;
mod harness;
mod lookup;
mod query;
mod recovery;
mod replicas;
mod soak;

use std::time::Duration;

/// Seconds each throughput cell is measured (after a short warm-up); `BENCH_SECONDS` overrides.
fn cell_duration() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).cloned().unwrap_or_else(|| "all".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if what == "soak" {
        let minutes = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10.0);
        let every = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(30.0);
        runtime.block_on(soak::run(minutes, Duration::from_secs_f64(every)));
        return;
    }
    if what == "sizes" {
        query::sizes();
        return;
    }
    if what == "count" {
        let index = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
        let per_worker = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
        runtime.block_on(query::count(index, per_worker));
        return;
    }
    if what == "replica-count" {
        let variant = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
        let per_worker = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
        runtime.block_on(replicas::count(variant, per_worker));
        return;
    }
    if what == "spin" {
        let index = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
        let secs = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5.0);
        runtime.block_on(query::spin(index, secs));
        return;
    }
    println!("# dbmanager benchmarks\n");
    println!(
        "{} cores; PostgreSQL on 127.0.0.1:{}; {} s per cell, median of 3 rounds\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        support::pg_port(),
        cell_duration().as_secs_f64()
    );
    let all = what == "all";
    if all || what == "lookup" {
        runtime.block_on(lookup::run());
    }
    if all || what == "query" {
        runtime.block_on(query::run(query::Mode::Query));
    }
    if all || what == "acquire" {
        runtime.block_on(query::run(query::Mode::Acquire));
    }
    if all || what == "pgbench" {
        runtime.block_on(query::pgbench());
    }
    if all || what == "connect" {
        runtime.block_on(connect::run());
    }
    if all || what == "recovery" {
        runtime.block_on(recovery::run());
    }
    if all || what == "replicas" {
        runtime.block_on(replicas::run());
    }
}
