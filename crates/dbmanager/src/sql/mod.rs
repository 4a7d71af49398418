//! The backend-neutral handle: raw SQL with parameters, rows out, transactions.
//!
//! Parameters are written `$1`, `$2`, ... for every backend; a backend whose driver uses another
//! syntax rewrites them (see [`placeholders`]). The layer underneath is the connection's
//! `default_orm`, chosen by the backend behind the [`SqlExecutor`] seam.

mod executor;
pub(crate) mod placeholders;
mod value;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub(crate) use executor::{SqlExecutor, SqlTransaction};
pub use value::{ColumnRef, FromValue, Interval, Row, Value};
pub(crate) use value::{parse_timestamp, parse_timestamptz};

use arc_swap::ArcSwap;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Either};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::breaker::{Admission, is_unreachable};
use crate::config::{DatabaseType, DefaultOrm};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::leak::LeakGuard;
use crate::stats::{OPERATIONS, PoolCounters, operation_of};
use crate::trace::{Tracer, record_outcome};

/// Runs `work` under the query timeout (if any) inside `span`, marks the span on failure, and
/// records the statement's duration and outcome under `statement` (an index into the
/// operations of [`crate::stats::OPERATIONS`]). `started` is when the statement started: the
/// one clock reading the timeout, the metrics and the breaker's bookkeeping share.
///
/// `work` is the executor's boxed future: the timeout and span wrappers only hold its pointer.
/// Every future on this path is moved (copied whole) into the one awaiting it, so the path is
/// kept flat: no wrapper future around another where a plain call does.
///
/// With `swap_follows`, a `Closed` outcome is not recorded: the caller may run the statement
/// again on the pool that replaced this one, and records it only if it stays `Closed` (a
/// statement that lost the race with a replace is not a failed query).
async fn timed<T>(
    c: &Context,
    operation: Operation,
    statement: usize,
    span: tracing::Span,
    started: Instant,
    work: BoxFuture<'_, Result<T>>,
    swap_follows: bool,
) -> Result<T> {
    // A disabled span would still be entered and exited on every poll.
    let outcome = if span.is_disabled() {
        bounded_or_not(c, operation, started, work).await
    } else {
        let outcome = bounded_or_not(c, operation, started, work)
            .instrument(span.clone())
            .await;
        record_outcome(&span, &outcome);
        outcome
    };
    if c.record_queries && !(swap_follows && matches!(outcome, Err(Error::Closed { .. }))) {
        let kind = outcome.as_ref().err().map(Error::kind);
        c.counters
            .queries
            .record(statement, started.elapsed(), kind);
    }
    outcome
}

/// Records a statement that stayed `Closed` after following swaps (see [`timed`]).
fn record_closed<T>(c: &Context, statement: usize, started: Instant, outcome: &Result<T>) {
    if c.record_queries
        && let Err(e @ Error::Closed { .. }) = outcome
    {
        c.counters
            .queries
            .record(statement, started.elapsed(), Some(e.kind()));
    }
}

/// `work` under the query timeout, if there is one (a plain function, so no future of its own).
fn bounded_or_not<'w, T: 'w>(
    c: &'w Context,
    operation: Operation,
    started: Instant,
    work: BoxFuture<'w, Result<T>>,
) -> impl Future<Output = Result<T>> {
    match c.query_timeout {
        Some(limit) => Either::Left(
            c.timers
                .bounded_from(&c.name, operation, limit, started, work),
        ),
        None => Either::Right(work),
    }
}

/// Starts one attempt of a statement: the executor's boxed driver future. A plain function, so
/// the handle's statement future holds no closure future around it.
type Start<T> = for<'b> fn(&'b dyn SqlExecutor, &'b str, &'b [Value]) -> BoxFuture<'b, Result<T>>;

fn start_execute<'b>(
    e: &'b dyn SqlExecutor,
    sql: &'b str,
    params: &'b [Value],
) -> BoxFuture<'b, Result<u64>> {
    e.execute(sql, params)
}

fn start_fetch_all<'b>(
    e: &'b dyn SqlExecutor,
    sql: &'b str,
    params: &'b [Value],
) -> BoxFuture<'b, Result<Vec<Row>>> {
    e.fetch_all(sql, params)
}

fn start_fetch_optional<'b>(
    e: &'b dyn SqlExecutor,
    sql: &'b str,
    params: &'b [Value],
) -> BoxFuture<'b, Result<Option<Row>>> {
    e.fetch_optional(sql, params)
}

