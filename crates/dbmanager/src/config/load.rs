//! Loading: YAML → value tree → environment overlay → `${VAR}` interpolation → typed config.
//!
//! The tree is walked by hand rather than deserialized with serde so that every problem in the
//! document is collected, with its path, instead of stopping at the first one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::problems::did_you_mean;
use super::{
    ConfigProblems, ConnectionConfig, DatabaseType, DefaultOrm, ManagerConfig, ReadPreference,
    SslMode,
};

/// Prefix of environment overrides: `DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD=...`.
pub const ENV_PREFIX: &str = "DBMANAGER__";

const ROOT_KEY: &str = "dbmanager";

const MANAGER_KEYS: &[&str] = &[
    "default_connection",
    "connections",
    "max_open_conns",
    "max_idle_conns",
    "conn_max_lifetime",
    "conn_max_idle_time",
    "retry_attempts",
    "retry_delay",
    "retry_max_delay",
    "health_check_interval",
    "enable_auto_reconnect",
];

const CONNECTION_KEYS: &[&str] = &[
    "name",
    "type",
    "dsn",
    "host",
    "port",
    "user",
    "password",
    "password_file",
    "database",
    "sslmode",
    "schema",
    "filepath",
    "auth_source",
    "replica_set",
    "read_preference",
    "max_open_conns",
    "max_idle_conns",
    "min_open_conns",
    "conn_max_lifetime",
    "conn_max_idle_time",
    "connect_timeout",
    "query_timeout",
    "enable_tracing",
    "trace_statements",
    "enable_metrics",
    "enable_logging",
    "default_orm",
    "tags",
    "application_name",
    "critical",
    "trust_server_certificate",
];

/// The environment a config is loaded against: overrides and `${VAR}` values come from here.
///
/// [`EnvSource::process`] reads the process environment; tests build one from pairs so they
/// never mutate global state. `Debug` prints how many variables there are and the names of the
/// `DBMANAGER__` overrides, never a value (the environment holds passwords).
#[derive(Clone, Default)]
pub struct EnvSource {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut overrides: Vec<&str> = self
            .vars
            .keys()
            .map(String::as_str)
            .filter(|k| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort_unstable();
        f.debug_struct("EnvSource")
            .field("variables", &self.vars.len())
            .field("overrides", &overrides)
            .finish()
    }
}

impl EnvSource {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An empty environment.
    pub fn empty() -> Self {
        Self::default()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EnvSource {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Parses YAML with overrides and `${VAR}` values taken from `env`, without the semantic
/// checks. Returns the config, the connections too broken to be typed, and the problems found.
pub(crate) fn parse(
    yaml: &str,
    env: &EnvSource,
) -> (ManagerConfig, HashSet<String>, ConfigProblems) {
    let mut problems = ConfigProblems::default();
    let mut root = parse_root(yaml, &mut problems);
    if let Some(root) = root.as_mut() {
        overlay_env(root, env, &mut problems);
        interpolate(root, env, "", &mut problems);
    }
    let (config, broken) = match root {
        Some(Value::Object(map)) => walk_manager(&map, &mut problems),
        _ => (ManagerConfig::default(), HashSet::new()),
    };
    (config, broken, problems)
}

fn parse_root(yaml: &str, problems: &mut ConfigProblems) -> Option<Value> {
    // No snippets: an error excerpt could quote a password from the surrounding lines.
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    let document: Value = match serde_saphyr::from_str_with_options(yaml, options) {
        Ok(value) => value,
        Err(e) => {
            problems.push("", format!("the document is not valid YAML: {e}"));
            return None;
        }
    };
    let Value::Object(mut top) = document else {
        problems.push(
            "",
            format!("the document must be a mapping with the root key `{ROOT_KEY}:`"),
        );
        return None;
    };
    // Other root keys are allowed: the file may hold the rest of the application's config.
    match top.remove(ROOT_KEY) {
        Some(Value::Null) => Some(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Some(value),
        Some(_) => {
            problems.push(ROOT_KEY, "must be a mapping");
            None
        }
        None => {
            let hint = did_you_mean(ROOT_KEY, top.keys().map(String::as_str));
            problems.push("", format!("missing the root key `{ROOT_KEY}:`{hint}"));
            None
        }
    }
}

/// Folds `DBMANAGER__A__B=value` into the tree at `a.b`. A connection segment matches an existing
/// connection whose name equals it ignoring case, `-` and `_` (environment names cannot hold `-`).
fn overlay_env(root: &mut Value, env: &EnvSource, problems: &mut ConfigProblems) {
    let mut vars: Vec<(&String, &String)> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(format!("env {name}"), "empty segment in the variable name");
            continue;
        }
        let mut node = &mut *root;
        let mut path = Vec::with_capacity(segments.len());
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            let Value::Object(map) = node else {
                problems.push(
                    format!("env {name}"),
                    format!("`{}` is not a mapping", path.join(".")),
                );
                break;
            };
            let key = if path.len() == 1 && path[0] == "connections" {
                existing_connection_key(map, segment)
            } else {
                segment.clone()
            };
            path.push(key.clone());
            if i == last {
                map.insert(key, Value::String(value.clone()));
                break;
            }
            node = map
                .entry(key)
                .and_modify(|v| {
                    if v.is_null() {
                        *v = Value::Object(Map::new());
                    }
                })
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
}

fn existing_connection_key(map: &Map<String, Value>, segment: &str) -> String {
    let fold = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    map.keys()
        .find(|k| fold(k) == *segment)
        .cloned()
        .unwrap_or_else(|| segment.to_owned())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string; `$$` is a literal `$`.
fn interpolate(value: &mut Value, env: &EnvSource, path: &str, problems: &mut ConfigProblems) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(path, message),
        },
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                interpolate(v, env, &join(path, k), problems);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, env, &join(path, &i.to_string()), problems);
            }
        }
        _ => {}
    }
}

