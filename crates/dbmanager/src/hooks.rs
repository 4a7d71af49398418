//! Lifecycle hooks of the application, like sqlx's `after_connect` / `before_acquire` /
//! `after_release` and pgx's `AfterConnect` / `BeforeAcquire` / `AfterRelease`, installed in
//! the pool itself so they cover every layer that shares it (the native pool, SeaORM and the
//! neutral handle).
//!
//! The public part is [`Hooks`] (the callbacks) and [`HookConnection`] (what a callback sees of
//! one physical connection). The crate part is [`HookState`] (the hooks of one named
//! connection, swapped whole, read by the pools on every event) and [`HookRunner`], which a
//! backend calls: it bounds each call in time, catches a panic, and turns any failure into the
//! crate's [`Error`] with the connection's name.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use crate::config::DatabaseType;
use crate::error::{BoxError, Error, ErrorKind, HookError, HookFailures, Operation, Result};
use crate::sql::{Row, Value};

/// Why MongoDB connections take no lifecycle hooks.
pub(crate) const NO_MONGODB_HOOKS: &str =
    "the MongoDB driver manages its connections internally and offers no per-connection callbacks";

/// What a hook returns: its verdict, or an error (any error type, `?` converts it).
pub type HookResult<T> = std::result::Result<T, BoxError>;

type AfterConnectFn =
    dyn for<'c> Fn(HookConnection<'c>) -> BoxFuture<'c, HookResult<()>> + Send + Sync;
type CheckFn = dyn for<'c> Fn(HookConnection<'c>) -> BoxFuture<'c, HookResult<bool>> + Send + Sync;

/// Callbacks run by a connection's pool at three points of a physical connection's life.
///
/// Register them with [`crate::Manager::set_hooks`] under a connection's name. They live in
/// the pool, so they apply to every layer on it (the native pool, SeaORM, the neutral handle),
/// and they stay registered across `reconnect`, `replace` and `reload` (which open new pools).
///
/// - **after-connect** runs on every new physical connection before anyone uses it (the one
///   `connect` opens to check the server included), after the library's own session setup and
///   `init_sql`. It may run SQL on the connection (set session variables, check the server). An
///   error fails that connection: during `connect` the connect fails with it; later the pool
///   keeps trying new connections until its acquire timeout, and a checkout through the
///   neutral handle then fails with the hook's error (kind [`ErrorKind::Hook`], the
///   connection's name in it). A checkout straight from the native sqlx pool reports sqlx's
///   own `PoolTimedOut` instead, as sqlx hides `after_connect` errors.
/// - **before-checkout** runs when an idle pooled connection is about to be handed out (a
///   brand-new connection is not asked). `Ok(false)` discards it and the pool takes another
///   idle one or opens a new one. An error or a panic discards it too, and is logged.
/// - **after-release** runs when a connection comes back to the pool and would be kept.
///   `Ok(false)` closes it instead. An error or a panic closes it too, and is logged.
///
/// Each call is bounded by the connection's `connect_timeout`; a panic is caught (unless the
/// application is built with `panic = "abort"`) and reported as the hook's error. Connections
/// a hook discards or closes are counted in [`crate::ConnectionStats::closed_by_hook`].
///
/// SQL Server: all three apply (the release hook runs in a task after the client is dropped).
/// MongoDB: none apply, as the driver manages its connections internally and offers no
/// per-connection callbacks; registering hooks for a MongoDB connection is an error.
/// Pools the application built itself (adopted with [`crate::Manager::adopt`]) keep the hooks
/// they were built with.
///
/// ```
/// use dbmanager::{HookConnection, Hooks};
///
/// let hooks = Hooks::new()
///     .after_connect(|mut conn: HookConnection<'_>| {
///         Box::pin(async move {
///             conn.execute("SET TIME ZONE 'UTC'", &[]).await?;
///             Ok(())
///         })
///     })
///     // Recycle connections older than an hour at checkout.
///     .before_checkout(|conn: HookConnection<'_>| {
///         Box::pin(async move { Ok(conn.age() < std::time::Duration::from_secs(3600)) })
///     });
/// assert!(!hooks.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Hooks {
    after_connect: Option<Arc<AfterConnectFn>>,
    before_checkout: Option<Arc<CheckFn>>,
    after_release: Option<Arc<CheckFn>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_connect", &self.after_connect.is_some())
            .field("before_checkout", &self.before_checkout.is_some())
            .field("after_release", &self.after_release.is_some())
            .finish()
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `hook` on every new physical connection; an error fails that connection.
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(HookConnection<'c>) -> BoxFuture<'c, HookResult<()>> + Send + Sync + 'static,
    {
        self.after_connect = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` before an idle connection is handed out; `Ok(false)` discards it.
    pub fn before_checkout<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(HookConnection<'c>) -> BoxFuture<'c, HookResult<bool>>
            + Send
            + Sync
            + 'static,
    {
        self.before_checkout = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` when a connection comes back to the pool; `Ok(false)` closes it.
    pub fn after_release<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(HookConnection<'c>) -> BoxFuture<'c, HookResult<bool>>
            + Send
            + Sync
            + 'static,
    {
        self.after_release = Some(Arc::new(hook));
        self
    }

    /// Whether no hook is set.
    pub fn is_empty(&self) -> bool {
        self.after_connect.is_none()
            && self.before_checkout.is_none()
            && self.after_release.is_none()
    }
}

/// Statements on the one physical connection a hook is called for (a backend implements it).
pub(crate) trait HookSql: Send {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>>;

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>>;
}

/// What a hook sees of one physical connection: whose it is, how old, how long it was idle, and
/// a way to run statements on it (placeholders `$1`, `$2`, ... as on the neutral handle).
///
/// Statements run on that very connection, outside any pool checkout, without the neutral
/// handle's timeout, spans or statistics (the hook as a whole is bounded by `connect_timeout`).
pub struct HookConnection<'c> {
    name: &'c str,
    kind: DatabaseType,
    age: Duration,
    idle_for: Duration,
    sql: &'c mut (dyn HookSql + 'c),
}

