//! tokio-postgres clients in a deadpool pool: the manager that opens each physical connection
//! with the credentials current at that moment (the password file read again when it changed,
//! a provider's cached answer), runs `init_sql` and the after-connect hook on it, and checks an
//! idle client before handing it out again (closed, past its lifetime or idle time, a ping when
//! idle past the liveness window, the before-checkout hook).
//!
//! Each client keeps its own prepared-statement cache (deadpool-postgres's `ClientWrapper`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use deadpool::managed::{
    Metrics, Object, Pool, PoolError, RecycleError, RecycleResult, TimeoutType,
};
use deadpool_postgres::ClientWrapper;
use futures_util::future::BoxFuture;

use super::driver_error;
use super::failover::{TokioPgFailover, is_writable, observe, open_client};
use super::options::{ConnectPlan, with_credentials};
use super::sql::{HookClient, On};
use super::tls::RustlsConnector;
use crate::backends::LIVENESS_WINDOW;
use crate::backends::columns::ColumnCache;
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::hooks::HookRunner;
use crate::stats::PoolCounters;

/// The pool of one `driver: tokio-postgres` connection (`Connection::tokio_postgres()`,
/// `native::<TokioPgPool>()`). Cheap to clone; a checked-out client dereferences to
/// [`tokio_postgres::Client`] and has `prepare_cached`.
///
/// Behind a transaction-mode pooler (`pooler: transaction`) a client's server session is its
/// own for one transaction only. Safe there: `query_typed*` (the unnamed statement, one round
/// trip) and `simple_query`/`batch_execute` inside a `transaction()`; `prepare`,
/// `prepare_typed` and `query`/`execute` with a `&str` inside a transaction, as long as the
/// statement is dropped before it ends. Not safe: `prepare_cached` (and any statement kept
/// across transactions: its name exists on one server session only), and anything with
/// parameters outside a transaction. `schema` and `query_timeout` are not applied to these
/// transactions (`SET LOCAL` them, or set them on the role). See README "Behind PgBouncer".
pub type TokioPgPool = Pool<TokioPgManager>;

/// A client checked out of a [`TokioPgPool`]; it returns to the pool when dropped.
pub type TokioPgClient = Object<TokioPgManager>;

/// deadpool manager for tokio-postgres clients (see the module documentation).
pub struct TokioPgManager {
    pub(super) name: Arc<str>,
    pub(super) plan: ConnectPlan,
    pub(super) tls: RustlsConnector,
    /// Where each new connection's login comes from, when it can change.
    pub(super) credentials: Option<Arc<CredentialSource>>,
    /// Run on each new connection: behind a session-mode pooler the session settings first
    /// (`SET ...`), then `init_sql`.
    pub(super) init: Arc<[String]>,
    /// Behind a transaction-mode pooler: the hooks' statements use the unnamed statement,
    /// each in a transaction of its own (see `sql::On::unnamed`).
    pub(super) unnamed: bool,
    pub(super) hooks: HookRunner,
    pub(super) counters: Arc<PoolCounters>,
    pub(super) columns: Arc<ColumnCache>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) max_idle_time: Option<Duration>,
    /// Bound of one connect, retries included (`connect_timeout`).
    pub(super) connect_timeout: Duration,
    /// The server list, when the connection has one: each connect goes to its current server.
    pub(super) failover: Option<Arc<TokioPgFailover>>,
    /// Set once the pool is open: a checkout's connect then retries a refused or reset
    /// connection until `connect_timeout`, as sqlx's pool does (a restarting server is waited
    /// for, not reported to every caller); the open's own attempt fails fast, so the real
    /// error reaches the manager's retry.
    pub(super) retry_connects: AtomicBool,
    /// The timers of checkouts waiting for a client, kept for reuse.
    pub(super) waits: crate::deadline::Timers,
}

