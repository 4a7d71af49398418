//! Measurement 7: what `pooler: transaction` costs, on the machine's PostgreSQL directly (no
//! pooler in between, so only the client's extra work and round trips show): a parameterised
//! query through the neutral handle, one worker and sixteen.

use std::time::Duration;

use dbmanager::{Database, Manager, Pooler, SslMode, Value};

use crate::harness::{Op, fmt_rate, median, op, throughput};
use crate::support::TestDb;

fn query(db: Database) -> Op {
    op(move || {
        let db = db.clone();
        async move {
            db.fetch_optional("SELECT $1::int8 AS n", &[Value::Int(7)])
                .await
                .expect("query");
        }
    })
}

fn transaction(db: Database) -> Op {
    op(move || {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.expect("begin");
            tx.fetch_all("SELECT $1::int8 AS n", &[Value::Int(7)])
                .await
                .expect("query");
            tx.commit().await.expect("commit");
        }
    })
}

pub async fn run() {
    let test_db = TestDb::create();
    let mut config = dbmanager::ManagerConfig::default();
    for (name, pooler) in [
        ("none", Pooler::None),
        ("session", Pooler::Session),
        ("transaction", Pooler::Transaction),
    ] {
        let mut c = test_db.config(name);
        c.pooler = pooler;
        c.max_open_conns = Some(8);
        c.max_idle_conns = Some(8);
        c.sslmode = Some(SslMode::Disable);
        c.connect_timeout = Duration::from_secs(30);
        config = config.with_connection(c);
    }
    let manager = Manager::new(config).expect("config");
    manager.connect().await.expect("connect");
    println!("## 7. `pooler` on a direct PostgreSQL: `SELECT $1::int8`, neutral handle (native)\n");
    println!(
        "| pooler | statement, 1 worker | per statement | statement, 16 workers | 1-statement transaction, 1 worker |"
    );
    println!("|---|---:|---:|---:|---:|");
    for name in ["none", "session", "transaction"] {
        let db = manager.database(name).expect("database");
        let mut cells = Vec::new();
        for (workers, work) in [
            (1, query(db.clone())),
            (16, query(db.clone())),
            (1, transaction(db.clone())),
        ] {
            let mut rounds = Vec::new();
            for _ in 0..3 {
                rounds.push(throughput(workers, crate::cell_duration(), work.clone()).await);
            }
            cells.push(median(rounds));
        }
        println!(
            "| `{name}` | {} | {:.0} µs | {} | {} |",
            fmt_rate(cells[0]),
            1e6 / cells[0],
            fmt_rate(cells[1]),
            fmt_rate(cells[2])
        );
    }
    println!();
    let _ = manager.close(Duration::from_secs(10)).await;
}
