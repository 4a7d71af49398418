//! Semantic checks on a typed config, shared by configs loaded from YAML and built in code.

use std::collections::HashSet;

use secrecy::ExposeSecret;

use super::{ConfigProblems, ConnectionConfig, DatabaseType, DefaultOrm, ManagerConfig, SslMode};
use crate::error::Error;

impl ManagerConfig {
    /// Checks the whole config and reports every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        self.problems_with(&HashSet::new())
            .into_result()
            .map_err(Error::Config)
    }

    /// `also_named`: connections present in the source but too broken to be typed.
    pub(super) fn problems_with(&self, also_named: &HashSet<String>) -> ConfigProblems {
        let mut p = ConfigProblems::default();
        if self.max_open_conns == 0 {
            p.push("max_open_conns", "must be at least 1");
        }
        if self.max_idle_conns > self.max_open_conns {
            p.push(
                "max_idle_conns",
                format!(
                    "{} is more than max_open_conns ({})",
                    self.max_idle_conns, self.max_open_conns
                ),
            );
        }
        if self.retry_attempts == 0 {
            p.push(
                "retry_attempts",
                "must be at least 1 (it counts the first attempt)",
            );
        }
        if self.retry_delay > self.retry_max_delay {
            p.push(
                "retry_delay",
                format!(
                    "{} is longer than retry_max_delay ({})",
                    humantime::format_duration(self.retry_delay),
                    humantime::format_duration(self.retry_max_delay)
                ),
            );
        }
        if let Some(default) = &self.default_connection
            && !self.connections.contains_key(default)
            && !also_named.contains(default)
        {
            let mut known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            known.extend(also_named.iter().map(String::as_str));
            known.sort_unstable();
            p.push(
                "default_connection",
                format!(
                    "`{default}` is not a configured connection (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        for (key, connection) in &self.connections {
            self.check_connection(key, connection, &mut p);
        }
        p
    }

    fn check_connection(&self, key: &str, c: &ConnectionConfig, p: &mut ConfigProblems) {
        let at = |field: &str| format!("connections.{key}.{field}");
        let kind = c.kind;
        if key.is_empty() {
            p.push("connections", "a connection name must not be empty");
        }
        if c.name != key {
            p.push(
                at("name"),
                format!("`{}` contradicts the map key `{key}`", c.name),
            );
        }

        let pool = self.pool_settings(c);
        // Global values were checked above; report here only what this connection sets.
        let overrides = c.max_open_conns.is_some() || c.max_idle_conns.is_some();
        if c.max_open_conns == Some(0) {
            p.push(at("max_open_conns"), "must be at least 1");
        }
        if overrides && pool.max_idle > pool.max_open {
            p.push(
                at("max_idle_conns"),
                format!(
                    "{} is more than max_open_conns ({})",
                    pool.max_idle, pool.max_open
                ),
            );
        }
        if pool.min_open > pool.max_open {
            p.push(
                at("min_open_conns"),
                format!(
                    "{} is more than max_open_conns ({})",
                    pool.min_open, pool.max_open
                ),
            );
        }
        if c.connect_timeout.is_zero() {
            p.push(at("connect_timeout"), "must be longer than 0s");
        }

        if c.password.is_some() && c.password_file.is_some() {
            p.push(
                at("password"),
                "set either password or password_file, not both",
            );
        }
        if let Some(file) = &c.password_file
            && let Err(e) = std::fs::metadata(file)
        {
            p.push(
                at("password_file"),
                format!("cannot read `{}`: {e}", file.display()),
            );
        }

        let has_dsn = c
            .dsn
            .as_ref()
            .is_some_and(|d| !d.expose_secret().is_empty());
        if let Some(dsn) = &c.dsn {
            check_dsn_scheme(kind, dsn.expose_secret(), &at("dsn"), p);
        }
        let require = |p: &mut ConfigProblems, field: &str, set: bool| {
            if !has_dsn && !set {
                p.push(
                    at(field),
                    format!("required for {kind} when no dsn is given"),
                );
            }
        };
        match kind {
            DatabaseType::Postgres => {
                require(p, "host", c.host.is_some());
                require(p, "database", c.database.is_some());
            }
            DatabaseType::Mssql => require(p, "host", c.host.is_some()),
            DatabaseType::Mongodb => {
                require(p, "host", c.host.is_some());
                if c.user.is_some() && c.password.is_none() && c.password_file.is_none() {
                    p.push(
                        at("password"),
                        "a user is set without a password; MongoDB would drop the credential",
                    );
                }
            }
            DatabaseType::Sqlite => require(p, "filepath", c.filepath.is_some()),
        }

        let only_for = |p: &mut ConfigProblems, field: &str, set: bool, kinds: &[DatabaseType]| {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                p.push(
                    at(field),
                    format!("not used by {kind} (only by {})", names.join(", ")),
                );
            }
        };
        use DatabaseType::{Mongodb, Mssql, Postgres, Sqlite};
        only_for(p, "filepath", c.filepath.is_some(), &[Sqlite]);
        only_for(p, "schema", c.schema.is_some(), &[Postgres, Mssql]);
        only_for(
            p,
            "sslmode",
            c.sslmode.is_some(),
            &[Postgres, Mssql, Mongodb],
        );
        only_for(p, "auth_source", c.auth_source.is_some(), &[Mongodb]);
        only_for(p, "replica_set", c.replica_set.is_some(), &[Mongodb]);
        only_for(
            p,
            "read_preference",
            c.read_preference.is_some(),
            &[Mongodb],
        );
        only_for(
            p,
            "trust_server_certificate",
            c.trust_server_certificate,
            &[Mssql, Mongodb],
        );
        if c.trust_server_certificate
            && matches!(c.sslmode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
        {
            p.push(
                at("trust_server_certificate"),
                "contradicts sslmode verify-ca/verify-full, which verify the certificate",
            );
        }
        only_for(p, "host", c.host.is_some(), &[Postgres, Mssql, Mongodb]);
        only_for(p, "port", c.port.is_some(), &[Postgres, Mssql, Mongodb]);
        only_for(p, "user", c.user.is_some(), &[Postgres, Mssql, Mongodb]);
        only_for(
            p,
            "password",
            c.password.is_some(),
            &[Postgres, Mssql, Mongodb],
        );
        only_for(
            p,
            "password_file",
            c.password_file.is_some(),
            &[Postgres, Mssql, Mongodb],
        );

        if c.default_orm == DefaultOrm::SeaOrm {
            match kind {
                Mongodb => p.push(
                    at("default_orm"),
                    "sea-orm is a SQL layer; mongodb has none",
                ),
                Mssql => p.push(
                    at("default_orm"),
                    "sea-orm has no SQL Server driver; use `native`",
                ),
                _ => {}
            }
        }
    }
}

fn check_dsn_scheme(kind: DatabaseType, dsn: &str, path: &str, p: &mut ConfigProblems) {
    let schemes: &[&str] = match kind {
        DatabaseType::Postgres => &["postgres://", "postgresql://"],
        DatabaseType::Sqlite => &["sqlite:"],
        DatabaseType::Mongodb => &["mongodb://", "mongodb+srv://"],
        // ADO.NET strings have no scheme.
        DatabaseType::Mssql => return,
    };
    if !schemes.iter().any(|s| dsn.starts_with(s)) {
        // The dsn itself is never quoted: it may embed a password.
        p.push(
            path,
            format!("must start with {} for {kind}", schemes.join(" or ")),
        );
    }
}
