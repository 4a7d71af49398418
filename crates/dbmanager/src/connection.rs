//! A named connection: its config, its pool (once connected) and the access layers on that pool.

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tracing::Instrument as _;

use crate::config::{ConnectionConfig, DatabaseType, PoolSettings, RetryPolicy};
use crate::credentials::{CredentialProvider, CredentialSource};
use crate::deadline::bounded;
use crate::driver::{BackendPool, Driver, OpenSpec, close_within};
use crate::error::{Error, Operation, Result};
use crate::health::{HealthReport, HealthState, Status};
use crate::hooks::{HookState, Hooks};
use crate::replicas::{Replica, ReplicaPolicy, ReplicaSet};
use crate::sql::Database;
use crate::stats::{ConnectionStats, PoolCounters, PoolGauges};

/// The open pool of a connection, whatever its backend, and where its credentials come from
/// (`None` for an adopted pool).
struct Backend(Box<dyn BackendPool>, Option<Arc<CredentialSource>>);

/// How long a pool reopened for new credentials gives the old one to drain.
const REOPEN_DRAIN: Duration = Duration::from_secs(30);

/// The longest wait between attempts to reopen a pool whose credentials changed.
const REOPEN_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The open backend with the generation it belongs to: what the lookup path reads, published
/// in one place ([`Shared::open`]) so that reaching a pool is one lock-free load.
struct Open {
    generation: Arc<Generation>,
    backend: Arc<Backend>,
}

/// The open backend, held alive while a caller uses it.
///
/// An `arc_swap` guard rather than a cloned `Arc`: on the lookup path a clone is an atomic
/// read-modify-write on a count that every thread shares; a guard borrows a per-thread debt
/// slot instead.
struct BackendGuard(arc_swap::Guard<Option<Arc<Open>>>);

impl BackendGuard {
    fn as_deref(&self) -> Option<&Backend> {
        self.0.as_deref().map(|open| &*open.backend)
    }

    fn generation(&self) -> Option<&Generation> {
        self.0.as_deref().map(|open| &*open.generation)
    }
}

/// Ends a connect attempt when dropped: clears the flag and wakes the callers waiting on it.
struct ClearOnDrop<'a>(&'a AtomicBool, &'a tokio::sync::Notify);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
        self.1.notify_waiters();
    }
}

/// A handle on one named connection. Cheap to clone; every clone sees the same pool.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    /// What the connection is now: replaced whole by [`Connection::replace`], so a handle
    /// follows the swap.
    current: ArcSwap<Generation>,
    /// Bumped whenever the open backend changes (connect, replace, close, removal): neutral
    /// handles compare it to re-bind their executor.
    epoch: AtomicU64,
    counters: Arc<PoolCounters>,
    breaker: Arc<crate::breaker::Breaker>,
    /// The application's lifecycle hooks, read by every pool of every generation.
    hooks: Arc<HookState>,
    health: HealthState,
    /// The manager's closed flag, shared by all of its connections.
    manager_closed: Arc<AtomicBool>,
    /// Removed from its manager: every use is `Closed`.
    retired: AtomicBool,
    connecting: AtomicBool,
    /// Woken when an in-flight connect ends.
    connect_done: tokio::sync::Notify,
    /// Tells the LISTEN/NOTIFY listeners of a close (they end) or a replace (they move to the
    /// new configuration); each listener's task holds a receiver until it ends.
    listeners: tokio::sync::watch::Sender<crate::listen::ConnectionSignal>,
    /// The current generation and its open backend, republished (under `publishing`) after
    /// every change of either; `None` while not open. The lookup path reads only this.
    open: ArcSwapOption<Open>,
    /// Serialises republishing: each publish reads the current state, so the last one wins
    /// with the newest state whatever order writers finish in.
    publishing: std::sync::Mutex<()>,
    /// Supplies credentials from code; read each time a pool is opened.
    provider: std::sync::Mutex<Option<Arc<dyn CredentialProvider>>>,
    /// Its read replicas, each a member connection of its own (`None`: it has none).
    replicas: ArcSwapOption<ReplicaSet<Connection>>,
    /// `critical` and `tags` a reload changed without changing anything else (see
    /// [`Connection::relabel`]); they apply while the generation they were set on is current.
    labels: ArcSwapOption<Labels>,
}

/// `critical` and `tags` set in place on one generation, whose pool they leave alone.
struct Labels {
    /// The generation they were set on (weak: a replace drops them with it).
    generation: std::sync::Weak<Generation>,
    critical: bool,
    tags: std::collections::BTreeMap<String, String>,
}

/// One configuration of a connection and the pool opened from it.
pub(crate) struct Generation {
    driver: &'static Driver,
    config: ConnectionConfig,
    settings: PoolSettings,
    /// Its retry policy: a reload that changes only the manager's retry settings replaces it
    /// in place (see [`Connection::relabel`]); shared with `sql_context`.
    retry: Arc<ArcSwap<RetryPolicy>>,
    tracer: Arc<crate::trace::Tracer>,
    /// Shared by every neutral handle of this generation.
    sql_context: Arc<crate::sql::Context>,
    backend: ArcSwapOption<Backend>,
    /// An application's own pool: never opened (or reopened) here.
    adopted: bool,
}

impl Generation {
    pub(crate) fn new(
        driver: &'static Driver,
        config: ConnectionConfig,
        settings: PoolSettings,
        retry: RetryPolicy,
        counters: &Arc<PoolCounters>,
        breaker: &Arc<crate::breaker::Breaker>,
        hooks: &Arc<HookState>,
    ) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let retry = Arc::new(ArcSwap::from_pointee(retry));
        let tracer = Arc::new(crate::trace::Tracer::new(
            name.clone(),
            &config,
            driver.system_name,
            driver.default_port,
        ));
        Self {
            sql_context: Arc::new(crate::sql::Context {
                name,
                kind: config.kind,
                query_timeout: settings.query_timeout,
                tracer: tracer.clone(),
                counters: counters.clone(),
                record_queries: config.enable_metrics,
                breaker: breaker.clone(),
                retry: retry.clone(),
                leak_threshold: config.leak_detection_threshold,
                hook_failures: hooks.failures.clone(),
                timers: crate::deadline::Timers::for_pool(settings.max_open),
            }),
            tracer,
            driver,
            config,
            settings,
            retry,
            backend: ArcSwapOption::empty(),
            adopted: false,
        }
    }

    /// Its retry policy now.
    fn retry(&self) -> RetryPolicy {
        **self.retry.load()
    }

    /// A generation around a pool the application built.
    pub(crate) fn adopted(mut self, backend: Box<dyn BackendPool>) -> Self {
        self.backend = ArcSwapOption::from_pointee(Backend(backend, None));
        self.adopted = true;
        self
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.config();
        f.debug_struct("Connection")
            .field("name", &self.shared.name)
            .field("kind", &config.kind)
            .field("status", &self.status())
            .field("config", &config)
            .finish()
    }
}

