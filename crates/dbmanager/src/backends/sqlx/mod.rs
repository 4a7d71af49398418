//! What the sqlx backends (PostgreSQL, SQLite, MySQL) share: one generic pool with the counting
//! hooks, the probe, error classification, and the neutral-handle executor. A backend supplies
//! an [`SqlxFlavor`]: its database type, how to bind and decode [`Value`]s, and its error codes.

mod credentials;
mod executor;
pub(crate) mod failover;
mod hooks;
#[cfg(feature = "sea-orm")]
mod orm;
pub(crate) mod rows;

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::{Connection as _, Database, Pool};
use tokio::sync::Mutex;

pub(crate) use executor::sqlx_statements;

use super::bounded;
use crate::config::{DefaultOrm, PoolSettings};
use crate::driver::{BackendPool, OpenSpec};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::SqlExecutor;
use crate::sql::placeholders::Dialect;
use crate::sql::{Row, Value};
use crate::stats::{PoolCounters, PoolGauges};

/// One sqlx database as a backend.
pub(crate) trait SqlxFlavor: Send + Sync + 'static {
    /// The sqlx database (every one keeps a cache of prepared statements per connection).
    type DB: Database + sqlx::database::HasStatementCache;

    /// Classifies the server's error (SQLSTATE, error number, result code).
    fn classify_database(e: &dyn sqlx::error::DatabaseError) -> ErrorKind;

    /// Runs a statement on one connection (written with [`sqlx_statements!`]); `persistent`
    /// false makes sqlx use the unnamed statement (see `pooler`).
    fn execute<'c>(
        conn: &'c mut <Self::DB as Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<u64, sqlx::Error>> + Send + 'c;

    /// Runs a query on one connection; every row.
    fn fetch_all<'c>(
        conn: &'c mut <Self::DB as Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        columns: &'c rows::ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<Vec<Row>, sqlx::Error>> + Send + 'c;

    /// Runs a query on one connection; the first row.
    fn fetch_optional<'c>(
        conn: &'c mut <Self::DB as Database>::Connection,
        sql: &'c str,
        params: &'c [Value],
        columns: &'c rows::ColumnCache,
        persistent: bool,
    ) -> impl Future<Output = std::result::Result<Option<Row>, sqlx::Error>> + Send + 'c;

    /// UUIDs are stored as hyphenated text (no native UUID type).
    const TEXT_UUIDS: bool = false;
    /// Decimals are stored as exact text (no native decimal type).
    const TEXT_DECIMALS: bool = false;
    /// The backend has array types.
    const ARRAYS: bool = false;

    /// The neutral handle's transactions take the write lock when they begin (SQLite's
    /// `BEGIN IMMEDIATE`; see `backends/sqlite`), on both layers, unless
    /// [`Self::immediate_refused`] says the database cannot be written.
    const IMMEDIATE_TRANSACTIONS: bool = false;

    /// Whether the error of an immediate `BEGIN` means the database is read-only (a plain
    /// `BEGIN` is used instead then).
    fn immediate_refused(e: &sqlx::Error) -> bool {
        let _ = e;
        false
    }

    /// The server's lexical rules, under which every statement's `$n` placeholders are found,
    /// checked against the parameters and, for a driver that does not read `$n`, rewritten
    /// (see `sql::placeholders`).
    const PLACEHOLDERS: &'static Dialect;

    /// Refuses, before sending, a statement the driver would mishandle (too many parameters,
    /// a placeholder with no parameter): on every layer, SeaORM's included.
    fn check_statement(sql: &str, params: &[Value]) -> std::result::Result<(), sqlx::Error> {
        let _ = (sql, params);
        Ok(())
    }

    /// Statements to run on every new connection, decided once per pool from the probe
    /// connection (which can tell the server's flavor and version).
    fn session_init<'c>(
        probe: &'c mut <Self::DB as Database>::Connection,
        settings: &'c PoolSettings,
    ) -> impl Future<Output = std::result::Result<Vec<String>, sqlx::Error>> + Send + 'c {
        let _ = (probe, settings);
        async { Ok(Vec::new()) }
    }

    /// `options` logging in with `credentials` (the user, when one is given, and the password;
    /// a token is sent as the password). Only flavors without credentials (SQLite) keep the
    /// default, which changes nothing.
    fn with_credentials(
        options: <<Self::DB as Database>::Connection as sqlx::Connection>::Options,
        credentials: &crate::credentials::Resolved,
    ) -> <<Self::DB as Database>::Connection as sqlx::Connection>::Options {
        let _ = credentials;
        options
    }

    /// Whether the server of `conn` accepts writes now (`target_session_attrs=read-write`;
    /// only flavors that offer `hosts:` ask).
    fn is_writable<'c>(
        conn: &'c mut <Self::DB as Database>::Connection,
    ) -> impl Future<Output = std::result::Result<bool, sqlx::Error>> + Send + 'c {
        let _ = conn;
        async { Ok(true) }
    }

    /// Whether a server error may mean the pool should look for another server of its
    /// `hosts:` list (the server is shutting down, or no longer accepts writes).
    fn means_failover(e: &dyn sqlx::error::DatabaseError) -> bool {
        let _ = e;
        false
    }

    /// Whether a statement's error may have made the server end the whole transaction while
    /// the session goes on (MySQL rolls a deadlock victim's back, SQLite a transaction on
    /// `INSERT OR ROLLBACK` or a full disk, and both run the session's next statements in
    /// autocommit): the probe that tells, run in the session after the error. It answers one
    /// row whose column `ended` is nonzero when the transaction is over, or is a statement
    /// without rows that succeeds only outside a transaction (SQLite's `BEGIN`, whose new,
    /// empty transaction the handle's rollback then ends). See [`Ended::answer`].
    fn ends_transaction(e: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
        let _ = e;
        None
    }

    /// Whether a statement failed because of the connection's prepared-statement cache, which
    /// the neutral handle then empties (sqlx's would otherwise fail the same way for the
    /// connection's whole life) before it runs the statement once more where that is safe
    /// (see [`CacheFailure`]).
    fn cache_failure(e: &dyn sqlx::error::DatabaseError) -> Option<CacheFailure> {
        let _ = e;
        None
    }

    /// SeaORM on the same pool.
    #[cfg(feature = "sea-orm")]
    fn sea_orm(pool: Pool<Self::DB>) -> sea_orm::DatabaseConnection;

    /// The driver row inside a SeaORM result, decoded.
    #[cfg(feature = "sea-orm")]
    fn decode_orm_row(
        result: &sea_orm::QueryResult,
    ) -> Option<std::result::Result<Vec<Value>, sqlx::Error>>;

    /// A timestamp parameter as SeaORM is given it (PostgreSQL drops the digits below a
    /// microsecond, see `pg_common::datetime::whole_micros`).
    #[cfg(feature = "sea-orm")]
    fn orm_timestamp(t: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
        t
    }

    /// The text a SeaORM statement is sent as (PostgreSQL adds the parameter types, see
    /// `postgres::rows::typed_text`).
    #[cfg(feature = "sea-orm")]
    fn orm_text(sql: String, params: &[Value]) -> String {
        let _ = params;
        sql
    }
}

