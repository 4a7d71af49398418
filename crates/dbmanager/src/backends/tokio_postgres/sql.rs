//! Statements on a tokio-postgres client for the neutral handle, its transactions and the
//! application's hooks: every statement goes through the client's prepared-statement cache,
//! keyed by its text and the declared parameter types; behind a transaction-mode pooler
//! (`pooler: transaction`) none does: each runs on the unnamed statement
//! (`query_typed_raw`: Parse, Bind, Describe, Execute and one Sync in one round trip) inside a
//! transaction, one of its own for a statement outside one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deadpool_postgres::ClientWrapper;
use futures_util::FutureExt as _;
use futures_util::TryStreamExt as _;
use futures_util::future::BoxFuture;
use tokio_postgres::RowStream;
use tokio_postgres::types::Type;

use super::failover::observe;
use super::pool::{TokioPgClient, TokioPgPool, acquire};
use super::rows::{Param, decode, param_type};
use super::{driver_error, statement_error};
use crate::backends::columns::ColumnCache;
use crate::backends::pg_common::POSTGRES;
use crate::config::DefaultOrm;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::hooks::HookSql;
use crate::sql::placeholders::prepare;
use crate::sql::{Row, SqlExecutor, SqlTransaction, Value};
use crate::stats::PoolCounters;

/// The wire protocol counts parameters in 16 bits.
const MAX_PARAMETERS: usize = u16::MAX as usize;

/// What a statement needs besides the client: the connection's name (for errors), the pool's
/// shared column-name lists, and how statements reach the server.
#[derive(Clone, Copy)]
pub(super) struct On<'a> {
    pub name: &'a str,
    pub columns: &'a ColumnCache,
    /// Behind a transaction-mode pooler: the unnamed statement, never a named (cached) one,
    /// whose name would live on a server session that is ours for one transaction only.
    pub unnamed: bool,
    /// Outside a transaction: a statement whose cached plan went stale after a schema change
    /// ([`Stale::Plan`]) is prepared and run once more (in one, the error aborted it).
    pub reprepare: bool,
}

/// How a statement's error says the client's cached prepared statements no longer match its
/// server session (`pg_common::stale_cached_statement`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// A schema change altered the statement's result type (0A000): its cache entry goes.
    Plan,
    /// The session lost its prepared statements (26000: `DISCARD ALL`, `DEALLOCATE ALL`):
    /// the whole cache goes. When the statement still fails so (it needed one of
    /// tokio-postgres's own type-lookup statements, which cannot be reset), the client is
    /// closed rather than pooled.
    Gone,
}

fn stale(e: &tokio_postgres::Error) -> Option<Stale> {
    let db = e.as_db_error()?;
    let code = db.code().code();
    if !crate::backends::pg_common::stale_cached_statement(code, db.routine(), db.message()) {
        return None;
    }
    Some(if code == "26000" {
        Stale::Gone
    } else {
        Stale::Plan
    })
}

/// Whether one of the crate's errors is a [`Stale::Gone`]: the statement did not run and its
/// client is not fit for the pool any more.
fn statements_gone(e: &Error) -> bool {
    super::driver_cause(e).and_then(stale) == Some(Stale::Gone)
}

/// The cached statement for `sql` with `types`, prepared when not cached, and `run` on it. A
/// stale cache entry ([`Stale`]) is evicted; a stale plan outside a transaction is prepared
/// and run once more.
async fn cached<T, Fut>(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    types: &[Type],
    run: impl Fn(tokio_postgres::Statement) -> Fut,
) -> std::result::Result<T, tokio_postgres::Error>
where
    Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    let mut retried = false;
    loop {
        let outcome = match client.prepare_typed_cached(sql, types).await {
            Ok(stmt) => run(stmt).await,
            Err(e) => Err(e),
        };
        let Err(e) = &outcome else {
            return outcome;
        };
        match stale(e) {
            Some(Stale::Plan) => {
                drop(client.statement_cache.remove(sql, types));
                if on.reprepare && !retried {
                    retried = true;
                    continue;
                }
            }
            Some(Stale::Gone) => {
                // Every named statement of the session went: the cache's, and tokio-postgres's
                // type-lookup ones, which cannot be reset. The types it knows stay valid, so
                // the statement usually runs on this client once prepared again; if it needs
                // a lookup, it fails again and runs on another client (the executor).
                client.statement_cache.clear();
                if on.reprepare && !retried {
                    retried = true;
                    continue;
                }
            }
            None => {}
        }
        return outcome;
    }
}

