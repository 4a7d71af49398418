//! The neutral handle's executor on a sqlx pool, and its transactions.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{AssertSqlSafe, Pool};

use super::rows::ColumnCache;
use super::{CacheFailure, Ended, SqlxFlavor, sqlx_error};
use crate::config::DefaultOrm;
use crate::error::{Operation, Result};
use crate::sql::{Row, Value};
use crate::sql::{SqlExecutor, SqlTransaction};
use crate::stats::PoolCounters;

/// Writes a flavor's `execute`, `fetch_all` and `fetch_optional` from its `bind` function
/// (`fn(&str, &[Value]) -> Result<sqlx::query::Query<..>, sqlx::Error>`) and its row decoder.
macro_rules! sqlx_statements {
    ($db:ty, $bind:path, $decode:path) => {
        fn execute<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
            persistent: bool,
        ) -> impl std::future::Future<Output = Result<u64, sqlx::Error>> + Send + 'c {
            async move {
                Ok($bind(sql, params)?
                    .persistent(persistent)
                    .execute(conn)
                    .await?
                    .rows_affected())
            }
        }

        fn fetch_all<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
            columns: &'c $crate::backends::sqlx::rows::ColumnCache,
            persistent: bool,
        ) -> impl std::future::Future<Output = Result<Vec<$crate::sql::Row>, sqlx::Error>> + Send + 'c
        {
            async move {
                let rows = $bind(sql, params)?
                    .persistent(persistent)
                    .fetch_all(conn)
                    .await?;
                $crate::backends::sqlx::rows::decode_rows(&rows, columns, $decode)
            }
        }

        fn fetch_optional<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
            columns: &'c $crate::backends::sqlx::rows::ColumnCache,
            persistent: bool,
        ) -> impl std::future::Future<Output = Result<Option<$crate::sql::Row>, sqlx::Error>>
        + Send
        + 'c {
            async move {
                let row = $bind(sql, params)?
                    .persistent(persistent)
                    .fetch_optional(conn)
                    .await?;
                row.map(|row| $crate::backends::sqlx::rows::decode_row(&row, columns, $decode))
                    .transpose()
            }
        }
    };
}
pub(crate) use sqlx_statements;

/// Statements on the pool itself: one checkout per call.
pub(super) struct SqlxExecutor<F: SqlxFlavor> {
    pub name: Arc<str>,
    pub pool: Pool<F::DB>,
    pub counters: Arc<PoolCounters>,
    /// Column names of recent results, shared with the transactions begun here.
    pub columns: Arc<ColumnCache>,
    /// Keeps the credentials of new connections current, when they can change.
    pub refresher: Option<Arc<super::credentials::Refresher<F>>>,
    /// Behind a transaction-mode pooler: the statement that opens every transaction, and every
    /// statement runs in one on the unnamed prepared statement (see `PerTransaction`).
    pub begin: Option<Arc<str>>,
    /// The server list, told of errors that may mean a failover.
    pub failover: Option<Arc<super::failover::Failover<F>>>,
}

/// One statement's kind of result: which of the flavor's statement functions runs it.
pub(super) trait Want<F: SqlxFlavor>: Copy + Send {
    type Out: Send;

    fn run<'c>(
        self,
        conn: &'c mut <F::DB as sqlx::Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        columns: &'c ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<Self::Out, sqlx::Error>> + Send + 'c;
}

/// `execute`: the rows affected.
#[derive(Clone, Copy)]
pub(super) struct Affected;
/// `fetch_all`: every row.
#[derive(Clone, Copy)]
pub(super) struct All;
/// `fetch_optional`: the first row.
#[derive(Clone, Copy)]
pub(super) struct Optional;

impl<F: SqlxFlavor> Want<F> for Affected {
    type Out = u64;

    fn run<'c>(
        self,
        conn: &'c mut <F::DB as sqlx::Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        _: &'c ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<u64, sqlx::Error>> + Send + 'c {
        F::execute(conn, sql, params, persistent)
    }
}

impl<F: SqlxFlavor> Want<F> for All {
    type Out = Vec<Row>;

    fn run<'c>(
        self,
        conn: &'c mut <F::DB as sqlx::Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        columns: &'c ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<Vec<Row>, sqlx::Error>> + Send + 'c {
        F::fetch_all(conn, sql, params, columns, persistent)
    }
}

impl<F: SqlxFlavor> Want<F> for Optional {
    type Out = Option<Row>;

    fn run<'c>(
        self,
        conn: &'c mut <F::DB as sqlx::Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        columns: &'c ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<Option<Row>, sqlx::Error>> + Send + 'c {
        F::fetch_optional(conn, sql, params, columns, persistent)
    }
}

