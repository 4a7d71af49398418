//! Measurement 9: memory per idle pooled connection, per driver. Each pool is brought to one
//! connection, then to N (all checked out at once, then given back), and the growth between
//! the two, divided by the connections added, is what one idle connection keeps: live heap
//! bytes (counted by the bench's allocator, see [`crate::heap`]) and resident memory of this
//! process, and on the server the private memory of a backend process.
//!
//! `dbmanager-bench idle-memory [connections]` (default 50).

use std::time::Duration;

use dbmanager::Manager;
use dbmanager::reexports::sqlx::PgPool;
use futures_util::future::try_join_all;

use crate::heap;
use crate::pools;
use crate::support::{self, TestDb};

/// A pool of one of the drivers compared.
enum Idle {
    Sqlx(PgPool),
    Deadpool(deadpool_postgres::Pool),
    /// A dbmanager connection, held through its neutral handle, so any driver behind it works.
    Dbmanager(Manager, &'static str),
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Idle {
    /// Checks `n` connections out at once (opening what the pool lacks), then returns them.
    async fn hold(&self, n: usize) -> Result<(), String> {
        match self {
            Idle::Sqlx(pool) => drop(
                try_join_all((0..n).map(|_| pool.acquire()))
                    .await
                    .map_err(text)?,
            ),
            Idle::Deadpool(pool) => drop(
                try_join_all((0..n).map(|_| pool.get()))
                    .await
                    .map_err(text)?,
            ),
            Idle::Dbmanager(m, name) => {
                let db = m.database(name).map_err(text)?;
                // A transaction holds its connection until dropped (which rolls it back).
                drop(
                    try_join_all((0..n).map(|_| db.begin()))
                        .await
                        .map_err(text)?,
                )
            }
        }
        Ok(())
    }

    fn open(&self) -> usize {
        match self {
            Idle::Sqlx(pool) => pool.size() as usize,
            Idle::Deadpool(pool) => pool.status().size,
            Idle::Dbmanager(m, name) => m.get(name).map_or(0, |c| c.stats().open as usize),
        }
    }

    async fn close(self) {
        match self {
            Idle::Sqlx(pool) => pool.close().await,
            Idle::Deadpool(pool) => pool.close(),
            Idle::Dbmanager(m, _) => drop(m.close(Duration::from_secs(5)).await),
        }
    }
}

/// The drivers compared, each on its own database so its backends can be told apart: the raw
/// pools and every dbmanager driver of [`pools::DRIVERS`].
async fn variants(n: usize) -> Vec<(String, TestDb, Idle)> {
    let size = u32::try_from(n).unwrap_or(u32::MAX);
    let (a, b) = (TestDb::create(), TestDb::create());
    let sqlx = Idle::Sqlx(pools::sqlx_pool(&a.name, size, true).await);
    let dp = Idle::Deadpool(pools::deadpool(&b.name, n));
    let mut out = vec![
        ("raw sqlx".to_owned(), a, sqlx),
        ("raw deadpool-postgres".to_owned(), b, dp),
    ];
    for d in pools::DRIVERS {
        let db = TestDb::create();
        let m = pools::manager_with(vec![d.config(&db.name, size)]).await;
        out.push((
            format!("dbmanager ({})", d.label),
            db,
            Idle::Dbmanager(m, d.connection),
        ));
    }
    out
}

fn status_kib(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    })
}

/// Mean private (anonymous) resident memory of the backends serving `db`, if the server runs on
/// this machine where their `/proc` entries can be read.
fn server_kib_per_backend(db: &TestDb) -> Option<f64> {
    let pids = support::admin_sql(
        "postgres",
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ),
    );
    let kib: Vec<u64> = pids
        .lines()
        .filter_map(|pid| status_kib(&format!("/proc/{}/status", pid.trim()), "RssAnon:"))
        .collect();
    (!kib.is_empty()).then(|| kib.iter().sum::<u64>() as f64 / kib.len() as f64)
}

fn resident_kib() -> i64 {
    status_kib("/proc/self/status", "VmRSS:").map_or(0, |k| k as i64)
}

/// Lets returned connections settle (sqlx returns them on a spawned task) before a reading.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

pub async fn run(n: usize) {
    println!("## 9. Memory per idle pooled connection\n");
    println!(
        "Each pool brought to 1 connection, then to {n} (checked out at once, then returned and left \
         idle); the growth divided by the connections added. Heap: live bytes counted by the \
         bench's allocator; RSS: this process's resident memory (whole pages, so coarser); \
         server: mean private (`RssAnon`) memory of one backend process serving the pool.\n"
    );
    println!(
        "| driver | connections | heap per connection | RSS per connection | server per backend |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, db, pool) in variants(n).await {
        heap::start();
        let outcome = async {
            pool.hold(1).await?;
            settle().await;
            let (heap_1, rss_1, open_1) = (heap::live(), resident_kib(), pool.open());
            pool.hold(n).await?;
            settle().await;
            let (heap_n, rss_n, open_n) = (heap::live(), resident_kib(), pool.open());
            Ok::<_, String>((heap_n - heap_1, rss_n - rss_1, open_1, open_n))
        }
        .await;
        heap::stop();
        match outcome {
            Ok((heap, rss, open_1, open_n)) if open_n > open_1 => {
                let added = (open_n - open_1) as f64;
                let server = server_kib_per_backend(&db)
                    .map_or_else(|| "-".to_owned(), |k| format!("{k:.0} KiB"));
                println!(
                    "| {name} | {open_1} → {open_n} | {:.1} KiB | {:.1} KiB | {server} |",
                    heap as f64 / 1024.0 / added,
                    rss as f64 / added,
                );
            }
            Ok((_, _, open_1, open_n)) => {
                println!("| {name} | {open_1} → {open_n} | - | - | - |");
            }
            Err(e) => println!("| {name} | failed: {e} | - | - | - |"),
        }
        pool.close().await;
        drop(db);
    }
    println!();
}
