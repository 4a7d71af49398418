//! Measurement 7: a realistic query mix (point select, 100-row range select, single-row insert,
//! 3-statement transaction) on a 100 000-row table, with throughput and p50/p99 latency per
//! client and per kind of request, every client in the same run: raw sqlx, raw
//! deadpool-postgres, dbmanager's layers, and pgbench.
//!
//! `dbmanager-bench mix [rounds] [seconds] [clients]` (defaults 3, `BENCH_SECONDS` or 1, 8):
//! `clients` tasks on pools of as many connections. The cells are interleaved, each round
//! starting one variant later, so a burst of load on the machine lands on all of them alike.

mod clients;
mod pgbench;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbmanager::Manager;

use crate::harness::median;
use crate::latency::{self, Probe, Run, fmt_nanos, spread};
use crate::pools;
use clients::{Deadpool, MixClient, Neutral, SeaOrm, Sqlx};
use workload::KINDS;

/// The baselines every figure is set against.
const RAW_SQLX: &str = "raw sqlx";
const RAW_DEADPOOL: &str = "raw deadpool-postgres";

const WARMUP: Duration = Duration::from_millis(300);

/// The pools one run compares, opened once and shared by all its rounds.
struct Pools {
    sqlx: dbmanager::reexports::sqlx::PgPool,
    deadpool: deadpool_postgres::Pool,
    manager: Manager,
}

enum Runner {
    Client(Arc<dyn MixClient>),
    Pgbench,
}

struct Variant {
    name: String,
    runner: Runner,
}

fn client(name: impl Into<String>, c: impl MixClient) -> Variant {
    Variant {
        name: name.into(),
        runner: Runner::Client(Arc::new(c)),
    }
}

/// Every client of the mix, in table order: one line each. The neutral handle is measured on
/// every driver of [`pools::DRIVERS`]; `pg` is the default (sqlx) driver's connection, which the
/// native layer and SeaORM use.
fn variants(p: &Pools) -> Vec<Variant> {
    let m = || p.manager.clone();
    let mut variants = vec![
        client(RAW_SQLX, Sqlx::Raw(p.sqlx.clone())),
        client(RAW_DEADPOOL, Deadpool(p.deadpool.clone())),
        client("dbmanager native (sqlx)", Sqlx::Managed(m(), "pg")),
    ];
    for d in pools::DRIVERS {
        let name = format!("dbmanager neutral ({})", d.label);
        variants.push(client(name, Neutral(m(), d.connection)));
    }
    variants.push(client("dbmanager SeaORM", SeaOrm(m(), "pg")));
    variants.push(Variant {
        name: "pgbench -M prepared".into(),
        runner: Runner::Pgbench,
    });
    variants
}

/// The client's requests as the latency runner's probe: a kind and id drawn from the random
/// number, timed around the client's call.
fn probe(c: Arc<dyn MixClient>) -> Probe {
    Arc::new(move |random| {
        let c = c.clone();
        Box::pin(async move {
            let (kind, id) = workload::draw(&mut fastrand::Rng::with_seed(random));
            let started = Instant::now();
            c.run(kind, id).await?;
            Ok((kind.index(), started.elapsed()))
        })
    })
}

pub async fn run(rounds: usize, seconds: f64, clients: usize) {
    let database = std::env::var("BENCH_MIX_DB").unwrap_or_else(|_| "test".into());
    let duration = Duration::from_secs_f64(seconds);
    workload::prepare(&database);
    let size = u32::try_from(clients).unwrap_or(u32::MAX);
    let pools = Pools {
        sqlx: pools::sqlx_pool(&database, size, true).await,
        deadpool: pools::deadpool(&database, clients),
        manager: pools::manager_with(pools::driver_configs(&database, size)).await,
    };
    let variants = variants(&pools);
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            workload::truncate_log(&database);
            let run = match &variants[i].runner {
                Runner::Client(c) => {
                    latency::run(clients, KINDS.len(), WARMUP, duration, probe(c.clone())).await
                }
                Runner::Pgbench => pgbench::run(&database, clients, WARMUP, duration).await,
            };
            if let Some(e) = &run.first_error {
                eprintln!("{}: {} errors, first: {e}", variants[i].name, run.errors);
            }
            runs[i].push(run);
        }
    }
    report(&variants, &runs, rounds, seconds, clients, &database);
    pools.sqlx.close().await;
    pools.deadpool.close();
    pools.manager.close(Duration::from_secs(5)).await;
}

