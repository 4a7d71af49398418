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
///
/// On bytes, not chars: it runs on every statement (an earlier `char`-based version cost about
/// 300 instructions on a `SELECT 1`). Every byte it skips or compares is ASCII; a multi-byte
/// character is never whitespace it must skip here (`is_ascii_whitespace`, as SQL lexers do).
pub(crate) fn operation_of(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut at = 0;
    loop {
        while at < bytes.len()
            && matches!(
                bytes[at],
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b'(' | b';'
            )
        {
            at += 1;
        }
        let rest = &bytes[at..];
        if rest.starts_with(b"--") || rest.starts_with(b"#") {
            at = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => at + end + 1,
                None => bytes.len(),
            };
        } else if rest.starts_with(b"/*") {
            at = match rest[2..].windows(2).position(|w| w == b"*/") {
                Some(end) => at + 2 + end + 2,
                None => bytes.len(),
            };
        } else {
            break;
        }
    }
    // The longest keyword told apart has 8 letters; a ninth makes a longer word, no match.
    let mut word = [0u8; 9];
    let mut len = 0;
    for &b in bytes[at..].iter().take(word.len()) {
        if !b.is_ascii_alphabetic() {
            break;
        }
        word[len] = b.to_ascii_uppercase();
        len += 1;
    }
    match &word[..len] {
        b"SELECT" | b"VALUES" | b"TABLE" | b"SHOW" => 0,
        b"INSERT" => 1,
        b"UPDATE" => 2,
        b"DELETE" => 3,
        b"MERGE" => 4,
        b"WITH" => 5,
        b"CREATE" => 6,
        b"ALTER" => 7,
        b"DROP" => 8,
        b"CALL" | b"EXEC" | b"EXECUTE" => 9,
        b"BEGIN" | b"START" => 10,
        b"COMMIT" => 11,
        b"ROLLBACK" => 12,
        _ => OTHER,
    }
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
        assert_eq!(op("# note\n\x0b\x0cdelete from t"), "DELETE");
        assert_eq!(op("/**/update t"), "UPDATE");
        assert_eq!(op("/*/ still a comment */ drop table t"), "DROP");
        assert_eq!(op(";;(( Values (1)"), "SELECT");
        assert_eq!(op("start transaction"), "BEGIN");
        assert_eq!(op("ROLLBACKS"), "OTHER");
        assert_eq!(op("ROLLBACK"), "ROLLBACK");
        assert_eq!(op("--"), "OTHER");
    }

    /// The keyword table and the operation names agree: every name (but `OTHER`) is the
    /// operation of a statement starting with it, in either case.
    #[test]
    fn every_operation_name_is_recognised_as_itself() {
        for (index, name) in OPERATIONS[..OTHER].iter().enumerate() {
            assert_eq!(operation_of(&format!("{name} x")), index, "{name}");
            assert_eq!(
                operation_of(&format!("{} x", name.to_lowercase())),
                index,
                "{name}"
            );
        }
        assert_eq!(OPERATIONS[OTHER], "OTHER");
        assert_eq!(operation_of("OTHER x"), OTHER);
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
