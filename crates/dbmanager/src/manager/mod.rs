//! The manager: the registry of named connections, the default connection, connect and close.
//! Changing the set of connections at runtime is in [`topology`].

mod topology;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustc_hash::FxHashMap;

use crate::config::{ConfigProblems, EnvSource, ManagerConfig};
use crate::connection::Connection;
use crate::credentials::CredentialProvider;
use crate::error::{Error, Operation, Result};
use crate::sql::Database;
use crate::stats::ManagerStats;

/// What to do when some connections fail to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectPolicy {
    /// Any failure closes every pool this call opened and returns all failures (the default).
    #[default]
    FailFast,
    /// Keep what connected; failed connections stay unavailable (for the health loop or
    /// [`Manager::connect`] again to retry).
    Partial,
}

/// What a connect call did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ConnectReport {
    /// Connections opened by this call, sorted.
    pub connected: Vec<String>,
    /// Connections that failed, with their errors, sorted by name.
    pub failed: Vec<(String, Error)>,
    /// Attempts made per connection by this call.
    pub attempts: HashMap<String, u32>,
}

/// What a close call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Connections that still had checked-out connections at the deadline, with how many; a
    /// read replica under its member name (`primary/replica:db-2:5432`).
    pub still_in_use: Vec<(String, u32)>,
}

pub use topology::ReloadReport;

/// Name lookup table; replaced whole (copy on write) when connections are added or removed.
#[derive(Clone, Default)]
struct Registry {
    /// Names are configuration, not attacker input: a fast non-DoS-resistant hash is fine.
    by_name: FxHashMap<Box<str>, Connection>,
    names: Vec<String>,
}

/// A manager held without keeping it alive (the metrics collector holds one).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct WeakManager(std::sync::Weak<Inner>);

impl WeakManager {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn upgrade(&self) -> Option<Manager> {
        self.0.upgrade().map(|inner| Manager { inner })
    }
}