impl<F: SqlxFlavor> SqlxExecutor<F> {
    async fn checkout(&self) -> Result<sqlx::pool::PoolConnection<F::DB>> {
        // Leak detection counts from when the connection is handed over.
        let watch = crate::leak::checkout_started();
        let checkout = super::credentials::acquire::<F>(
            &self.name,
            &self.pool,
            &self.counters,
            self.refresher.as_deref(),
        )
        .await;
        crate::leak::checked_out(watch);
        if let (Err(e), Some(failover)) = (&checkout, &self.failover) {
            failover.observe_checkout(e, &self.pool);
        }
        checkout
    }

    /// A statement's error, after telling the server list of it.
    fn failed(&self, operation: Operation, e: sqlx::Error) -> crate::error::Error {
        if let Some(failover) = &self.failover {
            failover.observe(&e);
        }
        sqlx_error::<F>(&self.name, operation, e)
    }

    /// Runs one statement outside a transaction, on a checkout, as is; once more when it
    /// failed because of the connection's statement cache ([`SqlxFlavor::cache_failure`]).
    async fn direct<W: Want<F>>(&self, sql: &str, params: &[Value], want: W) -> Result<W::Out> {
        let mut conn = self.checkout().await?;
        match want.run(&mut conn, sql, params, &self.columns, true).await {
            Ok(out) => Ok(out),
            Err(e) if cache_failure::<F>(&e).is_some() => {
                // Boxed: the cold path does not grow every statement's future.
                Box::pin(again::<F, W>(&mut conn, sql, params, &self.columns, want))
                    .await
                    .map_err(|e| self.failed(Operation::Query, e))
            }
            Err(e) => Err(self.failed(Operation::Query, e)),
        }
    }

    /// Runs one statement outside a transaction behind a transaction-mode pooler: on the
    /// unnamed statement, in a transaction of its own opened with `begin`. (A separate future
    /// from [`Self::direct`], so that the default path's stays as small as it was.)
    async fn in_transaction<W: Want<F>>(
        &self,
        begin: &str,
        sql: &str,
        params: &[Value],
        want: W,
    ) -> Result<W::Out> {
        let mut conn = self.checkout().await?;
        let error = |e| self.failed(Operation::Query, e);
        let mut retried = false;
        loop {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(begin.to_string()))
                .await
                .map_err(|e| self.failed(Operation::Begin, e))?;
            match want.run(&mut tx, sql, params, &self.columns, false).await {
                Ok(out) => {
                    tx.commit()
                        .await
                        .map_err(|e| self.failed(Operation::Commit, e))?;
                    return Ok(out);
                }
                Err(e) => {
                    // The statement's error is the one to report; a connection whose
                    // rollback fails is closed by sqlx rather than pooled.
                    let _ = tx.rollback().await;
                    if !retried && unnamed_statement_lost(&e) {
                        retried = true;
                        continue;
                    }
                    return Err(error(e));
                }
            }
        }
    }
}

/// How `e` failed because of the connection's statement cache, if it did.
pub(super) fn cache_failure<F: SqlxFlavor>(e: &sqlx::Error) -> Option<CacheFailure> {
    e.as_database_error().and_then(|db| F::cache_failure(db))
}

/// Runs a statement that failed because of `conn`'s statement cache once more, after closing
/// the statements the cache keeps prepared (see [`CacheFailure`]).
pub(super) async fn again<F: SqlxFlavor, W: Want<F>>(
    conn: &mut <F::DB as sqlx::Database>::Connection,
    sql: &str,
    params: &[Value],
    columns: &ColumnCache,
    want: W,
) -> std::result::Result<W::Out, sqlx::Error> {
    sqlx::Connection::clear_cached_statements(&mut *conn).await?;
    want.run(conn, sql, params, columns, true).await
}

/// sqlx 0.9 looks up a type it has not seen on a connection yet (an enum, a composite, an
/// extension's type such as `citext`) with a simple query between the unnamed statement's
/// Parse and its Bind, and a simple query destroys the unnamed statement: the Bind then fails
/// with SQLSTATE 26000 before anything ran. The type is known to the connection by then, so
/// the statement runs once more on it.
fn unnamed_statement_lost(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "26000")
}

