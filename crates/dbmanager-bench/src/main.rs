//! Benchmarks of dbmanager against the baselines a user would otherwise write, side by side in
//! one run. `cargo run --release -p dbmanager-bench -- [all|lookup|query|acquire|connect|recovery|pgbench|pooler|soak|replicas]`
//! prints Markdown tables; `BENCHMARKS.md` records a run and what it means.
//!
//! What users feel: `mix [rounds] [seconds] [clients]` (a query mix with latency percentiles),
//! `checkout [rounds] [seconds] [tasks] [pool]` (checkout latency under contention),
//! `idle-memory [connections]`, and `feel [rounds] [seconds]` for all three.

// The shared test support names the library's backend features, which this crate lacks.
#[path = "../../dbmanager/tests/support/mod.rs"]
#[allow(unused_imports, unused_variables, unexpected_cfgs)]
mod support;

mod checkout;
mod connect;
mod harness;
mod heap;
mod idle_memory;
mod latency;
mod lookup;
mod mix;
mod pooler;
mod pools;
mod query;
mod recovery;
mod replicas;
mod soak;

/// Counts heap bytes only while the idle-memory measurement switches it on.
#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

use std::time::Duration;

/// Seconds each throughput cell is measured (after a short warm-up); `BENCH_SECONDS` overrides.
fn cell_duration() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// The environment variable `name` as a `T`, or `default` when unset or not a valid `T`.
fn arg_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `i`th argument, if given and a valid `T`.
fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Option<T> {
    args.get(i).and_then(|a| a.parse().ok())
}

/// Measurements 7 to 9, what users feel; `rounds` and `seconds` per cell as given.
async fn feel(rounds: usize, seconds: f64) {
    mix::run(rounds, seconds, 8).await;
    checkout::run(rounds, seconds, 64, 8).await;
    idle_memory::run(50).await;
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
    let seconds = || arg(&args, 3).unwrap_or(cell_duration().as_secs_f64());
    let rounds = || arg(&args, 2).unwrap_or(3).max(1);
    if what == "mix" {
        runtime.block_on(mix::run(rounds(), seconds(), arg(&args, 4).unwrap_or(8)));
        return;
    }
    if what == "checkout" {
        let (tasks, pool) = (arg(&args, 4).unwrap_or(64), arg(&args, 5).unwrap_or(8));
        runtime.block_on(checkout::run(rounds(), seconds(), tasks, pool));
        return;
    }
    if what == "idle-memory" {
        runtime.block_on(idle_memory::run(arg(&args, 2).unwrap_or(50)));
        return;
    }
    if what == "feel" {
        runtime.block_on(feel(rounds(), seconds()));
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
    if all || what == "pooler" {
        runtime.block_on(pooler::run());
    }
    if all || what == "replicas" {
        runtime.block_on(replicas::run());
    }
    if all {
        runtime.block_on(feel(3, cell_duration().as_secs_f64()));
    }
}