/// The declared types of `params`; placeholders are checked first (a statement that cannot be
/// bound is a query error before the server sees it).
fn param_types(on: On<'_>, sql: &str, params: &[Value]) -> Result<Vec<Type>> {
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
    params
        .iter()
        .zip(used)
        .enumerate()
        .map(|(i, (v, used))| param_type(v, i + 1, used))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| statement_error(on.name, e))
}

/// Sends a statement: the cached prepared statement for `sql` with `params`' types, or the
/// unnamed one (see [`On::unnamed`]); its rows come as they arrive.
async fn send(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<RowStream> {
    let types = param_types(on, sql, params)?;
    let failed = |e| driver_error(on.name, Operation::Query, e);
    if on.unnamed {
        return client
            .query_typed_raw(sql, params.iter().map(Param).zip(types))
            .await
            .map_err(failed);
    }
    cached(on, client, sql, &types, |stmt| async move {
        client.query_raw(&stmt, params.iter().map(Param)).await
    })
    .await
    .map_err(failed)
}

/// Runs a statement; the rows affected.
pub(super) async fn execute(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    let failed = |e| driver_error(on.name, Operation::Query, e);
    if on.unnamed {
        let mut stream = std::pin::pin!(send(on, client, sql, params).await?);
        while stream.try_next().await.map_err(failed)?.is_some() {}
        return Ok(stream.rows_affected().unwrap_or(0));
    }
    let types = param_types(on, sql, params)?;
    cached(on, client, sql, &types, |stmt| async move {
        client.execute_raw(&stmt, params.iter().map(Param)).await
    })
    .await
    .map_err(failed)
}

/// Runs a query; its rows, at most `limit` of them (the rest are not decoded).
pub(super) async fn fetch(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
    limit: usize,
) -> Result<Vec<Row>> {
    let failed = |e| driver_error(on.name, Operation::Query, e);
    let mut stream = std::pin::pin!(send(on, client, sql, params).await?);
    let mut rows = Vec::new();
    let mut names: Option<Arc<[String]>> = None;
    while rows.len() < limit {
        let Some(row) = stream.try_next().await.map_err(failed)? else {
            break;
        };
        let names = names
            .get_or_insert_with(|| on.columns.names_of(row.columns().iter().map(|c| c.name())))
            .clone();
        let values = decode(&row).map_err(|e| statement_error(on.name, e))?;
        rows.push(Row::new(names, values));
    }
    Ok(rows)
}

/// Runs a query; its first row, if any (the rest are not decoded). [`fetch`] with a limit of
/// one, without a `Vec` for the one row.
pub(super) async fn fetch_first(
    on: On<'_>,
    client: &ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<Option<Row>> {
    let mut stream = std::pin::pin!(send(on, client, sql, params).await?);
    let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| driver_error(on.name, Operation::Query, e))?
    else {
        return Ok(None);
    };
    let names = on.columns.names_of(row.columns().iter().map(|c| c.name()));
    let values = decode(&row).map_err(|e| statement_error(on.name, e))?;
    Ok(Some(Row::new(names, values)))
}

/// What a statement outside a transaction is asked for (behind a transaction-mode pooler,
/// where one path runs them all: see [`TokioPgExecutor::in_own_transaction`]; and when one
/// runs again on another client: [`TokioPgExecutor::on_another_client`]).
#[derive(Clone, Copy)]
enum Want {
    Affected,
    Rows(usize),
}

impl Want {
    /// Runs the statement on `client` for what is wanted.
    async fn run(
        self,
        on: On<'_>,
        client: &ClientWrapper,
        sql: &str,
        params: &[Value],
    ) -> Result<Got> {
        match self {
            Want::Affected => execute(on, client, sql, params).await.map(Got::Affected),
            Want::Rows(limit) => fetch(on, client, sql, params, limit).await.map(Got::Rows),
        }
    }
}

/// A statement's result, as [`Want`] asked.
enum Got {
    Affected(u64),
    Rows(Vec<Row>),
}

impl Got {
    fn affected(self) -> u64 {
        match self {
            Got::Affected(n) => n,
            Got::Rows(rows) => rows.len() as u64,
        }
    }

    fn rows(self) -> Vec<Row> {
        match self {
            Got::Rows(rows) => rows,
            Got::Affected(_) => Vec::new(),
        }
    }
}

/// Whether a statement failed for a named statement that the server session does not have
/// (SQLSTATE 26000), or already has under that name (42P05). Behind a transaction pooler that
/// is tokio-postgres's type lookup: a column of a type it does not know (an enum, `citext`) is
/// looked up with named statements (`sN`, counted per process) that the client prepares once
/// and keeps, on whichever server session it then had; on another session they are missing
/// (and stay missing for that client), and a session may still hold one of the same name
/// that another process left there.
fn lost_named_statement(e: &Error) -> bool {
    use tokio_postgres::error::SqlState;
    super::driver_cause(e)
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            *code == SqlState::INVALID_SQL_STATEMENT_NAME || *code == SqlState::DUPLICATE_PSTATEMENT
        })
}