/// Outcome of closing one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CloseOutcome {
    /// Connections still checked out when the deadline passed.
    pub still_in_use: u32,
    /// Its read replicas that still had connections checked out, by member name.
    pub members: Vec<(String, u32)>,
}

impl CloseOutcome {
    /// Checked out at the deadline, the replicas' included.
    pub(crate) fn total_in_use(&self) -> u32 {
        self.members
            .iter()
            .fold(self.still_in_use, |sum, (_, n)| sum.saturating_add(*n))
    }
}

impl Connection {
    pub(crate) fn new(
        driver: &'static Driver,
        config: ConnectionConfig,
        settings: PoolSettings,
        retry: RetryPolicy,
        manager_closed: Arc<AtomicBool>,
    ) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let counters: Arc<PoolCounters> = Arc::default();
        let breaker: Arc<crate::breaker::Breaker> = Arc::default();
        let hooks: Arc<HookState> = Arc::default();
        breaker.set_threshold(config.circuit_breaker_failures);
        let generation =
            Generation::new(driver, config, settings, retry, &counters, &breaker, &hooks);
        Self {
            shared: Arc::new(Shared {
                name,
                current: ArcSwap::from_pointee(generation),
                epoch: AtomicU64::new(0),
                counters,
                breaker,
                hooks,
                health: HealthState::default(),
                manager_closed,
                retired: AtomicBool::new(false),
                connecting: AtomicBool::new(false),
                connect_done: tokio::sync::Notify::new(),
                listeners: tokio::sync::watch::Sender::new(Default::default()),
                open: ArcSwapOption::empty(),
                publishing: std::sync::Mutex::new(()),
                provider: std::sync::Mutex::new(None),
                replicas: ArcSwapOption::empty(),
                labels: ArcSwapOption::empty(),
            }),
        }
    }

    fn generation(&self) -> arc_swap::Guard<Arc<Generation>> {
        self.shared.current.load()
    }

    /// Republishes the current generation and its backend for the lookup path. Called after
    /// every change of either, and before the epoch moves, so a handle that sees the new epoch
    /// also finds the new backend.
    fn publish(&self) {
        let _serial = self
            .shared
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.shared.current.load_full();
        let open = generation.backend.load_full().map(|backend| {
            Arc::new(Open {
                generation,
                backend,
            })
        });
        self.shared.open.store(open);
    }

    /// Whether `config` (with its derived settings) is what this connection runs with now.
    pub(crate) fn has_settings(
        &self,
        config: &ConnectionConfig,
        settings: &PoolSettings,
        retry: &RetryPolicy,
    ) -> bool {
        let generation = self.shared.current.load_full();
        generation.settings == *settings
            && generation.retry() == *retry
            && self.config_of(&generation).same_as(config)
    }

    /// Whether it wraps an application's own pool.
    pub fn is_adopted(&self) -> bool {
        self.generation().adopted
    }

    /// A connection around `generation` (an adopted pool), marked healthy.
    pub(crate) fn from_generation(
        name: &str,
        generation: impl FnOnce(
            &Arc<PoolCounters>,
            &Arc<crate::breaker::Breaker>,
            &Arc<HookState>,
        ) -> Generation,
        manager_closed: Arc<AtomicBool>,
    ) -> Self {
        let counters: Arc<PoolCounters> = Arc::default();
        let breaker: Arc<crate::breaker::Breaker> = Arc::default();
        let hooks: Arc<HookState> = Arc::default();
        let generation = generation(&counters, &breaker, &hooks);
        breaker.set_threshold(generation.config.circuit_breaker_failures);
        let conn = Self {
            shared: Arc::new(Shared {
                name: Arc::from(name),
                current: ArcSwap::from_pointee(generation),
                epoch: AtomicU64::new(1),
                counters,
                breaker,
                hooks,
                health: HealthState::default(),
                manager_closed,
                retired: AtomicBool::new(false),
                connecting: AtomicBool::new(false),
                connect_done: tokio::sync::Notify::new(),
                listeners: tokio::sync::watch::Sender::new(Default::default()),
                open: ArcSwapOption::empty(),
                publishing: std::sync::Mutex::new(()),
                provider: std::sync::Mutex::new(None),
                replicas: ArcSwapOption::empty(),
                labels: ArcSwapOption::empty(),
            }),
        };
        conn.publish();
        conn.shared.health.succeeded(false);
        conn
    }

    /// The counters that survive a replace (stats keep counting under the same name).
    pub(crate) fn counters(&self) -> &Arc<PoolCounters> {
        &self.shared.counters
    }

    /// The circuit breaker that survives a replace.
    pub(crate) fn breaker(&self) -> &Arc<crate::breaker::Breaker> {
        &self.shared.breaker
    }

    /// The lifecycle hooks that survive a replace.
    pub(crate) fn hook_state(&self) -> &Arc<HookState> {
        &self.shared.hooks
    }

    /// Installs the application's lifecycle hooks: every pool of this connection, the open one
    /// included, calls them from its next event on.
    pub(crate) fn set_hooks(&self, hooks: Hooks) {
        for member in self.members() {
            member.set_hooks(hooks.clone());
        }
        self.shared.hooks.set(hooks);
    }

    fn record_reach(&self, reached: bool) {
        self.shared
            .breaker
            .record(&self.shared.name, reached, &self.shared.counters);
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its backend.
    pub fn kind(&self) -> DatabaseType {
        self.generation().config.kind
    }

    /// Its configuration now (secrets redacted in `Debug`); a replace swaps it.
    pub fn config(&self) -> ConnectionConfig {
        self.config_of(&self.shared.current.load_full())
    }

    /// `generation`'s configuration with the `critical` and `tags` a reload set on it in place.
    fn config_of(&self, generation: &Arc<Generation>) -> ConnectionConfig {
        let mut config = generation.config.clone();
        if let Some(labels) = self.labels_of(generation) {
            config.critical = labels.critical;
            config.tags = labels.tags.clone();
        }
        config
    }

    /// The labels set in place on `generation`, if any.
    fn labels_of(&self, generation: &Arc<Generation>) -> Option<Arc<Labels>> {
        self.shared
            .labels
            .load_full()
            .filter(|labels| std::ptr::eq(labels.generation.as_ptr(), Arc::as_ptr(generation)))
    }

    /// Applies `config`'s `critical` and `tags`, and `retry`, in place when they are all that
    /// differs from what the connection runs with (its pool settings included): no new pool,
    /// no reconnect, and a connection that is down takes them too (its next connects use the
    /// new retry policy, as do its replicas'). Returns whether it did.
    pub(crate) fn relabel(
        &self,
        config: &ConnectionConfig,
        settings: &PoolSettings,
        retry: &RetryPolicy,
    ) -> bool {
        let generation = self.shared.current.load_full();
        if generation.settings != *settings {
            return false;
        }
        let mut relabeled = self.config_of(&generation);
        relabeled.critical = config.critical;
        relabeled.tags = config.tags.clone();
        if !relabeled.same_as(config) {
            return false;
        }
        self.shared.labels.store(Some(Arc::new(Labels {
            generation: Arc::downgrade(&generation),
            critical: config.critical,
            tags: config.tags.clone(),
        })));
        if generation.retry() != *retry {
            generation.retry.store(Arc::new(*retry));
            if let Some(replicas) = self.shared.replicas.load_full() {
                for member in replicas.members() {
                    member.generation().retry.store(Arc::new(*retry));
                }
            }
        }
        true
    }

    /// Its pool settings after overrides.
    pub fn pool_settings(&self) -> PoolSettings {
        self.generation().settings
    }

    /// Its free-form tags.
    pub fn tags(&self) -> std::collections::BTreeMap<String, String> {
        self.config().tags
    }

    /// Whether readiness depends on it (`critical`).
    pub fn is_critical(&self) -> bool {
        let generation = self.shared.current.load_full();
        self.labels_of(&generation)
            .map_or(generation.config.critical, |labels| labels.critical)
    }

    /// Current health status. While the circuit breaker is open a connection that was up is
    /// `Unhealthy` (every statement fails fast), also when no health check has run since.
    pub fn status(&self) -> Status {
        let status = self.shared.health.status();
        if status.is_up() && self.shared.breaker.is_open() {
            Status::Unhealthy
        } else {
            status
        }
    }

    /// Health details: status, consecutive failures, last error, last success.
    pub fn health(&self) -> HealthReport {
        let mut report = self.shared.health.report();
        if report.status.is_up() && self.shared.breaker.is_open() {
            report.status = Status::Unhealthy;
            report.last_error = Some(crate::breaker::CIRCUIT_OPEN.to_owned());
        }
        report.current_host = self
            .shared
            .counters
            .current_host
            .load_full()
            .map(|h| (*h).clone());
        if Self::listens(&self.generation()) {
            report.listeners = Some(self.shared.counters.listeners.snapshot());
        }
        report
    }

    /// Whether listeners can be opened on `generation` (its backend has them and its
    /// configuration says where to connect).
    fn listens(generation: &Generation) -> bool {
        generation.driver.listen.is_some() && !generation.adopted
    }

    /// A LISTEN/NOTIFY listener on this connection (PostgreSQL; others are
    /// [`crate::ErrorKind::Unsupported`]), connected and ready: see [`crate::Listener`].
    ///
    /// It opens its own dedicated session from the connection's current configuration, outside
    /// the pool (`max_open_conns` does not count it); the connection must be connected (its
    /// pool sends [`crate::Listener::notify`]). Closing the connection or its manager ends it.
    pub async fn listener(&self) -> Result<crate::Listener> {
        let generation = self.shared.current.load_full();
        let Some(driver) = generation.driver.listen else {
            return Err(self.unsupported(
                "a LISTEN/NOTIFY listener",
                "only PostgreSQL connections have one",
            ));
        };
        if generation.adopted {
            return Err(self.unsupported(
                "a LISTEN/NOTIFY listener",
                "an adopted pool has no configuration to open the listener's own session from",
            ));
        }
        if generation.config.pooler == crate::config::Pooler::Transaction {
            return Err(self.unsupported(
                "a LISTEN/NOTIFY listener",
                "behind a transaction-mode pooler (`pooler: transaction`) a server session is ours for one transaction, so a LISTEN would hear nothing after it; listen through a second connection that reaches the server directly or through a session-mode pool",
            ));
        }
        let database = self.database()?;
        let signal = self.shared.listeners.subscribe();
        // After subscribing: a close that came before is seen here, one that comes after is
        // seen by the listener.
        self.check_usable(Operation::Listen)?;
        let context = crate::listen::ListenContext {
            name: self.shared.name.clone(),
            source: Arc::new(self.clone()),
            counters: self.shared.counters.clone(),
            signal,
            database,
        };
        crate::listen::start(context, driver).await
    }

    /// Ends the listeners (closing their sessions) and waits for them up to `deadline`.
    async fn close_listeners(&self, deadline: Duration) {
        let listeners = &self.shared.listeners;
        listeners.send_modify(|s| s.closes += 1);
        let _ = tokio::time::timeout(deadline, listeners.closed()).await;
    }

    /// Whether a pool is open.
    pub fn is_connected(&self) -> bool {
        self.generation().backend.load().is_some()
    }

    fn check_usable(&self, operation: Operation) -> Result<()> {
        if self.shared.manager_closed.load(Ordering::Acquire)
            || self.shared.retired.load(Ordering::Acquire)
        {
            return Err(Error::closed(self.name(), operation));
        }
        Ok(())
    }

    /// The open backend (the lookup path: two lock-free loads).
    fn backend(&self, operation: Operation) -> Result<BackendGuard> {
        self.check_usable(operation)?;
        let open = self.shared.open.load();
        if open.is_none() {
            return Err(Error::Unavailable {
                connection: self.name().to_owned(),
                operation,
                last_error: self.shared.health.last_error(),
            });
        }
        Ok(BackendGuard(open))
    }

    fn sql_backend(&self) -> Result<BackendGuard> {
        let open = self.backend(Operation::Access);
        let kind = match &open {
            Ok(open) => open.generation().map(|g| g.config.kind),
            Err(_) => None,
        }
        .unwrap_or_else(|| self.kind());
        if !kind.is_sql() {
            return Err(Error::NotSql {
                connection: self.name().to_owned(),
                backend: kind,
            });
        }
        open
    }

    fn unsupported(&self, layer: &'static str, reason: &'static str) -> Error {
        Error::Unsupported {
            connection: self.name().to_owned(),
            layer,
            backend: self.kind(),
            reason,
        }
    }

    /// `e`, or, for a connection of `kind` that another driver serves (`driver:`), why.
    #[allow(dead_code, reason = "used by the PostgreSQL shortcuts")]
    fn other_driver(&self, e: Error, kind: DatabaseType, layer: &'static str) -> Error {
        if self.kind() == kind {
            self.unsupported(layer, "the connection's `driver` does not offer it")
        } else {
            e
        }
    }

    /// A typed access layer of the open backend, cloned out of it.
    fn layer_of<T: Any + Clone>(&self, backend: &BackendGuard, layer: &'static str) -> Result<T> {
        backend
            .as_deref()
            .and_then(|b| b.0.layer(TypeId::of::<T>()))
            .and_then(|l| l.downcast_ref::<T>())
            .cloned()
            .ok_or_else(|| self.unsupported(layer, "the connection is of another backend"))
    }

    /// The backend's native pool or client of type `T` (`sqlx::PgPool`, `sqlx::MySqlPool`,
    /// `sea_orm::DatabaseConnection`, [`crate::MssqlPool`], `mongodb::Client`, ...): the typed
    /// accessor every per-backend shortcut below goes through.
    pub fn native<T: Any + Clone>(&self) -> Result<T> {
        let backend = self.backend(Operation::Access)?;
        self.layer_of(&backend, std::any::type_name::<T>())
    }

    /// The native PostgreSQL pool (sqlx). Clones share the one pool.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(&self) -> Result<sqlx::PgPool> {
        self.layer_of(&self.sql_backend()?, "the PostgreSQL pool")
            .map_err(|e| self.other_driver(e, DatabaseType::Postgres, "the PostgreSQL pool"))
    }

    /// The native pool of a `driver: tokio-postgres` connection: tokio-postgres clients in
    /// deadpool, each with its prepared-statement cache (`pool.get().await?.prepare_cached`).
    /// Clones share the one pool.
    #[cfg(feature = "tokio-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
    pub fn tokio_postgres(&self) -> Result<crate::TokioPgPool> {
        self.layer_of(&self.sql_backend()?, "the tokio-postgres pool")
            .map_err(|e| self.other_driver(e, DatabaseType::Postgres, "the tokio-postgres pool"))
    }

    /// The native SQLite pool (sqlx). Clones share the one pool.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(&self) -> Result<sqlx::SqlitePool> {
        self.layer_of(&self.sql_backend()?, "the SQLite pool")
    }

    /// The native MySQL / MariaDB pool (sqlx). Clones share the one pool.
    #[cfg(feature = "mysql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
    pub fn mysql(&self) -> Result<sqlx::MySqlPool> {
        self.layer_of(&self.sql_backend()?, "the MySQL pool")
    }

    /// The native SQL Server pool (tiberius clients in bb8). Clones share the one pool.
    #[cfg(feature = "mssql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mssql")))]
    pub fn mssql(&self) -> Result<crate::MssqlPool> {
        self.layer_of(&self.sql_backend()?, "the SQL Server pool")
    }

    /// The MongoDB client (its clones share one pool).
    #[cfg(feature = "mongodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
    pub fn mongodb(&self) -> Result<mongodb::Client> {
        self.layer_of(&self.mongo_backend()?, "MongoDB")
    }

    /// The configured MongoDB database (`database`).
    #[cfg(feature = "mongodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
    pub fn mongodb_database(&self) -> Result<mongodb::Database> {
        let backend = self.mongo_backend()?;
        self.layer_of(&backend, "the MongoDB database")
            .map_err(|_| {
                self.unsupported(
                    "the MongoDB database",
                    "no `database` is configured; use `mongodb()` and name one",
                )
            })
    }

    #[cfg(feature = "mongodb")]
    fn mongo_backend(&self) -> Result<BackendGuard> {
        if self.kind() != DatabaseType::Mongodb {
            return Err(Error::NotMongo {
                connection: self.name().to_owned(),
                backend: self.kind(),
            });
        }
        self.backend(Operation::Access)
    }

    /// A SeaORM connection on the same pool as the native layer.
    #[cfg(feature = "sea-orm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
    pub fn sea_orm(&self) -> Result<sea_orm::DatabaseConnection> {
        let backend = self.sql_backend()?;
        self.layer_of(&backend, "SeaORM").map_err(|e| {
            let reason = backend
                .as_deref()
                .and_then(|b| b.0.sql(crate::DefaultOrm::SeaOrm).err());
            reason.map_or(e, |reason| self.unsupported("SeaORM", reason))
        })
    }

    /// The backend-neutral handle, on the layer chosen by `default_orm`.
    pub fn database(&self) -> Result<Database> {
        let backend = self.sql_backend()?;
        let bound = self.bind_sql(&backend)?;
        Ok(Database::new(self.shared.clone(), bound))
    }

    /// Builds its read replicas from its configuration: one member connection per entry of
    /// `replicas`, named `<name>/replica:<host>:<port>`, with the pool settings and retry
    /// policy `manager` gives that entry. Not yet connected: [`Connection::connect`] opens them.
    pub(crate) fn set_replicas(&self, manager: &crate::ManagerConfig) {
        self.shared
            .replicas
            .store(self.build_replicas(manager).map(Arc::new));
    }

    fn build_replicas(&self, manager: &crate::ManagerConfig) -> Option<ReplicaSet<Connection>> {
        let generation = self.generation();
        let c = &generation.config;
        let probe = generation.driver.replica_lag?;
        if c.replicas.is_empty() {
            return None;
        }
        let mut first_check_wait = Duration::ZERO;
        let replicas = c
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (name, host, port) =
                    crate::replicas::identity(&c.name, i, r, generation.driver.default_port);
                let mut config = r.clone();
                config.name = name;
                config.replicas = Vec::new();
                // A replica is meant to reach a standby: a server list (its dsn's) does not
                // default to `read-write` for it. The entry's or its dsn's own value wins.
                config.target_session_attrs = config
                    .target_session_attrs
                    .or(Some(crate::config::TargetSessionAttrs::Any));
                let settings = manager.pool_settings(&config);
                first_check_wait = first_check_wait.max(settings.connect_timeout);
                let member = Connection::new(
                    generation.driver,
                    config.clone(),
                    settings,
                    manager.retry_policy(),
                    self.shared.manager_closed.clone(),
                );
                let provider = self
                    .shared
                    .provider
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                member.set_credential_provider(provider);
                member.shared.hooks.set(self.shared.hooks.current());
                Replica::new(member, host, port)
            })
            .collect();
        let retry = manager.retry_policy();
        let check_interval = if manager.health_check_interval.is_zero() {
            crate::config::DEFAULT_REPLICA_CHECK_INTERVAL
        } else {
            manager.health_check_interval
        };
        let ban_base = retry.delay.max(Duration::from_millis(100));
        let policy = ReplicaPolicy {
            read_policy: c.read_policy,
            max_lag: c.max_replica_lag,
            read_your_writes: c.read_your_writes,
            fallback: c.replica_fallback,
            check_interval,
            first_check_wait,
            ban_base,
            ban_max: retry.max_delay.max(ban_base),
            log: c.enable_logging,
        };
        Some(ReplicaSet::new(
            self.shared.name.clone(),
            replicas,
            policy,
            probe,
        ))
    }

    /// After a replace or reload changed its configuration: new replicas built from it
    /// replace the old ones (opened first when the connection is open; the old ones drain up
    /// to `deadline`). They are rebuilt on every replace, even when the `replicas:` entries are
    /// the same (a replica inherits the connection's other fields, so most changes reach it),
    /// so their counters start again.
    pub(crate) async fn replace_replicas(
        &self,
        manager: &crate::ManagerConfig,
        deadline: Duration,
    ) {
        // Removed meanwhile: no new replicas for it.
        let next = if self.shared.retired.load(Ordering::Acquire) {
            None
        } else {
            self.build_replicas(manager).map(Arc::new)
        };
        if let Some(next) = &next
            && self.is_connected()
        {
            next.start().await;
        }
        if let Some(old) = self.shared.replicas.swap(next) {
            // The old members are done for good: a `reader()` taken before is `Closed` (take it
            // again), and is not reopened.
            for member in old.members() {
                member.shared.retired.store(true, Ordering::Release);
            }
            old.close(deadline).await;
        }
    }

    /// Where a read through the native layers should go: a usable replica's member
    /// connection, chosen by `read_policy` (use its `postgres()`, `mysql()`,
    /// `native::<T>()` or `sea_orm()`); without replicas, or when none is usable and
    /// `replica_fallback` is `primary`, this connection itself. With `replica_fallback:
    /// error` and no usable replica, an [`Error::Refused`] ([`crate::ErrorKind::Transient`]).
    pub fn reader(&self) -> Result<Connection> {
        self.check_usable(Operation::Access)?;
        match self.shared.replicas.load().as_ref() {
            Some(replicas) => Ok(replicas.reader()?.unwrap_or(self).clone()),
            None => Ok(self.clone()),
        }
    }

    /// Where writes go: this connection (the primary). The counterpart of
    /// [`Connection::reader`], for code that names both sides.
    pub fn writer(&self) -> Connection {
        self.clone()
    }

    /// Its read replicas' member connections (`<name>/replica:<host>:<port>`), in
    /// configuration order; empty without replicas.
    pub fn members(&self) -> Vec<Connection> {
        self.shared
            .replicas
            .load()
            .as_ref()
            .map(|r| r.members().cloned().collect())
            .unwrap_or_default()
    }

    /// Its replicas' stats, each with its routing state (`replica`).
    pub fn member_stats(&self) -> Vec<ConnectionStats> {
        let Some(replicas) = self.shared.replicas.load_full() else {
            return Vec::new();
        };
        replicas
            .replica_stats()
            .into_iter()
            .map(|(member, replica)| {
                let mut stats = member.stats();
                stats.replica = Some(replica);
                stats
            })
            .collect()
    }

    /// The neutral handle's executor on `backend`, with the epoch it belongs to.
    fn bind_sql(&self, backend: &BackendGuard) -> Result<crate::sql::Bound> {
        // Read before the backend: a change in between makes the handle re-bind once more.
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        let Some(generation) = backend.generation() else {
            return Err(self.unsupported("SQL", "the connection is not open"));
        };
        let layer = generation.config.default_orm;
        let executor = match backend.as_deref() {
            Some(b) => b.0.sql(layer).map_err(|reason| {
                let name = match layer {
                    crate::DefaultOrm::SeaOrm => "SeaORM",
                    _ => "SQL",
                };
                self.unsupported(name, reason)
            })?,
            None => return Err(self.unsupported("SQL", "the connection is not open")),
        };
        Ok(crate::sql::Bound {
            epoch,
            context: generation.sql_context.clone(),
            executor,
        })
    }

    /// Classifies an error of this connection's driver the way the manager does (sqlx's,
    /// tiberius's or the MongoDB driver's, anywhere in the source chain): what an application
    /// using the native layer asks before retrying. Errors the driver does not recognise are
    /// [`crate::ErrorKind::Query`].
    pub fn error_kind(&self, error: &(dyn std::error::Error + 'static)) -> crate::ErrorKind {
        if let Some(e) = error.downcast_ref::<Error>() {
            return e.kind();
        }
        crate::driver::classify_chain(error, self.generation().driver.classify)
            .unwrap_or(crate::ErrorKind::Query)
    }

    /// Pool statistics now.
    pub fn stats(&self) -> ConnectionStats {
        let generation = self.generation();
        let gauges = generation
            .backend
            .load()
            .as_ref()
            .map_or(PoolGauges::default(), |b| b.0.gauges());
        // An adopted pool's cap is its own (the configuration it was registered under is only
        // the manager's defaults); a MongoDB client does not say, so it is 0 there.
        let gauges = PoolGauges {
            max_open: if generation.adopted {
                gauges.max_open
            } else {
                generation.settings.max_open
            },
            ..gauges
        };
        let mut stats = ConnectionStats::from_parts(
            self.name(),
            self.kind(),
            self.status(),
            gauges,
            &self.shared.counters,
            Self::listens(&generation),
        );
        stats.routing = self
            .shared
            .replicas
            .load()
            .as_ref()
            .map(|r| r.routing_stats());
        stats
    }

    /// Checks the connection with a ping through its pool, bounded by `connect_timeout`, and
    /// records the outcome in its health. A success slower than half the bound is `Degraded`.
    pub async fn health_check(&self) -> Result<()> {
        let guard = match self.backend(Operation::Ping) {
            Ok(b) => b,
            Err(e) => {
                if !matches!(e, Error::Closed { .. }) {
                    let before = self.shared.health.failed(false, &e);
                    self.log_transition(before);
                }
                return Err(e);
            }
        };
        // Owned from here on: the check awaits, and a guard is for short borrows.
        let Some(open) = arc_swap::Guard::into_inner(guard.0) else {
            return Ok(());
        };
        let (generation, backend) = (open.generation.clone(), open.backend.clone());
        backend.0.trim_idle(generation.settings.max_idle).await;
        let limit = generation.settings.connect_timeout;
        let started = tokio::time::Instant::now();
        let span = generation.tracer.span("health_check");
        let ping = bounded(self.name(), Operation::Ping, limit, backend.0.ping());
        let outcome = crate::hooks::explained(&self.shared.hooks.failures, ping)
            .instrument(span.clone())
            .await;
        crate::trace::record_outcome(&span, &outcome);
        self.shared
            .counters
            .health_seconds
            .observe(started.elapsed());
        self.record_reach(
            outcome
                .as_ref()
                .err()
                .is_none_or(|e| !crate::breaker::is_unreachable(e)),
        );
        let before = match &outcome {
            Ok(()) => self.shared.health.succeeded(started.elapsed() > limit / 2),
            Err(e) => self.shared.health.failed(true, e),
        };
        self.log_transition(before);
        outcome
    }

    fn log_transition(&self, before: Status) {
        let now = self.status();
        if before == now || !self.generation().config.enable_logging {
            return;
        }
        let error = self.shared.health.last_error().unwrap_or_default();
        if now.is_up() {
            tracing::info!(connection = %self.shared.name, from = %before, to = %now, "health changed");
        } else {
            tracing::warn!(connection = %self.shared.name, from = %before, to = %now, %error, "health changed");
        }
    }

    /// Re-establishes the connection: opens the pool with the retry policy if it is not open;
    /// otherwise discards the idle pooled connections (presumed dead after a server restart)
    /// and checks a fresh one. Handles obtained earlier keep working: the pool object stays.
    pub async fn reconnect(&self) -> Result<()> {
        self.check_usable(Operation::Connect)?;
        let generation = self.shared.current.load_full();
        let span = generation.tracer.span("reconnect");
        let outcome = async {
            match generation.backend.load_full() {
                None => self.connect().await.0,
                Some(backend) => {
                    backend.0.discard_idle().await;
                    self.health_check().await
                }
            }
        }
        .instrument(span.clone())
        .await;
        crate::trace::record_outcome(&span, &outcome);
        let counter = if outcome.is_ok() {
            &self.shared.counters.reconnects_ok
        } else {
            &self.shared.counters.reconnects_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if generation.config.enable_logging {
            match &outcome {
                Ok(()) => tracing::info!(connection = %self.shared.name, "reconnected"),
                Err(e) => {
                    tracing::warn!(connection = %self.shared.name, error = %e, "reconnect failed")
                }
            }
        }
        outcome
    }

    /// Whether the health loop should try to connect again: failures back off exponentially
    /// (from `retry_delay` to `retry_max_delay`), so a connection that cannot come up (a wrong
    /// password, a missing directory) is not retried, and logged, on every tick.
    pub(crate) fn reconnect_due(&self) -> bool {
        let health = &self.shared.health;
        let Some(elapsed) = health.since_last_check() else {
            return true;
        };
        let failures = health.report().consecutive_failures.clamp(1, 20);
        let retry = self.generation().retry();
        let backoff = retry
            .delay
            .saturating_mul(1 << (failures - 1))
            .min(retry.max_delay);
        elapsed >= backoff
    }

    /// Opens the pool with the retry policy, unless it is open already. A call while another
    /// connect is in flight waits for that one and reports its outcome (never `Ok` for a
    /// connection that is not connected). Returns the number of attempts this call made.
    pub(crate) async fn connect(&self) -> (Result<()>, u32) {
        if self.is_connected() {
            return (Ok(()), 0);
        }
        if self
            .shared
            .connecting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return (self.wait_for_connect().await, 0);
        }
        // Cleared however this future ends: a connect cancelled mid-way (a caller's timeout, the
        // health loop aborted by close) must not block every later connect.
        let connecting = ClearOnDrop(&self.shared.connecting, &self.shared.connect_done);
        let generation = self.shared.current.load_full();
        if generation.adopted {
            return (
                Err(Error::Unavailable {
                    connection: self.name().to_owned(),
                    operation: Operation::Connect,
                    last_error: Some(
                        "an adopted pool that was closed is not reopened; adopt a new one"
                            .to_owned(),
                    ),
                }),
                0,
            );
        }
        let (outcome, attempts) = self.open(&generation, false).await;
        let outcome = outcome.map(|backend| {
            let backend = Arc::new(backend);
            generation.backend.store(Some(backend.clone()));
            self.publish();
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            self.watch_credentials(&backend);
        });
        if outcome.is_ok()
            && let Some(replicas) = self.shared.replicas.load_full()
        {
            replicas.start().await;
        }
        drop(connecting);
        // A close (or a removal) that ran while this connect was in flight must not leave a
        // pool open.
        if outcome.is_ok() && self.check_usable(Operation::Connect).is_err() {
            self.close(Duration::ZERO).await;
            return (
                Err(Error::closed(&self.shared.name, Operation::Connect)),
                attempts,
            );
        }
        (outcome, attempts)
    }

    /// Opens a pool for `generation` with its retry policy, recording the outcome in the
    /// connection's health, counters, spans and log. Returns it and the attempts made.
    ///
    /// A `replacement` (for a replace, or a reopen for new credentials) that fails leaves the
    /// pool in service, so its failure is not the connection's: its health and circuit
    /// breaker are left as they are.
    async fn open(&self, generation: &Generation, replacement: bool) -> (Result<Backend>, u32) {
        let s = &*self.shared;
        let g = generation;
        let provider = s
            .provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // One source for every attempt: a provider answer or a file read is reused.
        let credentials = Arc::new(CredentialSource::new(
            &s.name,
            &g.config,
            g.driver.default_port,
            provider,
            g.settings.connect_timeout,
        ));
        let spec = OpenSpec {
            name: &s.name,
            config: &g.config,
            settings: &g.settings,
            counters: &s.counters,
            credentials: &credentials,
            hooks: &s.hooks,
        };
        let log = g.config.enable_logging;
        let span = g.tracer.span("connect");
        let attempt = std::sync::atomic::AtomicU32::new(0);
        let (outcome, attempts) = crate::retry::retry(&s.name, &g.retry(), log, || {
            let attempt_span = g.tracer.span("connect_attempt");
            attempt_span.record(
                "dbmanager.attempt",
                attempt.fetch_add(1, Ordering::Relaxed) + 1,
            );
            let spec = &spec;
            let instrumented = attempt_span.clone();
            async move {
                let outcome = (g.driver.open)(spec)
                    .await
                    .map(|pool| Backend(pool, Some(spec.credentials.clone())));
                if let Err(e) = &outcome {
                    s.counters.record_connect_error(e.kind());
                }
                crate::trace::record_outcome(&attempt_span, &outcome);
                outcome
            }
            .instrument(instrumented)
        })
        .instrument(span.clone())
        .await;
        crate::trace::record_outcome(&span, &outcome);
        if !(replacement && outcome.is_err()) {
            self.record_reach(
                outcome
                    .as_ref()
                    .err()
                    .is_none_or(|e| !crate::breaker::is_unreachable(e)),
            );
        }
        match &outcome {
            Ok(_) => {
                let before = s.health.succeeded(false);
                if log {
                    tracing::info!(connection = %s.name, kind = %g.config.kind, attempts, "connected");
                }
                self.log_transition(before);
            }
            Err(e) if replacement => {
                if log {
                    tracing::error!(connection = %s.name, kind = %g.config.kind, attempts, error = %e, "connect failed; the pool in service stays");
                }
            }
            Err(e) => {
                let before = s.health.failed(false, e);
                if log {
                    tracing::error!(connection = %s.name, kind = %g.config.kind, attempts, error = %e, "connect failed");
                }
                self.log_transition(before);
            }
        }
        (outcome, attempts)
    }

    /// Swaps in `generation` with a freshly opened pool, then drains the old pool up to
    /// `deadline`: checkouts in flight finish on the old pool, new ones go to the new pool, and
    /// handles obtained before follow the swap. When the new pool cannot be opened, nothing
    /// changes and the error is returned.
    pub(crate) async fn replace(
        &self,
        generation: Generation,
        deadline: Duration,
    ) -> Result<CloseOutcome> {
        self.check_usable(Operation::Connect)?;
        let backend = Arc::new(self.open(&generation, true).await.0?);
        generation.backend.store(Some(backend.clone()));
        let generation = Arc::new(generation);
        let old = self.shared.current.swap(generation.clone());
        self.publish();
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        // A close (or a removal) that ran while the new pool was opening closed the old
        // generation only: the new pool must not stay open behind it, and the replace fails,
        // changing nothing (a reopen after the close opens the old configuration).
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Err(closed) = self.check_usable(Operation::Connect) {
            let _ = self
                .shared
                .current
                .compare_and_swap(&generation, old.clone());
            self.publish();
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            self.close_generation(&generation, Duration::ZERO, "closed")
                .await;
            self.close_generation(&old, Duration::ZERO, "closed").await;
            return Err(closed);
        }
        // Its breaker's threshold is the new configuration's from now on (not before: a
        // replacement that fails changes nothing).
        self.shared
            .breaker
            .set_threshold(generation.config.circuit_breaker_failures);
        self.shared.listeners.send_modify(|s| s.replaces += 1);
        self.watch_credentials(&backend);
        Ok(self.close_generation(&old, deadline, "replaced").await)
    }

    /// Whether `other` is a handle on this very connection (not another one of the same name).
    pub(crate) fn is(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Sets (or clears) the provider the next pool opening asks for credentials.
    pub(crate) fn set_credential_provider(&self, provider: Option<Arc<dyn CredentialProvider>>) {
        for member in self.members() {
            member.set_credential_provider(provider.clone());
        }
        *self
            .shared
            .provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = provider;
    }

    /// For a backend whose driver keeps the credentials inside its client (MongoDB), reopens
    /// the pool when they change: a background task checks the source every
    /// [`crate::credentials::POLL`] and, when the password file or the provider's answer
    /// changed, replaces the generation with one opened on the new credentials (the old pool
    /// drains for up to [`REOPEN_DRAIN`]). A reopen that fails (the server does not take the new
    /// password yet) leaves the old pool in service and is tried again with backoff. The task
    /// ends when this backend is no longer the connection's.
    fn watch_credentials(&self, backend: &Arc<Backend>) {
        let Some(source) = backend.1.clone().filter(|s| s.wants_reopen()) else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let watched = Arc::downgrade(backend);
        let opened_with = source.version();
        tokio::spawn(async move {
            let mut wait = crate::credentials::POLL;
            // A reopen failed: try again even though the source reads the same now.
            let mut pending = false;
            loop {
                tokio::time::sleep(wait).await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let conn = Connection { shared };
                let generation = conn.shared.current.load_full();
                let current = generation
                    .backend
                    .load()
                    .as_ref()
                    .is_some_and(|b| std::ptr::eq(Arc::as_ptr(b), watched.as_ptr()));
                if !current || conn.check_usable(Operation::Connect).is_err() {
                    return;
                }
                if !pending && !source.may_have_changed().await {
                    continue;
                }
                match source.current().await {
                    Ok((_, version)) if version != opened_with => {}
                    _ => {
                        pending = false;
                        continue;
                    }
                }
                match conn.reopen(&generation, REOPEN_DRAIN).await {
                    // Reopened (the new backend has its own watcher), or replaced meanwhile by
                    // the application: either way this backend is done.
                    Ok(reopened) => {
                        if reopened && generation.config.enable_logging {
                            tracing::info!(connection = %conn.shared.name, "reopened with new credentials");
                        }
                        return;
                    }
                    Err(e) => {
                        pending = true;
                        wait = (wait * 2).min(REOPEN_MAX_BACKOFF);
                        if generation.config.enable_logging {
                            tracing::warn!(connection = %conn.shared.name, error = %e, "credentials changed; reopening failed, the old pool stays in service");
                        }
                    }
                }
            }
        });
    }

    /// Opens `expected`'s configuration again (for new credentials) and swaps it in, unless
    /// `expected` is no longer the current generation by then (an application's `replace`
    /// won): the pool just opened is closed instead and `false` returned. The old pool drains
    /// up to `deadline`.
    async fn reopen(&self, expected: &Arc<Generation>, deadline: Duration) -> Result<bool> {
        self.check_usable(Operation::Connect)?;
        let next = Generation::new(
            expected.driver,
            expected.config.clone(),
            expected.settings,
            expected.retry(),
            &self.shared.counters,
            &self.shared.breaker,
            &self.shared.hooks,
        );
        let backend = Arc::new(self.open(&next, true).await.0?);
        next.backend.store(Some(backend.clone()));
        let swapped = {
            let previous = self
                .shared
                .current
                .compare_and_swap(expected, Arc::new(next));
            std::ptr::eq(Arc::as_ptr(&*previous), Arc::as_ptr(expected))
        };
        if !swapped {
            close_within(backend.0.as_ref(), Duration::ZERO).await;
            return Ok(false);
        }
        self.publish();
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.watch_credentials(&backend);
        self.close_generation(expected, deadline, "reopened").await;
        Ok(true)
    }

    /// Takes the connection out of service for good (its manager removed it): every later use
    /// is `Closed`; checkouts in flight get until `deadline`.
    pub(crate) async fn retire(&self, deadline: Duration) -> CloseOutcome {
        self.shared.retired.store(true, Ordering::Release);
        // Its read replicas go with it: a read routed to one is `Closed` too, and a member
        // reached through `members()` is not reopened.
        for member in self.members() {
            member.shared.retired.store(true, Ordering::Release);
        }
        self.close(deadline).await
    }

    /// Waits for the connect in flight to end; its outcome is whether the pool is open now.
    async fn wait_for_connect(&self) -> Result<()> {
        loop {
            let done = self.shared.connect_done.notified();
            tokio::pin!(done);
            // Registered before the flag is read, so a wake-up between the two is not lost.
            done.as_mut().enable();
            if !self.shared.connecting.load(Ordering::Acquire) {
                break;
            }
            done.await;
        }
        if self.is_connected() {
            return Ok(());
        }
        if self.shared.manager_closed.load(Ordering::Acquire) {
            return Err(Error::closed(self.name(), Operation::Connect));
        }
        Err(Error::Unavailable {
            connection: self.name().to_owned(),
            operation: Operation::Connect,
            last_error: self.shared.health.last_error(),
        })
    }

    /// Closes the pool (if open), waiting up to `deadline` for checked-out connections.
    pub(crate) async fn close(&self, deadline: Duration) -> CloseOutcome {
        // Pairs with the fence in `replace`: either this sees the new generation, or the
        // replace sees the closed flag and closes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        let generation = self.shared.current.load_full();
        let replicas = self.shared.replicas.load_full();
        let (mut outcome, (), members) = tokio::join!(
            self.close_generation(&generation, deadline, "closed"),
            self.close_listeners(deadline),
            async {
                match &replicas {
                    Some(replicas) => replicas.close(deadline).await,
                    None => Vec::new(),
                }
            }
        );
        outcome.members = members;
        self.shared.health.closed();
        outcome
    }

    async fn close_generation(
        &self,
        generation: &Generation,
        deadline: Duration,
        what: &str,
    ) -> CloseOutcome {
        let Some(backend) = generation.backend.swap(None) else {
            return CloseOutcome::default();
        };
        self.publish();
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        // Connections closed by shutdown are not idle-time closes.
        let open = backend.0.gauges().open;
        self.shared
            .counters
            .closed_on_close
            .fetch_add(u64::from(open), Ordering::Relaxed);
        let still_in_use = close_within(backend.0.as_ref(), deadline).await;
        if generation.config.enable_logging {
            tracing::info!(connection = %self.shared.name, still_in_use, "{what}");
        }
        CloseOutcome {
            still_in_use,
            members: Vec::new(),
        }
    }
}

impl crate::replicas::Member for Connection {
    fn member_name(&self) -> &str {
        self.name()
    }

    fn open(&self) -> futures_util::future::BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.connect().await.0 })
    }

    fn ping(&self) -> futures_util::future::BoxFuture<'_, Result<()>> {
        Box::pin(self.health_check())
    }

    fn handle(&self) -> Result<Database> {
        self.database()
    }

    fn shut(&self, deadline: Duration) -> futures_util::future::BoxFuture<'_, u32> {
        Box::pin(async move { self.close(deadline).await.still_in_use })
    }

    fn saturated(&self) -> bool {
        let generation = self.generation();
        let in_use = generation.backend.load().as_ref().map_or(0, |b| {
            let gauges = b.0.gauges();
            gauges.open.saturating_sub(gauges.idle)
        });
        in_use >= generation.settings.max_open
    }
}

