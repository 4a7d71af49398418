//! Measurements 2 (query path) and 3 (acquire only), on the machine's PostgreSQL, against raw sqlx pools and
//! deadpool-postgres; and measurement 6, pgbench on the same server.

use std::time::Duration;

use dbmanager::Manager;
use dbmanager::reexports::sea_orm::{ConnectionTrait, DbBackend, Statement};
use dbmanager::reexports::sqlx::{self, PgPool};

use crate::harness::{Op, fmt_rate, median, op, throughput};
use crate::pools;
use crate::support::{self, TestDb};

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Query,
    Acquire,
}

const MATRIX: [(usize, u32); 4] = [(4, 4), (16, 8), (64, 8), (64, 16)];

/// The raw deadpool-postgres variant: the second baseline, for the tokio-postgres driver.
const DEADPOOL_QUERY: &str = "deadpool-postgres (prepared, cached)";
/// The neutral handle on `driver: tokio-postgres`.
const TOKIO_NEUTRAL: &str = "dbmanager neutral (tokio-postgres driver)";

async fn sqlx_pool(db: &TestDb, size: u32, same_settings: bool) -> PgPool {
    pools::sqlx_pool(&db.name, size, same_settings).await
}

async fn manager(db: &TestDb, size: u32) -> Manager {
    pools::manager(&db.name, size).await
}

fn deadpool(db: &TestDb, size: usize) -> deadpool_postgres::Pool {
    pools::deadpool(&db.name, size)
}

fn variants(
    mode: Mode,
    raw_default: PgPool,
    raw_same: PgPool,
    m: Manager,
    dp: deadpool_postgres::Pool,
) -> Vec<(&'static str, Op)> {
    let sqlx_query = |pool: PgPool| {
        op(move || {
            let pool = pool.clone();
            async move {
                let _: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&pool)
                    .await
                    .expect("query");
            }
        })
    };
    let sqlx_acquire = |pool: PgPool| {
        op(move || {
            let pool = pool.clone();
            async move {
                drop(pool.acquire().await.expect("acquire"));
            }
        })
    };
    let mut out: Vec<(&'static str, Op)> = Vec::new();
    match mode {
        Mode::Query => {
            out.push(("sqlx, defaults (ping on acquire)", sqlx_query(raw_default)));
            out.push(("sqlx, same settings (baseline)", sqlx_query(raw_same)));
            let mm = m.clone();
            out.push((
                "dbmanager native (`get` + `postgres()`)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        let pool = mm.get("pg").and_then(|c| c.postgres()).expect("pool");
                        let _: i32 = sqlx::query_scalar("SELECT 1")
                            .fetch_one(&pool)
                            .await
                            .expect("query");
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                "dbmanager neutral (`database()`)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        mm.database("pg")
                            .expect("db")
                            .fetch_one("SELECT 1", &[])
                            .await
                            .expect("query");
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                "dbmanager neutral, per-query metrics off",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        mm.database("pg_nometrics")
                            .expect("db")
                            .fetch_one("SELECT 1", &[])
                            .await
                            .expect("query");
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                "dbmanager SeaORM (`sea_orm()`)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        let orm = mm.get("pg").and_then(|c| c.sea_orm()).expect("orm");
                        orm.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
                            .await
                            .expect("query");
                    }
                }),
            ));
            out.push((
                DEADPOOL_QUERY,
                op(move || {
                    let dp = dp.clone();
                    async move {
                        let client = dp.get().await.expect("client");
                        let stmt = client.prepare_cached("SELECT 1").await.expect("prepare");
                        let _ = client.query_one(&stmt, &[]).await.expect("query");
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                TOKIO_NEUTRAL,
                op(move || {
                    let mm = mm.clone();
                    async move {
                        mm.database("pg_tokio")
                            .expect("db")
                            .fetch_one("SELECT 1", &[])
                            .await
                            .expect("query");
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                "dbmanager tokio-postgres native (`tokio_postgres()`, prepared, cached)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        let pool = mm
                            .get("pg_tokio")
                            .and_then(|c| c.tokio_postgres())
                            .expect("pool");
                        let client = pool.get().await.expect("client");
                        let stmt = client.prepare_cached("SELECT 1").await.expect("prepare");
                        let _ = client.query_one(&stmt, &[]).await.expect("query");
                    }
                }),
            ));
        }
        Mode::Acquire => {
            out.push((
                "sqlx, defaults (ping on acquire)",
                sqlx_acquire(raw_default),
            ));
            out.push(("sqlx, same settings (baseline)", sqlx_acquire(raw_same)));
            let mm = m.clone();
            out.push((
                "dbmanager native (`get` + `postgres()` + acquire)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        let pool = mm.get("pg").and_then(|c| c.postgres()).expect("pool");
                        drop(pool.acquire().await.expect("acquire"));
                    }
                }),
            ));
            out.push((
                "deadpool-postgres",
                op(move || {
                    let dp = dp.clone();
                    async move {
                        drop(dp.get().await.expect("client"));
                    }
                }),
            ));
            let mm = m.clone();
            out.push((
                "dbmanager tokio-postgres native (`tokio_postgres()` + get)",
                op(move || {
                    let mm = mm.clone();
                    async move {
                        let pool = mm
                            .get("pg_tokio")
                            .and_then(|c| c.tokio_postgres())
                            .expect("pool");
                        drop(pool.get().await.expect("client"));
                    }
                }),
            ));
        }
    }
    out
}