/// Whether a statement's error means its server session is over: the server ended it
/// (`57Pxx`: `57P01` after `pg_terminate_backend` or a shutdown, `57P02` a crash, `57P05` an
/// idle timeout; class 08; not `57014`, a cancelled statement on a live session) or
/// the connection failed beneath the statement (no server error at all: I/O, closed).
fn ends_session(e: &Error) -> bool {
    match super::driver_cause(e) {
        Some(cause) => match cause.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                code.starts_with("57P") || code.starts_with("08")
            }
            None => true,
        },
        None => false,
    }
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
    /// Behind a transaction-mode pooler: what opens every transaction (`BEGIN; SET LOCAL ...`,
    /// the session settings a direct connection sends in its startup packet); every statement
    /// then runs in one, on the unnamed statement.
    pub begin: Option<Arc<str>>,
}

impl TokioPgExecutor {
    fn on(&self) -> On<'_> {
        On {
            name: &self.name,
            columns: &self.columns,
            unnamed: self.begin.is_some(),
            reprepare: true,
        }
    }

    /// Checks a client out for one statement. A `map` on the checkout, not an `async fn`:
    /// every future layer around deadpool's checkout moves it whole once more.
    fn checkout(&self) -> impl Future<Output = Result<InFlight<'_>>> + Send + '_ {
        // Leak detection counts from when the client is handed over.
        let watch = crate::leak::checkout_started();
        acquire(&self.name, &self.pool, &self.counters).map(move |client| {
            crate::leak::checked_out(watch);
            Ok(InFlight {
                executor: self,
                client: Some(client?),
            })
        })
    }

    /// A failed statement may mean the server left: the server list is probed.
    fn observe<T>(&self, outcome: &Result<T>) {
        observe(self.pool.manager().failover.as_deref(), &self.pool, outcome);
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

    /// A statement once more, on another client, after its first client's session lost its
    /// prepared statements ([`Stale::Gone`]: the application ran `DISCARD ALL` or
    /// `DEALLOCATE ALL` on it) and preparing it again there failed too; that client was
    /// closed. Boxed: rare, and the statement futures stay as small as they were.
    fn on_another_client<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
        want: Want,
    ) -> BoxFuture<'a, Result<Got>> {
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let client = statement.client()?;
            let outcome = want.run(self.on(), client, sql, params).await;
            statement.done(&outcome);
            outcome
        })
    }

    /// Runs one statement outside a transaction behind a transaction-mode pooler: in a
    /// transaction of its own opened with `begin`, committed when it succeeded, else rolled
    /// back (its error is the one reported). A client whose session state is unknown (a
    /// failed `BEGIN`, `COMMIT` or `ROLLBACK`) or that lost its type-lookup statement
    /// ([`lost_named_statement`]) is closed rather than pooled; in the latter case the
    /// statement, rolled back, runs once more on another client.
    async fn in_own_transaction(
        &self,
        begin: &str,
        sql: &str,
        params: &[Value],
        want: Want,
    ) -> Result<Got> {
        let mut retried = false;
        loop {
            let mut statement = self.checkout().await?;
            let client = statement.client()?;
            client
                .batch_execute(begin)
                .await
                .map_err(|e| driver_error(&self.name, Operation::Begin, e))?;
            let outcome = want.run(self.on(), client, sql, params).await;
            let lost = outcome.as_ref().is_err_and(lost_named_statement);
            let (end, operation) = match outcome {
                Ok(_) => ("COMMIT", Operation::Commit),
                Err(_) => ("ROLLBACK", Operation::Rollback),
            };
            let ended = client.batch_execute(end).await;
            match ended {
                // Nothing runs on it: closed without a cancel request.
                Ok(()) if lost => statement.discard(),
                Ok(()) => statement.done(&outcome),
                Err(e) => {
                    return Err(outcome
                        .err()
                        .unwrap_or_else(|| driver_error(&self.name, operation, e)));
                }
            }
            if lost && !retried {
                retried = true;
                continue;
            }
            return outcome;
        }
    }
}

