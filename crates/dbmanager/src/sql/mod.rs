//! The backend-neutral handle: raw SQL with parameters, rows out, transactions.
//!
//! Parameters are written `$1`, `$2`, ... for every backend (SQLite numbers them by first
//! appearance, which matches). The layer underneath is the connection's `default_orm`: the sqlx
//! pool itself (`native`) or SeaORM's `DatabaseConnection` on that same pool (`sea-orm`).

mod driver;
#[cfg(feature = "mssql")]
mod mssql;
mod value;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use value::{ColumnRef, FromValue, Row, Value};

use tracing::Instrument as _;

use crate::backend::bounded;
use crate::config::{DatabaseType, DefaultOrm};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::pool::sqlx_error;
use crate::stats::PoolCounters;
use crate::trace::{Tracer, record_outcome};

/// Runs `work` under the query timeout (if any) inside `span`, and marks the span on failure.
async fn timed<T>(
    name: &str,
    limit: Option<Duration>,
    operation: Operation,
    span: tracing::Span,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    // Driver futures are several kilobytes; boxing once keeps the timeout and span wrappers
    // from copying them around (memmove was 12% of the neutral path's profile).
    let work = Box::pin(work);
    let bounded_work = async {
        match limit {
            Some(limit) => bounded(name, operation, limit, work).await,
            None => work.await,
        }
    };
    // A disabled span would still be entered and exited on every poll.
    if span.is_disabled() {
        return bounded_work.await;
    }
    let outcome = bounded_work.instrument(span.clone()).await;
    record_outcome(&span, &outcome);
    outcome
}

#[derive(Clone)]
pub(crate) enum Executor {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "sea-orm")]
    SeaOrm(sea_orm::DatabaseConnection),
    #[cfg(feature = "mssql")]
    Mssql(crate::backend::mssql::MssqlPool),
}

#[cfg(feature = "mssql")]
use crate::backend::mssql::MssqlConnection;

/// Settles the client only when the operation left the stream in sync (a cancelled or I/O-failed
/// one leaves the client unsettled, and the pool discards it).
#[cfg(feature = "mssql")]
fn settle<T>(name: &str, conn: &mut MssqlConnection, outcome: tiberius::Result<T>) -> Result<T> {
    if !matches!(outcome, Err(tiberius::error::Error::Io { .. })) {
        conn.settle();
    }
    outcome.map_err(|e| crate::backend::mssql::tiberius_error(name, Operation::Query, e))
}

#[cfg(feature = "mssql")]
async fn on_mssql_execute(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    conn.begin_operation();
    let outcome = mssql::execute(conn, sql, params).await;
    settle(name, conn, outcome)
}

#[cfg(feature = "mssql")]
async fn on_mssql_fetch(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>> {
    conn.begin_operation();
    let outcome = mssql::fetch_all(conn, sql, params).await;
    settle(name, conn, outcome)
}

#[cfg(feature = "mssql")]
async fn on_mssql_simple(name: &str, conn: &mut MssqlConnection, sql: &str) -> Result<()> {
    conn.begin_operation();
    let outcome = match conn.simple_query(sql).await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    settle(name, conn, outcome)
}

/// A cheap, cloneable handle for running SQL on one connection's pool.
#[derive(Clone)]
pub struct Database {
    name: Arc<str>,
    kind: DatabaseType,
    executor: Executor,
    query_timeout: Option<Duration>,
    counters: Arc<PoolCounters>,
    tracer: Arc<Tracer>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("layer", &self.layer())
            .finish_non_exhaustive()
    }
}