pub async fn run(mode: Mode) {
    let (title, what) = match mode {
        Mode::Query => ("## 2. Query path: `SELECT 1`", "queries"),
        Mode::Acquire => ("## 3. Acquire only: checkout + return", "checkouts"),
    };
    println!("{title}\n");
    let rounds = crate::arg_env("BENCH_ROUNDS", 3usize).max(1);
    // Variants whose name contains one of these (comma-separated); the two baselines always run.
    let only: Vec<String> = std::env::var("BENCH_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    println!(
        "Throughput ({what} per second, median of {rounds} interleaved rounds); ratio against `sqlx, same settings`; \
         the ranges are the lowest and highest ratio of one round (each variant against the baseline of the same round).\n"
    );
    let db = TestDb::create();
    for (workers, size) in MATRIX {
        let raw_default = sqlx_pool(&db, size, false).await;
        let raw_same = sqlx_pool(&db, size, true).await;
        let m = manager(&db, size).await;
        let dp = deadpool(&db, size as usize);
        let variants: Vec<_> = variants(
            mode,
            raw_default.clone(),
            raw_same.clone(),
            m.clone(),
            dp.clone(),
        )
        .into_iter()
        .filter(|(name, _)| {
            only.is_empty()
                || is_baseline(name)
                || name.starts_with("deadpool-postgres")
                || only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
        let baseline_at = variants
            .iter()
            .position(|(name, _)| is_baseline(name))
            .unwrap_or(0);
        let deadpool_at = variants
            .iter()
            .position(|(name, _)| name.starts_with("deadpool-postgres"));
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (i, (_, op)) in variants.iter().enumerate() {
                results[i].push(throughput(workers, crate::cell_duration(), op.clone()).await);
            }
        }
        // Per round, each variant against each baseline of that same round.
        let range = |i: usize, against: usize| {
            let ratios: Vec<f64> = results[i]
                .iter()
                .zip(&results[against])
                .map(|(v, b)| v / b)
                .collect();
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (median(ratios), low, high)
        };
        println!("**{workers} workers × pool {size}**\n");
        println!(
            "| variant | throughput | ratio (median of rounds) | range | ratio to deadpool-postgres | range |"
        );
        println!("|---|---:|---:|---|---:|---|");
        for (i, (name, _)) in variants.iter().enumerate() {
            let (ratio, low, high) = range(i, baseline_at);
            let (to_deadpool, dlow, dhigh) =
                deadpool_at.map_or((f64::NAN, f64::NAN, f64::NAN), |d| range(i, d));
            println!(
                "| {name} | {} | {ratio:.3} | {low:.3}–{high:.3} | {to_deadpool:.3} | {dlow:.3}–{dhigh:.3} |",
                fmt_rate(median(results[i].clone())),
            );
        }
        println!();
        raw_default.close().await;
        raw_same.close().await;
        m.close(Duration::from_secs(5)).await;
        dp.close();
    }
}

fn is_baseline(name: &str) -> bool {
    name.starts_with("sqlx, same settings")
}

/// Measurement 6: PostgreSQL's own C client (`pgbench -f` with `SELECT 1`, prepared) with the same client
/// count as our 8 × 8 cell, next to sqlx and dbmanager.
pub async fn pgbench() {
    println!("## 6. Physical limit: pgbench\n");
    let db = TestDb::create();
    let script = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(script.path(), "SELECT 1;\n").expect("script");
    let secs = crate::cell_duration().as_secs().max(3);
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-h",
            &support::pg_host(),
            "-p",
            &support::pg_port().to_string(),
            "-U",
            &support::pg_user(),
        ])
        .args([
            "-M",
            "prepared",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(script.path())
        .arg(&db.name)
        .output()
        .await
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let raw_same = sqlx_pool(&db, 8, true).await;
    let m = manager(&db, 8).await;
    let dp = deadpool(&db, 8);
    let variants = variants(
        Mode::Query,
        raw_same.clone(),
        raw_same.clone(),
        m.clone(),
        dp.clone(),
    );
    println!("8 clients / 8 connections, `SELECT 1`.\n");
    println!("| client | throughput | ratio to pgbench |");
    println!("|---|---:|---:|");
    println!(
        "| pgbench -M prepared -c 8 -j 2 | {} | 1.000 |",
        fmt_rate(tps)
    );
    for (name, op) in variants.into_iter().skip(1) {
        let v = throughput(8, Duration::from_secs(secs), op).await;
        println!("| {name} | {} | {:.3} |", fmt_rate(v), v / tps);
    }
    println!();
    m.close(Duration::from_secs(5)).await;
    raw_same.close().await;
    dp.close();
}

/// Runs one query variant alone for profiling: `dbmanager-bench spin <index> <seconds>`
/// (indices as in the query table, from 0).
pub async fn spin(index: usize, secs: f64) {
    let db = TestDb::create();
    let raw_default = sqlx_pool(&db, 8, false).await;
    let raw_same = sqlx_pool(&db, 8, true).await;
    let m = manager(&db, 8).await;
    let dp = deadpool(&db, 8);
    let variants = variants(Mode::Query, raw_default, raw_same, m.clone(), dp);
    let (name, op) = variants.into_iter().nth(index).expect("a variant index");
    let v = throughput(16, Duration::from_secs_f64(secs), op).await;
    println!("{name}: {}", fmt_rate(v));
    m.close(Duration::from_secs(5)).await;
}

/// Runs exactly `per_worker` operations on each of 16 tasks of one query variant, for
/// instruction counting (`valgrind --tool=callgrind`): `dbmanager-bench count <index> <n>`.
/// The difference between two counts of `n` over the difference of operations is the cost of
/// one operation in instructions, which, unlike time, does not depend on what else the machine
/// is doing.
pub async fn count(index: usize, per_worker: u64) {
    let db = TestDb::create();
    let raw_default = sqlx_pool(&db, 8, false).await;
    let raw_same = sqlx_pool(&db, 8, true).await;
    let m = manager(&db, 8).await;
    let dp = deadpool(&db, 8);
    let variants = variants(Mode::Query, raw_default, raw_same, m.clone(), dp);
    let (name, op) = variants.into_iter().nth(index).expect("a variant index");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    op().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    println!("{name}: {} operations", 16 * per_worker);
    m.close(Duration::from_secs(5)).await;
}

/// Sizes in bytes of the futures each query variant's operation builds (`dbmanager-bench sizes`):
/// a future is moved (copied) whole when boxed or awaited inside another, so its size is paid
/// per call.
pub fn sizes() {
    fn of<'a, A: ?Sized + 'a, Fut>(_: fn(&'a A) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }
    fn neutral_one(
        db: &dbmanager::Database,
    ) -> impl Future<Output = dbmanager::Result<dbmanager::Row>> + '_ {
        db.fetch_one("SELECT 1", &[])
    }
    fn neutral_all(
        db: &dbmanager::Database,
    ) -> impl Future<Output = dbmanager::Result<Vec<dbmanager::Row>>> + '_ {
        db.fetch_all("SELECT 1", &[])
    }
    fn neutral_execute(
        db: &dbmanager::Database,
    ) -> impl Future<Output = dbmanager::Result<u64>> + '_ {
        db.execute("SELECT 1", &[])
    }
    fn raw(pool: &PgPool) -> impl Future<Output = Result<i32, sqlx::Error>> + '_ {
        sqlx::query_scalar("SELECT 1").fetch_one(pool)
    }
    println!("raw sqlx fetch_one: {} bytes", of(raw));
    println!("neutral fetch_one: {} bytes", of(neutral_one));
    println!("neutral fetch_all: {} bytes", of(neutral_all));
    println!("neutral execute: {} bytes", of(neutral_execute));
}
