//! Per-operation query statistics of the neutral handle: a duration histogram and an outcome
//! counter per operation, the operation being the statement's first keyword.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::{Histogram, HistogramSnapshot, KINDS, kind_index};
use crate::error::ErrorKind;

/// The operations told apart; anything else is `OTHER`. A fixed set keeps metric cardinality
/// bounded whatever the statements are.
pub(crate) const OPERATIONS: [&str; 14] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "CREATE", "ALTER", "DROP", "CALL",
    "BEGIN", "COMMIT", "ROLLBACK", "OTHER",
];

const OTHER: usize = OPERATIONS.len() - 1;

/// The operation of a statement: its first keyword, read past whitespace, comments and an
/// opening parenthesis, compared without regard to case. Reads no further than that word.
pub(crate) fn operation_of(sql: &str) -> usize {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(' || c == ';');
        if let Some(after) = rest.strip_prefix("--").or_else(|| rest.strip_prefix('#')) {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    // The longest keyword told apart has 8 letters; a ninth makes a longer word, no match.
    let mut buf = [0u8; 9];
    let mut len = 0;
    for b in rest
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .take(buf.len())
    {
        buf[len] = b.to_ascii_uppercase();
        len += 1;
    }
    // ASCII letters only, so always UTF-8.
    let word = std::str::from_utf8(&buf[..len]).unwrap_or_default();
    let word = match word {
        "EXEC" | "EXECUTE" => "CALL",
        "VALUES" | "TABLE" | "SHOW" => "SELECT",
        "START" => "BEGIN",
        other => other,
    };
    OPERATIONS[..OTHER]
        .iter()
        .position(|op| *op == word)
        .unwrap_or(OTHER)
}

/// One operation's live figures.
#[derive(Debug, Default)]
struct OperationStats {
    duration: Histogram,
    ok: AtomicU64,
    errors: [AtomicU64; KINDS.len()],
}

/// Live per-operation figures of one connection.
#[derive(Debug, Default)]
pub(crate) struct QueryStats {
    operations: [OperationStats; OPERATIONS.len()],
}

impl QueryStats {
    pub(crate) fn record(&self, operation: usize, took: Duration, outcome: Option<ErrorKind>) {
        let Some(op) = self.operations.get(operation) else {
            return;
        };
        op.duration.observe(took);
        match outcome {
            None => op.ok.fetch_add(1, Relaxed),
            Some(kind) => op.errors[kind_index(kind)].fetch_add(1, Relaxed),
        };
    }

    /// The operations that ran at least once.
    pub(crate) fn snapshot(&self) -> Vec<QuerySnapshot> {
        OPERATIONS
            .iter()
            .zip(&self.operations)
            .filter_map(|(name, op)| {
                let duration = op.duration.snapshot();
                (duration.count > 0).then(|| QuerySnapshot {
                    operation: name,
                    ok: op.ok.load(Relaxed),
                    errors: KINDS
                        .iter()
                        .zip(&op.errors)
                        .map(|(k, n)| (*k, n.load(Relaxed)))
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                    duration,
                })
            })
            .collect()
    }
}

/// One operation's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QuerySnapshot {
    /// `SELECT`, `INSERT`, ..., `BEGIN`, `COMMIT`, `ROLLBACK`, or `OTHER`.
    pub operation: &'static str,
    /// Statements that succeeded.
    pub ok: u64,
    /// Statements that failed, by error kind (kinds that occurred).
    pub errors: Vec<(ErrorKind, u64)>,
    /// Durations, successes and failures alike.
    pub duration: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(sql: &str) -> &'static str {
        OPERATIONS[operation_of(sql)]
    }

    #[test]
    fn the_first_keyword_names_the_operation() {
        assert_eq!(op("SELECT 1"), "SELECT");
        assert_eq!(op("  select * from t"), "SELECT");
        assert_eq!(op("/* hint */ -- note\n  (SELECT 1)"), "SELECT");
        assert_eq!(op("insert into t values (1)"), "INSERT");
        assert_eq!(op("WITH x AS (SELECT 1) SELECT * FROM x"), "WITH");
        assert_eq!(op("EXEC dbo.p"), "CALL");
        assert_eq!(op("selectivity"), "OTHER");
        assert_eq!(op(""), "OTHER");
        assert_eq!(op("/* never closed"), "OTHER");
        assert_eq!(op("€uro"), "OTHER");
    }

    #[test]
    fn outcomes_are_counted_per_operation() {
        let s = QueryStats::default();
        s.record(0, Duration::from_millis(1), None);
        s.record(0, Duration::from_millis(2), Some(ErrorKind::Query));
        s.record(1, Duration::from_millis(1), None);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].operation, "SELECT");
        assert_eq!((snap[0].ok, snap[0].duration.count), (1, 2));
        assert_eq!(snap[0].errors, [(ErrorKind::Query, 1)]);
    }
}