impl Database {
    pub(crate) fn new(
        name: Arc<str>,
        kind: DatabaseType,
        executor: Executor,
        query_timeout: Option<Duration>,
        counters: Arc<PoolCounters>,
        tracer: Arc<Tracer>,
    ) -> Self {
        Self {
            name,
            kind,
            executor,
            query_timeout,
            counters,
            tracer,
        }
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend.
    pub fn kind(&self) -> DatabaseType {
        self.kind
    }

    /// Which layer runs the statements.
    pub fn layer(&self) -> DefaultOrm {
        match self.executor {
            #[cfg(feature = "sea-orm")]
            Executor::SeaOrm(_) => DefaultOrm::SeaOrm,
            #[allow(unreachable_patterns)]
            _ => DefaultOrm::Native,
        }
    }

    /// Runs a statement; returns the number of rows affected.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        let name = &*self.name;
        let span = self.tracer.query_span("execute", sql);
        timed(name, self.query_timeout, Operation::Query, span, async {
            match &self.executor {
                #[cfg(feature = "postgres")]
                Executor::Postgres(pool) => {
                    let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                    driver::postgres::execute(&mut *conn, sql, params)
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Query, e))
                }
                #[cfg(feature = "sqlite")]
                Executor::Sqlite(pool) => {
                    let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                    driver::sqlite::execute(&mut *conn, sql, params)
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Query, e))
                }
                #[cfg(feature = "sea-orm")]
                Executor::SeaOrm(db) => orm::execute(name, db, sql, params).await,
                #[cfg(feature = "mssql")]
                Executor::Mssql(pool) => {
                    let mut conn = pool.acquire().await?;
                    on_mssql_execute(name, &mut conn, sql, params).await
                }
            }
        })
        .await
    }

    /// Runs a query; returns all rows.
    pub async fn fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let span = self.tracer.query_span("query", sql);
        timed(
            &self.name,
            self.query_timeout,
            Operation::Query,
            span,
            self.fetch_all_inner(sql, params),
        )
        .await
    }

    async fn fetch_all_inner(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let name = &*self.name;
        match &self.executor {
            #[cfg(feature = "postgres")]
            Executor::Postgres(pool) => {
                let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                driver::postgres::fetch_all(&mut *conn, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e))
            }
            #[cfg(feature = "sqlite")]
            Executor::Sqlite(pool) => {
                let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                driver::sqlite::fetch_all(&mut *conn, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e))
            }
            #[cfg(feature = "sea-orm")]
            Executor::SeaOrm(db) => orm::fetch_all(name, db, sql, params).await,
            #[cfg(feature = "mssql")]
            Executor::Mssql(pool) => {
                let mut conn = pool.acquire().await?;
                on_mssql_fetch(name, &mut conn, sql, params).await
            }
        }
    }

    /// Runs a query; returns the first row, if any.
    pub async fn fetch_optional(&self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        let name = &*self.name;
        let span = self.tracer.query_span("query", sql);
        timed(name, self.query_timeout, Operation::Query, span, async {
            match &self.executor {
                #[cfg(feature = "postgres")]
                Executor::Postgres(pool) => {
                    let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                    driver::postgres::fetch_optional(&mut *conn, sql, params)
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Query, e))
                }
                #[cfg(feature = "sqlite")]
                Executor::Sqlite(pool) => {
                    let mut conn = crate::pool::acquire(name, pool, &self.counters).await?;
                    driver::sqlite::fetch_optional(&mut *conn, sql, params)
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Query, e))
                }
                // SeaORM and SQL Server read the whole result; the first row is kept.
                #[allow(unreachable_patterns)]
                _ => Ok(self.fetch_all_inner(sql, params).await?.into_iter().next()),
            }
        })
        .await
    }

    /// Runs a query that must return a row.
    pub async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Row> {
        self.fetch_optional(sql, params).await?.ok_or_else(|| {
            Error::database(
                &self.name,
                Operation::Query,
                ErrorKind::Query,
                sqlx::Error::RowNotFound,
            )
        })
    }

    /// Starts a transaction; it rolls back if dropped without [`Transaction::commit`].
    pub async fn begin(&self) -> Result<Transaction> {
        let name = &*self.name;
        let span = self.tracer.span("begin");
        let inner = timed(name, self.query_timeout, Operation::Begin, span, async {
            Ok(match &self.executor {
                #[cfg(feature = "postgres")]
                Executor::Postgres(pool) => TxInner::Postgres(
                    pool.begin()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Begin, e))?,
                ),
                #[cfg(feature = "sqlite")]
                Executor::Sqlite(pool) => TxInner::Sqlite(
                    pool.begin()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Begin, e))?,
                ),
                #[cfg(feature = "sea-orm")]
                Executor::SeaOrm(db) => {
                    use sea_orm::TransactionTrait as _;
                    TxInner::SeaOrm(
                        db.begin()
                            .await
                            .map_err(|e| orm::error(name, Operation::Begin, e))?,
                    )
                }
                #[cfg(feature = "mssql")]
                Executor::Mssql(pool) => {
                    let mut conn = pool.acquire().await?;
                    on_mssql_simple(name, &mut conn, "BEGIN TRANSACTION").await?;
                    // Unsettled while open: dropped without commit or rollback, the client
                    // is discarded rather than returned mid-transaction.
                    conn.begin_operation();
                    TxInner::Mssql(Box::new(conn))
                }
            })
        })
        .await?;
        Ok(Transaction {
            name: self.name.clone(),
            query_timeout: self.query_timeout,
            tracer: self.tracer.clone(),
            inner,
        })
    }
}