/// A handle's source is the connection's shared state itself (what a `Connection` clones), so
/// taking a handle allocates nothing for it.
impl crate::sql::ExecutorSource for Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn bind(self: Arc<Self>) -> Result<crate::sql::Bound> {
        let connection = Connection { shared: self };
        let backend = connection.sql_backend()?;
        connection.bind_sql(&backend)
    }

    fn router(&self) -> Option<Arc<dyn crate::sql::ReadRouter>> {
        // A guard load; an `Arc` is cloned only for a connection that has replicas.
        let replicas = self.replicas.load();
        replicas
            .as_ref()
            .map(|r| r.clone() as Arc<dyn crate::sql::ReadRouter>)
    }
}

impl crate::listen::ListenSource for Connection {
    fn current(&self) -> crate::listen::ListenSettings {
        let generation = self.generation();
        let open = generation
            .backend
            .load()
            .as_ref()
            .and_then(|backend| backend.1.clone());
        let credentials = open.unwrap_or_else(|| {
            Arc::new(CredentialSource::new(
                &self.shared.name,
                &generation.config,
                generation.driver.default_port,
                self.shared
                    .provider
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
                generation.settings.connect_timeout,
            ))
        });
        crate::listen::ListenSettings {
            config: generation.config.clone(),
            settings: generation.settings,
            retry: generation.retry(),
            credentials,
        }
    }

    fn is_usable(&self) -> bool {
        self.check_usable(Operation::Listen).is_ok()
    }
}
