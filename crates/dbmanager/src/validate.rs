//! Loading entry points and the semantic checks of a config, shared by configs loaded from YAML
//! and built in code. Generic rules live here; what a backend accepts comes from its driver
//! descriptor in the registry, so this module sits above both `config` and the drivers.

use std::collections::HashSet;
use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::{
    ConfigProblems, ConnectionConfig, ConnectionProblems, DefaultOrm, EnvSource, ManagerConfig,
    SslMode, parse_yaml,
};
use crate::driver::{Driver, Field};

impl ManagerConfig {
    /// Parses YAML (root key `dbmanager:`) with the process environment's overrides.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigProblems> {
        Self::from_yaml_str_with_env(yaml, &EnvSource::process())
    }

    /// Reads and parses a YAML file with the process environment's overrides.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigProblems> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut problems = ConfigProblems::default();
            problems.push("", format!("cannot read `{}`: {e}", path.display()));
            problems
        })?;
        Self::from_yaml_str(&text)
    }

    /// Builds the config from the environment overrides alone (no file).
    pub fn from_env(env: &EnvSource) -> Result<Self, ConfigProblems> {
        Self::from_yaml_str_with_env("dbmanager: {}", env)
    }

    /// Parses YAML with overrides and `${VAR}` values taken from `env`, then validates.
    ///
    /// Every problem found is reported at once, sorted by path.
    pub fn from_yaml_str_with_env(yaml: &str, env: &EnvSource) -> Result<Self, ConfigProblems> {
        let (config, broken, mut problems) = parse_yaml(yaml, env);
        problems.extend(config.problems_with(&broken));
        problems.into_result()?;
        Ok(config)
    }

    /// Checks the whole config and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigProblems> {
        self.problems_with(&HashSet::new()).into_result()
    }

    /// Checks one connection as a part of this config: for adding or replacing it at runtime.
    pub(crate) fn validate_connection(&self, c: &ConnectionConfig) -> Result<(), ConfigProblems> {
        let mut p = ConfigProblems::default();
        if c.name.is_empty() {
            p.push("connections", "a connection name must not be empty");
        }
        self.check_connection(c, &mut ConnectionProblems::new(&c.name, &mut p));
        p.into_result()
    }

    /// `also_named`: connections present in the source but too broken to be typed.
    fn problems_with(&self, also_named: &HashSet<String>) -> ConfigProblems {
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
            self.check_connection(connection, &mut ConnectionProblems::new(key, &mut p));
            if key.is_empty() {
                p.push("connections", "a connection name must not be empty");
            }
        }
        p
    }

    fn check_connection(&self, c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
        let kind = c.kind;
        if c.name != p.key() {
            let message = format!("`{}` contradicts the map key `{}`", c.name, p.key());
            p.push("name", message);
        }

        let pool = self.pool_settings(c);
        // Global values were checked above; report here only what this connection sets.
        let overrides = c.max_open_conns.is_some() || c.max_idle_conns.is_some();
        if c.max_open_conns == Some(0) {
            p.push("max_open_conns", "must be at least 1");
        }
        if overrides && pool.max_idle > pool.max_open {
            p.push(
                "max_idle_conns",
                format!(
                    "{} is more than max_open_conns ({})",
                    pool.max_idle, pool.max_open
                ),
            );
        }
        if pool.min_open > pool.max_open {
            p.push(
                "min_open_conns",
                format!(
                    "{} is more than max_open_conns ({})",
                    pool.min_open, pool.max_open
                ),
            );
        }
        if c.connect_timeout.is_zero() {
            p.push("connect_timeout", "must be longer than 0s");
        }

        if c.password.is_some() && c.password_file.is_some() {
            p.push("password", "set either password or password_file, not both");
        }
        if let Some(file) = &c.password_file
            && let Err(e) = std::fs::metadata(file)
        {
            p.push(
                "password_file",
                format!("cannot read `{}`: {e}", file.display()),
            );
        }
        if c.trust_server_certificate
            && matches!(c.sslmode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
        {
            p.push(
                "trust_server_certificate",
                "contradicts sslmode verify-ca/verify-full, which verify the certificate",
            );
        }

        let Some(driver) = crate::registry::driver(kind) else {
            p.push(
                "type",
                format!("this build of dbmanager does not include the `{kind}` cargo feature"),
            );
            return;
        };
        check_against(driver, c, p);
    }
}

/// What the connection's driver accepts: dsn scheme, required and foreign fields, layers.
fn check_against(driver: &Driver, c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    let kind = c.kind;
    let has_dsn = c
        .dsn
        .as_ref()
        .is_some_and(|d| !d.expose_secret().is_empty());
    if let Some(dsn) = &c.dsn {
        let schemes = driver.dsn_schemes;
        if !schemes.is_empty() && !schemes.iter().any(|s| dsn.expose_secret().starts_with(s)) {
            // The dsn itself is never quoted: it may embed a password.
            p.push(
                "dsn",
                format!("must start with {} for {kind}", schemes.join(" or ")),
            );
        }
    }
    if !has_dsn {
        for field in driver.required {
            if !field.is_set(c) {
                p.push(
                    field.key(),
                    format!("required for {kind} when no dsn is given"),
                );
            }
        }
    }
    for field in Field::ALL {
        if field.is_set(c) && !driver.fields.contains(&field) {
            let users: Vec<&str> = crate::registry::DRIVERS
                .iter()
                .filter(|d| d.fields.contains(&field))
                .map(|d| d.kind.as_str())
                .collect();
            let only = if users.is_empty() {
                "no backend in this build".to_owned()
            } else {
                format!("only by {}", users.join(", "))
            };
            p.push(field.key(), format!("not used by {kind} ({only})"));
        }
    }
    if c.default_orm == DefaultOrm::SeaOrm
        && let Some(reason) = driver.no_sea_orm
    {
        p.push("default_orm", reason);
    }
    (driver.check)(c, p);
}
