//! Configuration: the typed model, its defaults, loading from YAML plus environment, and validation.
//!
//! Every default below applies only where a key is absent; an explicit value (even `0s`, `0` or
//! `false`) is kept.

mod effective;
mod enums;
mod keys;
mod load;
mod problems;
#[cfg(feature = "schema")]
mod schema;
mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use effective::{EffectiveConfig, Origin, REDACTED, Setting};
pub(crate) use effective::{name_overrides, settings as effective_settings};
pub use enums::{
    DatabaseType, DefaultOrm, Pooler, PostgresDriver, ReadPolicy, ReadPreference, ReplicaFallback,
    SslMode, TargetSessionAttrs,
};
pub(crate) use keys::MAX_CIRCUIT_BREAKER_FAILURES;
pub(crate) use load::parse as parse_yaml;
pub use load::{ENV_PREFIX, EnvSource};
pub use problems::{ConfigProblem, ConfigProblems};
pub(crate) use problems::{ConnectionProblems, is_bidi_control, shown};
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub use schema::json_schema;
pub use tree::{
    MAX_DOCUMENT_BYTES, MAX_YAML_ALIAS_REPLAY, MAX_YAML_ANCHORS, MAX_YAML_DEPTH, MAX_YAML_EVENTS,
    MAX_YAML_NODES,
};

/// Global pool defaults (`max_open_conns: 25`).
pub const DEFAULT_MAX_OPEN_CONNS: u32 = 25;
/// Global idle cap (`max_idle_conns: 5`).
pub const DEFAULT_MAX_IDLE_CONNS: u32 = 5;
/// `conn_max_lifetime: 30m`.
pub const DEFAULT_CONN_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// `conn_max_idle_time: 5m`.
pub const DEFAULT_CONN_MAX_IDLE_TIME: Duration = Duration::from_secs(5 * 60);
/// `retry_attempts: 3` (total attempts, the first one included).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// `retry_delay: 1s`.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// `retry_max_delay: 10s`.
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);
/// `health_check_interval: 30s`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How often replicas are checked (ping and lag) when `health_check_interval` is `0s`.
pub const DEFAULT_REPLICA_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// `connect_timeout: 10s`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `query_timeout: 30s`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest accepted `connect_timeout`, `query_timeout`, `health_check_interval`,
/// `retry_delay` and `retry_max_delay` (24h).
///
/// Far beyond any sane timeout, and small enough that every driver and timer takes it:
/// PostgreSQL's `statement_timeout` is an `int` of milliseconds (about 24.8 days), and an
/// unbounded value overflows `Instant` arithmetic (sqlx panicked on `u64::MAX` seconds).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest accepted `conn_max_lifetime` and `conn_max_idle_time` (365 days; `0s` still
/// means no limit).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The largest accepted `max_open_conns`, `max_idle_conns` and `min_open_conns` (10 000): more
/// connections than any database server accepts from one pool, and small enough that a pool
/// never tries to reserve memory for billions of slots.
pub const MAX_POOL_SIZE: u32 = 10_000;
/// The largest accepted `password_file` (64 KiB): a password, or a token, fits many times over.
pub const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;

/// The `dbmanager:` section: global defaults plus the named connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Name of the default connection (`default_connection`, none by default).
    pub default_connection: Option<String>,
    /// The connections by name (`connections`).
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Default pool size cap (`max_open_conns`, 25).
    pub max_open_conns: u32,
    /// Default idle cap (`max_idle_conns`, 5).
    pub max_idle_conns: u32,
    /// Default connection lifetime (`conn_max_lifetime`, 30m; `0s` = unlimited).
    pub conn_max_lifetime: Duration,
    /// Default idle time before a pooled connection is closed (`conn_max_idle_time`, 5m; `0s` = unlimited).
    pub conn_max_idle_time: Duration,
    /// Connect attempts in total, the first included (`retry_attempts`, 3).
    pub retry_attempts: u32,
    /// First backoff delay (`retry_delay`, 1s).
    pub retry_delay: Duration,
    /// Backoff cap (`retry_max_delay`, 10s).
    pub retry_max_delay: Duration,
    /// Health loop period (`health_check_interval`, 30s; `0s` = no loop).
    pub health_check_interval: Duration,
    /// Reconnect unhealthy connections in the background (`enable_auto_reconnect`, true).
    pub enable_auto_reconnect: bool,
    /// Tag keys that become metric labels (`metric_tag_labels`, none by default: label
    /// cardinality is the operator's choice).
    pub metric_tag_labels: Vec<String>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            default_connection: None,
            connections: BTreeMap::new(),
            max_open_conns: DEFAULT_MAX_OPEN_CONNS,
            max_idle_conns: DEFAULT_MAX_IDLE_CONNS,
            conn_max_lifetime: DEFAULT_CONN_MAX_LIFETIME,
            conn_max_idle_time: DEFAULT_CONN_MAX_IDLE_TIME,
            retry_attempts: DEFAULT_RETRY_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            enable_auto_reconnect: true,
            metric_tag_labels: Vec::new(),
        }
    }
}