impl SqlExecutor for TokioPgExecutor {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        if let Some(begin) = &self.begin {
            return Box::pin(async move {
                let outcome = self
                    .in_own_transaction(begin, sql, params, Want::Affected)
                    .await;
                self.observe(&outcome);
                Ok(outcome?.affected())
            });
        }
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let mut outcome = execute(self.on(), statement.client()?, sql, params).await;
            statement.done(&outcome);
            if outcome.as_ref().is_err_and(statements_gone) {
                outcome = self
                    .on_another_client(sql, params, Want::Affected)
                    .await
                    .map(Got::affected);
            }
            self.observe(&outcome);
            outcome
        })
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        if let Some(begin) = &self.begin {
            return Box::pin(async move {
                let outcome = self
                    .in_own_transaction(begin, sql, params, Want::Rows(usize::MAX))
                    .await;
                self.observe(&outcome);
                Ok(outcome?.rows())
            });
        }
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let mut outcome = fetch(self.on(), statement.client()?, sql, params, usize::MAX).await;
            statement.done(&outcome);
            if outcome.as_ref().is_err_and(statements_gone) {
                outcome = self
                    .on_another_client(sql, params, Want::Rows(usize::MAX))
                    .await
                    .map(Got::rows);
            }
            self.observe(&outcome);
            outcome
        })
    }

    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        if let Some(begin) = &self.begin {
            return Box::pin(async move {
                let outcome = self
                    .in_own_transaction(begin, sql, params, Want::Rows(1))
                    .await;
                self.observe(&outcome);
                Ok(outcome?.rows().pop())
            });
        }
        Box::pin(async move {
            let mut statement = self.checkout().await?;
            let mut outcome = fetch_first(self.on(), statement.client()?, sql, params).await;
            statement.done(&outcome);
            if outcome.as_ref().is_err_and(statements_gone) {
                outcome = self
                    .on_another_client(sql, params, Want::Rows(1))
                    .await
                    .map(|got| got.rows().pop());
            }
            self.observe(&outcome);
            outcome
        })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let client = acquire(&self.name, &self.pool, &self.counters).await?;
            let tx = TokioPgTransaction {
                name: self.name.clone(),
                client: Some(client),
                columns: self.columns.clone(),
                unnamed: self.begin.is_some(),
                lost: false,
                busy: false,
            };
            let begun = tx
                .client()?
                .batch_execute(self.begin.as_deref().unwrap_or("BEGIN"))
                .await
                .map_err(|e| driver_error(&self.name, Operation::Begin, e));
            self.observe(&begun);
            begun?;
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

    /// The statement finished: the client goes back, unless the outcome says its session is
    /// gone ([`ends_session`]): then it is closed here, so that the next checkout does not
    /// get it before its connection task has noticed (one failed statement per killed
    /// session, not two); or that the session lost its prepared statements
    /// ([`statements_gone`]).
    fn done<T>(&mut self, outcome: &Result<T>) {
        if let Some(client) = self.client.take() {
            if client.is_closed()
                || outcome
                    .as_ref()
                    .is_err_and(|e| ends_session(e) || statements_gone(e))
            {
                self.executor.counters.closed_broken.fetch_add(1, Relaxed);
                drop(TokioPgClient::take(client));
            } else {
                self.executor.release(client);
            }
        }
    }
}

impl InFlight<'_> {
    /// Closes the client, whose statement ended, rather than pooling it.
    fn discard(mut self) {
        if let Some(client) = self.client.take() {
            self.executor.counters.closed_broken.fetch_add(1, Relaxed);
            drop(TokioPgClient::take(client));
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.executor.counters.closed_broken.fetch_add(1, Relaxed);
            if !client.is_closed() {
                cancel_abandoned(&client, &self.executor.pool);
            }
            drop(TokioPgClient::take(client));
        }
    }
}

/// Asks the server to cancel what `client` runs: its statement was abandoned (the caller's
/// future dropped, by `query_timeout` say) and the client is being closed. Closing is not
/// enough: a server notices a client that left only when it next writes to it, so a long
/// statement (whose server-side `statement_timeout` the application lifted) would run on to
/// its end. The client is never pooled again, so a cancel that arrives after the statement
/// ended cancels nothing else.
fn cancel_abandoned(client: &ClientWrapper, pool: &TokioPgPool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let manager = pool.manager();
    let (token, tls, limit) = (
        client.cancel_token(),
        manager.tls.clone(),
        manager.connect_timeout,
    );
    runtime.spawn(async move {
        let _ = tokio::time::timeout(limit, token.cancel_query(tls)).await;
    });
}

