//! The closed vocabularies of the configuration, each with its accepted spellings.

use std::fmt;

/// Declares an enum whose values map one to one onto configuration spellings.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted spelling, in documentation order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The configuration spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the exact configuration spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// Backend of a connection (`type`).
    DatabaseType {
        /// PostgreSQL through sqlx.
        Postgres => "postgres",
        /// SQLite through sqlx.
        Sqlite => "sqlite",
        /// Microsoft SQL Server through tiberius.
        Mssql => "mssql",
        /// MongoDB through the official driver.
        Mongodb => "mongodb",
        /// MySQL or MariaDB through sqlx (`mariadb` is accepted as an alias).
        Mysql => "mysql",
    }
}

impl DatabaseType {
    /// Parses a `type` value, aliases included.
    pub fn from_name(text: &str) -> Option<Self> {
        match text {
            "mariadb" => Some(DatabaseType::Mysql),
            other => Self::parse(other),
        }
    }

    /// Whether the backend speaks SQL.
    pub fn is_sql(self) -> bool {
        !matches!(self, DatabaseType::Mongodb)
    }
}

config_enum! {
    /// TLS mode, with libpq's meaning (the default when absent is `prefer`).
    SslMode {
        /// Never TLS.
        Disable => "disable",
        /// Plain first, TLS if the server insists.
        Allow => "allow",
        /// TLS if the server offers it, else plain.
        Prefer => "prefer",
        /// TLS required, certificate not verified.
        Require => "require",
        /// TLS required, certificate chain verified.
        VerifyCa => "verify-ca",
        /// TLS required, chain and host name verified.
        VerifyFull => "verify-full",
    }
}

config_enum! {
    /// The driver library of a PostgreSQL connection (`driver`; default `sqlx`).
    PostgresDriver {
        /// sqlx: SeaORM, LISTEN/NOTIFY and `Connection::postgres()` on the same pool.
        Sqlx => "sqlx",
        /// tokio-postgres clients in a deadpool pool, each with its prepared-statement cache:
        /// the neutral handle and `Connection::tokio_postgres()`.
        TokioPostgres => "tokio-postgres",
    }
}

impl PostgresDriver {
    /// The driver of a connection that names none.
    pub const DEFAULT: PostgresDriver = PostgresDriver::Sqlx;

    /// The cargo feature that compiles it in.
    pub fn feature(self) -> &'static str {
        match self {
            PostgresDriver::Sqlx => "postgres",
            PostgresDriver::TokioPostgres => "tokio-postgres",
        }
    }
}

config_enum! {
    /// MongoDB read preference, spelled as MongoDB writes it.
    ReadPreference {
        /// Primary only.
        Primary => "primary",
        /// Primary, else a secondary.
        PrimaryPreferred => "primaryPreferred",
        /// Secondaries only.
        Secondary => "secondary",
        /// A secondary, else the primary.
        SecondaryPreferred => "secondaryPreferred",
        /// The lowest latency member.
        Nearest => "nearest",
    }
}

config_enum! {
    /// Layer behind the backend-neutral handle ([`crate::Connection::database`]).
    ///
    /// The reference's Go names `bun` and `gorm` are accepted in YAML as aliases of `sea-orm`:
    /// both are ORMs over the shared pool, and SeaORM is the Rust ORM that shares it.
    DefaultOrm {
        /// Statements run on the sqlx (or tiberius) pool directly.
        Native => "native",
        /// Statements run through SeaORM's `DatabaseConnection` on the same pool.
        SeaOrm => "sea-orm",
    }
}

config_enum! {
    /// Which server of a `hosts:` list a connection may use, with libpq's meaning of
    /// `target_session_attrs` (the default is `read-write` for a list of more than one host).
    TargetSessionAttrs {
        /// Only a server that accepts writes (not a standby, not `default_transaction_read_only`).
        ReadWrite => "read-write",
        /// Any server that answers.
        Any => "any",
    }
}

config_enum! {
    /// The connection pooler between this library and PostgreSQL (`pooler`), which decides
    /// what session state and which prepared statements a client may rely on.
    Pooler {
        /// A direct connection (or a pooler that hands each client its own server session):
        /// named prepared statements are cached per connection.
        None => "none",
        /// A pooler in session mode (PgBouncer `pool_mode = session`): the server session is
        /// the client's while it is connected, but the pooler refuses startup parameters it
        /// does not know, so session settings are sent as statements after connecting.
        Session => "session",
        /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`): a server
        /// session is the client's only for one transaction, so nothing may outlive one.
        Transaction => "transaction",
    }
}

config_enum! {
    /// How the neutral handle picks the replica a read goes to (`read_policy`).
    ReadPolicy {
        /// Each usable replica in turn.
        RoundRobin => "round_robin",
        /// A usable replica at random.
        Random => "random",
        /// The usable replica with the fewest reads in flight through the handle.
        LeastInUse => "least_in_use",
        /// The usable replica with the lowest recent latency (queries and health checks).
        LowestLatency => "lowest_latency",
    }
}

config_enum! {
    /// What reads do when no replica is usable (`replica_fallback`).
    ReplicaFallback {
        /// Reads go to the primary.
        Primary => "primary",
        /// Reads fail at once with [`crate::ErrorKind::Transient`] (`Error::Refused`).
        Error => "error",
    }
}