/// How a statement failed because of the connection's prepared-statement cache
/// ([`SqlxFlavor::cache_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheFailure {
    /// The server refused to prepare it: its prepared statements (server-wide) are all taken
    /// (MySQL 1461). Nothing ran, so it runs once more after the connection's cached
    /// statements are closed: in the native executor also in a transaction, in the SeaORM one
    /// outside transactions only.
    Exhausted,
    /// A cached statement no longer matches the server (PostgreSQL after a schema change or
    /// `DISCARD ALL`). In the native executor and the hooks it runs once more outside a
    /// transaction, prepared again; in one the error aborted the transaction, so it is
    /// reported (the cache is still emptied, so the connection's next statements are prepared
    /// again instead of failing the same way). The SeaORM executor does not act on it.
    Stale,
}

/// Why a transaction is over on the server while its handle is still open: every later
/// statement and the commit fail with the kind of the error that ended it, instead of running
/// in autocommit on the session and persisting on their own.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    kind: ErrorKind,
    why: String,
}

impl Ended {
    /// The query that tells whether `e`, the error of a statement in a transaction, ended
    /// the transaction (see [`SqlxFlavor::ends_transaction`]); none when it did not.
    pub(crate) fn question<F: SqlxFlavor>(e: &sqlx::Error) -> Option<&'static str> {
        e.as_database_error().and_then(|db| F::ends_transaction(db))
    }

    /// Whether the probe's `outcome` (see [`SqlxFlavor::ends_transaction`]) says the
    /// transaction is over: a row with a nonzero `ended`, or a probe without rows that ran (it
    /// succeeds only outside a transaction). A probe that failed says nothing.
    pub(crate) fn answer<E>(outcome: std::result::Result<Option<Row>, E>) -> bool {
        match outcome {
            Ok(Some(row)) => row.get::<i64>("ended").is_some_and(|v| v != 0),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The transaction ended by `e`.
    pub(crate) fn by<F: SqlxFlavor>(e: &sqlx::Error) -> Ended {
        Ended {
            kind: classify::<F>(e),
            why: format!("the server rolled the transaction back after: {e}"),
        }
    }

    /// Refuses to run anything on a transaction the server `ended`.
    pub(crate) fn refuse(ended: Option<&Ended>, name: &str, operation: Operation) -> Result<()> {
        match ended {
            Some(ended) => Err(ended.error(name, operation)),
            None => Ok(()),
        }
    }

    pub(crate) fn error(&self, name: &str, operation: Operation) -> Error {
        Error::database(
            name,
            operation,
            self.kind,
            format!(
                "{}; nothing of it is committed and no statement runs on this transaction handle \
                 any more: run the whole transaction again",
                self.why
            ),
        )
    }
}

/// The parameters in the order of the rewritten placeholders (`$2, $1` binds the second first).
pub(crate) fn in_order<'p>(
    order: &[u32],
    params: &'p [Value],
) -> std::result::Result<Vec<&'p Value>, sqlx::Error> {
    order
        .iter()
        .map(|&n| {
            usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| params.get(i))
                .ok_or_else(|| {
                    sqlx::Error::Encode(
                        format!("placeholder ${n} has no parameter ({} given)", params.len())
                            .into(),
                    )
                })
        })
        .collect()
}