impl<F: SqlxFlavor> SqlExecutor for SqlxExecutor<F> {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        match &self.begin {
            None => Box::pin(self.direct(sql, params, Affected)),
            Some(begin) => Box::pin(self.in_transaction(begin, sql, params, Affected)),
        }
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        match &self.begin {
            None => Box::pin(self.direct(sql, params, All)),
            Some(begin) => Box::pin(self.in_transaction(begin, sql, params, All)),
        }
    }

    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        match &self.begin {
            None => Box::pin(self.direct(sql, params, Optional)),
            Some(begin) => Box::pin(self.in_transaction(begin, sql, params, Optional)),
        }
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            if let Some(refresher) = &self.refresher {
                refresher.before_checkout(&self.pool).await;
            }
            let tx = match &self.begin {
                Some(begin) => self.pool.begin_with(AssertSqlSafe(begin.to_string())).await,
                None if F::IMMEDIATE_TRANSACTIONS => {
                    match self.pool.begin_with("BEGIN IMMEDIATE").await {
                        Err(e) if F::immediate_refused(&e) => self.pool.begin().await,
                        begun => begun,
                    }
                }
                None => self.pool.begin().await,
            }
            .map_err(|e| self.failed(Operation::Begin, e))?;
            Ok(Box::new(SqlxTransaction::<F> {
                name: self.name.clone(),
                tx,
                columns: self.columns.clone(),
                persistent: self.begin.is_none(),
                failover: self.failover.clone(),
                ended: None,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

/// A sqlx transaction; sqlx rolls it back when dropped open.
struct SqlxTransaction<F: SqlxFlavor> {
    name: Arc<str>,
    tx: sqlx::Transaction<'static, F::DB>,
    columns: Arc<ColumnCache>,
    /// False behind a transaction-mode pooler: statements use the unnamed prepared statement.
    persistent: bool,
    failover: Option<Arc<super::failover::Failover<F>>>,
    /// Set when a statement's error made the server end the transaction (see [`Ended`]).
    ended: Option<Ended>,
}

impl<F: SqlxFlavor> SqlxTransaction<F> {
    /// One statement of the transaction; once more after the server refused to prepare it
    /// ([`CacheFailure::Exhausted`]: nothing ran).
    async fn statement<W: Want<F>>(
        &mut self,
        sql: &str,
        params: &[Value],
        want: W,
    ) -> Result<W::Out> {
        Ended::refuse(self.ended.as_ref(), &self.name, Operation::Query)?;
        let outcome = match want
            .run(&mut self.tx, sql, params, &self.columns, self.persistent)
            .await
        {
            Err(e) if cache_failure::<F>(&e) == Some(CacheFailure::Exhausted) => {
                // Boxed: the cold path does not grow every statement's future.
                Box::pin(again::<F, W>(
                    &mut self.tx,
                    sql,
                    params,
                    &self.columns,
                    want,
                ))
                .await
            }
            outcome => outcome,
        };
        match outcome {
            Ok(out) => Ok(out),
            Err(e) => Err(self.statement_failed(e).await),
        }
    }

    /// A statement's error: whether it ended the transaction is noted first. One from a stale
    /// statement cache aborted the transaction, so it is reported, not retried; the cache is
    /// emptied (a Close is accepted in an aborted transaction), so that the connection's next
    /// statements are prepared again instead of failing the same way.
    async fn statement_failed(&mut self, e: sqlx::Error) -> crate::error::Error {
        if cache_failure::<F>(&e) == Some(CacheFailure::Stale) {
            let _ = sqlx::Connection::clear_cached_statements(&mut *self.tx).await;
        }
        let ended = match Ended::question::<F>(&e) {
            None => false,
            Some(sql) => {
                let columns = ColumnCache::default();
                // Not cached: a probe must not take a prepared statement of the session's.
                Ended::answer(F::fetch_optional(&mut self.tx, sql, &[], &columns, false).await)
            }
        };
        if ended {
            self.ended = Some(Ended::by::<F>(&e));
        }
        self.failed(Operation::Query, e)
    }

    /// A statement's error, after telling the server list of it.
    fn failed(&self, operation: Operation, e: sqlx::Error) -> crate::error::Error {
        if let Some(failover) = &self.failover {
            failover.observe(&e);
        }
        sqlx_error::<F>(&self.name, operation, e)
    }
}

impl<F: SqlxFlavor> SqlTransaction for SqlxTransaction<F> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.statement(sql, params, Affected))
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(self.statement(sql, params, All))
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(ended) = self.ended {
                // Ends sqlx's transaction too, so the connection goes back to the pool clean.
                let _ = self.tx.rollback().await;
                return Err(ended.error(&self.name, Operation::Commit));
            }
            let (name, failover) = (self.name, self.failover);
            self.tx.commit().await.map_err(|e| {
                if let Some(failover) = &failover {
                    failover.observe(&e);
                }
                sqlx_error::<F>(&name, Operation::Commit, e)
            })
        })
    }

    fn rollback(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let name = self.name;
            self.tx
                .rollback()
                .await
                .map_err(|e| sqlx_error::<F>(&name, Operation::Rollback, e))
        })
    }
}