/// Operation indexes of the transaction verbs.
fn verb(name: &str) -> usize {
    OPERATIONS.iter().position(|o| *o == name).unwrap_or(0)
}

/// What every statement of one connection shares; built once per connection.
pub(crate) struct Context {
    pub name: Arc<str>,
    pub kind: DatabaseType,
    pub query_timeout: Option<Duration>,
    pub tracer: Arc<Tracer>,
    pub counters: Arc<PoolCounters>,
    /// Per-query metrics are kept (`enable_metrics`).
    pub record_queries: bool,
    /// The connection's circuit breaker (shared by its generations).
    pub breaker: Arc<crate::breaker::Breaker>,
    /// The connection's retry policy (shared with its generation, which a reload may change in
    /// place): an open circuit waits `max_delay` (at least 100 ms) before one statement probes.
    pub retry: Arc<arc_swap::ArcSwap<crate::config::RetryPolicy>>,
    /// `leak_detection_threshold`.
    pub leak_threshold: Option<Duration>,
    /// The connection's after-connect hook failures: a checkout that timed out while the hook
    /// failed reports the hook's error.
    pub hook_failures: Arc<crate::error::HookFailures>,
    /// The statements' query timers, kept for reuse.
    pub timers: crate::deadline::Timers,
}

/// Where a neutral handle gets its executor: the connection, whose pool may be replaced.
pub(crate) trait ExecutorSource: Send + Sync + 'static {
    /// Changes whenever the connection's open pool changes.
    fn epoch(&self) -> u64;
    /// The executor of the pool open now. Takes the handle's reference (a source is shared
    /// behind an `Arc`, so a handle needs no allocation of its own for it).
    fn bind(self: Arc<Self>) -> Result<Bound>;
    /// The router of the connection's read replicas now, if it has any (a replace or reload
    /// may add, change or remove them: a handle follows).
    fn router(&self) -> Option<Arc<dyn ReadRouter>>;
}

/// Where a read goes (the answer of a [`ReadRouter`]).
pub(crate) enum ReadRoute<'a> {
    /// The connection's own pool.
    Primary,
    /// Replica `index`, through its own handle.
    Replica { index: usize, handle: &'a Database },
}

/// Sends the reads of a connection with read replicas (implemented by its replica set).
pub(crate) trait ReadRouter: Send + Sync + 'static {
    /// Where a read goes: `select` says whether the statement is a `SELECT` (others may
    /// write); `wrote_at` is when the handle last wrote. `Err` when no replica is usable and
    /// the fallback is an error. A `Replica` answer must be followed by [`Self::released`].
    fn route(&self, wrote_at: &AtomicU64, select: bool) -> Result<ReadRoute<'_>>;
    /// The handle wrote (a statement or a transaction on the primary).
    fn wrote(&self, wrote_at: &AtomicU64);
    /// A read on replica `index` ended: its time, and its error if it failed.
    fn finished(&self, index: usize, took: Duration, error: Option<&Error>);
    /// A read on replica `index` is no longer in flight (ended or dropped).
    fn released(&self, index: usize);
}

/// Whether `now` is the very router `before` (a replace builds a new one).
fn same_router(now: Option<&Arc<dyn ReadRouter>>, before: &Arc<dyn ReadRouter>) -> bool {
    now.is_some_and(|now| std::ptr::addr_eq(Arc::as_ptr(now), Arc::as_ptr(before)))
}

/// Tells the router a replica read is no longer in flight, however its future ends.
struct Released<'a>(&'a dyn ReadRouter, usize);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        self.0.released(self.1);
    }
}

/// An executor with the connection state it was taken from.
#[derive(Clone)]
pub(crate) struct Bound {
    pub epoch: u64,
    pub context: Arc<Context>,
    pub executor: Arc<dyn SqlExecutor>,
}

/// A cheap, cloneable handle for running SQL on one connection's pool.
///
/// It follows its connection: after a reconnect, a `replace` or a config reload, the next
/// statement runs on the pool open then. A statement that lost the race with such a swap (its
/// checkout found the old pool closing) runs once more on the new pool; nothing fails because
/// of the swap.
pub struct Database {
    name: Arc<str>,
    source: Arc<dyn ExecutorSource>,
    /// The executor the handle was made with (held inline: a handle is often taken per
    /// statement, and an `Arc` here would be one more allocation each time).
    first: Bound,
    /// The executor after the pool changed, once it has. Made only then: an `ArcSwap` pays its
    /// readers' debts when dropped (a walk over every thread's slots), which a handle taken per
    /// statement would pay on every statement.
    rebound: OnceLock<ArcSwap<Bound>>,
    /// When this handle last wrote, for `read_your_writes` (nanoseconds on its router's clock;
    /// 0: never). A clone starts from the same value.
    wrote_at: AtomicU64,
    /// When a transaction begun through this handle last committed (as `wrote_at`): made by the
    /// first `begin` of a connection with replicas, shared with its transactions, folded into
    /// `wrote_at` before each read.
    committed_at: OnceLock<Arc<AtomicU64>>,
}