/// Wraps a sqlx error with the flavor's classification.
pub(crate) fn sqlx_error<F: SqlxFlavor>(name: &str, operation: Operation, e: sqlx::Error) -> Error {
    if matches!(e, sqlx::Error::PoolClosed) {
        return Error::closed(name, operation);
    }
    let kind = classify::<F>(&e);
    Error::database(name, operation, kind, e)
}

/// The retry-relevant classification of a sqlx error.
pub(crate) fn classify<F: SqlxFlavor>(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => ErrorKind::Transient,
        sqlx::Error::PoolClosed => ErrorKind::Closed,
        sqlx::Error::Configuration(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::ConfigFile(_) => ErrorKind::Configuration,
        sqlx::Error::Database(db) => F::classify_database(db.as_ref()),
        _ => ErrorKind::Query,
    }
}

/// The descriptor's `classify` for a sqlx flavor: finds a sqlx error in the chain.
pub(crate) fn classify_any<F: SqlxFlavor>(
    e: &(dyn std::error::Error + 'static),
) -> Option<ErrorKind> {
    e.downcast_ref::<sqlx::Error>().map(classify::<F>)
}

/// A sqlx pool plus the SeaORM connection that shares it.
pub(crate) struct SqlxPool<F: SqlxFlavor> {
    name: Arc<str>,
    pool: Pool<F::DB>,
    counters: Arc<PoolCounters>,
    slot: hooks::PoolSlot<F::DB>,
    /// A connection held outside the pool for the pool's whole life (SQLite keeps a shared
    /// in-memory database alive with it); closed after the pool.
    keeper: Mutex<Option<<F::DB as Database>::Connection>>,
    /// Keeps the connect options' credentials current (see `credentials`), while they can
    /// change.
    watcher: Option<tokio::task::JoinHandle<()>>,
    refresher: Option<Arc<credentials::Refresher<F>>>,
    /// The server list, when the connection has one (see `failover`), and its probe task.
    failover: Option<Arc<failover::Failover<F>>>,
    prober: Option<tokio::task::JoinHandle<()>>,
    native: Arc<dyn SqlExecutor>,
    #[cfg(feature = "sea-orm")]
    orm: sea_orm::DatabaseConnection,
    #[cfg(feature = "sea-orm")]
    orm_executor: Arc<dyn SqlExecutor>,
}

impl<F: SqlxFlavor> Drop for SqlxPool<F> {
    fn drop(&mut self) {
        self.slot.store(None);
        for task in [&self.watcher, &self.prober].into_iter().flatten() {
            task.abort();
        }
    }
}

/// How a flavor's pool is opened: the connect options, what to run on each new connection,
/// and whether the probe connection is kept as the pool's keeper.
pub(crate) struct OpenPlan<'s, DB: Database> {
    pub options: <DB::Connection as sqlx::Connection>::Options,
    pub keep_probe: bool,
    /// Statements run on each new connection (session settings the URL cannot carry).
    pub init: Vec<Cow<'s, str>>,
    /// A list of servers to choose from (`hosts:`, `target_session_attrs`); `options` is then
    /// unused: the server found decides.
    pub failover: Option<failover::FailoverPlan<DB>>,
    /// Set behind a transaction-mode pooler (`pooler: transaction`): see [`PerTransaction`].
    pub per_transaction: Option<PerTransaction>,
}