impl ManagerConfig {
    /// Adds (or replaces) a connection under its own name; chainable.
    pub fn with_connection(mut self, connection: ConnectionConfig) -> Self {
        self.connections.insert(connection.name.clone(), connection);
        self
    }

    /// Sets the default connection; chainable.
    pub fn with_default(mut self, name: impl Into<String>) -> Self {
        self.default_connection = Some(name.into());
        self
    }

    /// The pool settings a connection ends up with: its own overrides, else the global values.
    pub fn pool_settings(&self, connection: &ConnectionConfig) -> PoolSettings {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let max_open = connection.max_open_conns.unwrap_or(self.max_open_conns);
        PoolSettings {
            max_open,
            // As Go's database/sql does: a pool smaller than the global idle cap lowers it.
            max_idle: connection
                .max_idle_conns
                .unwrap_or(self.max_idle_conns.min(max_open)),
            min_open: connection.min_open_conns.unwrap_or(0),
            max_lifetime: nonzero(
                connection
                    .conn_max_lifetime
                    .unwrap_or(self.conn_max_lifetime),
            ),
            max_idle_time: nonzero(
                connection
                    .conn_max_idle_time
                    .unwrap_or(self.conn_max_idle_time),
            ),
            connect_timeout: connection.connect_timeout,
            query_timeout: nonzero(connection.query_timeout),
        }
    }

    /// The retry policy for connecting.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.retry_attempts.max(1),
            delay: self.retry_delay,
            max_delay: self.retry_max_delay,
        }
    }
}

/// Pool settings after applying per-connection overrides to the global defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Maximum connections open at once.
    pub max_open: u32,
    /// Maximum idle connections kept.
    pub max_idle: u32,
    /// Connections kept open even when idle.
    pub min_open: u32,
    /// Lifetime after which a connection is closed (`None` = unlimited).
    pub max_lifetime: Option<Duration>,
    /// Idle time after which a connection is closed (`None` = unlimited).
    pub max_idle_time: Option<Duration>,
    /// Bound of one connect attempt, and of waiting for a pooled connection.
    pub connect_timeout: Duration,
    /// Bound of one statement (`None` = no bound).
    pub query_timeout: Option<Duration>,
}

/// Connect retry policy: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// First delay.
    pub delay: Duration,
    /// Delay cap.
    pub max_delay: Duration,
}