impl std::fmt::Debug for TokioPgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioPgManager")
            .field("name", &self.name)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl TokioPgManager {
    fn on(&self) -> On<'_> {
        On {
            name: &self.name,
            columns: &self.columns,
            unnamed: self.unnamed,
            reprepare: true,
        }
    }

    /// Opens one physical connection with the current credentials, on the current server of a
    /// server list; a refused login makes the source resolve again next time.
    async fn connect(&self) -> Result<ClientWrapper> {
        loop {
            let (server, mut config) = match &self.failover {
                Some(failover) => {
                    let (index, config) = failover.current_options();
                    (Some(index), config)
                }
                None => (None, self.plan.config.clone()),
            };
            if let Some(source) = &self.credentials {
                let (credentials, _) = source.current().await?;
                with_credentials(&mut config, &credentials);
            }
            let client = match open_client(&config, self.tls.clone()).await {
                Ok(client) => client,
                Err(e) => {
                    let error = driver_error(&self.name, Operation::Connect, e);
                    if error.kind() == ErrorKind::Authentication
                        && let Some(source) = &self.credentials
                    {
                        source.invalidate();
                    }
                    if let Some(failover) = &self.failover
                        && error.kind() == ErrorKind::Transient
                    {
                        failover.request_probe();
                    }
                    return Err(error);
                }
            };
            let Some(failover) = &self.failover else {
                return Ok(client);
            };
            if failover.require_writable() {
                match is_writable(&client).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(Error::database(
                            &self.name,
                            Operation::Connect,
                            ErrorKind::Transient,
                            failover.refuse_read_only(),
                        ));
                    }
                    Err(e) => return Err(driver_error(&self.name, Operation::Connect, e)),
                }
            }
            // The pool switched servers while this one connected: it may be on the old one,
            // and would not count as opened before the switch. Connect again (`create` bounds
            // the loop).
            if server == Some(failover.current_index()) {
                return Ok(client);
            }
        }
    }
}

impl deadpool::managed::Manager for TokioPgManager {
    type Type = ClientWrapper;
    type Error = Error;

    /// Bounded by `connect_timeout` here (connect retries, `init_sql`, the hook), so that a
    /// checkout needs no deadpool timer around it.
    ///
    /// The open is boxed: deadpool's checkout future holds this one inline, and a connect
    /// (TLS, SCRAM) is kilobytes of state that every checkout would otherwise carry and copy
    /// whole each time the future is moved or boxed (about 9k instructions per statement).
    async fn create(&self) -> Result<ClientWrapper> {
        let open: BoxFuture<'_, Result<ClientWrapper>> = Box::pin(self.open());
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::timeout(
                &self.name,
                Operation::Connect,
                self.connect_timeout,
            )),
        }
    }

    /// Checks an idle client before it is handed out again; a refused one is closed and
    /// deadpool takes (or opens) another. deadpool knows when a client was last checked out,
    /// not when it was released: "idle" below counts from the checkout.
    async fn recycle(&self, client: &mut ClientWrapper, metrics: &Metrics) -> RecycleResult<Error> {
        let idle_for = self.check_at_once(client, metrics)?;
        if idle_for < LIVENESS_WINDOW && !self.hooks.has_checkout_work() {
            return Ok(());
        }
        // Boxed for the reason `create` is: the ping and the hook are rare, their state is not.
        let check: BoxFuture<'_, RecycleResult<Error>> =
            Box::pin(self.check_idle(client, metrics, idle_for));
        check.await
    }
}

impl TokioPgManager {
    /// Whether a pooled client was opened before the pool switched servers, so may be on the
    /// old one: it is closed instead of handed out or kept.
    pub(super) fn is_stale(&self, metrics: &Metrics) -> bool {
        self.failover
            .as_ref()
            .is_some_and(|failover| failover.is_stale(metrics.age()))
    }

    /// A new connection with `init_sql` run and the after-connect hook passed.
    async fn open(&self) -> Result<ClientWrapper> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(10);
        let client = loop {
            match self.connect().await {
                Ok(client) => break client,
                Err(e)
                    if e.kind() == ErrorKind::Transient
                        && self.retry_connects.load(Relaxed)
                        && started.elapsed() + delay < self.connect_timeout =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        };
        self.counters.opened.fetch_add(1, Relaxed);
        for statement in self.init.iter() {
            if let Err(e) = client.batch_execute(statement).await {
                self.counters.closed_broken.fetch_add(1, Relaxed);
                return Err(driver_error(&self.name, Operation::Connect, e));
            }
        }
        let mut view = HookClient {
            on: self.on(),
            client: &client,
        };
        if let Err(e) = self.hooks.after_connect(&mut view).await {
            self.counters.closed_by_hook.fetch_add(1, Relaxed);
            return Err(e);
        }
        Ok(client)
    }

    /// The checks of [`Manager::recycle`](deadpool::managed::Manager::recycle) that need no
    /// round trip: closed, past its lifetime or idle time. How long the client was idle.
    fn check_at_once(
        &self,
        client: &ClientWrapper,
        metrics: &Metrics,
    ) -> std::result::Result<Duration, RecycleError<Error>> {
        let c = &self.counters;
        if client.is_closed() {
            // The server may be gone: look for another.
            if let Some(failover) = &self.failover {
                failover.request_probe();
            }
            return Err(refuse(&c.closed_broken, "connection closed"));
        }
        // One clock reading for the age and the idle time (deadpool's `age()` and
        // `last_used()` read it once each).
        let now = Instant::now();
        let age = now.saturating_duration_since(metrics.created);
        if let Some(failover) = &self.failover
            && failover.is_stale(age)
        {
            return Err(refuse(
                &c.closed_broken,
                "opened before the pool switched servers",
            ));
        }
        if self.max_lifetime.is_some_and(|max| age >= max) {
            return Err(refuse(&c.closed_max_lifetime, "past conn_max_lifetime"));
        }
        let idle_for = now.saturating_duration_since(metrics.recycled.unwrap_or(metrics.created));
        if self.max_idle_time.is_some_and(|max| idle_for >= max) {
            return Err(RecycleError::message("past conn_max_idle_time"));
        }
        Ok(idle_for)
    }