/// Behind a transaction-mode pooler a server session is the client's for one transaction only,
/// so the neutral handle keeps each statement inside one: it runs every statement on sqlx's
/// unnamed prepared statement (`persistent(false)`: sqlx sends Parse/Describe and Sync, then
/// Bind/Execute and Sync, and the pooler may hand the session to another client at the first
/// Sync outside a transaction), and a statement outside a transaction in a transaction of its
/// own. Each such transaction opens with `settings`, the session settings that a direct
/// connection sends in its startup packet.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerTransaction {
    /// `SET LOCAL ...` statements, each ending with `;`.
    pub settings: String,
}

impl PerTransaction {
    /// What opens a native transaction (one simple query: no extra round trip).
    fn native_begin(&self) -> Arc<str> {
        format!("BEGIN; {}", self.settings).into()
    }

    /// What SeaORM runs first in each transaction: SeaORM (2.0) always prepares named
    /// statements (`sqlx_s_N`, counted per client connection, never closed with the statement
    /// cache off), so names left on the server session by an earlier client are dropped before
    /// they can collide with this client's.
    #[cfg(feature = "sea-orm")]
    fn orm_setup(&self) -> Arc<str> {
        format!("DEALLOCATE ALL; {}", self.settings).into()
    }
}

/// Opens a flavor's pool: a direct probe connection first (a pool would report a refused port
/// as a bare timeout), then the lazily built pool warmed to `min_open`.
pub(crate) async fn open<F: SqlxFlavor>(
    spec: &OpenSpec<'_>,
    plan: OpenPlan<'_, F::DB>,
) -> Result<Box<dyn BackendPool>> {
    let name = spec.name;
    let runner = spec.hook_runner();
    let failover = plan.failover.map(|servers| {
        Arc::new(failover::Failover::<F>::new(
            name,
            spec.config.enable_logging,
            failover::SqlxDialer::default(),
            servers,
            spec.counters,
            spec.credentials,
            spec.settings.connect_timeout,
        ))
    });
    let mut options = plan.options;
    let persistent = plan.per_transaction.is_none();
    let (probe, session) = bounded(
        name,
        Operation::Connect,
        spec.settings.connect_timeout,
        async {
            let mut probe = match &failover {
                // The server found, and the options that reach it.
                Some(failover) => {
                    let (index, probe) = failover.find().await?;
                    failover.start_on(index);
                    options = failover.options(index).await;
                    probe
                }
                None => <F::DB as Database>::Connection::connect_with(&options)
                    .await
                    .map_err(|e| sqlx_error::<F>(name, Operation::Connect, e))?,
            };
            let session = F::session_init(&mut probe, spec.settings)
                .await
                .map_err(|e| sqlx_error::<F>(name, Operation::Connect, e))?;
            // `init_sql` runs on the probe too, so a statement that fails fails the connect
            // (as a query error, not retried) instead of every later checkout.
            for (i, statement) in spec.config.init_sql.iter().enumerate() {
                F::execute(&mut probe, statement, &[], true)
                    .await
                    .map_err(|e| {
                        let kind = classify::<F>(&e);
                        Error::database(
                            name,
                            Operation::Connect,
                            kind,
                            format!("init_sql statement {} failed: {e}", i + 1),
                        )
                    })?;
            }
            // The application's after-connect hook too: its failure fails the connect.
            runner
                .after_connect(&mut hooks::HookConn::<F> {
                    name,
                    conn: &mut probe,
                    persistent,
                })
                .await?;
            Ok((probe, session))
        },
    )
    .await?;
    let keeper = if plan.keep_probe {
        Some(probe)
    } else {
        let _ = probe.close().await;
        None
    };
    let init: Arc<[String]> = plan
        .init
        .iter()
        .map(|s| s.to_string())
        .chain(session)
        .chain(spec.config.init_sql.iter().cloned())
        .collect();
    let slot: hooks::PoolSlot<F::DB> = Arc::new(arc_swap::ArcSwapOption::empty());
    let pool = hooks::pool_options::<F>(
        spec.settings,
        spec.counters,
        &slot,
        init,
        &runner,
        persistent,
        failover.clone(),
    )
    .connect_lazy_with(options);
    if failover.is_none() {
        spec.counters.current_host.store(None);
    }
    slot.store(Some(Arc::new(pool.clone())));
    let refresher = spec.credentials.is_dynamic().then(|| {
        Arc::new(credentials::Refresher::<F>::new(
            name,
            spec.config.enable_logging,
            spec.credentials,
            pool.connect_options().as_ref().clone(),
            failover.clone(),
        ))
    });
    let watcher = refresher
        .clone()
        .map(|r| credentials::watch::<F>(r, slot.clone()));
    let prober = failover
        .as_ref()
        .filter(|f| f.has_alternatives())
        .map(|f| f.spawn(slot.clone()));
    warm_up::<F>(
        name,
        &pool,
        spec.settings.min_open,
        spec.settings.connect_timeout,
    )
    .await?;
    let native: Arc<dyn SqlExecutor> = Arc::new(executor::SqlxExecutor::<F> {
        name: name.clone(),
        pool: pool.clone(),
        counters: spec.counters.clone(),
        columns: Arc::default(),
        refresher: refresher.clone(),
        failover: failover.clone(),
        begin: plan
            .per_transaction
            .as_ref()
            .map(PerTransaction::native_begin),
    });
    #[cfg(feature = "sea-orm")]
    let orm = F::sea_orm(pool.clone());
    Ok(Box::new(SqlxPool::<F> {
        name: name.clone(),
        counters: spec.counters.clone(),
        slot,
        keeper: Mutex::new(keeper),
        watcher,
        refresher,
        failover,
        prober,
        native,
        #[cfg(feature = "sea-orm")]
        orm_executor: Arc::new(orm::SeaOrmExecutor::<F>::new(
            name.clone(),
            orm.clone(),
            pool.clone(),
            plan.per_transaction.as_ref().map(PerTransaction::orm_setup),
        )),
        #[cfg(feature = "sea-orm")]
        orm,
        pool,
    }))
}

