//! The neutral handle on SQL Server: `$n` placeholders rewritten to `@Pn`, values bound as
//! tiberius parameters, rows decoded from tiberius's column data; the executor and its
//! transactions.

use std::sync::Arc;

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use futures_util::future::BoxFuture;
use tiberius::numeric::Numeric;
use tiberius::{ColumnData, FromSql, ToSql};

use super::{MssqlConnection, MssqlPool, TiberiusClient, tiberius_error};
use crate::config::DefaultOrm;
use crate::error::{Operation, Result};
use crate::sql::placeholders::{Dialect, PlaceholderError, Prepared, Quote, Target, prepare};
use crate::sql::{Row, Value};
use crate::sql::{SqlExecutor, SqlTransaction};

const fn doubled(open: char, close: char) -> Quote {
    Quote {
        open,
        close,
        doubling: true,
        backslash: false,
    }
}

/// T-SQL lexing: `'...'` and `"..."` with `''`/`""` doubling (no backslash escapes), `[...]`
/// with `]]` for a `]`; `--` comments to the end of the line (`\n` or `\r`); block comments
/// that nest (`/* /* */ */` is one comment, `/*/` opens one without closing it). Identifiers
/// and variables start with a letter, `_`, `@` or `#` and continue with `$` too (`a$1`, `@v$1`
/// and `#t$1` are names); a number (digits, fraction, exponent) does not, so in `1$1` the `$1`
/// is a placeholder. Placeholders become `@Pn`; whatever would still read as the money literal
/// `$n` is an error (see `sql::placeholders`).
const TRANSACT_SQL: Dialect = Dialect {
    name: "SQL Server",
    target: Target::AtP,
    quotes: &[doubled('\'', '\''), doubled('"', '"'), doubled('[', ']')],
    escape_strings: false,
    dollar_quotes: false,
    dash_comment_needs_space: false,
    cr_ends_line_comment: true,
    hash_comments: false,
    nested_block_comments: true,
    executable_comments: false,
    word_start: |c| c.is_alphabetic() || matches!(c, '_' | '@' | '#'),
    word_continue: |c| c.is_alphanumeric() || matches!(c, '_' | '@' | '#' | '$'),
    digit_words: false,
    foreign_markers: &[],
    dollar_name_suffixes: false,
};

/// The statement SQL Server receives: placeholders as `@Pn`, checked against `params`; a NULL
/// parameter as the keyword `NULL`, which the server types by its context (tiberius can only
/// bind a typed NULL, and SQL Server will not convert an NVARCHAR one to `varbinary`). The
/// NULL is still bound as `@Pn`, unused.
fn rewrite_placeholders<'a>(
    sql: &'a str,
    params: &[Value],
) -> std::result::Result<Prepared<'a>, PlaceholderError> {
    prepare(sql, &TRANSACT_SQL, params, true)
}

/// A parameter as tiberius binds it; values SQL Server has no type for are an error.
fn to_sql(value: &Value, at: usize) -> tiberius::Result<Box<dyn ToSql + '_>> {
    Ok(match value {
        Value::Null => Box::new(Option::<&str>::None),
        Value::Bool(v) => Box::new(*v),
        Value::Int(v) => Box::new(*v),
        Value::Float(v) => Box::new(*v),
        Value::Text(v) => Box::new(v.as_str()),
        Value::Bytes(v) => Box::new(v.as_slice()),
        Value::Decimal(v) => Box::new(numeric(v, at)?),
        Value::Uuid(v) => Box::new(*v),
        Value::Json(v) => Box::new(v.to_string()),
        Value::TimestampTz(v) => Box::new(*v),
        Value::Timestamp(v) => Box::new(*v),
        Value::Date(v) => Box::new(*v),
        Value::Time(v) => Box::new(*v),
        other @ (Value::Interval(_) | Value::Array(_)) => {
            return Err(conversion(format!(
                "parameter ${at}: SQL Server has no type for a {} value",
                other.type_name()
            )));
        }
    })
}

fn conversion(message: String) -> tiberius::error::Error {
    tiberius::error::Error::Conversion(message.into())
}

