//! The configuration's keys, declared once: the parser accepts exactly these (any other key is
//! an error), the JSON Schema describes them (`schema` feature), and the effective view
//! (`config show`) lists them, in this order.

use super::{
    DatabaseType, DefaultOrm, MAX_POOL_SIZE, Pooler, PostgresDriver, ReadPolicy, ReadPreference,
    ReplicaFallback, SslMode, TargetSessionAttrs,
};

/// What a key's value looks like in the document, as the parser reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Any scalar but null, kept as the text written (`1.50` stays `1.50`).
    Text,
    /// Like [`Shape::Text`], and a secret: never shown.
    Secret,
    /// A port, 1-65535.
    Port,
    /// A whole number in decimal digits, at least `min`, at most `max`.
    Count { min: u32, max: u32 },
    /// A duration with a unit (`500ms`, `30s`, `1m30s`).
    Duration,
    /// `true` or `false`.
    Bool,
    /// One of `names`, or one of `aliases`.
    Enum {
        names: &'static [&'static str],
        aliases: &'static [&'static str],
    },
    /// A list of scalars, each kept as text.
    Strings,
    /// A mapping of string to scalar.
    Tags,
    /// `{failures: N}` or `off`.
    CircuitBreaker,
    /// The mapping of connection names to connection settings.
    Connections,
    /// A list of replica entries, each a mapping of connection keys (but the replica keys).
    Replicas,
}

/// One key: its name, the shape of its value, and what it means (the schema's description).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub name: &'static str,
    pub shape: Shape,
    /// The schema's description.
    #[cfg_attr(not(feature = "schema"), allow(dead_code))]
    pub doc: &'static str,
}

/// Declares a table of keys and the list of their names.
macro_rules! keys {
    ($names:ident, $table:ident { $($name:literal: $shape:expr, $doc:literal;)+ }) => {
        /// The names of the keys, in table order.
        pub(crate) const $names: &[&str] = &[$($name),+];
        /// The keys, in documentation order.
        pub(crate) const $table: &[Key] = &[$(Key { name: $name, shape: $shape, doc: $doc }),+];
    };
}

const POOL: u32 = MAX_POOL_SIZE;

keys!(MANAGER_KEYS, MANAGER {
    "default_connection": Shape::Text,
        "Name of the default connection; must be one of `connections`.";
    "connections": Shape::Connections,
        "The named connections: name → connection settings.";
    "max_open_conns": Shape::Count { min: 1, max: POOL },
        "Pool size cap of every connection that does not set its own.";
    "max_idle_conns": Shape::Count { min: 0, max: POOL },
        "Idle connections kept per pool; a smaller pool lowers it to its size.";
    "conn_max_lifetime": Shape::Duration,
        "A pooled connection older than this is closed (`0s` = never; at most 365 days).";
    "conn_max_idle_time": Shape::Duration,
        "An idle pooled connection is closed after this (`0s` = never; at most 365 days).";
    "retry_attempts": Shape::Count { min: 1, max: u32::MAX },
        "Connect attempts in total, the first included.";
    "retry_delay": Shape::Duration,
        "First backoff delay between connect attempts (at most 24h).";
    "retry_max_delay": Shape::Duration,
        "Backoff cap (at most 24h).";
    "health_check_interval": Shape::Duration,
        "Health loop period (`0s` = no loop; at most 24h).";
    "enable_auto_reconnect": Shape::Bool,
        "Reconnect failed connections in the background.";
    "metric_tag_labels": Shape::Strings,
        "Tag keys that become labels on every metric series (valid label names).";
});

