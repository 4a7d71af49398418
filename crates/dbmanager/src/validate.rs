//! Loading entry points and the semantic checks of a config, shared by configs loaded from YAML
//! and built in code. Generic rules live here; what a backend accepts comes from its driver
//! descriptor in the registry, so this module sits above both `config` and the drivers.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{
    ConfigProblems, ConnectionConfig, ConnectionProblems, DatabaseType, DefaultOrm,
    EffectiveConfig, EnvSource, MAX_CIRCUIT_BREAKER_FAILURES, MAX_DOCUMENT_BYTES, MAX_LIFETIME,
    MAX_PASSWORD_FILE_BYTES, MAX_POOL_SIZE, MAX_TIMEOUT, ManagerConfig, SslMode,
    effective_settings, parse_yaml, shown,
};
use crate::driver::{Driver, Field};
use crate::replicas::REPLICA_MARK;

impl ManagerConfig {
    /// Parses YAML (root key `dbmanager:`) with the process environment's overrides.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigProblems> {
        Self::from_yaml_str_with_env(yaml, &EnvSource::process())
    }

    /// Reads and parses a YAML file with the process environment's overrides.
    ///
    /// At most [`MAX_DOCUMENT_BYTES`] are read: a larger file (or `/dev/zero`) is a problem, not
    /// an unbounded read. A pipe (`--config <(...)`) is fine.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigProblems> {
        Self::from_yaml_str(&read_config_file(path.as_ref())?)
    }

    /// Like [`ManagerConfig::from_yaml_str_with_env`], and also says where each value came
    /// from: the default, the document (with its line), a `DBMANAGER__...` override, or a
    /// connection's inheritance of a global pool setting; secrets redacted. What
    /// `dbmanager config show` prints.
    ///
    /// ```
    /// use dbmanager::config::Origin;
    /// use dbmanager::{EnvSource, ManagerConfig};
    ///
    /// let yaml = "dbmanager:\n  connections:\n    main: {type: sqlite, filepath: ':memory:'}\n";
    /// let env: EnvSource = [("DBMANAGER__MAX_OPEN_CONNS", "8")].into_iter().collect();
    /// let effective = ManagerConfig::explain_yaml_str(yaml, &env)?;
    /// let origin = |path: &str| {
    ///     let setting = effective.settings.iter().find(|s| s.path() == path).unwrap();
    ///     (setting.value.clone(), setting.origins[0].clone())
    /// };
    /// assert_eq!(origin("retry_attempts").1, Origin::Default);
    /// assert!(matches!(origin("connections.main.filepath").1, Origin::File { line: Some(3) }));
    /// assert_eq!(origin("max_open_conns").0, 8);
    /// assert!(matches!(origin("max_open_conns").1, Origin::Env { .. }));
    /// assert!(matches!(origin("connections.main.max_open_conns").1, Origin::Inherited { .. }));
    /// # Ok::<(), dbmanager::config::ConfigProblems>(())
    /// ```
    pub fn explain_yaml_str(
        yaml: &str,
        env: &EnvSource,
    ) -> Result<EffectiveConfig, ConfigProblems> {
        let parsed = parse_yaml(yaml, env);
        let mut problems = parsed.problems;
        let mut config = parsed.config;
        crate::replicas::point_inherited_dsns(&mut config);
        problems.extend(config.problems_with(&parsed.broken, &parsed.interpolated));
        crate::config::name_overrides(&mut problems, &parsed.sources);
        problems.into_result()?;
        let settings = effective_settings(&config, &parsed.sources);
        Ok(EffectiveConfig { config, settings })
    }

    /// [`ManagerConfig::explain_yaml_str`] on a file, read as [`ManagerConfig::from_file`]
    /// reads it.
    pub fn explain_file(
        path: impl AsRef<Path>,
        env: &EnvSource,
    ) -> Result<EffectiveConfig, ConfigProblems> {
        Self::explain_yaml_str(&read_config_file(path.as_ref())?, env)
    }

    /// Builds the config from the environment overrides alone (no file).
    pub fn from_env(env: &EnvSource) -> Result<Self, ConfigProblems> {
        Self::from_yaml_str_with_env("dbmanager: {}", env)
    }

    /// Parses YAML with overrides and `${VAR}` values taken from `env`, then validates.
    ///
    /// Every problem found is reported at once, sorted by path.
    pub fn from_yaml_str_with_env(yaml: &str, env: &EnvSource) -> Result<Self, ConfigProblems> {
        let parsed = parse_yaml(yaml, env);
        let mut problems = parsed.problems;
        let mut config = parsed.config;
        crate::replicas::point_inherited_dsns(&mut config);
        problems.extend(config.problems_with(&parsed.broken, &parsed.interpolated));
        crate::config::name_overrides(&mut problems, &parsed.sources);
        problems.into_result()?;
        Ok(config)
    }

    /// Checks the whole config and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigProblems> {
        self.problems_with(&HashSet::new(), &HashSet::new())
            .into_result()
    }

    /// Checks one connection as a part of this config: for adding or replacing it at runtime.
    pub(crate) fn validate_connection(&self, c: &ConnectionConfig) -> Result<(), ConfigProblems> {
        let mut p = ConfigProblems::default();
        if c.name.is_empty() {
            p.push("connections", "a connection name must not be empty");
        }
        let interpolated = HashSet::new();
        self.check_connection(
            c,
            &mut ConnectionProblems::new(&c.name, &mut p, &interpolated),
        );
        p.into_result()
    }

    /// `also_named`: connections present in the source but too broken to be typed;
    /// `interpolated`: paths whose values came from `${VAR}` (never quoted).
    fn problems_with(
        &self,
        also_named: &HashSet<String>,
        interpolated: &HashSet<String>,
    ) -> ConfigProblems {
        let mut p = ConfigProblems::default();
        check_metric_tag_labels(&self.metric_tag_labels, &mut p);
        if self.max_open_conns == 0 {
            p.push("max_open_conns", "must be at least 1");
        }
        pool_limit(&mut p, "max_open_conns", Some(self.max_open_conns));
        pool_limit(&mut p, "max_idle_conns", Some(self.max_idle_conns));
        lifetime_limit(&mut p, "conn_max_lifetime", Some(self.conn_max_lifetime));
        lifetime_limit(&mut p, "conn_max_idle_time", Some(self.conn_max_idle_time));
        timeout_limit(&mut p, "retry_delay", self.retry_delay, "");
        timeout_limit(&mut p, "retry_max_delay", self.retry_max_delay, "");
        timeout_limit(
            &mut p,
            "health_check_interval",
            self.health_check_interval,
            " (0s turns the loop off)",
        );
        if self.max_idle_conns > self.max_open_conns && self.max_open_conns <= MAX_POOL_SIZE {
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
        if self.retry_delay > self.retry_max_delay && self.retry_max_delay <= MAX_TIMEOUT {
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
                    "{} is not a configured connection (known: {})",
                    shown(interpolated, "default_connection", default),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        for (key, connection) in &self.connections {
            self.check_connection(
                connection,
                &mut ConnectionProblems::new(key, &mut p, interpolated),
            );
            if key.is_empty() {
                p.push("connections", "a connection name must not be empty");
            }
        }
        p
    }

    fn check_connection(&self, c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
        if c.name != p.key() {
            let message = format!(
                "{} contradicts the map key `{}`",
                p.shown("name", &c.name),
                p.key()
            );
            p.push("name", message);
        }
        if c.name.contains(REPLICA_MARK) {
            p.push("name", reserved_name());
        }
        self.check_settings(c, p);
        self.check_replicas(c, p);
    }

    /// A read replica is checked like a connection, under its own path
    /// (`connections.primary.replicas[1].port`); a problem it only inherits from its connection
    /// is reported once, on the connection.
    fn check_replicas(&self, c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
        timeout_limit(
            p,
            "max_replica_lag",
            c.max_replica_lag,
            " (0s means no limit)",
        );
        timeout_limit(
            p,
            "read_your_writes",
            c.read_your_writes,
            " (0s turns it off)",
        );
        if c.replicas.is_empty() {
            return;
        }
        let driver = crate::registry::driver(c);
        if let Some(driver) = driver.filter(|d| d.replica_lag.is_none()) {
            let users = users(|d| d.replica_lag.is_some());
            p.push(
                "replicas",
                format!(
                    "{} has no read replicas here (only {})",
                    driver_label(driver),
                    if users.is_empty() {
                        "backends not in this build".to_owned()
                    } else {
                        users.join(", ")
                    }
                ),
            );
            return;
        }
        let interpolated = p.interpolated();
        let default_port = driver.and_then(|d| d.default_port);
        // Replicas are keyed by their member name (stats, metrics): two naming the same
        // server would hide one another.
        let mut seen: Vec<String> = Vec::new();
        for (i, replica) in c.replicas.iter().enumerate() {
            let (name, ..) = crate::replicas::identity(&c.name, i, replica, default_port);
            if let Some(first) = seen.iter().position(|n| *n == name) {
                p.push(
                    &format!("replicas[{i}]"),
                    format!("names the same server as replicas[{first}]"),
                );
            }
            seen.push(name);
        }
        for (i, replica) in c.replicas.iter().enumerate() {
            let key = format!("{}.replicas[{i}]", p.key());
            let mut own = ConfigProblems::default();
            let mut inherited = ConfigProblems::default();
            if replica.kind != c.kind {
                own.push(
                    format!("connections.{key}.type"),
                    format!("a replica of a {} connection is {} too", c.kind, c.kind),
                );
            }
            if !replica.replicas.is_empty() {
                own.push(
                    format!("connections.{key}.replicas"),
                    "a replica has no replicas of its own",
                );
            }
            self.check_settings(
                replica,
                &mut ConnectionProblems::new(&key, &mut own, interpolated),
            );
            self.check_settings(
                c,
                &mut ConnectionProblems::new(&key, &mut inherited, interpolated),
            );
            let inherited: Vec<_> = inherited.iter().cloned().collect();
            for problem in own.iter().filter(|o| !inherited.contains(o)) {
                p.push_at(problem.path.clone(), problem.message.clone());
            }
        }
    }

    /// Everything a connection's settings must satisfy, but its name.
    fn check_settings(&self, c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
        let kind = c.kind;
        let pool = self.pool_settings(c);
        // Global values were checked above; report here only what this connection sets.
        let overrides = c.max_open_conns.is_some() || c.max_idle_conns.is_some();
        if c.max_open_conns == Some(0) {
            p.push("max_open_conns", "must be at least 1");
        }
        // Sizes beyond the limit are reported once, below, not also as relations.
        let within = |n: u32| n <= MAX_POOL_SIZE;
        if overrides
            && pool.max_idle > pool.max_open
            && within(pool.max_open)
            && within(pool.max_idle)
        {
            p.push(
                "max_idle_conns",
                format!(
                    "{} is more than max_open_conns ({})",
                    pool.max_idle, pool.max_open
                ),
            );
        }
        if pool.min_open > pool.max_open && within(pool.max_open) && within(pool.min_open) {
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
        // Only what this connection sets: the global values were checked above.
        for (field, value) in [
            ("max_open_conns", c.max_open_conns),
            ("max_idle_conns", c.max_idle_conns),
            ("min_open_conns", c.min_open_conns),
        ] {
            pool_limit(p, field, value);
        }
        lifetime_limit(p, "conn_max_lifetime", c.conn_max_lifetime);
        lifetime_limit(p, "conn_max_idle_time", c.conn_max_idle_time);
        timeout_limit(p, "connect_timeout", c.connect_timeout, "");
        timeout_limit(p, "query_timeout", c.query_timeout, " (0s means no limit)");
        if let Some(threshold) = c.leak_detection_threshold {
            timeout_limit(
                p,
                "leak_detection_threshold",
                threshold,
                " (0s turns it off)",
            );
        }
        if c.circuit_breaker_failures
            .is_some_and(|n| n > MAX_CIRCUIT_BREAKER_FAILURES)
        {
            p.push(
                "circuit_breaker.failures",
                "more than 10000 consecutive failures; a breaker that late never opens in practice",
            );
        }

        if c.password.is_some() && c.password_file.is_some() {
            p.push("password", "set either password or password_file, not both");
        }
        if let Some(file) = &c.password_file {
            check_password_file(file, p);
        }
        crate::hosts::check(
            c,
            crate::registry::driver(c).and_then(|d| d.default_port),
            p,
        );
        if c.trust_server_certificate
            && matches!(c.sslmode, Some(SslMode::VerifyCa | SslMode::VerifyFull))
        {
            p.push(
                "trust_server_certificate",
                "contradicts sslmode verify-ca/verify-full, which verify the certificate",
            );
        }

        let Some(driver) = crate::registry::driver(c) else {
            let (key, feature) = match c.driver {
                Some(d) => ("driver", d.feature()),
                None => ("type", kind.as_str()),
            };
            p.push(
                key,
                format!("this build of dbmanager does not include the `{feature}` cargo feature"),
            );
            return;
        };
        check_against(driver, c, p);
    }
}

/// Where a problem can be recorded: the manager's problems or one connection's.
trait Problems {
    fn problem(&mut self, field: &str, message: String);
}

impl Problems for ConfigProblems {
    fn problem(&mut self, field: &str, message: String) {
        self.push(field, message);
    }
}

impl Problems for ConnectionProblems<'_> {
    fn problem(&mut self, field: &str, message: String) {
        self.push(field, message);
    }
}

fn pool_limit(p: &mut impl Problems, field: &str, value: Option<u32>) {
    if value.is_some_and(|v| v > MAX_POOL_SIZE) {
        p.problem(
            field,
            format!("more than {MAX_POOL_SIZE}, the largest accepted pool size"),
        );
    }
}

fn lifetime_limit(p: &mut impl Problems, field: &str, value: Option<Duration>) {
    if value.is_some_and(|v| v > MAX_LIFETIME) {
        p.problem(
            field,
            "longer than 365days, the largest accepted (0s means no limit)".to_owned(),
        );
    }
}

fn timeout_limit(p: &mut impl Problems, field: &str, value: Duration, note: &str) {
    if value > MAX_TIMEOUT {
        p.problem(
            field,
            format!("longer than 24h, the largest accepted{note}"),
        );
    }
}

/// `password_file` must be a regular file of at most [`MAX_PASSWORD_FILE_BYTES`] (a directory,
/// a FIFO or `/dev/zero` would block or never end at connect); one readable by group or others
/// is logged as a warning naming the path, never the content. Nothing is read here.
fn check_password_file(file: &Path, p: &mut ConnectionProblems<'_>) {
    let shown = p.shown("password_file", &file.display().to_string());
    let metadata = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) => {
            p.push("password_file", format!("cannot read {shown}: {e}"));
            return;
        }
    };
    let kind = metadata.file_type();
    if !kind.is_file() {
        p.push(
            "password_file",
            format!("{shown} is not a regular file ({})", file_kind(&kind)),
        );
        return;
    }
    if metadata.len() > MAX_PASSWORD_FILE_BYTES {
        p.push(
            "password_file",
            format!(
                "{shown} is larger than {} KiB",
                MAX_PASSWORD_FILE_BYTES / 1024
            ),
        );
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o044 != 0 {
            tracing::warn!(
                path = %file.display(),
                key = %format!("connections.{}.password_file", p.key()),
                "password_file is readable by group or others; `chmod 600` it"
            );
        }
    }
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Why a connection name containing [`REPLICA_MARK`] is refused: its stats entry would
/// replace a replica's (they are keyed by name).
pub(crate) fn reserved_name() -> String {
    format!(
        "`{REPLICA_MARK}` is reserved for the names of read replicas \
         (`<connection>{REPLICA_MARK}<host>:<port>`)"
    )
}