/// Owns every named connection of an application.
///
/// Cloning is cheap and every clone is the same manager.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The configuration now: what the manager was built from, changed by add, remove,
    /// replace and reload.
    config: ArcSwap<ManagerConfig>,
    /// Read lock-free on every lookup (an `arc_swap` load, no reference count, no allocation);
    /// writers swap in a new table.
    registry: ArcSwap<Registry>,
    /// Chooses each connection's driver (the registry of drivers; tests substitute the fake).
    resolve: fn(&crate::ConnectionConfig) -> Option<&'static crate::driver::Driver>,
    default: ArcSwapOption<Connection>,
    closed: Arc<AtomicBool>,
    /// Closes in flight: a connect meanwhile is refused rather than reopening a closing
    /// manager.
    closing: std::sync::atomic::AtomicU32,
    /// The background health loop, while one runs. Locked only to swap the handle.
    health_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Credential providers by connection name, also for connections added later. Locked only
    /// to read or change the table.
    providers: std::sync::Mutex<FxHashMap<String, Arc<dyn CredentialProvider>>>,
    /// Lifecycle hooks registered by connection name: a connection added later (by `add` or a
    /// reload) under that name gets them before it connects.
    hooks: ArcSwap<HashMap<String, crate::hooks::Hooks>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.health_task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("connections", &self.connections())
            .field(
                "default",
                &self
                    .inner
                    .default
                    .load()
                    .as_ref()
                    .map(|c| c.name().to_owned()),
            )
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Manager {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakManager {
        WeakManager(Arc::downgrade(&self.inner))
    }

    /// Validates `config` and builds the registry. Nothing connects until [`Manager::connect`].
    pub fn new(config: ManagerConfig) -> Result<Self> {
        config.validate()?;
        Self::from_valid(config)
    }

    /// Builds the registry from a config validated already.
    fn from_valid(config: ManagerConfig) -> Result<Self> {
        Self::with_drivers(config, crate::registry::driver)
    }

    /// Builds the registry with `resolve` choosing each connection's driver (tests put the fake
    /// driver behind real backend types this way).
    pub(crate) fn with_drivers(
        config: ManagerConfig,
        resolve: fn(&crate::ConnectionConfig) -> Option<&'static crate::driver::Driver>,
    ) -> Result<Self> {
        let closed = Arc::new(AtomicBool::new(false));
        let mut by_name: FxHashMap<Box<str>, Connection> = FxHashMap::default();
        for c in config.connections.values() {
            let conn = build_connection(&config, c, resolve, &closed)?;
            by_name.insert(Box::from(c.name.as_str()), conn);
        }
        let names = config.connections.keys().cloned().collect();
        let default = config
            .default_connection
            .as_deref()
            .and_then(|name| by_name.get(name).cloned());
        Ok(Self {
            inner: Arc::new(Inner {
                config: ArcSwap::from_pointee(config),
                registry: ArcSwap::from_pointee(Registry { by_name, names }),
                resolve,
                default: ArcSwapOption::from_pointee(default),
                closed,
                closing: std::sync::atomic::AtomicU32::new(0),
                health_task: std::sync::Mutex::new(None),
                providers: std::sync::Mutex::new(FxHashMap::default()),
                hooks: ArcSwap::default(),
            }),
        })
    }

    /// Parses YAML (root key `dbmanager:`) with the process environment's overrides.
    pub fn from_yaml_str(yaml: &str) -> Result<Self> {
        Self::from_valid(ManagerConfig::from_yaml_str(yaml)?)
    }

    /// Parses YAML with overrides and `${VAR}` values from `env`.
    pub fn from_yaml_str_with_env(yaml: &str, env: &EnvSource) -> Result<Self> {
        Self::from_valid(ManagerConfig::from_yaml_str_with_env(yaml, env)?)
    }

    /// Reads a YAML file with the process environment's overrides.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_valid(ManagerConfig::from_file(path)?)
    }

    /// The configuration now: the one the manager was built from, with every add, remove,
    /// replace, reload and `set_default` applied.
    pub fn config(&self) -> Arc<ManagerConfig> {
        self.inner.config.load_full()
    }

    /// Makes `provider` the source of the credentials of the connection `name`, in place of
    /// its `password` / `password_file`: it is asked when the pool opens and again whenever a
    /// new physical connection needs credentials and its last answer is about to expire (see
    /// [`Credentials::expires_at`](crate::Credentials::expires_at)) or was refused by the server.
    ///
    /// It applies from the next time the connection's pool is opened: set it before
    /// [`Manager::connect`] (or before [`Manager::add`] for a connection added later; the
    /// provider is kept by name, so a reload that adds or replaces the connection uses it too).
    /// Setting it for an open connection takes effect at its next replace or reload change.
    /// Replaces a provider set before.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dbmanager::{Credentials, CredentialRequest, Manager, ManagerConfig, ConnectionConfig, DatabaseType};
    ///
    /// let mut db = ConnectionConfig::new("main", DatabaseType::Postgres);
    /// db.host = Some("db.internal".into());
    /// db.database = Some("app".into());
    /// db.user = Some("app".into());
    /// let manager = Manager::new(ManagerConfig::default().with_connection(db))?;
    /// manager.set_credential_provider("main", |request: CredentialRequest| async move {
    ///     // Ask a vault or a token service here.
    ///     let _ = request.host;
    ///     Ok(Credentials::password("fetched").expires_in(Duration::from_secs(900)))
    /// });
    /// # Ok::<(), dbmanager::Error>(())
    /// ```
    pub fn set_credential_provider(&self, name: &str, provider: impl CredentialProvider) {
        let provider: Arc<dyn CredentialProvider> = Arc::new(provider);
        self.inner
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), provider.clone());
        if let Ok(conn) = self.get(name) {
            conn.set_credential_provider(Some(provider));
        }
    }

    /// The provider set for `name`, if any.
    fn credential_provider(&self, name: &str) -> Option<Arc<dyn CredentialProvider>> {
        self.inner
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Connects every connection in parallel, fail-fast: on any failure the pools this call
    /// opened are closed again and the error lists each failed connection with its cause.
    pub async fn connect(&self) -> Result<()> {
        self.connect_with(ConnectPolicy::FailFast).await.map(|_| ())
    }

    /// Connects every connection not yet connected, in parallel, under `policy`.
    ///
    /// A closed manager is reopened; while a [`Manager::close`] is in flight, connecting fails
    /// with [`Error::Closed`] instead. A connection another call is connecting already is
    /// waited for, and reported as that call's outcome. With [`ConnectPolicy::Partial`] this
    /// returns `Ok` with the failures in the report.
    pub async fn connect_with(&self, policy: ConnectPolicy) -> Result<ConnectReport> {
        let closing = || self.inner.closing.load(Ordering::Acquire) > 0;
        if closing() {
            return Err(Error::closed("*", Operation::Connect));
        }
        self.inner.closed.store(false, Ordering::Release);
        // A close that started between the check and the store wins.
        if closing() {
            self.inner.closed.store(true, Ordering::Release);
            return Err(Error::closed("*", Operation::Connect));
        }
        let connections = self.connections();
        let outcomes = futures_util::future::join_all(connections.iter().map(|c| async move {
            let was_connected = c.is_connected();
            let (outcome, attempts) = c.connect().await;
            (c, was_connected, outcome, attempts)
        }))
        .await;

        let mut report = ConnectReport::default();
        let mut opened = Vec::new();
        for (conn, was_connected, outcome, attempts) in outcomes {
            report.attempts.insert(conn.name().to_owned(), attempts);
            match outcome {
                Ok(()) if !was_connected && attempts > 0 => {
                    report.connected.push(conn.name().to_owned());
                    opened.push(conn.clone());
                }
                Ok(()) => {}
                Err(e) => report.failed.push((conn.name().to_owned(), e)),
            }
        }
        if report.failed.is_empty() || policy == ConnectPolicy::Partial {
            self.start_health_loop();
            return Ok(report);
        }
        let deadline = Duration::from_secs(5);
        futures_util::future::join_all(opened.iter().map(|c| c.close(deadline))).await;
        Err(Error::ConnectFailed {
            failures: report.failed.into_iter().map(|(_, e)| e).collect(),
        })
    }

    fn check_open(&self, name: &str, operation: Operation) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::closed(name, operation));
        }
        Ok(())
    }

    /// Runs `f` on the connection named `name` without cloning its handle.
    fn lookup<T>(&self, name: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.check_open(name, Operation::Access)?;
        let registry = self.inner.registry.load();
        match registry.by_name.get(name) {
            Some(conn) => f(conn),
            None => Err(Error::NotFound {
                name: name.to_owned(),
                known: registry.names.clone(),
            }),
        }
    }

    /// The connection named `name`. Lock-free; allocates only on error.
    pub fn get(&self, name: &str) -> Result<Connection> {
        self.lookup(name, |c| Ok(c.clone()))
    }

    /// The backend-neutral handle of the connection named `name`.
    pub fn database(&self, name: &str) -> Result<Database> {
        self.lookup(name, Connection::database)
    }

    /// The PostgreSQL pool of the connection named `name` (the shortest path to it).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(&self, name: &str) -> Result<sqlx::PgPool> {
        self.lookup(name, Connection::postgres)
    }

    /// A LISTEN/NOTIFY listener on the connection named `name` (PostgreSQL): see
    /// [`Connection::listener`] and [`crate::Listener`].
    pub async fn listener(&self, name: &str) -> Result<crate::Listener> {
        self.get(name)?.listener().await
    }

    /// The SQLite pool of the connection named `name`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(&self, name: &str) -> Result<sqlx::SqlitePool> {
        self.lookup(name, Connection::sqlite)
    }

    /// The SeaORM connection of the connection named `name`.
    #[cfg(feature = "sea-orm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
    pub fn sea_orm(&self, name: &str) -> Result<sea_orm::DatabaseConnection> {
        self.lookup(name, Connection::sea_orm)
    }

    /// The default connection.
    pub fn default_connection(&self) -> Result<Connection> {
        self.check_open("*", Operation::Access)?;
        self.inner
            .default
            .load_full()
            .map(|c| (*c).clone())
            .ok_or_else(|| Error::NoDefault {
                known: self.inner.registry.load().names.clone(),
            })
    }

    /// The default connection's default access layer (the reference's `GetDefaultDatabase`).
    pub fn default_database(&self) -> Result<Database> {
        self.default_connection()?.database()
    }

    /// Makes `name` the default connection; it must exist. [`Manager::config`] says so from
    /// then on, so a reload built from it keeps this default.
    pub fn set_default(&self, name: &str) -> Result<()> {
        let conn = self.get(name)?;
        self.inner.default.store(Some(Arc::new(conn)));
        self.inner.config.rcu(|c| {
            let mut next = ManagerConfig::clone(c);
            next.default_connection = Some(name.to_owned());
            next
        });
        Ok(())
    }

    /// All connections, sorted by name.
    pub fn connections(&self) -> Vec<Connection> {
        let registry = self.inner.registry.load();
        registry
            .names
            .iter()
            .filter_map(|n| registry.by_name.get(n.as_str()).cloned())
            .collect()
    }

    /// The connections whose tag `key` is `value`, sorted by name.
    pub fn connections_tagged(&self, key: &str, value: &str) -> Vec<Connection> {
        self.connections()
            .into_iter()
            .filter(|c| c.tags().get(key).is_some_and(|v| v == value))
            .collect()
    }

    /// Registers lifecycle hooks ([`crate::Hooks`]) for the connection `name`, replacing any
    /// registered before (an empty `Hooks` removes them).
    ///
    /// They are installed in the connection's pool, so they apply to every layer on it, and they
    /// stay across [`Connection::reconnect`], [`Manager::replace`] and [`Manager::reload`]. A
    /// pool open already calls them from its next event on (its existing connections do not go
    /// through after-connect again): register them before [`Manager::connect`] to cover every
    /// connection. The name need not exist yet: a connection added later under it (by
    /// [`Manager::add`] or a reload) gets them before it connects, and a removed one keeps them
    /// registered for a later add.
    ///
    /// Fails with [`crate::ErrorKind::Unsupported`] when `name` is a MongoDB connection (its
    /// driver offers no per-connection callbacks) or a pool the application adopted (built with
    /// its own callbacks); a MongoDB connection added later under a name with hooks fails to
    /// connect with that error.
    pub fn set_hooks(&self, name: &str, hooks: crate::hooks::Hooks) -> Result<()> {
        if !hooks.is_empty()
            && let Ok(conn) = self.get(name)
        {
            let reason = if conn.is_adopted() {
                Some("an adopted pool keeps the callbacks it was built with")
            } else if conn.kind() == crate::DatabaseType::Mongodb {
                Some(crate::hooks::NO_MONGODB_HOOKS)
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::Unsupported {
                    connection: name.to_owned(),
                    layer: "lifecycle hooks",
                    backend: conn.kind(),
                    reason,
                });
            }
        }
        self.inner.hooks.rcu(|map| {
            let mut next = HashMap::clone(map);
            if hooks.is_empty() {
                next.remove(name);
            } else {
                next.insert(name.to_owned(), hooks.clone());
            }
            next
        });
        if let Ok(conn) = self.get(name) {
            conn.set_hooks(hooks);
        }
        Ok(())
    }

    /// The lifecycle hooks registered for `name`, if any.
    pub fn hooks(&self, name: &str) -> Option<crate::hooks::Hooks> {
        self.inner.hooks.load().get(name).cloned()
    }

    /// The hooks registered for `name` installed on a connection about to connect.
    fn install_hooks(&self, conn: &Connection) {
        if let Some(hooks) = self.hooks(conn.name()) {
            conn.set_hooks(hooks);
        }
    }

    /// The connection names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.inner.registry.load().names.clone()
    }

    /// Statistics of the manager and each connection.
    pub fn stats(&self) -> ManagerStats {
        // Read replicas are listed as members of their connection (`primary/replica:db-2:5432`).
        let connections: std::collections::BTreeMap<_, _> = self
            .connections()
            .iter()
            .flat_map(|c| std::iter::once(c.stats()).chain(c.member_stats()))
            .map(|s| (s.name.clone(), s))
            .collect();
        // Up is healthy or degraded, the same rule as the `dbmanager_connection_status` gauge
        // and readiness: a degraded connection serves.
        let healthy = connections.values().filter(|s| s.status.is_up()).count();
        ManagerStats {
            total: connections.len(),
            healthy,
            unhealthy: connections.len() - healthy,
            connections,
        }
    }

    /// Checks every connection in parallel; returns the failures, sorted by name.
    pub async fn health_check(&self) -> Vec<(String, Error)> {
        let connections = self.connections();
        let outcomes =
            futures_util::future::join_all(connections.iter().map(|c| c.health_check())).await;
        connections
            .iter()
            .zip(outcomes)
            .filter_map(|(c, r)| r.err().map(|e| (c.name().to_owned(), e)))
            .collect()
    }

    /// Re-establishes one connection (see [`Connection::reconnect`]).
    pub async fn reconnect(&self, name: &str) -> Result<()> {
        self.get(name)?.reconnect().await
    }

    /// Starts the background health loop unless it runs already or the interval is `0s`.
    fn start_health_loop(&self) {
        let config = self.inner.config.load();
        let interval = config.health_check_interval;
        if interval.is_zero() {
            return;
        }
        let Ok(mut slot) = self.inner.health_task.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let auto_reconnect = config.enable_auto_reconnect;
        *slot = Some(tokio::spawn(async move {
            loop {
                // Up to 10% jitter so that many instances do not ping in step.
                let jitter = interval.mul_f64(rand::random::<f64>() * 0.1);
                tokio::time::sleep(interval + jitter).await;
                let connections = match weak.upgrade() {
                    Some(inner) if !inner.closed.load(Ordering::Acquire) => {
                        Manager { inner }.connections()
                    }
                    _ => return,
                };
                health_round(connections, auto_reconnect).await;
            }
        }));
    }

    fn stop_health_loop(&self) {
        if let Ok(mut slot) = self.inner.health_task.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }

    /// Whether [`Manager::close`] was called (and no connect since).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes every connection in parallel. New checkouts fail with [`Error::Closed`] at once;
    /// checked-out connections get until `deadline` to come back, then are closed anyway and
    /// reported. Idempotent.
    pub async fn close(&self, deadline: Duration) -> CloseReport {
        self.inner.closing.fetch_add(1, Ordering::AcqRel);
        // Decremented however this future ends (a caller may drop it at its own deadline).
        let _closing = Decrement(&self.inner.closing);
        self.inner.closed.store(true, Ordering::Release);
        self.stop_health_loop();
        let connections = self.connections();
        let outcomes =
            futures_util::future::join_all(connections.iter().map(|c| c.close(deadline))).await;
        // Each connection, then its read replicas (`primary/replica:db-2:5432`).
        CloseReport {
            still_in_use: connections
                .iter()
                .zip(outcomes)
                .flat_map(|(c, o)| {
                    std::iter::once((c.name().to_owned(), o.still_in_use)).chain(o.members)
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// A connection of `config`, its driver chosen by `resolve`.
fn build_connection(
    config: &ManagerConfig,
    c: &crate::ConnectionConfig,
    resolve: fn(&crate::ConnectionConfig) -> Option<&'static crate::driver::Driver>,
    closed: &Arc<AtomicBool>,
) -> Result<Connection> {
    let driver = driver_for(c, resolve)?;
    let settings = config.pool_settings(c);
    let connection = Connection::new(
        driver,
        c.clone(),
        settings,
        config.retry_policy(),
        closed.clone(),
    );
    connection.set_replicas(config);
    Ok(connection)
}

/// Validation reports a backend missing from this build; this is its backstop.
fn driver_for(
    c: &crate::ConnectionConfig,
    resolve: fn(&crate::ConnectionConfig) -> Option<&'static crate::driver::Driver>,
) -> Result<&'static crate::driver::Driver> {
    resolve(c).ok_or_else(|| {
        let mut problems = ConfigProblems::default();
        let (key, feature) = match c.driver {
            Some(d) => ("driver", d.feature()),
            None => ("type", c.kind.as_str()),
        };
        problems.push(
            format!("connections.{}.{key}", c.name),
            format!("this build of dbmanager does not include the `{feature}` cargo feature"),
        );
        Error::Config(problems)
    })
}

/// Decrements the counter when dropped.
struct Decrement<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One pass of the health loop: every connection checked in parallel, each bounded by its own
/// timeout; failed or never-connected ones re-established when auto-reconnect is on.
async fn health_round(connections: Vec<Connection>, auto_reconnect: bool) {
    futures_util::future::join_all(connections.into_iter().map(|c| async move {
        if c.is_connected() {
            if c.health_check().await.is_err() && auto_reconnect {
                let _ = c.reconnect().await;
            }
        } else if auto_reconnect {
            if c.reconnect_due() {
                let _ = c.reconnect().await;
            }
        } else {
            // Stays down, but its health keeps being reported.
            let _ = c.health_check().await;
        }
    }))
    .await;
}
