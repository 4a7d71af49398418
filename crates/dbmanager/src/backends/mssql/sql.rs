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

use super::{MssqlConnection, MssqlPool, TiberiusClient, classify, tiberius_error};
use crate::config::DefaultOrm;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::placeholders::{
    Dialect, PlaceholderError, Prepared, Quote, Target, code_words, prepare,
};
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

/// A statement ready to send: its text for SQL Server and its parameters. Building it sends
/// nothing, so its errors leave the client as it was.
struct Statement<'a> {
    sql: Prepared<'a>,
    params: Vec<Box<dyn ToSql + 'a>>,
}

impl<'a> Statement<'a> {
    fn new(sql: &'a str, params: &'a [Value]) -> tiberius::Result<Self> {
        let sql = rewrite_placeholders(sql, params).map_err(|e| conversion(e.to_string()))?;
        Ok(Self {
            sql,
            params: bound(params)?,
        })
    }

    fn refs(&self) -> Vec<&dyn ToSql> {
        self.params.iter().map(|b| b.as_ref()).collect()
    }

    async fn execute(&self, client: &mut TiberiusClient) -> tiberius::Result<u64> {
        Ok(client
            .execute(self.sql.sql.as_ref(), &self.refs())
            .await?
            .total())
    }

    /// The first result set, read to its end; decoded afterwards by [`decode_rows`].
    async fn fetch(&self, client: &mut TiberiusClient) -> tiberius::Result<Vec<tiberius::Row>> {
        client
            .query(self.sql.sql.as_ref(), &self.refs())
            .await?
            .into_first_result()
            .await
    }
}