/// Keys a `dsn` replaces: set beside one, they would be ignored without a word.
const REPLACED_BY_DSN: [Field; 6] = [
    Field::Host,
    Field::Hosts,
    Field::Port,
    Field::User,
    Field::Database,
    Field::Filepath,
];

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
    if c.dsn.is_some() {
        // `password`/`password_file` beside a dsn are not here: supplying the password apart
        // from the dsn is a feature (drivers that cannot apply it say so in their `check`).
        let conflicting: Vec<&str> = REPLACED_BY_DSN
            .iter()
            .filter(|f| f.is_set(c) && driver.fields.contains(f))
            .map(|f| f.key())
            .collect();
        if !conflicting.is_empty() {
            p.push(
                "dsn",
                format!(
                    "conflicts with {}: a dsn is used as is, so they would be ignored; put them in the dsn or remove the dsn",
                    conflicting.join(", ")
                ),
            );
        }
    }
    if !has_dsn {
        for field in driver.required {
            // A server list stands in for the one host.
            let listed = *field == Field::Host && Field::Hosts.is_set(c);
            if !field.is_set(c) && !listed {
                p.push(
                    field.key(),
                    format!("required for {kind} when no dsn is given"),
                );
            }
        }
    }
    for field in Field::ALL {
        if field.is_set(c) && !driver.fields.contains(&field) {
            let users = users(|d| d.fields.contains(&field));
            let only = if users.is_empty() {
                "no backend in this build".to_owned()
            } else {
                format!("only by {}", users.join(", "))
            };
            // The driver is named only when another driver of the type reads the field.
            let this = if drivers_of(driver.kind).any(|d| d.fields.contains(&field)) {
                driver_label(driver)
            } else {
                kind.to_string()
            };
            p.push(field.key(), format!("not used by {this} ({only})"));
        }
    }
    if c.default_orm == DefaultOrm::SeaOrm
        && let Some(reason) = driver.no_sea_orm
    {
        p.push("default_orm", reason);
    }
    (driver.check)(c, p);
}

