//! Statements on a tokio-postgres client for the neutral handle, its transactions and the
//! application's hooks: every statement goes through the client's prepared-statement cache,
//! keyed by its text and the declared parameter types.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deadpool_postgres::ClientWrapper;
use futures_util::TryStreamExt as _;
use futures_util::future::BoxFuture;
use tokio_postgres::Statement;

use super::pool::{TokioPgClient, TokioPgPool, acquire};
use super::rows::{Param, decode, param_type};
use super::{driver_error, statement_error};
use crate::backends::columns::ColumnCache;
use crate::backends::pg_common::POSTGRES;
use crate::config::DefaultOrm;
use crate::error::{Error, Operation, Result};
use crate::hooks::HookSql;
use crate::sql::placeholders::prepare;
use crate::sql::{Row, SqlExecutor, SqlTransaction, Value};
use crate::stats::PoolCounters;

/// The wire protocol counts parameters in 16 bits.
const MAX_PARAMETERS: usize = u16::MAX as usize;

/// What a statement needs besides the client: the connection's name (for errors) and the
/// pool's shared column-name lists.
#[derive(Clone, Copy)]
pub(super) struct On<'a> {
    pub name: &'a str,
    pub columns: &'a ColumnCache,
}

/// The cached prepared statement for `sql` with `params`' types; placeholders are checked
/// first (a statement that cannot be bound is a query error before the server sees it).
async fn statement(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<Statement> {
    if params.len() > MAX_PARAMETERS {
        return Err(statement_error(
            on.name,
            format!(
                "{} parameters are more than the {MAX_PARAMETERS} one statement can carry",
                params.len()
            ),
        ));
    }
    let used = prepare(sql, &POSTGRES, params, false)
        .map_err(|e| statement_error(on.name, e.to_string()))?
        .used;
    let types = params
        .iter()
        .zip(used)
        .enumerate()
        .map(|(i, (v, used))| param_type(v, i + 1, used))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| statement_error(on.name, e))?;
    client
        .prepare_typed_cached(sql, &types)
        .await
        .map_err(|e| driver_error(on.name, Operation::Query, e))
}

/// Runs a statement; the rows affected.
pub(super) async fn execute(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    let stmt = statement(on, client, sql, params).await?;
    client
        .execute_raw(&stmt, params.iter().map(Param))
        .await
        .map_err(|e| driver_error(on.name, Operation::Query, e))
}

/// Runs a query; its rows, at most `limit` of them (the rest are not decoded).
pub(super) async fn fetch(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
    limit: usize,
) -> Result<Vec<Row>> {
    let stmt = statement(on, client, sql, params).await?;
    let failed = |e| driver_error(on.name, Operation::Query, e);
    let stream = client
        .query_raw(&stmt, params.iter().map(Param))
        .await
        .map_err(failed)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut names: Option<Arc<[String]>> = None;
    while rows.len() < limit {
        let Some(row) = stream.try_next().await.map_err(failed)? else {
            break;
        };
        let names = names
            .get_or_insert_with(|| on.columns.names_of(stmt.columns().iter().map(|c| c.name())))
            .clone();
        let values = decode(&row).map_err(|e| statement_error(on.name, e))?;
        rows.push(Row::new(names, values));
    }
    Ok(rows)
}

/// Statements on the pool itself: one checkout per call.
pub(super) struct TokioPgExecutor {
    pub name: Arc<str>,
    pub pool: TokioPgPool,
    pub counters: Arc<PoolCounters>,
    pub columns: Arc<ColumnCache>,
    /// `max_idle_conns` when it is below the pool size (else no release can exceed it),
    /// enforced when a statement's client is released.
    pub max_idle: Option<usize>,
}