fn decode_rows(rows: Vec<tiberius::Row>) -> tiberius::Result<Vec<Row>> {
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

/// Whether the client is still in step with the server after `outcome`: a success or an error
/// the server reported is a whole response; anything else from the wire (I/O, a protocol or
/// decoding error) may have left part of one unread, and the client must not be reused.
fn in_step<T>(outcome: &tiberius::Result<T>) -> bool {
    outcome.as_ref().err().is_none_or(error_in_step)
}

fn error_in_step(e: &tiberius::error::Error) -> bool {
    matches!(e, tiberius::error::Error::Server(_))
}

fn query_error(name: &str, operation: Operation, e: tiberius::error::Error) -> Error {
    tiberius_error(name, operation, e)
}

/// One statement on a pooled client: bound first (nothing sent on error), then sent with the
/// client marked unsettled until the response is read, so a cancelled or garbled exchange
/// sends the client to be discarded rather than back to the pool.
async fn run_execute(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    let statement =
        Statement::new(sql, params).map_err(|e| query_error(name, Operation::Query, e))?;
    conn.begin_operation();
    let outcome = statement.execute(conn.client()).await;
    if in_step(&outcome) {
        conn.settle();
    }
    outcome.map_err(|e| query_error(name, Operation::Query, e))
}

async fn run_fetch(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>> {
    let statement =
        Statement::new(sql, params).map_err(|e| query_error(name, Operation::Query, e))?;
    conn.begin_operation();
    let outcome = statement.fetch(conn.client()).await;
    if in_step(&outcome) {
        conn.settle();
    }
    decode_rows(outcome.map_err(|e| query_error(name, Operation::Query, e))?)
        .map_err(|e| query_error(name, Operation::Query, e))
}

/// Runs a batch without parameters and returns the first column of its last row, if any.
async fn batch(client: &mut TiberiusClient, sql: &str) -> tiberius::Result<Option<i64>> {
    let results = client.simple_query(sql).await?.into_results().await?;
    let last = results.iter().rev().find_map(|rows| rows.last());
    Ok(last.and_then(|row| {
        row.get::<i32, _>(0)
            .map(i64::from)
            .or_else(|| row.get::<i16, _>(0).map(i64::from))
    }))
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

    /// `SET XACT_ABORT ON` first: a runtime error then rolls the whole transaction back on the
    /// server (as any error aborts one on PostgreSQL), which the handle notices and refuses
    /// everything after. The setting is put back to SQL Server's default, OFF, when the
    /// transaction ends.
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            // Unsettled while open: dropped without commit or rollback, or left out of step,
            // the client is discarded rather than returned mid-transaction.
            conn.begin_operation();
            batch(conn.client(), "SET XACT_ABORT ON; BEGIN TRANSACTION")
                .await
                .map_err(|e| query_error(&self.name, Operation::Begin, e))?;
            Ok(Box::new(MssqlTransaction {
                name: self.name.clone(),
                conn,
                aborted: None,
                in_step: true,
                in_flight: false,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

/// Why a transaction is over on the server while its handle is still open.
#[derive(Debug, Clone)]
struct Aborted {
    /// The kind of the error that ended it (a deadlock victim's is transient: the whole
    /// transaction may succeed if run again), else a query error.
    kind: ErrorKind,
    why: String,
}

impl Aborted {
    fn error(&self, name: &str, operation: Operation) -> Error {
        Error::database(
            name,
            operation,
            self.kind,
            format!(
                "{}; no statement runs on this transaction handle any more: roll it back and start again",
                self.why
            ),
        )
    }
}

/// A transaction on one client, which it keeps unsettled until the transaction is over and the
/// session is back in autocommit with `@@TRANCOUNT` 0.
///
/// After a statement fails (or might have ended the transaction: its code names `COMMIT`,
/// `ROLLBACK`, `BEGIN` or `EXEC`), `@@TRANCOUNT` and `XACT_STATE()` are read. Unless they are 1
/// and 1, the transaction is over or doomed on the server (a deadlock victim, an error under
/// `XACT_ABORT`, a `ROLLBACK` in the statement, a nested `BEGIN` left open): the handle is
/// poisoned and every later statement and `commit` fails, instead of running in autocommit and
/// persisting. Other statements cost no extra round trip.
struct MssqlTransaction {
    name: Arc<str>,
    conn: MssqlConnection,
    aborted: Option<Aborted>,
    /// The client's stream is in step with the server (no exchange was abandoned or garbled).
    in_step: bool,
    /// A statement was sent and its future dropped before it finished.
    in_flight: bool,
}

/// Whether a statement's code could end or nest the transaction without an error.
fn may_change_transaction(sql: &str) -> bool {
    code_words(sql, &TRANSACT_SQL).iter().any(|w| {
        ["COMMIT", "ROLLBACK", "BEGIN", "EXEC", "EXECUTE"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    })
}

impl MssqlTransaction {
    /// Refuses to run anything once the transaction is known to be over, or unknown.
    fn usable(&mut self, operation: Operation) -> Result<()> {
        if self.in_flight {
            self.in_flight = false;
            self.in_step = false;
            self.aborted.get_or_insert(Aborted {
                kind: ErrorKind::Query,
                why: "an earlier statement of the transaction was cancelled mid-way, so its state on the server is unknown".into(),
            });
        }
        match &self.aborted {
            Some(aborted) => Err(aborted.error(&self.name, operation)),
            None => Ok(()),
        }
    }

    /// Runs one statement in the transaction and reads the transaction's state after it when
    /// it failed or might have ended the transaction.
    async fn run<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        fetch: bool,
        wrap: impl FnOnce(u64, Vec<tiberius::Row>) -> T,
    ) -> Result<T> {
        self.usable(Operation::Query)?;
        let statement = Statement::new(sql, params)
            .map_err(|e| query_error(&self.name, Operation::Query, e))?;
        self.in_flight = true;
        let client = self.conn.client();
        let outcome = if fetch {
            statement.fetch(client).await.map(|rows| wrap(0, rows))
        } else {
            statement.execute(client).await.map(|n| wrap(n, Vec::new()))
        };
        if let Err(e) = &outcome
            && !error_in_step(e)
        {
            self.in_step = false;
            self.aborted = Some(Aborted {
                kind: classify(e),
                why: format!(
                    "the connection fell out of step with the server during the transaction ({e})"
                ),
            });
        } else if outcome.is_err() || may_change_transaction(sql) {
            self.check_state(outcome.as_ref().err()).await;
        }
        self.in_flight = false;
        match (outcome, &self.aborted) {
            (Err(e), _) => Err(query_error(&self.name, Operation::Query, e)),
            (Ok(_), Some(aborted)) => Err(aborted.error(&self.name, Operation::Query)),
            (Ok(value), None) => Ok(value),
        }
    }

    /// Reads `@@TRANCOUNT` and `XACT_STATE()`; poisons the handle unless both are 1.
    async fn check_state(&mut self, cause: Option<&tiberius::error::Error>) {
        let state = async {
            let row = self
                .conn
                .client()
                .simple_query("SELECT @@TRANCOUNT AS n, XACT_STATE() AS s")
                .await?
                .into_row()
                .await?;
            let int = |row: &tiberius::Row, i: usize| {
                row.get::<i32, _>(i)
                    .map(i64::from)
                    .or_else(|| row.get::<i16, _>(i).map(i64::from))
            };
            Ok::<_, tiberius::error::Error>(row.map(|r| (int(&r, 0), int(&r, 1))))
        }
        .await;
        let after = cause.map_or_else(String::new, |e| format!(" after: {e}"));
        let kind = cause.map_or(ErrorKind::Query, classify);
        let why = match state {
            Ok(Some((Some(1), Some(1)))) => return,
            Ok(Some((Some(0), _))) => {
                format!("the transaction was rolled back by the server (@@TRANCOUNT is 0){after}")
            }
            Ok(Some((Some(1), Some(-1)))) => format!(
                "the transaction is doomed: the server can only roll it back (XACT_STATE() is -1){after}"
            ),
            Ok(Some((Some(n), _))) => format!(
                "the statement left a nested transaction open (@@TRANCOUNT is {n}), which the handle does not manage; it will be rolled back"
            ),
            Ok(_) => format!("the transaction's state could not be read{after}"),
            Err(e) => {
                self.in_step = error_in_step(&e);
                format!("the transaction's state could not be read ({e}){after}")
            }
        };
        self.aborted = Some(Aborted { kind, why });
    }

    /// Ends whatever is open on the session, puts `XACT_ABORT` back, and settles the client
    /// when `@@TRANCOUNT` is 0 (else it stays unsettled and is discarded). A healthy
    /// transaction is known to be open; after an abort the count is read first (a top-level
    /// `ROLLBACK` only when there is something to roll back).
    async fn clean_up(&mut self) -> tiberius::Result<()> {
        let open = match self.aborted {
            None => true,
            Some(_) => batch(self.conn.client(), "SELECT @@TRANCOUNT AS n").await? != Some(0),
        };
        let sql = if open {
            "ROLLBACK TRANSACTION; SET XACT_ABORT OFF; SELECT @@TRANCOUNT AS n"
        } else {
            "SET XACT_ABORT OFF; SELECT @@TRANCOUNT AS n"
        };
        if batch(self.conn.client(), sql).await? == Some(0) {
            self.conn.settle();
        }
        Ok(())
    }
}

impl SqlTransaction for MssqlTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.run(sql, params, false, |n, _| n))
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let rows = self.run(sql, params, true, |_, rows| rows).await?;
            decode_rows(rows).map_err(|e| query_error(&self.name, Operation::Query, e))
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Err(e) = self.usable(Operation::Commit) {
                if self.in_step {
                    let _ = self.clean_up().await;
                }
                return Err(e);
            }
            let outcome = batch(
                self.conn.client(),
                "COMMIT TRANSACTION; SET XACT_ABORT OFF; SELECT @@TRANCOUNT AS n",
            )
            .await;
            match outcome {
                Ok(Some(0)) => {
                    self.conn.settle();
                    Ok(())
                }
                Ok(n) => {
                    self.aborted.get_or_insert(Aborted {
                        kind: ErrorKind::Query,
                        why: String::new(),
                    });
                    let _ = self.clean_up().await;
                    Err(Error::database(
                        &self.name,
                        Operation::Commit,
                        ErrorKind::Query,
                        format!(
                            "the transaction did not end on commit (@@TRANCOUNT {n:?}); it was rolled back"
                        ),
                    ))
                }
                Err(e) => {
                    if error_in_step(&e) {
                        self.aborted.get_or_insert(Aborted {
                            kind: ErrorKind::Query,
                            why: String::new(),
                        });
                        let _ = self.clean_up().await;
                    }
                    Err(query_error(&self.name, Operation::Commit, e))
                }
            }
        })
    }

    fn rollback(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let _ = self.usable(Operation::Rollback);
            if !self.in_step {
                // The client is discarded when dropped, and the server rolls back with it.
                return Ok(());
            }
            self.clean_up()
                .await
                .map_err(|e| query_error(&self.name, Operation::Rollback, e))
        })
    }
}