enum TxInner {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    #[cfg(feature = "sea-orm")]
    SeaOrm(sea_orm::DatabaseTransaction),
    #[cfg(feature = "mssql")]
    Mssql(Box<crate::backend::mssql::MssqlConnection>),
}

/// An open transaction on one pooled connection.
pub struct Transaction {
    name: Arc<str>,
    query_timeout: Option<Duration>,
    tracer: Arc<Tracer>,
    inner: TxInner,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Runs a statement inside the transaction.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let name = &*self.name;
        let span = self.tracer.query_span("execute", sql);
        timed(name, self.query_timeout, Operation::Query, span, async {
            match &mut self.inner {
                #[cfg(feature = "postgres")]
                TxInner::Postgres(tx) => driver::postgres::execute(&mut **tx, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e)),
                #[cfg(feature = "sqlite")]
                TxInner::Sqlite(tx) => driver::sqlite::execute(&mut **tx, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e)),
                #[cfg(feature = "sea-orm")]
                TxInner::SeaOrm(tx) => orm::execute(name, tx, sql, params).await,
                #[cfg(feature = "mssql")]
                TxInner::Mssql(conn) => {
                    let out = on_mssql_execute(name, conn, sql, params).await;
                    conn.begin_operation();
                    out
                }
            }
        })
        .await
    }

    /// Runs a query inside the transaction.
    pub async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let name = &*self.name;
        let span = self.tracer.query_span("query", sql);
        timed(name, self.query_timeout, Operation::Query, span, async {
            match &mut self.inner {
                #[cfg(feature = "postgres")]
                TxInner::Postgres(tx) => driver::postgres::fetch_all(&mut **tx, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e)),
                #[cfg(feature = "sqlite")]
                TxInner::Sqlite(tx) => driver::sqlite::fetch_all(&mut **tx, sql, params)
                    .await
                    .map_err(|e| sqlx_error(name, Operation::Query, e)),
                #[cfg(feature = "sea-orm")]
                TxInner::SeaOrm(tx) => orm::fetch_all(name, tx, sql, params).await,
                #[cfg(feature = "mssql")]
                TxInner::Mssql(conn) => {
                    let out = on_mssql_fetch(name, conn, sql, params).await;
                    conn.begin_operation();
                    out
                }
            }
        })
        .await
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        let name = &*self.name;
        let span = self.tracer.span("commit");
        timed(
            name,
            self.query_timeout,
            Operation::Commit,
            span,
            async move {
                match self.inner {
                    #[cfg(feature = "postgres")]
                    TxInner::Postgres(tx) => tx
                        .commit()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Commit, e)),
                    #[cfg(feature = "sqlite")]
                    TxInner::Sqlite(tx) => tx
                        .commit()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Commit, e)),
                    #[cfg(feature = "sea-orm")]
                    TxInner::SeaOrm(tx) => tx
                        .commit()
                        .await
                        .map_err(|e| orm::error(name, Operation::Commit, e)),
                    #[cfg(feature = "mssql")]
                    TxInner::Mssql(mut conn) => {
                        on_mssql_simple(name, &mut conn, "COMMIT TRANSACTION").await
                    }
                }
            },
        )
        .await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<()> {
        let name = &*self.name;
        let span = self.tracer.span("rollback");
        timed(
            name,
            self.query_timeout,
            Operation::Rollback,
            span,
            async move {
                match self.inner {
                    #[cfg(feature = "postgres")]
                    TxInner::Postgres(tx) => tx
                        .rollback()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Rollback, e)),
                    #[cfg(feature = "sqlite")]
                    TxInner::Sqlite(tx) => tx
                        .rollback()
                        .await
                        .map_err(|e| sqlx_error(name, Operation::Rollback, e)),
                    #[cfg(feature = "sea-orm")]
                    TxInner::SeaOrm(tx) => tx
                        .rollback()
                        .await
                        .map_err(|e| orm::error(name, Operation::Rollback, e)),
                    #[cfg(feature = "mssql")]
                    TxInner::Mssql(mut conn) => {
                        on_mssql_simple(name, &mut conn, "ROLLBACK TRANSACTION").await
                    }
                }
            },
        )
        .await
    }
}