impl TokioPgExecutor {
    fn on(&self) -> On<'_> {
        On {
            name: &self.name,
            columns: &self.columns,
        }
    }

    /// Checks a client out for one statement.
    async fn checkout(&self) -> Result<InFlight<'_>> {
        let client = acquire(&self.name, &self.pool, &self.counters).await?;
        Ok(InFlight {
            executor: self,
            client: Some(client),
        })
    }

    /// Returns a client to the pool, or closes it when the pool already keeps `max_idle_conns`
    /// idle ones (deadpool has no release callback to do it; clients of the native layer are
    /// trimmed by the health loop instead).
    fn release(&self, client: TokioPgClient) {
        if let Some(max_idle) = self.max_idle
            && self.pool.status().available >= max_idle
        {
            self.counters.closed_max_idle.fetch_add(1, Relaxed);
            drop(TokioPgClient::take(client));
        }
    }
}

impl SqlExecutor for TokioPgExecutor {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let outcome = execute(self.on(), statement.client()?, sql, params).await;
            statement.done();
            outcome
        })
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let outcome = fetch(self.on(), statement.client()?, sql, params, usize::MAX).await;
            statement.done();
            outcome
        })
    }

    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let outcome = fetch(self.on(), statement.client()?, sql, params, 1).await;
            statement.done();
            Ok(outcome?.pop())
        })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let client = acquire(&self.name, &self.pool, &self.counters).await?;
            let tx = TokioPgTransaction {
                name: self.name.clone(),
                client: Some(client),
                columns: self.columns.clone(),
            };
            tx.client()?
                .batch_execute("BEGIN")
                .await
                .map_err(|e| driver_error(&self.name, Operation::Begin, e))?;
            Ok(Box::new(tx) as Box<dyn SqlTransaction>)
        })
    }
}

/// A client while one statement runs on it. Dropped before [`InFlight::done`] (the statement's
/// future was cancelled, say by `query_timeout`), the client is closed rather than pooled: the
/// server may still be running the statement, and the next caller would wait behind it.
struct InFlight<'e> {
    executor: &'e TokioPgExecutor,
    client: Option<TokioPgClient>,
}

impl InFlight<'_> {
    fn client(&self) -> Result<&TokioPgClient> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::closed(&self.executor.name, Operation::Query))
    }

    /// The statement finished (with a result or an error from the server): the client goes back.
    fn done(&mut self) {
        if let Some(client) = self.client.take() {
            self.executor.release(client);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.executor.counters.closed_broken.fetch_add(1, Relaxed);
            drop(TokioPgClient::take(client));
        }
    }
}

/// An open transaction on one checked-out client. Dropped open, it is rolled back in a task
/// before the client returns to the pool (or, without a runtime, the client is closed).
struct TokioPgTransaction {
    name: Arc<str>,
    /// Taken when the transaction ends.
    client: Option<TokioPgClient>,
    columns: Arc<ColumnCache>,
}

impl TokioPgTransaction {
    fn client(&self) -> Result<&TokioPgClient> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::closed(&self.name, Operation::Query))
    }

    async fn finish(mut self, statement: &'static str, operation: Operation) -> Result<()> {
        let Some(client) = self.client.take() else {
            return Err(Error::closed(&self.name, operation));
        };
        match client.batch_execute(statement).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The session's state is unknown: close it rather than pool it.
                drop(TokioPgClient::take(client));
                Err(driver_error(&self.name, operation, e))
            }
        }
    }
}

impl SqlTransaction for TokioPgTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let on = On {
                name: &self.name,
                columns: &self.columns,
            };
            execute(on, self.client()?, sql, params).await
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let on = On {
                name: &self.name,
                columns: &self.columns,
            };
            fetch(on, self.client()?, sql, params, usize::MAX).await
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(self.finish("COMMIT", Operation::Commit))
    }

    fn rollback(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(self.finish("ROLLBACK", Operation::Rollback))
    }
}

impl Drop for TokioPgTransaction {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(TokioPgClient::take(client));
                    }
                });
            }
            Err(_) => drop(TokioPgClient::take(client)),
        }
    }
}

/// One client as the application's hooks see it.
pub(super) struct HookClient<'c> {
    pub on: On<'c>,
    pub client: &'c ClientWrapper,
}

impl HookSql for HookClient<'_> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(execute(self.on, self.client, sql, params))
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move { Ok(fetch(self.on, self.client, sql, params, 1).await?.pop()) })
    }
}