impl Clone for Database {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            source: self.source.clone(),
            first: self.latest().clone(),
            rebound: OnceLock::new(),
            wrote_at: AtomicU64::new(self.last_write().load(std::sync::atomic::Ordering::Relaxed)),
            committed_at: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = self.latest();
        f.debug_struct("Database")
            .field("name", &bound.context.name)
            .field("kind", &bound.context.kind)
            .field("layer", &bound.executor.layer())
            .finish_non_exhaustive()
    }
}

impl Database {
    pub(crate) fn new(source: Arc<dyn ExecutorSource>, bound: Bound) -> Self {
        Self {
            name: bound.context.name.clone(),
            source,
            first: bound,
            rebound: OnceLock::new(),
            wrote_at: AtomicU64::new(0),
            committed_at: OnceLock::new(),
        }
    }

    /// When this handle last wrote, its transactions' commits included.
    fn last_write(&self) -> &AtomicU64 {
        if let Some(committed) = self.committed_at.get() {
            let at = committed.load(std::sync::atomic::Ordering::Relaxed);
            self.wrote_at
                .fetch_max(at, std::sync::atomic::Ordering::Relaxed);
        }
        &self.wrote_at
    }

    /// The executor bound last.
    fn latest(&self) -> Latest<'_> {
        match self.rebound.get() {
            Some(rebound) => Latest::Rebound(rebound.load_full()),
            None => Latest::First(&self.first),
        }
    }

    /// The executor of the connection's pool now, re-bound if the pool changed.
    fn current(&self) -> Result<Latest<'_>> {
        let bound = self.latest();
        if bound.epoch == self.source.epoch() {
            return Ok(bound);
        }
        let fresh = Arc::new(self.source.clone().bind()?);
        // A concurrent first re-bind may win the initialisation; the store then replaces its
        // executor with this (equally fresh) one.
        self.rebound
            .get_or_init(|| ArcSwap::new(fresh.clone()))
            .store(fresh.clone());
        Ok(Latest::Rebound(fresh))
    }

    /// Whether `outcome` failed only because the pool was swapped under the statement: it found
    /// the old pool closed at checkout, so it never reached a server and may run again.
    fn lost_swap<T>(&self, outcome: &Result<T>, bound: &Bound) -> bool {
        matches!(outcome, Err(Error::Closed { .. })) && self.source.epoch() != bound.epoch
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend the next statement runs on: after a `replace` or reload that changed the
    /// connection's `type` (or `default_orm`), the new one, before any statement re-binds.
    pub fn kind(&self) -> DatabaseType {
        match self.current() {
            Ok(bound) => bound.context.kind,
            Err(_) => self.latest().context.kind,
        }
    }

    /// Which layer runs the statements (as [`Database::kind`], the one the next runs on).
    pub fn layer(&self) -> DefaultOrm {
        match self.current() {
            Ok(bound) => bound.executor.layer(),
            Err(_) => self.latest().executor.layer(),
        }
    }

    /// One statement of the handle: a read (`fetch_*`) of a connection with replicas goes where
    /// its router says; anything else runs on the connection's own pool (and counts as a write
    /// for `read_your_writes`).
    async fn statement<T>(
        &self,
        at: &'static std::panic::Location<'static>,
        verb: &'static str,
        sql: &str,
        params: &[Value],
        start: Start<T>,
        read: bool,
    ) -> Result<T> {
        let mut rerouted = 0;
        loop {
            let Some(router) = self.source.router() else {
                return self.on_own_pool(at, verb, sql, params, start).await;
            };
            let set = &*router;
            // A write counts from its end too: the window of `read_your_writes` must not pass
            // while the statement still runs (its changes replicate after it ends).
            if !read {
                set.wrote(&self.wrote_at);
                let outcome = self.on_own_pool(at, verb, sql, params, start).await;
                set.wrote(&self.wrote_at);
                return outcome;
            }
            let select = operation_of(sql) == 0;
            match set.route(self.last_write(), select)? {
                ReadRoute::Primary => {
                    let outcome = self.on_own_pool(at, verb, sql, params, start).await;
                    if !select {
                        set.wrote(&self.wrote_at);
                    }
                    return outcome;
                }
                ReadRoute::Replica { index, handle } => {
                    let _released = Released(set, index);
                    let started = std::time::Instant::now();
                    let outcome = handle.on_own_pool(at, verb, sql, params, start).await;
                    // The connection's replicas were replaced (a `replace` or reload) while
                    // this read was on its way to an old one, closed before the read got a
                    // connection: it never reached a server, so it runs again where reads go
                    // now, as a statement that lost the race with a swap does.
                    if rerouted < 3
                        && matches!(
                            outcome,
                            Err(Error::Closed { .. } | Error::Unavailable { .. })
                        )
                        && !same_router(self.source.router().as_ref(), &router)
                    {
                        rerouted += 1;
                        continue;
                    }
                    set.finished(index, started.elapsed(), outcome.as_ref().err());
                    return outcome;
                }
            }
        }
    }

    /// [`Database::run`] for one statement, kept flat (see [`timed`]): the same admission,
    /// leak watch, swap-following and breaker feedback, with the attempt started by `start`.
    async fn on_own_pool<T>(
        &self,
        at: &'static std::panic::Location<'static>,
        verb: &'static str,
        sql: &str,
        params: &[Value],
        start: Start<T>,
    ) -> Result<T> {
        let mut bound = self.current()?;
        let operation = operation_of(sql);
        let admission = admit(&bound.context, operation)?;
        let c = &*bound.context;
        let leak = LeakGuard::watch(&c.name, c.leak_threshold, &c.counters, at);
        let started = Instant::now();
        let mut outcome = LeakGuard::scope(
            leak.as_ref(),
            bound.attempt(verb, sql, params, operation, start, started),
        )
        .await;
        // Swaps close together (a reload under load) can close the next pool too before the
        // retry reaches it: follow a few, then report.
        for _ in 0..3 {
            if !self.lost_swap(&outcome, &bound) {
                break;
            }
            bound = self.current()?;
            outcome = LeakGuard::scope(
                leak.as_ref(),
                bound.attempt(verb, sql, params, operation, start, Instant::now()),
            )
            .await;
        }
        record_closed(&bound.context, operation, started, &outcome);
        // The breaker, counters and hook failures are the connection's, shared by its
        // generations.
        settle(&bound.context, outcome, started, admission)
    }

    /// Runs a statement; returns the number of rows affected.
    #[track_caller]
    pub fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        let at = std::panic::Location::caller();
        self.statement(at, "execute", sql, params, start_execute, false)
    }

    /// Runs a query; returns all rows.
    #[track_caller]
    pub fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        let at = std::panic::Location::caller();
        self.statement(at, "query", sql, params, start_fetch_all, true)
    }

    /// Runs a query; returns the first row, if any.
    #[track_caller]
    pub fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        let at = std::panic::Location::caller();
        self.statement(at, "query", sql, params, start_fetch_optional, true)
    }

    /// Runs a query that must return a row.
    #[track_caller]
    pub fn fetch_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        let at = std::panic::Location::caller();
        // A `map`, not an `async` block: one state machine less to poll through.
        self.statement(at, "query", sql, params, start_fetch_optional, true)
            .map(move |row| row.and_then(|row| row.ok_or_else(|| no_rows(&self.name))))
    }

    /// Starts a transaction; it rolls back if dropped without [`Transaction::commit`]. With
    /// `leak_detection_threshold` set, a transaction held longer is reported with this call's
    /// location. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`, waiting up to
    /// `busy_timeout`), so that transactions which read and then write queue instead of failing
    /// with "database is locked".
    #[track_caller]
    pub fn begin(&self) -> impl Future<Output = Result<Transaction>> + Send + '_ {
        let at = std::panic::Location::caller();
        async move {
            // A transaction may write: later reads of this handle follow `read_your_writes`,
            // counted from its commit (when its writes become visible) as well.
            let committed = self.source.router().map(|router| {
                router.wrote(&self.wrote_at);
                let at = self.committed_at.get_or_init(Default::default).clone();
                (router, at)
            });
            // As `on_own_pool`, for `begin`.
            let mut bound = self.current()?;
            let admission = admit(&bound.context, verb("BEGIN"))?;
            let started = Instant::now();
            let mut outcome = bound.begin_now(started).await;
            for _ in 0..3 {
                if !self.lost_swap(&outcome, &bound) {
                    break;
                }
                bound = self.current()?;
                outcome = bound.begin_now(Instant::now()).await;
            }
            record_closed(&bound.context, verb("BEGIN"), started, &outcome);
            let inner = settle(&bound.context, outcome, started, admission)?;
            // Watched from here, once the transaction holds its connection: a `begin` still
            // waiting for one (the pool exhausted by whoever holds them) holds nothing and is
            // not reported.
            let context = bound.context.clone();
            let _leak =
                LeakGuard::watch(&context.name, context.leak_threshold, &context.counters, at);
            Ok(Transaction {
                context,
                inner,
                _leak,
                failed: false,
                committed,
            })
        }
    }
}