/// Wraps a pool the application built: its own hooks stay, so the counters this library keeps
/// through its hooks (opens, lifetime and idle closes) stay at zero; sizes, waits through the
/// neutral handle, health and close work as for a pool opened here.
pub(crate) fn adopt<F: SqlxFlavor>(
    name: &Arc<str>,
    counters: &Arc<PoolCounters>,
    pool: Pool<F::DB>,
) -> Box<dyn BackendPool> {
    let native: Arc<dyn SqlExecutor> = Arc::new(executor::SqlxExecutor::<F> {
        name: name.clone(),
        pool: pool.clone(),
        counters: counters.clone(),
        columns: Arc::default(),
        refresher: None,
        failover: None,
        begin: None,
    });
    #[cfg(feature = "sea-orm")]
    let orm = F::sea_orm(pool.clone());
    Box::new(SqlxPool::<F> {
        name: name.clone(),
        counters: counters.clone(),
        slot: Arc::new(arc_swap::ArcSwapOption::empty()),
        keeper: Mutex::new(None),
        watcher: None,
        refresher: None,
        failover: None,
        prober: None,
        native,
        #[cfg(feature = "sea-orm")]
        orm_executor: Arc::new(orm::SeaOrmExecutor::<F>::new(
            name.clone(),
            orm.clone(),
            pool.clone(),
            None,
        )),
        #[cfg(feature = "sea-orm")]
        orm,
        pool,
    })
}