/// One named connection.
///
/// `Debug` is written by hand: the password and the `dsn` (which may embed one) print as
/// `[REDACTED]`.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The connection's name (the key in `connections`).
    pub name: String,
    /// Backend (`type`).
    pub kind: DatabaseType,
    /// A complete connection string; structured fields the driver supports as options still apply.
    pub dsn: Option<SecretString>,
    /// Host name or address (for MongoDB, a comma-separated host list).
    pub host: Option<String>,
    /// Servers to choose from instead of `host`, each `host[:port]` (`[::1]:5432` for IPv6; the
    /// port defaults to `port`, else the backend's): the first one that accepts writes is used,
    /// and another one is found after a failover (see `target_session_attrs`).
    pub hosts: Option<Vec<String>>,
    /// Which server of `hosts` may be used (default `read-write` for more than one host).
    pub target_session_attrs: Option<TargetSessionAttrs>,
    /// Port.
    pub port: Option<u16>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<SecretString>,
    /// A file whose contents (trailing newline removed) is the password.
    pub password_file: Option<PathBuf>,
    /// Database name.
    pub database: Option<String>,
    /// TLS mode (PostgreSQL semantics; default `prefer`).
    pub sslmode: Option<SslMode>,
    /// PostgreSQL: the driver library (`driver`; default `sqlx`).
    pub driver: Option<PostgresDriver>,
    /// Default schema (PostgreSQL `search_path`).
    pub schema: Option<String>,
    /// The pooler in front of the server (PostgreSQL; default `none`).
    pub pooler: Pooler,
    /// SQLite file path, or `:memory:`.
    pub filepath: Option<PathBuf>,
    /// MongoDB authentication database.
    pub auth_source: Option<String>,
    /// MongoDB replica set name.
    pub replica_set: Option<String>,
    /// MongoDB read preference.
    pub read_preference: Option<ReadPreference>,
    /// Overrides the global `max_open_conns`.
    pub max_open_conns: Option<u32>,
    /// Overrides the global `max_idle_conns`.
    pub max_idle_conns: Option<u32>,
    /// Connections kept open even when idle (default 0).
    pub min_open_conns: Option<u32>,
    /// Overrides the global `conn_max_lifetime`.
    pub conn_max_lifetime: Option<Duration>,
    /// Overrides the global `conn_max_idle_time`.
    pub conn_max_idle_time: Option<Duration>,
    /// Bound of one connect attempt (default 10s).
    pub connect_timeout: Duration,
    /// Bound of one statement (default 30s; `0s` = none).
    pub query_timeout: Duration,
    /// Emit tracing spans for this connection (default false).
    pub enable_tracing: bool,
    /// Put statement text on query spans (`db.query.text`; default false, since statements may
    /// carry data).
    pub trace_statements: bool,
    /// Publish metrics for this connection (default true).
    pub enable_metrics: bool,
    /// Log connection events (default true).
    pub enable_logging: bool,
    /// Layer behind [`crate::Connection::database`] (default `native`).
    pub default_orm: DefaultOrm,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// Name reported to the server (PostgreSQL `application_name`).
    pub application_name: Option<String>,
    /// Whether readiness depends on this connection (default true).
    pub critical: bool,
    /// Accept any server certificate with `sslmode` `prefer` or `require` (SQL Server's
    /// `TrustServerCertificate`, MongoDB's `tlsAllowInvalidCertificates`; default false).
    pub trust_server_certificate: bool,
    /// Statements run on every new physical connection, in order (`init_sql`; SQL backends).
    pub init_sql: Vec<String>,
    /// A checkout held longer than this is reported once (`leak_detection_threshold`; off).
    pub leak_detection_threshold: Option<Duration>,
    /// Consecutive failures to reach the server after which callers fail fast until it is
    /// back (`circuit_breaker: {failures: N}`; off).
    pub circuit_breaker_failures: Option<u32>,
    /// Read replicas (`replicas`; PostgreSQL and MySQL): each a complete configuration, every
    /// field the entry does not set taken from this connection. Build one in code with
    /// [`ConnectionConfig::replica`].
    pub replicas: Vec<ConnectionConfig>,
    /// How reads pick a replica (`read_policy`, default `round_robin`).
    pub read_policy: ReadPolicy,
    /// A replica further behind than this is not used for reads (`max_replica_lag`; `0s`, the
    /// default, is no limit).
    pub max_replica_lag: Duration,
    /// After a write through a handle, its reads go to the primary for this long
    /// (`read_your_writes`; `0s`, the default, is off).
    pub read_your_writes: Duration,
    /// What reads do when no replica is usable (`replica_fallback`, default `primary`).
    pub replica_fallback: ReplicaFallback,
}

impl ConnectionConfig {
    /// A connection of the given type with every default applied and nothing else set.
    pub fn new(name: impl Into<String>, kind: DatabaseType) -> Self {
        Self {
            name: name.into(),
            kind,
            dsn: None,
            host: None,
            hosts: None,
            target_session_attrs: None,
            port: None,
            user: None,
            password: None,
            password_file: None,
            database: None,
            sslmode: None,
            driver: None,
            schema: None,
            pooler: Pooler::None,
            filepath: None,
            auth_source: None,
            replica_set: None,
            read_preference: None,
            max_open_conns: None,
            max_idle_conns: None,
            min_open_conns: None,
            conn_max_lifetime: None,
            conn_max_idle_time: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            enable_tracing: false,
            trace_statements: false,
            enable_metrics: true,
            enable_logging: true,
            default_orm: DefaultOrm::Native,
            tags: BTreeMap::new(),
            application_name: None,
            critical: true,
            trust_server_certificate: false,
            init_sql: Vec::new(),
            leak_detection_threshold: None,
            circuit_breaker_failures: None,
            replicas: Vec::new(),
            read_policy: ReadPolicy::RoundRobin,
            max_replica_lag: Duration::ZERO,
            read_your_writes: Duration::ZERO,
            replica_fallback: ReplicaFallback::Primary,
        }
    }