#[cfg(feature = "sea-orm")]
mod orm {
    use sea_orm::{ConnectionTrait, DbErr, RuntimeErr, Statement};

    use super::driver;
    use super::value::{Row, Value};
    use crate::error::{Error, ErrorKind, Operation, Result};

    pub(super) fn error(name: &str, operation: Operation, e: DbErr) -> Error {
        let kind = match &e {
            DbErr::Conn(RuntimeErr::SqlxError(s))
            | DbErr::Exec(RuntimeErr::SqlxError(s))
            | DbErr::Query(RuntimeErr::SqlxError(s)) => {
                if matches!(**s, sqlx::Error::PoolClosed) {
                    return Error::closed(name, operation);
                }
                crate::pool::classify(s)
            }
            DbErr::ConnectionAcquire(_) => ErrorKind::Transient,
            _ => ErrorKind::Query,
        };
        Error::database(name, operation, kind, e)
    }

    fn to_orm(value: &Value) -> sea_orm::Value {
        match value {
            Value::Null => sea_orm::Value::String(None),
            Value::Bool(v) => sea_orm::Value::Bool(Some(*v)),
            Value::Int(v) => sea_orm::Value::BigInt(Some(*v)),
            Value::Float(v) => sea_orm::Value::Double(Some(*v)),
            Value::Text(v) => sea_orm::Value::String(Some(v.clone())),
            Value::Bytes(v) => sea_orm::Value::Bytes(Some(v.clone())),
        }
    }

    fn statement(db: &impl ConnectionTrait, sql: &str, params: &[Value]) -> Statement {
        Statement::from_sql_and_values(db.get_database_backend(), sql, params.iter().map(to_orm))
    }

    pub(super) async fn execute(
        name: &str,
        db: &impl ConnectionTrait,
        sql: &str,
        params: &[Value],
    ) -> Result<u64> {
        db.execute_raw(statement(db, sql, params))
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| error(name, Operation::Query, e))
    }

    pub(super) async fn fetch_all(
        name: &str,
        db: &impl ConnectionTrait,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>> {
        let results = db
            .query_all_raw(statement(db, sql, params))
            .await
            .map_err(|e| error(name, Operation::Query, e))?;
        let decode_error =
            |e: sqlx::Error| Error::database(name, Operation::Query, ErrorKind::Query, e);
        if results.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(feature = "postgres")]
        if results[0].try_as_pg_row().is_some() {
            let rows = results.iter().filter_map(|r| r.try_as_pg_row());
            return driver::decode_rows(rows, driver::decode_pg_row).map_err(decode_error);
        }
        #[cfg(feature = "sqlite")]
        if results[0].try_as_sqlite_row().is_some() {
            let rows = results.iter().filter_map(|r| r.try_as_sqlite_row());
            return driver::decode_rows(rows, driver::decode_sqlite_row).map_err(decode_error);
        }
        Err(decode_error(sqlx::Error::Protocol(
            "unexpected row type from SeaORM".into(),
        )))
    }
}