/// Opens `min_open` connections up front: a lazily built sqlx pool only tops up to its minimum
/// after its reaper closed something, so without this `min_open_conns` would start at zero.
async fn warm_up<F: SqlxFlavor>(
    name: &str,
    pool: &Pool<F::DB>,
    min_open: u32,
    limit: Duration,
) -> Result<()> {
    if min_open == 0 {
        return Ok(());
    }
    bounded(name, Operation::Connect, limit, async {
        let held = futures_util::future::join_all((0..min_open).map(|_| pool.acquire())).await;
        for conn in held {
            conn.map_err(|e| sqlx_error::<F>(name, Operation::Connect, e))?;
        }
        Ok(())
    })
    .await
}

impl<F: SqlxFlavor> SqlxPool<F> {
    /// A failed checkout may mean the server is gone: the server list is probed.
    fn observe_error(&self, e: &Error) {
        if let Some(failover) = &self.failover {
            failover.observe_checkout(e, &self.pool);
        }
    }
}

impl<F: SqlxFlavor> BackendPool for SqlxPool<F> {
    fn gauges(&self) -> PoolGauges {
        PoolGauges {
            open: self.pool.size(),
            // sqlx's count wraps below zero for a moment when a checkout races a release (see
            // `hooks::over_idle_cap`); no true count exceeds the pool's size.
            idle: u32::try_from(self.pool.num_idle())
                .unwrap_or(u32::MAX)
                .min(self.pool.size()),
            max_open: self.pool.options().get_max_connections(),
            driver_counts: None,
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut conn = credentials::acquire::<F>(
                &self.name,
                &self.pool,
                &self.counters,
                self.refresher.as_deref(),
            )
            .await
            .inspect_err(|e| self.observe_error(e))?;
            conn.ping().await.map_err(|e| {
                if let Some(failover) = &self.failover {
                    failover.observe(&e);
                }
                sqlx_error::<F>(&self.name, Operation::Ping, e)
            })
        })
    }

    fn discard_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for _ in 0..self.pool.num_idle() {
                let Some(conn) = self.pool.try_acquire() else {
                    break;
                };
                self.counters
                    .closed_broken
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = conn.close().await;
            }
        })
    }

    /// The release hook enforces the cap, but releases racing each other can each see room for
    /// one more; this restores the bound.
    fn trim_idle(&self, max_idle: u32) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            while self.pool.num_idle() > max_idle as usize {
                let Some(conn) = self.pool.try_acquire() else {
                    break;
                };
                self.counters
                    .closed_max_idle
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = conn.close().await;
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for task in [&self.watcher, &self.prober].into_iter().flatten() {
                task.abort();
            }
            // sqlx closes the idle connections only after every checked-out one came back: a
            // close whose deadline passes first (a transaction still open) would leave them, and
            // their server sessions, open for as long as any handle holds the pool. Take them
            // out and mark the pool closed before the first await, so that even a deadline of
            // zero (which drops this future at its first pause) cannot cut that short: a
            // connection dropped unclosed, or coming back later, is closed on its return.
            let mut idle = Vec::new();
            while let Some(conn) = self.pool.try_acquire() {
                idle.push(conn);
            }
            let closing = self.pool.close();
            for conn in idle {
                let _ = conn.close().await;
            }
            closing.await;
            if let Some(conn) = self.keeper.lock().await.take() {
                let _ = conn.close().await;
            }
        })
    }

    fn close_now(&self) -> BoxFuture<'_, ()> {
        // The deadline passed with connections still checked out. sqlx's close goes on in the
        // background: once they are back, it closes every connection that went idle meanwhile
        // (one whose return raced the drain above would otherwise stay open in the pool).
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.close().await });
        Box::pin(async {})
    }

    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        if type_id == TypeId::of::<Pool<F::DB>>() {
            return Some(&self.pool);
        }
        #[cfg(feature = "sea-orm")]
        if type_id == TypeId::of::<sea_orm::DatabaseConnection>() {
            return Some(&self.orm);
        }
        None
    }

    fn sql(&self, layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str> {
        match layer {
            DefaultOrm::Native => Ok(self.native.clone()),
            #[cfg(feature = "sea-orm")]
            DefaultOrm::SeaOrm => Ok(self.orm_executor.clone()),
            #[allow(unreachable_patterns)]
            _ => Err("the `sea-orm` cargo feature is off"),
        }
    }
}
