//! Measurement 8: checkout latency under contention. Many more tasks than connections (64 on a
//! pool of 8 by default) each check a connection out, do trivial work, and give it back; the
//! time each checkout waited is recorded, so p50/p99 show what queueing for a connection costs.
//!
//! `dbmanager-bench checkout [rounds] [seconds] [tasks] [pool]`.
//!
//! The neutral handle checks a connection out only inside a statement or a transaction, so it
//! is measured in a second table where every client's checkout is a transaction start
//! (checkout + `BEGIN`) released by `ROLLBACK`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbmanager::Manager;
use dbmanager::reexports::sqlx::PgPool;

use crate::harness::median;
use crate::latency::{self, Probe, Run, Sample, fmt_nanos, spread};
use crate::pools;
use crate::support::TestDb;

const WARMUP: Duration = Duration::from_millis(300);

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A probe from an async closure that returns how long its checkout took.
fn probe<F, Fut>(f: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send + 'static,
{
    Arc::new(move |_| {
        let fut = f();
        Box::pin(async move {
            let took: Sample = fut.await.map(|d| (0, d));
            took
        })
    })
}

/// Checkout, trivial work (one yield to the scheduler, so other tasks run while it is held),
/// release.
fn plain(sqlx: PgPool, dp: deadpool_postgres::Pool, m: Manager) -> Vec<(String, Probe)> {
    vec![
        (
            "raw sqlx (`acquire`)".into(),
            probe(move || {
                let pool = sqlx.clone();
                async move {
                    let started = Instant::now();
                    let conn = pool.acquire().await.map_err(text)?;
                    let took = started.elapsed();
                    tokio::task::yield_now().await;
                    drop(conn);
                    Ok(took)
                }
            }),
        ),
        (
            "raw deadpool-postgres (`get`)".into(),
            probe(move || {
                let dp = dp.clone();
                async move {
                    let started = Instant::now();
                    let client = dp.get().await.map_err(text)?;
                    let took = started.elapsed();
                    tokio::task::yield_now().await;
                    drop(client);
                    Ok(took)
                }
            }),
        ),
        (
            "dbmanager native (`postgres()` + `acquire`)".into(),
            probe(move || {
                let m = m.clone();
                async move {
                    let started = Instant::now();
                    let pool = m.postgres("pg").map_err(text)?;
                    let conn = pool.acquire().await.map_err(text)?;
                    let took = started.elapsed();
                    tokio::task::yield_now().await;
                    drop(conn);
                    Ok(took)
                }
            }),
        ),
    ]
}

/// Checkout + `BEGIN`, released by `ROLLBACK`: the neutral handle (on every driver of
/// [`pools::DRIVERS`]) next to the same through the other clients.
fn through_begin(sqlx: PgPool, dp: deadpool_postgres::Pool, m: Manager) -> Vec<(String, Probe)> {
    let native = m.clone();
    let mut out = vec![
        (
            "raw sqlx (`begin`)".into(),
            probe(move || {
                let pool = sqlx.clone();
                async move {
                    let started = Instant::now();
                    let tx = pool.begin().await.map_err(text)?;
                    let took = started.elapsed();
                    tx.rollback().await.map_err(text)?;
                    Ok(took)
                }
            }),
        ),
        (
            "raw deadpool-postgres (`get` + `transaction`)".into(),
            probe(move || {
                let dp = dp.clone();
                async move {
                    let started = Instant::now();
                    let mut client = dp.get().await.map_err(text)?;
                    let tx = client.transaction().await.map_err(text)?;
                    let took = started.elapsed();
                    tx.rollback().await.map_err(text)?;
                    Ok(took)
                }
            }),
        ),
        (
            "dbmanager native (`postgres()` + `begin`)".into(),
            probe(move || {
                let m = native.clone();
                async move {
                    let started = Instant::now();
                    let tx = m
                        .postgres("pg")
                        .map_err(text)?
                        .begin()
                        .await
                        .map_err(text)?;
                    let took = started.elapsed();
                    tx.rollback().await.map_err(text)?;
                    Ok(took)
                }
            }),
        ),
    ];
    for d in pools::DRIVERS {
        let (m, connection) = (m.clone(), d.connection);
        out.push((
            format!("dbmanager neutral, {} (`database()` + `begin`)", d.label),
            probe(move || {
                let m = m.clone();
                async move {
                    let started = Instant::now();
                    let db = m.database(connection).map_err(text)?;
                    let tx = db.begin().await.map_err(text)?;
                    let took = started.elapsed();
                    tx.rollback().await.map_err(text)?;
                    Ok(took)
                }
            }),
        ));
    }
    out
}

pub async fn run(rounds: usize, seconds: f64, tasks: usize, pool: u32) {
    let db = TestDb::create();
    let sqlx = pools::sqlx_pool(&db.name, pool, true).await;
    let dp = pools::deadpool(&db.name, pool as usize);
    let m = pools::manager_with(pools::driver_configs(&db.name, pool)).await;
    let groups = [
        (
            "Checkout, one yield, release",
            plain(sqlx.clone(), dp.clone(), m.clone()),
        ),
        (
            "Checkout + `BEGIN`, released by `ROLLBACK`",
            through_begin(sqlx.clone(), dp.clone(), m.clone()),
        ),
    ];
    // Every cell of both tables in one interleaved rotation.
    let cells: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, (_, vs))| (0..vs.len()).map(move |v| (g, v)))
        .collect();
    let mut runs: Vec<Vec<Vec<Run>>> = groups
        .iter()
        .map(|(_, vs)| vs.iter().map(|_| Vec::new()).collect())
        .collect();
    let duration = Duration::from_secs_f64(seconds);
    for round in 0..rounds {
        for k in 0..cells.len() {
            let (g, v) = cells[(round + k) % cells.len()];
            let (name, probe) = &groups[g].1[v];
            let run = latency::run(tasks, 1, WARMUP, duration, probe.clone()).await;
            if let Some(e) = &run.first_error {
                eprintln!("{name}: {} errors, first: {e}", run.errors);
            }
            runs[g][v].push(run);
        }
    }
    println!("## 8. Checkout latency under contention\n");
    println!(
        "{tasks} tasks on a pool of {pool}; {rounds} interleaved rounds of {seconds} s per variant after a {} ms \
         warm-up. The time from asking for a connection to holding it (including the wait for \
         one); checkouts/s is the median of the rounds, spread (max - min) / median; percentiles \
         over all rounds. Ratios: throughput / the baseline's (above 1 is faster).\n",
        WARMUP.as_millis()
    );
    for ((title, variants), runs) in groups.iter().zip(&runs) {
        println!("**{title}**\n");
        println!(
            "| variant | checkouts/s | spread | wait p50 | wait p99 | × raw sqlx | × raw deadpool | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        let rates: Vec<Vec<f64>> = runs
            .iter()
            .map(|r| r.iter().map(|run| run.rate(0)).collect())
            .collect();
        // The first two variants of each table are raw sqlx and raw deadpool-postgres.
        let (sqlx_rate, dp_rate) = (median(rates[0].clone()), median(rates[1].clone()));
        for (((name, _), runs), rates) in variants.iter().zip(runs).zip(&rates) {
            let mut h = latency::histogram();
            for run in runs {
                h.add(&run.histograms[0])
                    .expect("histograms of the same bounds");
            }
            let rate = median(rates.clone());
            println!(
                "| {name} | {rate:.0} | {:.0} % | {} | {} | {:.2} | {:.2} | {} |",
                spread(rates),
                fmt_nanos(h.value_at_quantile(0.5)),
                fmt_nanos(h.value_at_quantile(0.99)),
                rate / sqlx_rate,
                rate / dp_rate,
                runs.iter().map(|r| r.errors).sum::<u64>()
            );
        }
        println!();
    }
    sqlx.close().await;
    dp.close();
    m.close(Duration::from_secs(5)).await;
}