/// A variant's figures over its rounds.
struct Summary {
    /// Requests per second, one per round.
    rates: Vec<f64>,
    /// Per kind, all rounds merged.
    histograms: Vec<hdrhistogram::Histogram<u64>>,
    errors: u64,
}

fn summarize(runs: &[Run]) -> Summary {
    let mut histograms: Vec<_> = KINDS.iter().map(|_| latency::histogram()).collect();
    for run in runs {
        for (into, from) in histograms.iter_mut().zip(&run.histograms) {
            into.add(from).expect("histograms of the same bounds");
        }
    }
    Summary {
        rates: runs.iter().map(Run::total_rate).collect(),
        histograms,
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn report(
    variants: &[Variant],
    runs: &[Vec<Run>],
    rounds: usize,
    seconds: f64,
    clients: usize,
    database: &str,
) {
    let summaries: Vec<Summary> = runs.iter().map(|r| summarize(r)).collect();
    let index_of = |name: &str| variants.iter().position(|v| v.name == name).unwrap_or(0);
    let (sqlx, deadpool) = (
        &summaries[index_of(RAW_SQLX)],
        &summaries[index_of(RAW_DEADPOOL)],
    );
    let shares: Vec<String> = KINDS
        .iter()
        .map(|(k, w)| format!("{w} % {}", k.label()))
        .collect();
    println!("## 7. Query mix\n");
    println!(
        "{clients} clients on pools of {clients} connections (one per raw client; dbmanager's layers share \
         its connection's pool); database `{database}`, \
         {} items in {} tables; mix: {}. {rounds} interleaved rounds of {seconds} s per variant after a {} ms warm-up. \
         Throughput is the median of the rounds and spread is (max - min) / median over them; \
         latencies are over all rounds. Ratios are how many times as fast as the baseline \
         (throughput / its throughput, its p50 / p50): above 1 is faster.\n",
        workload::ITEMS,
        if workload::unlogged() {
            "UNLOGGED (`BENCH_MIX_UNLOGGED=1`: commits wait for no WAL flush)"
        } else {
            "logged (commits wait for their WAL flush)"
        },
        shares.join(", "),
        WARMUP.as_millis()
    );
    println!("| variant | requests/s | spread | × raw sqlx | × raw deadpool | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (v, s) in variants.iter().zip(&summaries) {
        let rate = median(s.rates.clone());
        println!(
            "| {} | {rate:.0} | {:.0} % | {} | {} | {} |",
            v.name,
            spread(&s.rates),
            ratio(rate, median(sqlx.rates.clone())),
            ratio(rate, median(deadpool.rates.clone())),
            s.errors
        );
    }
    println!();
    println!("| kind | variant | p50 | p99 | p50 × raw sqlx | p50 × raw deadpool |");
    println!("|---|---|---:|---:|---:|---:|");
    for (k, _) in KINDS {
        let p50 = |s: &Summary| s.histograms[k.index()].value_at_quantile(0.5) as f64;
        for (v, s) in variants.iter().zip(&summaries) {
            let h = &s.histograms[k.index()];
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                k.label(),
                v.name,
                fmt_nanos(h.value_at_quantile(0.5)),
                fmt_nanos(h.value_at_quantile(0.99)),
                ratio(p50(sqlx), p50(s)),
                ratio(p50(deadpool), p50(s)),
            );
        }
    }
    println!();
}