    /// The rest of [`Manager::recycle`](deadpool::managed::Manager::recycle): the ping (bounded
    /// by `connect_timeout`) when the client was idle past the liveness window, then the
    /// after-release hook (deadpool has no release callback, so it runs here, when a released
    /// client is next taken, which is before anyone uses it again) and the before-checkout hook
    /// (each bounded by the hook runner).
    async fn check_idle(
        &self,
        client: &mut ClientWrapper,
        metrics: &Metrics,
        idle_for: Duration,
    ) -> RecycleResult<Error> {
        let c = &self.counters;
        if idle_for >= LIVENESS_WINDOW
            && !matches!(
                tokio::time::timeout(self.connect_timeout, client.check_connection()).await,
                Ok(Ok(()))
            )
        {
            if let Some(failover) = &self.failover {
                failover.request_probe();
            }
            return Err(refuse(&c.closed_broken, "failed its liveness check"));
        }
        // One view for both hooks; a hook that is not set answers yes at once.
        let mut view = HookClient {
            on: self.on(),
            client,
        };
        if !self.hooks.after_release(&mut view, metrics.age()).await {
            return Err(refuse(
                &c.closed_by_hook,
                "refused by the after_release hook",
            ));
        }
        if !self
            .hooks
            .before_checkout(&mut view, metrics.age(), idle_for)
            .await
        {
            return Err(refuse(
                &c.closed_by_hook,
                "refused by the before_checkout hook",
            ));
        }
        Ok(())
    }
}

/// A recycle check's refusal, counted under `counter`.
fn refuse(counter: &std::sync::atomic::AtomicU64, why: &'static str) -> RecycleError<Error> {
    counter.fetch_add(1, Relaxed);
    RecycleError::message(why)
}

/// Checks a client out, counting waits when the pool was exhausted at the time of asking.
///
/// Without deadpool's timeout wrappers (each builds a timer, about 4k instructions per
/// checkout): an idle client's check and a new connection bound themselves (see
/// [`TokioPgManager`]), and the wait for a client in use is bounded by a kept timer set to the
/// pool's wait timeout (`connect_timeout`), armed only if the checkout has to wait.
pub(super) async fn acquire(
    name: &str,
    pool: &TokioPgPool,
    counters: &PoolCounters,
) -> Result<TokioPgClient> {
    // Whether every client was in use when asked (a wait, in the stats), read before asking:
    // a failed try first would cost a second pass through deadpool's checkout.
    let status = pool.status();
    let exhausted = status.available == 0 && status.size >= status.max_size;
    let started = Instant::now();
    // The wait bounded by a kept timer rather than deadpool's own (a new one on every wait:
    // see `Timers`); the pool's other timeouts are not set (see `TokioPgManager`).
    let mut waiting = pool.timeouts();
    let outcome = match waiting.wait.take() {
        Some(limit) => {
            let deadline = tokio::time::Instant::from_std(started) + limit;
            pool.manager()
                .waits
                .bound(deadline, pool.timeout_get(&waiting))
                .await
                .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait)))
        }
        None => pool.timeout_get(&waiting).await,
    };
    let waited = started.elapsed();
    if exhausted {
        counters.record_wait(waited);
    }
    counters.acquire_wait_seconds.observe(waited);
    let outcome = outcome.map_err(|e| pool_error(name, counters, e));
    observe(pool.manager().failover.as_deref(), pool, &outcome);
    outcome
}

/// A checkout's failure as the crate's error: the connect's own error when opening failed.
pub(super) fn pool_error(name: &str, counters: &PoolCounters, e: PoolError<Error>) -> Error {
    match e {
        PoolError::Backend(e) => e,
        PoolError::Closed => Error::closed(name, Operation::Acquire),
        PoolError::Timeout(kind) => {
            if matches!(kind, TimeoutType::Wait) {
                counters.acquire_timeouts.fetch_add(1, Relaxed);
            }
            Error::database(
                name,
                Operation::Acquire,
                ErrorKind::Transient,
                format!("timed out waiting for a connection ({kind:?})"),
            )
        }
        other => Error::database(
            name,
            Operation::Acquire,
            ErrorKind::Transient,
            other.to_string(),
        ),
    }
}