/// The labels every series has already; a tag label must not shadow one.
const RESERVED_LABELS: &[&str] = &[
    "connection",
    "type",
    "state",
    "result",
    "kind",
    "operation",
    "status",
    "host",
    "le",
    "member_of",
    "route",
    "fallback",
    "host",
    "port",
];

/// Tag keys that become metric labels must be valid Prometheus label names.
fn check_metric_tag_labels(labels: &[String], p: &mut ConfigProblems) {
    let mut seen = HashSet::new();
    for (i, label) in labels.iter().enumerate() {
        let path = format!("metric_tag_labels[{i}]");
        let mut chars = label.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || label.len() > 64 {
            p.push(
                path,
                "not a metric label name (letters, digits and `_`, not starting with a digit, at most 64)",
            );
        } else if label.starts_with("__")
            || label.starts_with("db_")
            || RESERVED_LABELS.contains(&label.as_str())
        {
            p.push(
                path,
                format!("`{label}` is reserved by the metrics themselves"),
            );
        } else if !seen.insert(label) {
            p.push(path, format!("`{label}` is listed twice"));
        }
    }
}

/// Reads a configuration file: at most [`MAX_DOCUMENT_BYTES`], UTF-8.
fn read_config_file(path: &Path) -> Result<String, ConfigProblems> {
    let fail = |message: String| {
        let mut problems = ConfigProblems::default();
        problems.push("", message);
        problems
    };
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read `{}`: {e}", path.display())))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_DOCUMENT_BYTES).unwrap_or(u64::MAX);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read `{}`: {e}", path.display())))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(fail(format!(
            "`{}` is larger than {} KiB, the largest configuration accepted",
            path.display(),
            MAX_DOCUMENT_BYTES / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail(format!("`{}` is not UTF-8 text", path.display())))
}

fn drivers_of(kind: DatabaseType) -> impl Iterator<Item = &'static Driver> {
    crate::registry::DRIVERS
        .iter()
        .copied()
        .filter(move |d| d.kind == kind)
}

/// A driver as the configuration selects it: its type, and its `driver:` value when the type
/// has several.
fn driver_label(d: &Driver) -> String {
    match d.variant {
        Some(variant) => format!("{} with `driver: {}`", d.kind, variant.as_str()),
        None => d.kind.to_string(),
    }
}

/// The drivers that have what `has` asks for, for a "not used by" problem: a type when all its
/// drivers do, else each driver of the type that does.
fn users(has: impl Fn(&Driver) -> bool) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    for d in crate::registry::DRIVERS.iter().copied() {
        if !has(d) {
            continue;
        }
        let label = if drivers_of(d.kind).all(&has) {
            d.kind.to_string()
        } else {
            driver_label(d)
        };
        if !users.contains(&label) {
            users.push(label);
        }
    }
    users
}