    /// A SQLite connection on a file (or `:memory:`).
    pub fn sqlite(name: impl Into<String>, filepath: impl Into<PathBuf>) -> Self {
        let mut config = Self::new(name, DatabaseType::Sqlite);
        config.filepath = Some(filepath.into());
        config
    }

    /// A connection of the given type from a complete connection string.
    pub fn from_dsn(name: impl Into<String>, kind: DatabaseType, dsn: impl Into<String>) -> Self {
        let mut config = Self::new(name, kind);
        config.dsn = Some(SecretString::from(dsn.into()));
        config
    }
}

impl ConnectionConfig {
    /// Whether `other` configures the very same connection (secrets compared too, never shown).
    pub(crate) fn same_as(&self, other: &ConnectionConfig) -> bool {
        use secrecy::ExposeSecret as _;
        let secret = |a: &Option<SecretString>, b: &Option<SecretString>| match (a, b) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        // The Debug form lists every field, secrets redacted: equal Debug and equal secrets
        // mean equal configs.
        secret(&self.dsn, &other.dsn)
            && secret(&self.password, &other.password)
            && self.init_sql == other.init_sql
            && self.replicas.len() == other.replicas.len()
            && self
                .replicas
                .iter()
                .zip(&other.replicas)
                .all(|(a, b)| a.same_as(b))
            && format!("{self:?}") == format!("{other:?}")
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exhaustive on purpose: `same_as` (reload's diff) compares Debug forms, so a field
        // added to the struct must be listed here or the build fails.
        let ConnectionConfig {
            name,
            kind,
            dsn,
            host,
            hosts,
            target_session_attrs,
            port,
            user,
            password,
            password_file,
            database,
            sslmode,
            driver,
            schema,
            pooler,
            filepath,
            auth_source,
            replica_set,
            read_preference,
            max_open_conns,
            max_idle_conns,
            min_open_conns,
            conn_max_lifetime,
            conn_max_idle_time,
            connect_timeout,
            query_timeout,
            enable_tracing,
            trace_statements,
            enable_metrics,
            enable_logging,
            default_orm,
            tags,
            application_name,
            critical,
            trust_server_certificate,
            init_sql,
            leak_detection_threshold,
            circuit_breaker_failures,
            replicas,
            read_policy,
            max_replica_lag,
            read_your_writes,
            replica_fallback,
        } = self;
        let redacted = |set: bool| if set { Some("[REDACTED]") } else { None };
        f.debug_struct("ConnectionConfig")
            .field("name", name)
            .field("kind", kind)
            .field("dsn", &redacted(dsn.is_some()))
            .field("host", host)
            .field("hosts", hosts)
            .field("target_session_attrs", target_session_attrs)
            .field("port", port)
            .field("user", user)
            .field("password", &redacted(password.is_some()))
            .field("password_file", password_file)
            .field("database", database)
            .field("sslmode", sslmode)
            .field("driver", driver)
            .field("schema", schema)
            .field("pooler", pooler)
            .field("filepath", filepath)
            .field("auth_source", auth_source)
            .field("replica_set", replica_set)
            .field("read_preference", read_preference)
            .field("max_open_conns", max_open_conns)
            .field("max_idle_conns", max_idle_conns)
            .field("min_open_conns", min_open_conns)
            .field("conn_max_lifetime", conn_max_lifetime)
            .field("conn_max_idle_time", conn_max_idle_time)
            .field("connect_timeout", connect_timeout)
            .field("query_timeout", query_timeout)
            .field("enable_tracing", enable_tracing)
            .field("trace_statements", trace_statements)
            .field("enable_metrics", enable_metrics)
            .field("enable_logging", enable_logging)
            .field("default_orm", default_orm)
            .field("tags", tags)
            .field("application_name", application_name)
            .field("critical", critical)
            .field("trust_server_certificate", trust_server_certificate)
            // Statements may carry literals worth hiding; their count is enough to debug.
            .field(
                "init_sql",
                &format_args!("[{} statement(s)]", init_sql.len()),
            )
            .field("leak_detection_threshold", leak_detection_threshold)
            .field("circuit_breaker_failures", circuit_breaker_failures)
            .field("replicas", replicas)
            .field("read_policy", read_policy)
            .field("max_replica_lag", max_replica_lag)
            .field("read_your_writes", read_your_writes)
            .field("replica_fallback", replica_fallback)
            .finish()
    }
}