/// Refused at once while the circuit is open; a refused statement counts in the per-query
/// figures (as a transient failure of its operation), so an error rate stays visible while
/// the breaker fails callers fast.
fn admit(c: &Context, operation: usize) -> Result<Admission> {
    let half_open_after = c.retry.load().max_delay.max(Duration::from_millis(100));
    let admission = c.breaker.admit(half_open_after);
    if matches!(admission, Admission::Refused) {
        if c.record_queries {
            c.counters
                .queries
                .record(operation, Duration::ZERO, Some(ErrorKind::Transient));
        }
        return Err(Error::Refused {
            connection: c.name.to_string(),
            operation: Operation::Acquire,
            reason: crate::breaker::CIRCUIT_OPEN.to_owned(),
        });
    }
    Ok(admission)
}

/// The end of every statement and `begin`: a checkout that timed out while the after-connect
/// hook failed is reported as the hook's failure (not an unreachable server), and whether the
/// server was reached is fed to the circuit breaker.
fn settle<T>(c: &Context, outcome: Result<T>, started: Instant, admission: Admission) -> Result<T> {
    let outcome = outcome.map_err(|e| c.hook_failures.explain(e, started.into_std()));
    let reached = outcome.as_ref().err().is_none_or(|e| !is_unreachable(e));
    c.breaker.record(&c.name, reached, &c.counters);
    // A probe ends here (after its outcome is recorded); so does one whose statement is
    // dropped before it got this far.
    drop(admission);
    outcome
}

