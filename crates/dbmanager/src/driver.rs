//! The seam between the manager and a backend: everything the core knows about any database.
//!
//! A backend is a [`Driver`] descriptor (static facts plus `open`), the [`BackendPool`] that
//! `open` returns, and, for SQL backends, the neutral handle's `SqlExecutor` (in `sql`). The
//! registry lists the drivers compiled in; nothing above this module names a backend. The shapes follow deadpool's `managed::Manager`, bb8's `ManageConnection` and sqlx's
//! `AnyDriver` table.

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{
    ConnectionConfig, ConnectionProblems, DatabaseType, DefaultOrm, PoolSettings, PostgresDriver,
};
use crate::credentials::CredentialSource;
use crate::error::{ErrorKind, Result};
use crate::hooks::{HookRunner, HookState};
use crate::sql::SqlExecutor;
use crate::stats::{PoolCounters, PoolGauges};

/// The optional connection fields a backend may read; validation rejects the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Host,
    Hosts,
    TargetSessionAttrs,
    Port,
    User,
    Password,
    PasswordFile,
    Database,
    Sslmode,
    Schema,
    Filepath,
    AuthSource,
    ReplicaSet,
    ReadPreference,
    TrustServerCertificate,
    InitSql,
    Pooler,
    Driver,
}

impl Field {
    pub(crate) const ALL: [Field; 18] = [
        Field::Host,
        Field::Hosts,
        Field::TargetSessionAttrs,
        Field::Port,
        Field::User,
        Field::Password,
        Field::PasswordFile,
        Field::Database,
        Field::Sslmode,
        Field::Schema,
        Field::Filepath,
        Field::AuthSource,
        Field::ReplicaSet,
        Field::ReadPreference,
        Field::TrustServerCertificate,
        Field::InitSql,
        Field::Pooler,
        Field::Driver,
    ];

    /// The YAML key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Field::Host => "host",
            Field::Hosts => "hosts",
            Field::TargetSessionAttrs => "target_session_attrs",
            Field::Port => "port",
            Field::User => "user",
            Field::Password => "password",
            Field::PasswordFile => "password_file",
            Field::Database => "database",
            Field::Sslmode => "sslmode",
            Field::Schema => "schema",
            Field::Filepath => "filepath",
            Field::AuthSource => "auth_source",
            Field::ReplicaSet => "replica_set",
            Field::ReadPreference => "read_preference",
            Field::TrustServerCertificate => "trust_server_certificate",
            Field::InitSql => "init_sql",
            Field::Pooler => "pooler",
            Field::Driver => "driver",
        }
    }

    /// Whether the connection sets it.
    pub(crate) fn is_set(self, c: &ConnectionConfig) -> bool {
        match self {
            Field::Host => c.host.is_some(),
            Field::Hosts => c.hosts.is_some(),
            Field::TargetSessionAttrs => c.target_session_attrs.is_some(),
            Field::Port => c.port.is_some(),
            Field::User => c.user.is_some(),
            Field::Password => c.password.is_some(),
            Field::PasswordFile => c.password_file.is_some(),
            Field::Database => c.database.is_some(),
            Field::Sslmode => c.sslmode.is_some(),
            Field::Schema => c.schema.is_some(),
            Field::Filepath => c.filepath.is_some(),
            Field::AuthSource => c.auth_source.is_some(),
            Field::ReplicaSet => c.replica_set.is_some(),
            Field::ReadPreference => c.read_preference.is_some(),
            Field::TrustServerCertificate => c.trust_server_certificate,
            Field::InitSql => !c.init_sql.is_empty(),
            Field::Pooler => c.pooler != crate::config::Pooler::None,
            Field::Driver => c.driver.is_some(),
        }
    }
}

/// Everything a driver needs to open a connection's pool.
pub(crate) struct OpenSpec<'a> {
    pub name: &'a Arc<str>,
    pub config: &'a ConnectionConfig,
    pub settings: &'a PoolSettings,
    pub counters: &'a Arc<PoolCounters>,
    /// Where every physical connection of the pool gets its user and password (or token): the
    /// backend asks it at open and again for new connections (see `credentials`).
    pub credentials: &'a Arc<CredentialSource>,
    /// The application's lifecycle hooks for this connection.
    pub hooks: &'a Arc<HookState>,
}