/// One SQL Server client as the application's lifecycle hooks see it. A statement that leaves
/// the client out of step with the server marks it so, and the pool then discards it whatever
/// the hook says.
pub(super) struct HookClient<'c> {
    pub name: &'c str,
    pub client: &'c mut TiberiusClient,
    pub out_of_step: bool,
}

impl crate::hooks::HookSql for HookClient<'_> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let statement = Statement::new(sql, params)
                .map_err(|e| query_error(self.name, Operation::Query, e))?;
            let outcome = statement.execute(self.client).await;
            self.out_of_step |= !in_step(&outcome);
            outcome.map_err(|e| query_error(self.name, Operation::Query, e))
        })
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move {
            let statement = Statement::new(sql, params)
                .map_err(|e| query_error(self.name, Operation::Query, e))?;
            let outcome = statement.fetch(self.client).await;
            self.out_of_step |= !in_step(&outcome);
            let rows =
                decode_rows(outcome.map_err(|e| query_error(self.name, Operation::Query, e))?)
                    .map_err(|e| query_error(self.name, Operation::Query, e))?;
            Ok(rows.into_iter().next())
        })
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

    /// Only a success or an error the server reported is a whole response. A protocol error
    /// (before: only I/O errors kept the client out of the pool) or a decoding error from the
    /// wire may leave part of a response unread: that client must be discarded.
    #[test]
    fn only_a_whole_response_leaves_the_client_in_step() {
        use tiberius::error::Error as E;
        assert!(in_step(&Ok(())));
        for e in [
            E::Protocol("unexpected token".into()),
            E::Io {
                kind: std::io::ErrorKind::UnexpectedEof,
                message: "eof".into(),
            },
            E::Encoding("bad collation".into()),
            E::Conversion("bad value".into()),
            E::Utf16,
        ] {
            assert!(!in_step(&Err::<(), _>(e.clone())), "{e}");
        }
    }

    #[test]
    fn statements_that_may_end_a_transaction_are_recognised_in_code_only() {
        for sql in [
            "ROLLBACK",
            "commit tran",
            "EXEC p",
            "begin transaction",
            "x; Execute('y')",
        ] {
            assert!(may_change_transaction(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES ('ROLLBACK')",
            "SELECT [commit] FROM t -- BEGIN",
            "UPDATE t SET a = 1 /* EXEC */",
            "SELECT rollback_count FROM t",
        ] {
            assert!(!may_change_transaction(sql), "{sql}");
        }
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