fn expand(text: &str, env: &EnvSource) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$$` for a literal `$`)".to_owned())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{name}}}` is not a valid variable reference"));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "`${{{name}}}` is not set in the environment (use `${{{name}:-default}}` for a fallback)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check_keys(map: &Map<String, Value>, known: &[&str], path: &str, problems: &mut ConfigProblems) {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            let hint = did_you_mean(key, known.iter().copied());
            problems.push(join(path, key), format!("unknown key{hint}"));
        }
    }
}

/// Returns the config and the names of connections too broken to type (their `type` is bad).
fn walk_manager(
    map: &Map<String, Value>,
    problems: &mut ConfigProblems,
) -> (ManagerConfig, HashSet<String>) {
    check_keys(map, MANAGER_KEYS, "", problems);
    let mut f = Fields {
        map,
        path: String::new(),
        problems,
    };
    let mut config = ManagerConfig {
        default_connection: f.string("default_connection"),
        ..ManagerConfig::default()
    };
    f.set_u32("max_open_conns", &mut config.max_open_conns);
    f.set_u32("max_idle_conns", &mut config.max_idle_conns);
    f.set_duration("conn_max_lifetime", &mut config.conn_max_lifetime);
    f.set_duration("conn_max_idle_time", &mut config.conn_max_idle_time);
    f.set_u32("retry_attempts", &mut config.retry_attempts);
    f.set_duration("retry_delay", &mut config.retry_delay);
    f.set_duration("retry_max_delay", &mut config.retry_max_delay);
    f.set_duration("health_check_interval", &mut config.health_check_interval);
    f.set_bool("enable_auto_reconnect", &mut config.enable_auto_reconnect);

    let mut broken = HashSet::new();
    match map.get("connections") {
        None | Some(Value::Null) => {}
        Some(Value::Object(connections)) => {
            for (name, value) in connections {
                let path = format!("connections.{name}");
                let Value::Object(fields) = value else {
                    problems.push(path, "must be a mapping of connection settings");
                    broken.insert(name.clone());
                    continue;
                };
                match walk_connection(name, fields, &path, problems) {
                    Some(connection) => {
                        config.connections.insert(name.clone(), connection);
                    }
                    None => {
                        broken.insert(name.clone());
                    }
                }
            }
        }
        Some(_) => problems.push("connections", "must be a mapping from name to settings"),
    }
    (config, broken)
}

fn walk_connection(
    key: &str,
    map: &Map<String, Value>,
    path: &str,
    problems: &mut ConfigProblems,
) -> Option<ConnectionConfig> {
    check_keys(map, CONNECTION_KEYS, path, problems);
    let mut f = Fields {
        map,
        path: path.to_owned(),
        problems,
    };
    let kind = match map.get("type") {
        None | Some(Value::Null) => {
            let msg = format!(
                "missing; expected one of {}",
                DatabaseType::NAMES.join(", ")
            );
            f.problem("type", msg);
            None
        }
        Some(_) => f.parse_enum("type", DatabaseType::from_name, DatabaseType::NAMES),
    };
    let mut c = ConnectionConfig::new(key, kind.unwrap_or(DatabaseType::Sqlite));
    if let Some(name) = f.string("name") {
        c.name = name;
    }
    c.dsn = f.secret("dsn");
    c.host = f.string("host");
    c.port = f.port("port");
    c.user = f.string("user");
    c.password = f.secret("password");
    c.password_file = f.string("password_file").map(PathBuf::from);
    c.database = f.string("database");
    c.sslmode = f.parse_enum("sslmode", SslMode::parse, SslMode::NAMES);
    c.schema = f.string("schema");
    c.filepath = f.string("filepath").map(PathBuf::from);
    c.auth_source = f.string("auth_source");
    c.replica_set = f.string("replica_set");
    c.read_preference = f.parse_enum(
        "read_preference",
        ReadPreference::parse,
        ReadPreference::NAMES,
    );
    c.max_open_conns = f.u32("max_open_conns");
    c.max_idle_conns = f.u32("max_idle_conns");
    c.min_open_conns = f.u32("min_open_conns");
    c.conn_max_lifetime = f.duration("conn_max_lifetime");
    c.conn_max_idle_time = f.duration("conn_max_idle_time");
    f.set_duration("connect_timeout", &mut c.connect_timeout);
    f.set_duration("query_timeout", &mut c.query_timeout);
    f.set_bool("enable_tracing", &mut c.enable_tracing);
    f.set_bool("trace_statements", &mut c.trace_statements);
    f.set_bool("enable_metrics", &mut c.enable_metrics);
    f.set_bool("enable_logging", &mut c.enable_logging);
    f.set_bool("critical", &mut c.critical);
    f.set_bool("trust_server_certificate", &mut c.trust_server_certificate);
    if let Some(orm) = f.default_orm() {
        c.default_orm = orm;
    }
    c.tags = f.tags();
    c.application_name = f.string("application_name");
    kind.map(|_| c)
}