keys!(CONNECTION_KEYS, CONNECTION {
    "name": Shape::Text,
        "The connection's name; must equal its key in `connections` if given.";
    "type": Shape::Enum { names: DatabaseType::NAMES, aliases: &["mariadb"] },
        "Backend (`mariadb` is an alias of `mysql`).";
    "driver": Shape::Enum { names: PostgresDriver::NAMES, aliases: &[] },
        "postgres: the driver library, `sqlx` (the default: SeaORM, LISTEN/NOTIFY) or `tokio-postgres` (prepared-statement cache, the neutral handle and the native client).";
    "dsn": Shape::Secret,
        "Complete connection string, used as is (secret); not with host, port, user, database or filepath.";
    "host": Shape::Text,
        "Server host name or address (mssql `host\\instance`; mongodb a comma-separated list of `host[:port]`).";
    "hosts": Shape::Strings,
        "postgres, mysql: servers to choose from instead of `host`, each `host[:port]` (`[::1]:5432` for IPv6); the first that accepts writes is used, and found again after a failover.";
    "target_session_attrs": Shape::Enum { names: TargetSessionAttrs::NAMES, aliases: &[] },
        "postgres, mysql: `read-write` (only a server that accepts writes; the default for more than one host) or `any`, as libpq.";
    "port": Shape::Port,
        "Server port (default 5432, 3306, 1433 or 27017 by type).";
    "user": Shape::Text,
        "User name.";
    "password": Shape::Secret,
        "Password (secret); needs `user`; not with `password_file`.";
    "password_file": Shape::Text,
        "A regular file (at most 64 KiB) whose contents, one trailing newline removed, is the password.";
    "database": Shape::Text,
        "Database name (required for postgres without a dsn).";
    "sslmode": Shape::Enum { names: SslMode::NAMES, aliases: &[] },
        "TLS mode, with libpq's meaning (default `prefer`).";
    "schema": Shape::Text,
        "postgres: the `search_path`.";
    "pooler": Shape::Enum { names: Pooler::NAMES, aliases: &[] },
        "postgres: the pooler in front of the server (`none`, `session` or `transaction`, as PgBouncer's `pool_mode`); `transaction` makes every statement safe for a server session shared per transaction.";
    "filepath": Shape::Text,
        "sqlite: a database file (its directory must exist) or `:memory:`.";
    "auth_source": Shape::Text,
        "mongodb: the authentication database.";
    "replica_set": Shape::Text,
        "mongodb: the replica set name.";
    "read_preference": Shape::Enum { names: ReadPreference::NAMES, aliases: &[] },
        "mongodb: the read preference.";
    "max_open_conns": Shape::Count { min: 1, max: POOL },
        "Pool size cap (default: the global `max_open_conns`).";
    "max_idle_conns": Shape::Count { min: 0, max: POOL },
        "Idle connections kept (default: the global `max_idle_conns`, at most this pool's size).";
    "min_open_conns": Shape::Count { min: 0, max: POOL },
        "Connections kept open even when idle.";
    "conn_max_lifetime": Shape::Duration,
        "Overrides the global `conn_max_lifetime`.";
    "conn_max_idle_time": Shape::Duration,
        "Overrides the global `conn_max_idle_time`.";
    "connect_timeout": Shape::Duration,
        "Bound of one connect attempt, and of waiting for a pooled connection (more than 0s, at most 24h).";
    "query_timeout": Shape::Duration,
        "Bound of one statement (`0s` = none; at most 24h).";
    "enable_tracing": Shape::Bool,
        "Emit tracing spans for this connection.";
    "trace_statements": Shape::Bool,
        "Put statement text on query spans (`db.query.text`).";
    "enable_metrics": Shape::Bool,
        "Publish metrics for this connection.";
    "enable_logging": Shape::Bool,
        "Log connection events.";
    "default_orm": Shape::Enum { names: DefaultOrm::NAMES, aliases: &["bun", "gorm"] },
        "Layer behind `Connection::database()` (`bun` and `gorm` are aliases of `sea-orm`).";
    "tags": Shape::Tags,
        "Free-form string labels; keys listed in `metric_tag_labels` become metric labels.";
    "application_name": Shape::Text,
        "Name reported to the server (postgres, mssql, mongodb).";
    "critical": Shape::Bool,
        "Whether readiness depends on this connection.";
    "trust_server_certificate": Shape::Bool,
        "mssql, mongodb: accept any server certificate with sslmode `prefer` or `require`.";
    "init_sql": Shape::Strings,
        "Statements run, in order, on every new physical connection (SQL backends).";
    "leak_detection_threshold": Shape::Duration,
        "A checkout held longer than this is reported once (`0s` = off).";
    "circuit_breaker": Shape::CircuitBreaker,
        "`{failures: N}`: fail fast after N consecutive failures to reach the server; `off` (the default) turns it off.";
    "replicas": Shape::Replicas,
        "postgres, mysql: read replicas, each a mapping of connection keys (e.g. `host`, `port`); what an entry does not set is this connection's.";
    "read_policy": Shape::Enum { names: ReadPolicy::NAMES, aliases: &[] },
        "How reads pick a usable replica (default `round_robin`).";
    "max_replica_lag": Shape::Duration,
        "A replica further behind than this (measured at each health check) takes no reads (`0s`, the default, = no limit; at most 24h).";
    "read_your_writes": Shape::Duration,
        "After a write through a handle, its reads go to the primary for this long (`0s`, the default, = off; at most 24h).";
    "replica_fallback": Shape::Enum { names: ReplicaFallback::NAMES, aliases: &[] },
        "What reads do when no replica is usable: `primary` (the default) or `error`.";
});

/// The keys of a connection that belong to it alone: a replica entry may not set them.
pub(crate) const REPLICATION_KEYS: &[&str] = &[
    "name",
    "type",
    "replicas",
    "read_policy",
    "max_replica_lag",
    "read_your_writes",
    "replica_fallback",
];

/// The key under `circuit_breaker:`.
pub(crate) const CIRCUIT_BREAKER_FAILURES: &str = "failures";
/// The largest `circuit_breaker.failures` accepted.
pub(crate) const MAX_CIRCUIT_BREAKER_FAILURES: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse_and_names_are_unique() {
        for table in [MANAGER, CONNECTION] {
            let mut names: Vec<&str> = table.iter().map(|k| k.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.len());
        }
        assert_eq!(
            DatabaseType::from_name("mariadb"),
            Some(DatabaseType::Mysql)
        );
        let Some(orm) = CONNECTION.iter().find(|k| k.name == "default_orm") else {
            panic!("default_orm is a key");
        };
        assert!(matches!(orm.shape, Shape::Enum { aliases, .. } if aliases == ["bun", "gorm"]));
    }
}