impl std::fmt::Debug for HookConnection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConnection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("age", &self.age)
            .field("idle_for", &self.idle_for)
            .finish_non_exhaustive()
    }
}

impl<'c> HookConnection<'c> {
    /// The connection's name in the configuration.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Its backend.
    pub fn kind(&self) -> DatabaseType {
        self.kind
    }

    /// Time since this physical connection was opened (zero in after-connect).
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Time it spent idle in the pool before this call (zero in after-connect and
    /// after-release).
    pub fn idle_for(&self) -> Duration {
        self.idle_for
    }

    /// Runs a statement on this connection; the number of rows affected.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.sql.execute(sql, params).await
    }

    /// Runs a query on this connection; its first row, if any.
    pub async fn fetch_optional(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        self.sql.fetch_optional(sql, params).await
    }
}

/// The hooks of one named connection: kept across replace and reconnect (the connection's
/// shared state holds it), swapped whole by [`crate::Manager::set_hooks`], read lock-free by
/// its pools at every event.
#[derive(Debug, Default)]
pub(crate) struct HookState {
    hooks: ArcSwap<Hooks>,
    pub(crate) failures: Arc<HookFailures>,
}

impl HookState {
    pub(crate) fn set(&self, hooks: Hooks) {
        self.hooks.store(Arc::new(hooks));
    }

    /// The hooks installed now (a replica built later gets its connection's).
    pub(crate) fn current(&self) -> Hooks {
        Hooks::clone(&self.hooks.load())
    }

    #[allow(dead_code, reason = "read by the MongoDB backend, which refuses hooks")]
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.load().is_empty()
    }
}

/// Runs one connection's hooks for one pool: what a backend calls.
#[derive(Clone)]
pub(crate) struct HookRunner {
    state: Arc<HookState>,
    name: Arc<str>,
    kind: DatabaseType,
    limit: Duration,
}

impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRunner")
            .field("name", &self.name)
            .field("hooks", &*self.state.hooks.load())
            .finish()
    }
}

impl HookRunner {
    pub(crate) fn new(
        state: Arc<HookState>,
        name: Arc<str>,
        kind: DatabaseType,
        limit: Duration,
    ) -> Self {
        Self {
            state,
            name,
            kind,
            limit,
        }
    }

    /// The connection's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The connection's after-connect failures (for explaining a checkout that timed out).
    #[allow(dead_code, reason = "used by the SQL Server backend")]
    pub(crate) fn failures(&self) -> &HookFailures {
        &self.state.failures
    }

    /// Whether a before-checkout hook is set: a pool asks first, so a checkout without one
    /// clones nothing for it.
    #[allow(dead_code, reason = "used by the sqlx backends")]
    pub(crate) fn has_before_checkout(&self) -> bool {
        self.state.hooks.load().before_checkout.is_some()
    }