impl Bound {
    /// One attempt of a statement: its span, the driver future, the timeout and the metrics.
    fn attempt<'b, T>(
        &'b self,
        verb: &'static str,
        sql: &'b str,
        params: &'b [Value],
        operation: usize,
        start: Start<T>,
        started: Instant,
    ) -> impl Future<Output = Result<T>> {
        let c = &*self.context;
        let span = c.tracer.query_span(verb, sql);
        let work = start(&*self.executor, sql, params);
        timed(c, Operation::Query, operation, span, started, work, true)
    }

    async fn begin_now(&self, started: Instant) -> Result<Box<dyn SqlTransaction>> {
        let c = &*self.context;
        let span = c.tracer.span("begin");
        let work = self.executor.begin();
        timed(
            c,
            Operation::Begin,
            verb("BEGIN"),
            span,
            started,
            work,
            true,
        )
        .await
    }
}

/// The executor a handle runs on: the one it was made with, or the one it re-bound to.
enum Latest<'a> {
    First(&'a Bound),
    Rebound(Arc<Bound>),
}

impl std::ops::Deref for Latest<'_> {
    type Target = Bound;

    fn deref(&self) -> &Bound {
        match self {
            Latest::First(bound) => bound,
            Latest::Rebound(bound) => bound,
        }
    }
}

fn no_rows(name: &str) -> Error {
    Error::database(
        name,
        Operation::Query,
        ErrorKind::Query,
        "the query returned no rows",
    )
}

/// An open transaction on one pooled connection.
///
/// After a failed statement, [`Transaction::commit`] says what really happened: PostgreSQL
/// aborts a transaction at its first error and answers a later `COMMIT` with a rollback, not
/// an error, so a commit there is an error of kind [`ErrorKind::Query`] and nothing of the
/// transaction is kept. Rolling back to a savepoint after the error (a statement that then
/// succeeds) makes the transaction committable again. Servers that keep a transaction going
/// after a failed statement (MySQL, SQLite, SQL Server by default) commit it as usual, unless
/// the error itself ended the transaction on the server (MySQL's deadlock, a full lock table
/// or, under `innodb_rollback_on_timeout`, a lock wait timeout; SQLite's `INSERT OR
/// ROLLBACK`): then every later statement and the commit fail with that error's kind instead
/// of running in autocommit; run the whole transaction again.
pub struct Transaction {
    context: Arc<Context>,
    inner: Box<dyn SqlTransaction>,
    /// Reports the transaction's connection if it is held past the leak threshold.
    _leak: Option<crate::leak::LeakGuard>,
    /// The last statement failed: the server may have aborted the transaction.
    failed: bool,
    /// On a connection with replicas: its router and the `committed_at` of the handle that
    /// began it, set when it commits (its writes are visible from then: `read_your_writes`).
    committed: Option<(Arc<dyn ReadRouter>, Arc<AtomicU64>)>,
}