/// A decimal as SQL Server's `decimal(38, s)`: checked here, since tiberius panics on a value
/// beyond 38 digits.
fn numeric(v: &BigDecimal, at: usize) -> tiberius::Result<Numeric> {
    let (digits, scale) = v.normalized().as_bigint_and_exponent();
    let (digits, scale) = if scale < 0 {
        let factor = BigInt::from(10u8).pow(u32::try_from(-scale).unwrap_or(u32::MAX).min(39));
        (digits * factor, 0)
    } else {
        (digits, scale)
    };
    let too_big = || {
        conversion(format!(
            "parameter ${at}: {v} does not fit SQL Server's decimal (38 digits)"
        ))
    };
    let scale = u8::try_from(scale)
        .ok()
        .filter(|s| *s <= 38)
        .ok_or_else(too_big)?;
    let value = i128::try_from(digits).map_err(|_| too_big())?;
    if value.unsigned_abs() >= 10u128.pow(38) {
        return Err(too_big());
    }
    Ok(Numeric::new_with_scale(value, scale))
}

fn bound<'a>(params: &'a [Value]) -> tiberius::Result<Vec<Box<dyn ToSql + 'a>>> {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| to_sql(v, i + 1))
        .collect()
}

async fn execute(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<u64> {
    let sql = rewrite_placeholders(sql, params).map_err(|e| conversion(e.to_string()))?;
    let boxed = bound(params)?;
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    Ok(client.execute(sql.sql.as_ref(), &refs).await?.total())
}

async fn fetch_all(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<Vec<Row>> {
    let sql = rewrite_placeholders(sql, params).map_err(|e| conversion(e.to_string()))?;
    let boxed = bound(params)?;
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    let rows = client
        .query(sql.sql.as_ref(), &refs)
        .await?
        .into_first_result()
        .await?;
    let mut columns: Option<Arc<[String]>> = None;
    rows.into_iter()
        .map(|row| {
            let names = columns
                .get_or_insert_with(|| row.columns().iter().map(|c| c.name().to_owned()).collect())
                .clone();
            let values = row
                .into_iter()
                .zip(names.iter())
                .map(|(data, name)| decode(data, name))
                .collect::<tiberius::Result<Vec<_>>>()?;
            Ok(Row::new(names, values))
        })
        .collect()
}

/// Reads a value through tiberius's own conversion for `T`.
fn via<'a, T: FromSql<'a>>(
    data: &'a ColumnData<'static>,
    wrap: fn(T) -> Value,
) -> tiberius::Result<Value> {
    Ok(T::from_sql(data)?.map_or(Value::Null, wrap))
}

fn decode(data: ColumnData<'static>, column: &str) -> tiberius::Result<Value> {
    let value = match data {
        ColumnData::U8(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map(Value::Int),
        ColumnData::F32(v) => v.map(|v| Value::Float(v.into())),
        // MONEY arrives as a float from tiberius, so its exactness ends at 15 digits.
        ColumnData::F64(v) => v.map(Value::Float),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => v.map(|v| Value::Text(v.into_owned())),
        ColumnData::Guid(v) => v.map(Value::Uuid),
        ColumnData::Binary(v) => v.map(|v| Value::Bytes(v.into_owned())),
        ColumnData::Numeric(v) => v.map(|v| {
            Value::Decimal(BigDecimal::new(
                BigInt::from(v.value()),
                i64::from(v.scale()),
            ))
        }),
        ColumnData::Xml(v) => v.map(|v| Value::Text(v.into_owned().into_string())),
        ref data @ (ColumnData::DateTime(_)
        | ColumnData::SmallDateTime(_)
        | ColumnData::DateTime2(_)) => return via::<NaiveDateTime>(data, Value::Timestamp),
        ref data @ ColumnData::DateTimeOffset(_) => {
            return via::<DateTime<FixedOffset>>(data, Value::TimestampTz);
        }
        ref data @ ColumnData::Date(_) => return via::<NaiveDate>(data, Value::Date),
        ref data @ ColumnData::Time(_) => return via::<NaiveTime>(data, Value::Time),
        #[allow(unreachable_patterns)]
        _ => {
            return Err(conversion(format!(
                "column `{column}` has a type the neutral handle does not decode; cast it in SQL (e.g. CAST(... AS NVARCHAR(50))) or use the native pool"
            )));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Settles the client only when the operation left the stream in sync (a cancelled or I/O-failed
/// one leaves the client unsettled, and the pool discards it).
fn settle<T>(name: &str, conn: &mut MssqlConnection, outcome: tiberius::Result<T>) -> Result<T> {
    if !matches!(outcome, Err(tiberius::error::Error::Io { .. })) {
        conn.settle();
    }
    outcome.map_err(|e| tiberius_error(name, Operation::Query, e))
}

async fn run_execute(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    conn.begin_operation();
    let outcome = execute(conn, sql, params).await;
    settle(name, conn, outcome)
}

async fn run_fetch(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>> {
    conn.begin_operation();
    let outcome = fetch_all(conn, sql, params).await;
    settle(name, conn, outcome)
}

async fn run_simple(name: &str, conn: &mut MssqlConnection, sql: &str) -> Result<()> {
    conn.begin_operation();
    let outcome = match conn.simple_query(sql).await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    settle(name, conn, outcome)
}

/// Statements on the bb8 pool: one checkout per call.
pub(super) struct MssqlExecutor {
    pub name: Arc<str>,
    pub pool: MssqlPool,
}

impl SqlExecutor for MssqlExecutor {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_execute(&self.name, &mut conn, sql, params).await
        })
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_fetch(&self.name, &mut conn, sql, params).await
        })
    }

    /// tiberius reads the whole result; the first row is kept.
    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move { Ok(self.fetch_all(sql, params).await?.into_iter().next()) })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_simple(&self.name, &mut conn, "BEGIN TRANSACTION").await?;
            // Unsettled while open: dropped without commit or rollback, the client is discarded
            // rather than returned mid-transaction.
            conn.begin_operation();
            Ok(Box::new(MssqlTransaction {
                name: self.name.clone(),
                conn,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

struct MssqlTransaction {
    name: Arc<str>,
    conn: MssqlConnection,
}

impl SqlTransaction for MssqlTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let out = run_execute(&self.name, &mut self.conn, sql, params).await;
            self.conn.begin_operation();
            out
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let out = run_fetch(&self.name, &mut self.conn, sql, params).await;
            self.conn.begin_operation();
            out
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { run_simple(&self.name, &mut self.conn, "COMMIT TRANSACTION").await })
    }

    fn rollback(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(
            async move { run_simple(&self.name, &mut self.conn, "ROLLBACK TRANSACTION").await },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn decimals_map_to_numeric_within_38_digits_and_are_refused_beyond() {
        let ok = |s: &str| numeric(&BigDecimal::from_str(s).unwrap(), 1).unwrap();
        let n = ok("12345678901234567890.123456789012345678");
        assert_eq!(
            (n.value(), n.scale()),
            (12345678901234567890123456789012345678, 18)
        );
        let n = ok("-1.50");
        assert_eq!((n.value(), n.scale()), (-15, 1));
        let n = ok("1E+5");
        assert_eq!((n.value(), n.scale()), (100000, 0));
        for bad in ["123456789012345678901234567890123456789", "1E+40", "1E-39"] {
            let err = numeric(&BigDecimal::from_str(bad).unwrap(), 3).unwrap_err();
            assert!(err.to_string().contains("parameter $3"), "{bad}: {err}");
        }
    }

    use crate::sql::placeholders::generate::{Lang, PARAMS, expected, input, statement};
    use proptest::prelude::*;

    /// The statement text SQL Server receives for `sql` with `params`, or why none is sent.
    fn sent(sql: &str, params: &[Value]) -> std::result::Result<String, String> {
        rewrite_placeholders(sql, params)
            .map(|p| p.sql.into_owned())
            .map_err(|e| e.to_string())
    }

    fn ints(n: u32) -> Vec<Value> {
        (1..=n).map(|i| Value::Int(i.into())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Literals, quoted and bracketed identifiers (with `''`, `""`, `]]`), line comments,
        /// nested block comments (with `/*/` and `**/`), words with `$` inside, numbers and
        /// placeholders: every placeholder in code becomes `@Pn`, nothing else changes.
        #[test]
        fn transact_sql_rewrites_exactly_the_placeholders_sql_server_reads_as_code(
            frags in statement(Lang::TransactSql, 10)
        ) {
            let (want, _) = expected(&frags, |n| format!("@P{n}"));
            prop_assert_eq!(sent(&input(&frags), &ints(PARAMS)), Ok(want));
        }
    }

    #[test]
    fn transact_sql_lexing_cases_from_the_issue() {
        let p = ints(2);
        let ok = |sql: &str| sent(sql, &p).unwrap();
        // `/*/` opens a comment; it does not close one.
        assert_eq!(
            ok("DELETE FROM t /*/ $1 */ WHERE id = $1"),
            "DELETE FROM t /*/ $1 */ WHERE id = @P1"
        );
        // Block comments nest.
        assert_eq!(
            ok("DELETE FROM t /* a /* b */ ' */ WHERE id = $1 -- '"),
            "DELETE FROM t /* a /* b */ ' */ WHERE id = @P1 -- '"
        );
        // `]]` is an escaped `]` inside a bracketed identifier.
        assert_eq!(
            ok("SELECT [a]]'b] FROM t WHERE id = $1 --'"),
            "SELECT [a]]'b] FROM t WHERE id = @P1 --'"
        );
        assert_eq!(
            ok("SELECT 'it''s $1', \"a\"\"$2\" WHERE id = $1"),
            "SELECT 'it''s $1', \"a\"\"$2\" WHERE id = @P1"
        );
        // `$` continues identifiers and variables; a number does not swallow it.
        assert_eq!(
            ok("SELECT a$1, @v$2, #t$1, 1$2, $2"),
            "SELECT a$1, @v$2, #t$1, 1@P2, @P2"
        );
        assert_eq!(ok("SELECT 1 --$1\r$1"), "SELECT 1 --$1\r@P1");
    }

    /// tiberius can only bind a typed NULL (NVARCHAR, which SQL Server will not convert to
    /// `varbinary`); the statement carries the keyword, which the server types by context.
    #[test]
    fn null_parameters_are_written_as_null_literals() {
        let params = [Value::Int(1), Value::Null];
        assert_eq!(
            sent("INSERT INTO t (id, b) VALUES ($1, $2) -- $2", &params).unwrap(),
            "INSERT INTO t (id, b) VALUES (@P1, NULL) -- $2"
        );
        assert_eq!(
            sent("SELECT COALESCE($2, '$2', 0x01) WHERE x = $2", &params).unwrap(),
            "SELECT COALESCE(NULL, '$2', 0x01) WHERE x = NULL"
        );
    }

    #[test]
    fn transact_sql_refuses_placeholders_it_cannot_bind() {
        let p = ints(2);
        for sql in [
            "DELETE FROM t WHERE id = $3",
            "DELETE FROM t WHERE id = $0",
            "DELETE FROM t WHERE id = $99999999999",
            // SQL Server would read the money literal `$1` aliased `abc`.
            "SELECT $1abc",
            "SELECT $1$2",
        ] {
            let err = sent(sql, &p).unwrap_err();
            assert!(err.contains("placeholder"), "{sql}: {err}");
        }
    }

    #[test]
    fn placeholders_are_rewritten_outside_literals_and_comments() {
        assert_eq!(sent("SELECT 1", &ints(12)).unwrap(), "SELECT 1");
        assert_eq!(
            sent("SELECT * FROM t WHERE a = $1 AND b = $12", &ints(12)).unwrap(),
            "SELECT * FROM t WHERE a = @P1 AND b = @P12"
        );
        assert_eq!(
            sent(
                "SELECT '$1', \"$2\", [$3], $4 -- $5\n, $6 /* $7 */",
                &ints(12)
            )
            .unwrap(),
            "SELECT '$1', \"$2\", [$3], @P4 -- $5\n, @P6 /* $7 */"
        );
        assert_eq!(sent("SELECT $x, $", &ints(12)).unwrap(), "SELECT $x, $");
        assert_eq!(
            sent("SELECT a$1 FROM t", &ints(12)).unwrap(),
            "SELECT a$1 FROM t"
        );
        assert_eq!(
            sent("SELECT 'it''s $1', $1", &ints(12)).unwrap(),
            "SELECT 'it''s $1', @P1"
        );
    }
}
