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
    Metrics, Object, Pool, PoolError, RecycleError, RecycleResult, TimeoutType, Timeouts,
};
use deadpool_postgres::ClientWrapper;
use futures_util::future::BoxFuture;

use super::driver_error;
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
    pub(super) init: Arc<[String]>,
    pub(super) hooks: HookRunner,
    pub(super) counters: Arc<PoolCounters>,
    pub(super) columns: Arc<ColumnCache>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) max_idle_time: Option<Duration>,
    /// Bound of one connect, retries included (`connect_timeout`).
    pub(super) connect_timeout: Duration,
    /// Set once the pool is open: a checkout's connect then retries a refused or reset
    /// connection until `connect_timeout`, as sqlx's pool does (a restarting server is waited
    /// for, not reported to every caller); the open's own attempt fails fast, so the real
    /// error reaches the manager's retry.
    pub(super) retry_connects: AtomicBool,
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
        }
    }

    /// Opens one physical connection with the current credentials; a refused login makes the
    /// source resolve again next time.
    async fn connect(&self) -> Result<ClientWrapper> {
        let mut config = self.plan.config.clone();
        if let Some(source) = &self.credentials {
            let (credentials, _) = source.current().await?;
            with_credentials(&mut config, &credentials);
        }
        let (client, connection) = match config.connect(self.tls.clone()).await {
            Ok(pair) => pair,
            Err(e) => {
                let error = driver_error(&self.name, Operation::Connect, e);
                if error.kind() == ErrorKind::Authentication
                    && let Some(source) = &self.credentials
                {
                    source.invalidate();
                }
                return Err(error);
            }
        };
        // The connection task ends when the client is dropped (deadpool-postgres aborts it).
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(ClientWrapper::new(client, task))
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
        if idle_for < LIVENESS_WINDOW && !self.hooks.has_before_checkout() {
            return Ok(());
        }
        // Boxed for the reason `create` is: the ping and the hook are rare, their state is not.
        let check: BoxFuture<'_, RecycleResult<Error>> =
            Box::pin(self.check_idle(client, metrics, idle_for));
        check.await
    }
}

impl TokioPgManager {
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
            return Err(refuse(&c.closed_broken, "connection closed"));
        }
        if self.max_lifetime.is_some_and(|max| metrics.age() >= max) {
            return Err(refuse(&c.closed_max_lifetime, "past conn_max_lifetime"));
        }
        let idle_for = metrics.last_used();
        if self.max_idle_time.is_some_and(|max| idle_for >= max) {
            return Err(RecycleError::message("past conn_max_idle_time"));
        }
        Ok(idle_for)
    }

    /// The rest of [`Manager::recycle`](deadpool::managed::Manager::recycle): the ping (bounded
    /// by `connect_timeout`) when the client was idle past the liveness window, and the
    /// before-checkout hook (bounded by the hook runner).
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
            return Err(refuse(&c.closed_broken, "failed its liveness check"));
        }
        if self.hooks.has_before_checkout() {
            let mut view = HookClient {
                on: self.on(),
                client,
            };
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
/// First without waiting and without deadpool's timeout wrappers (each builds a timer, about
/// 4k instructions per checkout): an idle client's check and a new connection bound themselves
/// (see [`TokioPgManager`]). Only when every client is in use does the checkout wait, bounded by
/// the pool's wait timeout (`connect_timeout`).
pub(super) async fn acquire(
    name: &str,
    pool: &TokioPgPool,
    counters: &PoolCounters,
) -> Result<TokioPgClient> {
    let mut at_once = Timeouts::new();
    at_once.wait = Some(Duration::ZERO);
    let started = Instant::now();
    let outcome = match pool.timeout_get(&at_once).await {
        Err(PoolError::Timeout(TimeoutType::Wait)) => {
            let outcome = pool.get().await;
            counters.record_wait(started.elapsed());
            outcome
        }
        other => other,
    };
    counters.acquire_wait_seconds.observe(started.elapsed());
    outcome.map_err(|e| pool_error(name, counters, e))
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