    /// Whether a before-checkout or an after-release hook is set (one load: a pool that runs
    /// both at checkout asks on every checkout).
    #[allow(dead_code, reason = "used by the tokio-postgres backend")]
    pub(crate) fn has_checkout_work(&self) -> bool {
        let hooks = self.state.hooks.load();
        hooks.before_checkout.is_some() || hooks.after_release.is_some()
    }

    /// Whether an after-release hook is set (a backend that must do extra work to call it asks
    /// first).
    #[allow(dead_code, reason = "used by the sqlx and SQL Server backends")]
    pub(crate) fn has_after_release(&self) -> bool {
        self.state.hooks.load().after_release.is_some()
    }

    fn view<'c>(
        &'c self,
        sql: &'c mut (dyn HookSql + 'c),
        age: Duration,
        idle_for: Duration,
    ) -> HookConnection<'c> {
        HookConnection {
            name: &self.name,
            kind: self.kind,
            age,
            idle_for,
            sql,
        }
    }

    /// Runs the after-connect hook, if any, on a new connection. Its failure is returned
    /// (operation `Connect`, kind [`ErrorKind::Hook`]) and remembered, so that a checkout that
    /// times out meanwhile reports it.
    pub(crate) async fn after_connect(&self, sql: &mut (dyn HookSql + '_)) -> Result<()> {
        let Some(hook) = self.state.hooks.load().after_connect.clone() else {
            return Ok(());
        };
        let outcome = self
            .call("after_connect", || {
                hook(self.view(sql, Duration::ZERO, Duration::ZERO))
            })
            .await;
        outcome.map_err(|e| {
            self.state.failures.record(e.message.clone());
            Error::database(&self.name, Operation::Connect, ErrorKind::Hook, e)
        })
    }

    /// Runs the before-checkout hook, if any: whether to hand the connection out. A failure
    /// discards it and is logged.
    pub(crate) async fn before_checkout(
        &self,
        sql: &mut (dyn HookSql + '_),
        age: Duration,
        idle_for: Duration,
    ) -> bool {
        let Some(hook) = self.state.hooks.load().before_checkout.clone() else {
            return true;
        };
        let outcome = self
            .call("before_checkout", || hook(self.view(sql, age, idle_for)))
            .await;
        self.verdict(Operation::Acquire, outcome)
    }

    /// Runs the after-release hook, if any: whether to keep the connection. A failure closes
    /// it and is logged.
    pub(crate) async fn after_release(&self, sql: &mut (dyn HookSql + '_), age: Duration) -> bool {
        let Some(hook) = self.state.hooks.load().after_release.clone() else {
            return true;
        };
        let outcome = self
            .call("after_release", || {
                hook(self.view(sql, age, Duration::ZERO))
            })
            .await;
        self.verdict(Operation::Close, outcome)
    }

    fn verdict(&self, operation: Operation, outcome: std::result::Result<bool, HookError>) -> bool {
        match outcome {
            Ok(keep) => keep,
            Err(e) => {
                let error = Error::database(&self.name, operation, ErrorKind::Hook, e);
                tracing::warn!(connection = %self.name, error = %error, "lifecycle hook failed; the connection is closed");
                false
            }
        }
    }

    /// Calls a hook: bounded by the connect timeout, a panic caught (in the call and in its
    /// future), any failure as a [`HookError`].
    async fn call<'c, T>(
        &self,
        hook: &'static str,
        start: impl FnOnce() -> BoxFuture<'c, HookResult<T>>,
    ) -> std::result::Result<T, HookError> {
        let failed = |message: String, source: Option<BoxError>| HookError {
            hook,
            message,
            source,
        };
        let future = match std::panic::catch_unwind(AssertUnwindSafe(start)) {
            Ok(future) => future,
            Err(panic) => return Err(failed(crate::error::panicked(panic.as_ref()), None)),
        };
        match tokio::time::timeout(self.limit, AssertUnwindSafe(future).catch_unwind()).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(failed(e.to_string(), Some(e))),
            Ok(Err(panic)) => Err(failed(crate::error::panicked(panic.as_ref()), None)),
            Err(_) => Err(failed(
                format!(
                    "did not finish within {} (the connect timeout)",
                    humantime::format_duration(self.limit)
                ),
                None,
            )),
        }
    }
}

/// Runs `work` and, when it fails with a transient error while an after-connect hook failed,
/// reports the hook's failure instead.
pub(crate) async fn explained<T>(
    failures: &HookFailures,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let since = std::time::Instant::now();
    work.await.map_err(|e| failures.explain(e, since))
}