/// Typed reads of one mapping's fields; a bad value becomes a problem and reads as absent.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    problems: &'a mut ConfigProblems,
}

impl<'a> Fields<'a> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(join(&self.path, key), message);
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        let map: &'a Map<String, Value> = self.map;
        map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.present(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.problem(key, "expected a string");
                None
            }
        }
    }

    /// Like [`Self::string`] but never quotes the value in a message.
    fn secret(&mut self, key: &str) -> Option<SecretString> {
        self.string(key).map(SecretString::from)
    }

    fn u64(&mut self, key: &str) -> Option<u64> {
        let parsed = match self.present(key)? {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                if n.as_i64().is_some_and(|v| v < 0) {
                    format!("{n} must not be negative")
                } else {
                    format!("{n} is not a whole number")
                }
            }),
            Value::String(s) => s.trim().parse::<u64>().map_err(|_| {
                if s.trim().starts_with('-') {
                    format!("{s} must not be negative")
                } else {
                    format!("`{s}` is not a whole number")
                }
            }),
            _ => Err("expected a whole number".to_owned()),
        };
        parsed.map_err(|m| self.problem(key, m)).ok()
    }

    fn u32(&mut self, key: &str) -> Option<u32> {
        let value = self.u64(key)?;
        u32::try_from(value)
            .map_err(|_| self.problem(key, format!("{value} is too large")))
            .ok()
    }

    fn set_u32(&mut self, key: &str, slot: &mut u32) {
        if let Some(v) = self.u32(key) {
            *slot = v;
        }
    }

    fn port(&mut self, key: &str) -> Option<u16> {
        let value = self.u64(key)?;
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.problem(key, format!("{value} is not a valid port (1-65535)"));
                None
            }
        }
    }

    fn set_bool(&mut self, key: &str, slot: &mut bool) {
        let parsed = match self.present(key) {
            None => return,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            Some(_) => None,
        };
        match parsed {
            Some(b) => *slot = b,
            None => self.problem(key, "expected true or false"),
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        match self.present(key)? {
            Value::String(s) => humantime::parse_duration(s.trim())
                .map_err(|e| {
                    self.problem(
                        key,
                        format!("`{s}` is not a duration ({e}); write e.g. `500ms`, `30s`, `1m30s`, `2h`"),
                    )
                })
                .ok(),
            Value::Number(n) => {
                self.problem(
                    key,
                    format!("`{n}` has no unit; write it with one, e.g. `{n}s` or `{n}ms`"),
                );
                None
            }
            _ => {
                self.problem(key, "expected a duration such as `30s`");
                None
            }
        }
    }

    fn set_duration(&mut self, key: &str, slot: &mut Duration) {
        if let Some(d) = self.duration(key) {
            *slot = d;
        }
    }

    fn parse_enum<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Option<T> {
        let text = self.string(key)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            let hint = did_you_mean(&text, names.iter().copied());
            self.problem(
                key,
                format!(
                    "`{text}` is not valid; expected one of {}{hint}",
                    names.join(", ")
                ),
            );
        }
        parsed
    }

    fn default_orm(&mut self) -> Option<DefaultOrm> {
        let text = self.string("default_orm")?;
        // The reference's Go ORMs: both are ORMs over the shared pool, which in Rust is SeaORM.
        if matches!(text.as_str(), "bun" | "gorm") {
            return Some(DefaultOrm::SeaOrm);
        }
        self.parse_enum("default_orm", DefaultOrm::parse, DefaultOrm::NAMES)
    }

    fn tags(&mut self) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        match self.present("tags") {
            None => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            tags.insert(k.clone(), s.clone());
                        }
                        Value::Number(_) | Value::Bool(_) => {
                            tags.insert(k.clone(), v.to_string());
                        }
                        _ => self.problem(&format!("tags.{k}"), "expected a string"),
                    }
                }
            }
            Some(_) => self.problem("tags", "expected a mapping of string to string"),
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_handles_defaults_escapes_and_missing() {
        let env: EnvSource = [("HOST", "db.internal")].into_iter().collect();
        assert_eq!(expand("${HOST}:5432", &env).unwrap(), "db.internal:5432");
        assert_eq!(expand("${PORT:-6543}", &env).unwrap(), "6543");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        assert!(expand("${MISSING}", &env).unwrap_err().contains("MISSING"));
        assert!(expand("${HOST", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${BAD-NAME}", &env).is_err());
    }
}