/// Closes the client of a transaction whose statement was abandoned mid-way, cancelling that
/// statement on the server first (see [`cancel_abandoned`]).
fn abandon(client: TokioPgClient) {
    if !client.is_closed()
        && let Some(pool) = TokioPgClient::pool(&client)
    {
        cancel_abandoned(&client, &pool);
    }
    drop(TokioPgClient::take(client));
}

/// An open transaction on one checked-out client. Dropped open, it is rolled back in a task
/// before the client returns to the pool (or, without a runtime, the client is closed).
struct TokioPgTransaction {
    name: Arc<str>,
    /// Taken when the transaction ends.
    client: Option<TokioPgClient>,
    columns: Arc<ColumnCache>,
    /// Behind a transaction-mode pooler (see [`On::unnamed`]).
    unnamed: bool,
    /// A statement lost the client's type-lookup statement ([`lost_named_statement`]): the
    /// client is closed when the transaction ends rather than pooled.
    lost: bool,
    /// A statement is running: dropped now (its future abandoned, by `query_timeout` say), the
    /// transaction's statement is cancelled and its client closed, rather than a `ROLLBACK`
    /// queued behind a statement the server would run to its end.
    busy: bool,
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
        if self.busy {
            // The last statement was abandoned (at `query_timeout`) and may still run: a
            // `COMMIT` or `ROLLBACK` would wait behind it. Closing the session rolls back.
            abandon(client);
            return match operation {
                Operation::Rollback => Ok(()),
                _ => Err(Error::database(
                    &self.name,
                    operation,
                    ErrorKind::Query,
                    "the transaction was rolled back, not committed: a statement in it was \
                     abandoned before it finished (query_timeout), so its session was closed",
                )),
            };
        }
        match client.batch_execute(statement).await {
            Ok(()) => {
                if self.lost {
                    drop(TokioPgClient::take(client));
                }
                Ok(())
            }
            Err(e) => {
                // The session's state is unknown: close it rather than pool it.
                drop(TokioPgClient::take(client));
                Err(driver_error(&self.name, operation, e))
            }
        }
    }

    fn on(&self) -> On<'_> {
        On {
            name: &self.name,
            columns: &self.columns,
            unnamed: self.unnamed,
            reprepare: false,
        }
    }

    /// Notes a statement's error that leaves the client unfit for the pool, and one that may
    /// mean the server left (the pool's server list is probed).
    fn observe<T>(&mut self, outcome: Result<T>) -> Result<T> {
        if outcome
            .as_ref()
            .is_err_and(|e| (self.unnamed && lost_named_statement(e)) || statements_gone(e))
        {
            self.lost = true;
        }
        if outcome.is_err()
            && let Some(pool) = self.client.as_ref().and_then(TokioPgClient::pool)
        {
            observe(pool.manager().failover.as_deref(), &pool, &outcome);
        }
        outcome
    }
}

impl SqlTransaction for TokioPgTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.busy = true;
            let outcome = execute(self.on(), self.client()?, sql, params).await;
            self.busy = false;
            self.observe(outcome)
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            self.busy = true;
            let outcome = fetch(self.on(), self.client()?, sql, params, usize::MAX).await;
            self.busy = false;
            self.observe(outcome)
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
        if self.busy {
            // Closing the session rolls the transaction back.
            abandon(client);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let lost = self.lost;
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() || lost {
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

impl HookClient<'_> {
    /// Behind a transaction-mode pooler a hook's statement runs in a transaction of its own,
    /// as the neutral handle's do (the hook runs outside any): opens it.
    async fn open(&self) -> Result<()> {
        if self.on.unnamed {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| driver_error(self.on.name, Operation::Begin, e))?;
        }
        Ok(())
    }

    /// Ends what [`Self::open`] opened: committed when the statement succeeded, else rolled
    /// back (its error is the one reported).
    async fn settle<T>(&self, outcome: Result<T>) -> Result<T> {
        if !self.on.unnamed {
            return outcome;
        }
        let (end, operation) = match outcome {
            Ok(_) => ("COMMIT", Operation::Commit),
            Err(_) => ("ROLLBACK", Operation::Rollback),
        };
        match self.client.batch_execute(end).await {
            Ok(()) => outcome,
            Err(e) => Err(outcome
                .err()
                .unwrap_or_else(|| driver_error(self.on.name, operation, e))),
        }
    }
}

impl HookSql for HookClient<'_> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.open().await?;
            let outcome = execute(self.on, self.client, sql, params).await;
            self.settle(outcome).await
        })
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move {
            self.open().await?;
            let outcome = fetch(self.on, self.client, sql, params, 1).await;
            Ok(self.settle(outcome).await?.pop())
        })
    }
}
