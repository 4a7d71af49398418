//! What the query mix runs: its tables, its four kinds of request and their shares, written once
//! here so every client (and pgbench's scripts, generated from the same text) runs the same
//! statements.

use crate::support;

/// Rows in the items table; ids are 1..=ITEMS.
pub const ITEMS: i64 = 100_000;
/// Rows one range select reads.
pub const RANGE_ROWS: i64 = 100;

pub const ITEMS_TABLE: &str = "bench_mix_items";
pub const LOG_TABLE: &str = "bench_mix_log";

/// A point select by primary key.
pub const POINT: &str = "SELECT id, name, qty FROM bench_mix_items WHERE id = $1";
/// 100 consecutive rows (`$1` is at most ITEMS - RANGE_ROWS + 1).
pub const RANGE: &str = "SELECT id, name, qty FROM bench_mix_items WHERE id BETWEEN $1 AND $1 + 99";
/// A single-row insert into the log table (truncated before every cell).
pub const INSERT: &str = "INSERT INTO bench_mix_log (item_id, note) VALUES ($1, 'mix')";
/// The transaction's three statements: lock a row, change it, log the change.
pub const TX_LOCK: &str = "SELECT qty FROM bench_mix_items WHERE id = $1 FOR UPDATE";
pub const TX_UPDATE: &str = "UPDATE bench_mix_items SET qty = qty + 1 WHERE id = $1";
pub const TX_LOG: &str = "INSERT INTO bench_mix_log (item_id, note) VALUES ($1, 'tx')";

/// One kind of request in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Point,
    Range,
    Insert,
    Transaction,
}

/// The kinds in report order with their share of requests, in percent: read-mostly, as most
/// applications are.
pub const KINDS: [(Kind, u64); 4] = [
    (Kind::Point, 50),
    (Kind::Range, 20),
    (Kind::Insert, 20),
    (Kind::Transaction, 10),
];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Point => "point select",
            Kind::Range => "100-row range",
            Kind::Insert => "insert",
            Kind::Transaction => "3-statement tx",
        }
    }

    /// Position in [`KINDS`] (and in every per-kind array).
    pub fn index(self) -> usize {
        KINDS.iter().position(|(k, _)| *k == self).unwrap_or(0)
    }

    /// The largest id this kind may be given (a range must stay inside the table).
    fn max_id(self) -> i64 {
        match self {
            Kind::Range => ITEMS - RANGE_ROWS + 1,
            _ => ITEMS,
        }
    }

    /// pgbench's script for this kind: the same statements with `$1` as a random `:id`.
    pub fn pgbench_script(self) -> String {
        let statements: &[&str] = match self {
            Kind::Point => &[POINT],
            Kind::Range => &[RANGE],
            Kind::Insert => &[INSERT],
            Kind::Transaction => &["BEGIN", TX_LOCK, TX_UPDATE, TX_LOG, "COMMIT"],
        };
        let mut script = format!("\\set id random(1, {})\n", self.max_id());
        for s in statements {
            script.push_str(&s.replace("$1", ":id"));
            script.push_str(";\n");
        }
        script
    }
}

/// The request a worker makes next: a kind drawn by share and a uniformly random id for it.
pub fn draw(rng: &mut fastrand::Rng) -> (Kind, i64) {
    let total: u64 = KINDS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.u64(0..total);
    let mut kind = Kind::Point;
    for (k, w) in KINDS {
        if pick < w {
            kind = k;
            break;
        }
        pick -= w;
    }
    (kind, rng.i64(1..=kind.max_id()))
}

/// Creates the items table with ITEMS rows unless it is already there whole, the log table, and
/// fresh planner statistics. Idempotent, so a run on a database that has them costs a count.
pub fn prepare(database: &str) {
    let sql = |s: &str| support::admin_sql(database, s);
    sql(&format!(
        "CREATE TABLE IF NOT EXISTS {ITEMS_TABLE} (id bigint PRIMARY KEY, name text NOT NULL, qty bigint NOT NULL)"
    ));
    sql(&format!(
        "CREATE TABLE IF NOT EXISTS {LOG_TABLE} (id bigserial PRIMARY KEY, item_id bigint NOT NULL, note text NOT NULL)"
    ));
    let rows: i64 = sql(&format!("SELECT count(*) FROM {ITEMS_TABLE}"))
        .parse()
        .unwrap_or(-1);
    if rows != ITEMS {
        sql(&format!("TRUNCATE {ITEMS_TABLE}"));
        sql(&format!(
            "INSERT INTO {ITEMS_TABLE} SELECT i, 'item ' || i, 0 FROM generate_series(1, {ITEMS}) AS i"
        ));
    }
    // Logged (durable) by default, so a write waits for its WAL flush as in production;
    // unlogged on request, which takes the disk out of the comparison of clients on a machine
    // whose disk is busy with other work (a commit that wrote no WAL does not wait for a flush).
    let persistence = if unlogged() { "UNLOGGED" } else { "LOGGED" };
    for table in [LOG_TABLE, ITEMS_TABLE] {
        sql(&format!("ALTER TABLE {table} SET {persistence}"));
    }
    sql(&format!("ANALYZE {ITEMS_TABLE}"));
    truncate_log(database);
}

/// `BENCH_MIX_UNLOGGED=1`: the mix's tables are UNLOGGED.
pub fn unlogged() -> bool {
    std::env::var("BENCH_MIX_UNLOGGED").is_ok_and(|v| v == "1")
}

/// Empties the log table, so every cell inserts into a table of the same size.
pub fn truncate_log(database: &str) {
    support::admin_sql(database, &format!("TRUNCATE {LOG_TABLE}"));
}