/// Why a commit after a failed statement was refused.
const ABORTED: &str = "the transaction was rolled back, not committed: a statement in it failed and \
the server aborted or ended the transaction (run it again; on PostgreSQL, to go on after an \
expected error, roll back to a savepoint first)";

/// One statement of a transaction: its span, timeout and metrics, and whether it failed (see
/// [`Transaction::commit`]).
async fn in_transaction<T>(
    c: &Context,
    failed: &mut bool,
    verb: &'static str,
    sql: &str,
    work: BoxFuture<'_, Result<T>>,
) -> Result<T> {
    let span = c.tracer.query_span(verb, sql);
    let started = Instant::now();
    let outcome = timed(
        c,
        Operation::Query,
        operation_of(sql),
        span,
        started,
        work,
        false,
    )
    .await;
    *failed = outcome.is_err();
    outcome
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("name", &self.context.name)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Runs a statement inside the transaction.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let work = self.inner.execute(sql, params);
        in_transaction(&self.context, &mut self.failed, "execute", sql, work).await
    }

    /// Runs a query inside the transaction.
    pub async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let work = self.inner.fetch_all(sql, params);
        in_transaction(&self.context, &mut self.failed, "query", sql, work).await
    }

    /// Runs a query inside the transaction; its first row, if any.
    pub async fn fetch_optional(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql, params).await?.into_iter().next())
    }

    /// Runs a query inside the transaction that must return a row (no row is an
    /// [`ErrorKind::Query`] error, as [`Database::fetch_one`]; the transaction goes on).
    pub async fn fetch_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.fetch_optional(sql, params)
            .await?
            .ok_or_else(|| no_rows(&self.context.name))
    }

    /// Commits. After a failed statement, an error if the server aborted the transaction (see
    /// [`Transaction`]); it is rolled back then.
    pub async fn commit(mut self) -> Result<()> {
        if self.failed && self.aborted().await {
            let c = self.context.clone();
            let started = Instant::now();
            // Ends the transaction on the server (the connection then returns to the pool
            // clean); its own outcome changes nothing for the caller.
            let _ = bounded_or_not(&c, Operation::Rollback, started, self.inner.rollback()).await;
            let e = Error::database(&c.name, Operation::Commit, ErrorKind::Query, ABORTED);
            if c.record_queries {
                c.counters
                    .queries
                    .record(verb("COMMIT"), started.elapsed(), Some(e.kind()));
            }
            return Err(e);
        }
        let c = &*self.context;
        let span = c.tracer.span("commit");
        let work = self.inner.commit();
        let started = Instant::now();
        let outcome = timed(
            c,
            Operation::Commit,
            verb("COMMIT"),
            span,
            started,
            work,
            false,
        )
        .await;
        // A commit that failed may still have reached the server: counted as a write too.
        if let Some((router, at)) = &self.committed {
            router.wrote(at);
        }
        outcome
    }

    /// Whether the server refuses statements in this transaction: asked with a statement that
    /// cannot fail otherwise (one round trip, only after a failed statement). An aborted
    /// PostgreSQL transaction answers it with `25P02` (a query error); a probe that fails for
    /// another reason (the connection is gone) leaves the answer to the commit itself.
    async fn aborted(&mut self) -> bool {
        let c = self.context.clone();
        let probe = self.inner.execute("SELECT 1", &[]);
        let outcome = bounded_or_not(&c, Operation::Commit, Instant::now(), probe).await;
        outcome.is_err_and(|e| e.kind() == ErrorKind::Query)
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<()> {
        let c = &*self.context;
        let span = c.tracer.span("rollback");
        let work = self.inner.rollback();
        let started = Instant::now();
        timed(
            c,
            Operation::Rollback,
            verb("ROLLBACK"),
            span,
            started,
            work,
            false,
        )
        .await
    }
}