impl OpenSpec<'_> {
    /// What a backend calls to run the connection's lifecycle hooks.
    pub(crate) fn hook_runner(&self) -> HookRunner {
        HookRunner::new(
            self.hooks.clone(),
            self.name.clone(),
            self.config.kind,
            self.settings.connect_timeout,
        )
    }
}

/// Opens a pool: one connect attempt (the manager retries).
pub(crate) type OpenFn =
    for<'a> fn(&'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>>;

/// A backend's descriptor: its static facts and how to open it.
pub(crate) struct Driver {
    /// The `type` it serves.
    pub kind: DatabaseType,
    /// The `driver` value that selects it among several drivers of its `type` (`None`: the
    /// type's only driver).
    pub variant: Option<PostgresDriver>,
    /// OpenTelemetry `db.system.name`.
    pub system_name: &'static str,
    /// The server's default port (`None` for embedded databases).
    pub default_port: Option<u16>,
    /// Prefixes a `dsn` must start with (empty: any string, e.g. ADO.NET).
    pub dsn_schemes: &'static [&'static str],
    /// Optional fields it reads; setting another is a configuration problem.
    pub fields: &'static [Field],
    /// Fields required when no `dsn` is given.
    pub required: &'static [Field],
    /// Why `default_orm: sea-orm` cannot be used, if it cannot.
    pub no_sea_orm: Option<&'static str>,
    /// Backend-specific configuration checks beyond the above.
    pub check: fn(&ConnectionConfig, &mut ConnectionProblems<'_>),
    /// Classifies one of its driver's errors (found anywhere in the source chain).
    pub classify: fn(&(dyn std::error::Error + 'static)) -> Option<ErrorKind>,
    /// Opens the pool.
    pub open: OpenFn,
    /// Its LISTEN/NOTIFY listener, if the backend has one.
    pub listen: Option<&'static crate::listen::ListenDriver>,
    /// How a read replica's lag is measured; `None`: the backend has no read replicas.
    pub replica_lag: Option<&'static LagProbe>,
}

/// How far behind its primary a replica is, asked of the replica itself at each health check.
pub(crate) struct LagProbe {
    /// Tried in order; the first one the server accepts is used (MySQL 8.0.22+ and MariaDB
    /// 10.5+ know `SHOW REPLICA STATUS`, older servers only `SHOW SLAVE STATUS`).
    pub statements: &'static [&'static str],
    /// The lag from the statement's first row (`None`: no row); `Err` when the server cannot
    /// say (replication stopped or broken), which counts as too far behind.
    pub read: fn(Option<&crate::sql::Row>) -> std::result::Result<Duration, &'static str>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("kind", &self.kind).finish()
    }
}

/// What the manager does with any open pool.
///
/// Every method is required: a backend that has nothing to do says so in its own code, where a
/// reader of that backend sees it.
pub(crate) trait BackendPool: Send + Sync + 'static {
    /// Pool sizes now; no side effect on the pool.
    fn gauges(&self) -> PoolGauges;

    /// Checks one pooled connection out and pings the server through it.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// Closes the idle pooled connections (presumed dead after a server restart).
    fn discard_idle(&self) -> BoxFuture<'_, ()>;

    /// Closes idle connections beyond `max_idle`.
    fn trim_idle(&self, max_idle: u32) -> BoxFuture<'_, ()>;

    /// Closes the pool, waiting for checked-out connections until the caller's deadline
    /// (the future is dropped then); returns when every connection is closed.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Closes without waiting, after the deadline passed.
    fn close_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// A typed access layer (`sqlx::PgPool`, `sea_orm::DatabaseConnection`, ...), if offered.
    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)>;

    /// The executor behind the neutral handle on `layer`, or why there is none.
    fn sql(&self, layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str>;
}

/// Closes `pool` within `deadline`; returns how many connections were still checked out.
pub(crate) async fn close_within(pool: &dyn BackendPool, deadline: Duration) -> u32 {
    match tokio::time::timeout(deadline, pool.close()).await {
        Ok(()) => 0,
        Err(_) => {
            let g = pool.gauges();
            let in_use = g.open.saturating_sub(g.idle).max(1);
            pool.close_now().await;
            in_use
        }
    }
}

/// Finds the first error in `e`'s source chain that `classify` recognises.
pub(crate) fn classify_chain(
    e: &(dyn std::error::Error + 'static),
    classify: impl Fn(&(dyn std::error::Error + 'static)) -> Option<ErrorKind>,
) -> Option<ErrorKind> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(kind) = classify(e) {
            return Some(kind);
        }
        next = e.source();
    }
    None
}
