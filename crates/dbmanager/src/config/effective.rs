//! The effective configuration: every key's value after defaults, environment overrides and
//! `${VAR}` interpolation, secrets redacted, each with where it came from
//! (`dbmanager config show`).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};

use super::keys::{CONNECTION, Key, MANAGER, REPLICATION_KEYS, Shape};
use super::tree::Node;
use super::{ConfigProblems, ConnectionConfig, DatabaseType, ManagerConfig};

/// What a redacted value reads as (the same text as the config types' `Debug`).
pub const REDACTED: &str = "[REDACTED]";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// Not set anywhere: the built-in default.
    Default,
    /// Not set on the connection: the manager-level `key` applies, whatever its own origin.
    Inherited {
        /// The manager-level key.
        key: String,
    },
    /// Written in the configuration document.
    File {
        /// The value's line, from 1, when known (for a mapping or list, its first value's).
        line: Option<usize>,
    },
    /// A `DBMANAGER__...` environment variable (see [`super::ENV_PREFIX`]).
    Env {
        /// The variable's name.
        var: String,
    },
}

/// One key of an effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Setting {
    /// The connection the key belongs to; `None` for a manager-level key.
    pub connection: Option<String>,
    /// The key, as written in YAML.
    pub key: &'static str,
    /// The value as YAML would spell it (durations as `30s`), with every secret replaced by
    /// [`REDACTED`]: `password`, the credentials and unknown parameters of a `dsn`, and the
    /// `init_sql` statements (they may carry literals worth hiding).
    pub value: Value,
    /// Whether the key holds a secret (part or all of `value` is redacted).
    pub secret: bool,
    /// Where the value came from: usually one origin; a mapping (`tags`) may be part file,
    /// part environment.
    pub origins: Vec<Origin>,
    /// The variables `${VAR}` interpolation read into the value (names only).
    pub expanded_from: Vec<String>,
}

impl Setting {
    /// The dotted path of the key, as problems name it (`connections.primary.port`).
    pub fn path(&self) -> String {
        match &self.connection {
            Some(name) => format!("connections.{name}.{}", self.key),
            None => self.key.to_owned(),
        }
    }
}

/// A configuration and, for every key that has a value, its value and origin: what
/// `dbmanager config show` prints. Built by [`ManagerConfig::explain_yaml_str`] and
/// [`ManagerConfig::explain_file`].
///
/// Keys without a value (no default, not set) are not listed; a connection's pool keys that it
/// does not set are listed with the value that applies, as [`Origin::Inherited`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EffectiveConfig {
    /// The validated configuration.
    pub config: ManagerConfig,
    /// The settings: the manager's keys, then each connection's (by name), in the README's
    /// order.
    pub settings: Vec<Setting>,
}

impl EffectiveConfig {
    /// The effective configuration as one JSON document shaped like the YAML (`{"dbmanager":
    /// {...}}`), secrets redacted, without origins.
    pub fn to_json(&self) -> Value {
        let mut manager = serde_json::Map::new();
        let mut connections = serde_json::Map::new();
        for setting in &self.settings {
            let target = match &setting.connection {
                None => &mut manager,
                Some(name) => {
                    let entry = connections
                        .entry(name.clone())
                        .or_insert_with(|| Value::Object(serde_json::Map::new()));
                    match entry {
                        Value::Object(map) => map,
                        _ => continue,
                    }
                }
            };
            target.insert(setting.key.to_owned(), setting.value.clone());
        }
        manager.insert("connections".to_owned(), Value::Object(connections));
        json!({ "dbmanager": manager })
    }
}

/// Where one key's value came from, as parsing saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Source {
    /// Any part of the value was written in the document.
    in_document: bool,
    /// The smallest line of its scalars in the document.
    line: Option<usize>,
    /// The overrides that set any part of it.
    env: Vec<String>,
    /// The `${VAR}` variables read into it.
    expanded: Vec<String>,
}

/// Sources by connection (`None`: manager level) and key.
pub(crate) type Sources = BTreeMap<(Option<String>, String), Source>;

/// The source of every key set (not null) in the `dbmanager:` mapping, after the overlay and
/// interpolation.
pub(crate) fn sources(manager: &BTreeMap<String, Node>) -> Sources {
    let mut out = Sources::new();
    for (key, node) in manager {
        if key == "connections" {
            let Node::Map(connections) = node else {
                continue;
            };
            for (name, connection) in connections {
                let Node::Map(fields) = connection else {
                    continue;
                };
                for (field, value) in fields {
                    if !value.is_null() {
                        out.insert((Some(name.clone()), field.clone()), source(value));
                    }
                }
            }
        } else if !node.is_null() {
            out.insert((None, key.clone()), source(node));
        }
    }
    out
}

/// Marks the list-valued key at `path` (`[key]` or `[connections, name, key]`) as set by the
/// override `var`, which replaced the whole list: an empty one (`[]`) has no scalar to say so
/// and read as written in the document.
pub(crate) fn listed_by_env(sources: &mut Sources, path: &[String], var: String) {
    let key = match path {
        [key] => (None, key.clone()),
        [connections, name, key] if connections == "connections" => {
            (Some(name.clone()), key.clone())
        }
        _ => return,
    };
    let source = sources.entry(key).or_default();
    source.in_document = false;
    source.line = None;
    if !source.env.contains(&var) {
        source.env.push(var);
    }
}

/// Names the `DBMANAGER__...` variables behind each problem whose key an override set: the key
/// is not in the file, so its path alone would send the reader looking there. Names only,
/// never values.
pub(crate) fn name_overrides(problems: &mut ConfigProblems, sources: &Sources) {
    let overridden: Vec<(String, &[String])> = sources
        .iter()
        .filter(|(_, source)| !source.env.is_empty())
        .map(|((connection, key), source)| {
            let path = match connection {
                Some(name) => format!("connections.{name}.{key}"),
                None => key.clone(),
            };
            (path, source.env.as_slice())
        })
        .collect();
    problems.annotate(|path| {
        // The key itself, or a part of it (`tags.team`, `hosts[1]`).
        let (_, vars) = overridden.iter().find(|(key, _)| {
            path.strip_prefix(key.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })?;
        Some(format!(" (set by {})", vars.join(", ")))
    });
}

fn source(node: &Node) -> Source {
    fn visit(node: &Node, out: &mut Source, scalars: &mut usize) {
        match node {
            Node::Scalar(s) => {
                *scalars += 1;
                match &s.env {
                    Some(var) => {
                        if !out.env.contains(var) {
                            out.env.push(var.clone());
                        }
                    }
                    None => {
                        out.in_document = true;
                        if s.line > 0 {
                            out.line = Some(out.line.map_or(s.line, |l| l.min(s.line)));
                        }
                    }
                }
                for var in &s.expanded {
                    if !out.expanded.contains(var) {
                        out.expanded.push(var.clone());
                    }
                }
            }
            Node::Map(map) => map.values().for_each(|v| visit(v, out, scalars)),
            Node::Seq(items) => items.iter().for_each(|v| visit(v, out, scalars)),
        }
    }
    let mut out = Source::default();
    let mut scalars = 0;
    visit(node, &mut out, &mut scalars);
    if scalars == 0 {
        // An empty mapping or list: only the document writes those.
        out.in_document = true;
    }
    out
}

/// The settings of `config`, with origins from `sources`.
pub(crate) fn settings(config: &ManagerConfig, sources: &Sources) -> Vec<Setting> {
    let mut out = Vec::new();
    for key in MANAGER {
        if let Some(value) = manager_value(config, key) {
            let source = sources.get(&(None, key.name.to_owned()));
            out.push(setting(None, key, value, source, None));
        }
    }
    for (name, connection) in &config.connections {
        for key in CONNECTION {
            if let Some((value, inherits)) = connection_value(config, connection, key) {
                let source = sources.get(&(Some(name.clone()), key.name.to_owned()));
                out.push(setting(Some(name), key, value, source, inherits));
            }
        }
    }
    out
}

fn setting(
    connection: Option<&String>,
    key: &Key,
    value: Value,
    source: Option<&Source>,
    inherits: Option<&'static str>,
) -> Setting {
    let (origins, expanded_from) = match source {
        Some(source) => {
            let mut origins = Vec::new();
            if source.in_document {
                origins.push(Origin::File { line: source.line });
            }
            origins.extend(
                source
                    .env
                    .iter()
                    .map(|var| Origin::Env { var: var.clone() }),
            );
            (origins, source.expanded.clone())
        }
        None => {
            let origin = match inherits {
                Some(key) => Origin::Inherited {
                    key: key.to_owned(),
                },
                None => Origin::Default,
            };
            (vec![origin], Vec::new())
        }
    };
    Setting {
        connection: connection.cloned(),
        key: key.name,
        value,
        secret: is_secret(key),
        origins,
        expanded_from,
    }
}

fn is_secret(key: &Key) -> bool {
    key.shape == Shape::Secret || key.name == "init_sql"
}

fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// A manager-level key's value; `None` for `connections` and for keys without a value.
fn manager_value(c: &ManagerConfig, key: &Key) -> Option<Value> {
    Some(match key.name {
        "default_connection" => json!(c.default_connection.as_ref()?),
        "max_open_conns" => json!(c.max_open_conns),
        "max_idle_conns" => json!(c.max_idle_conns),
        "conn_max_lifetime" => duration(c.conn_max_lifetime),
        "conn_max_idle_time" => duration(c.conn_max_idle_time),
        "retry_attempts" => json!(c.retry_attempts),
        "retry_delay" => duration(c.retry_delay),
        "retry_max_delay" => duration(c.retry_max_delay),
        "health_check_interval" => duration(c.health_check_interval),
        "enable_auto_reconnect" => json!(c.enable_auto_reconnect),
        "metric_tag_labels" => json!(c.metric_tag_labels),
        _ => return None,
    })
}

/// A connection key's value and, for a pool key the connection may leave to the manager, the
/// manager-level key it then inherits; `None` for `name` (always its key in `connections`)
/// and for keys without a value.
fn connection_value(
    m: &ManagerConfig,
    c: &ConnectionConfig,
    key: &Key,
) -> Option<(Value, Option<&'static str>)> {
    let text = |v: &Option<String>| v.as_ref().map(|v| json!(v));
    let path = |v: &Option<std::path::PathBuf>| v.as_ref().map(|v| json!(v.to_string_lossy()));
    let own = |v: Value| Some((v, None));
    let pool = m.pool_settings(c);
    match key.name {
        "type" => own(json!(c.kind.as_str())),
        "dsn" => own(json!(redact_dsn(c.dsn.as_ref()?.expose_secret()))),
        "host" => own(text(&c.host)?),
        "hosts" => own(json!(c.hosts.as_ref()?)),
        "target_session_attrs" => own(json!(c.target_session_attrs?.as_str())),
        "port" => own(json!(c.port?)),
        "user" => own(text(&c.user)?),
        "password" => c.password.as_ref().and_then(|_| own(json!(REDACTED))),
        "password_file" => own(path(&c.password_file)?),
        "database" => own(text(&c.database)?),
        "sslmode" => own(json!(c.sslmode?.as_str())),
        "driver" => own(json!(c.driver?.as_str())),
        "schema" => own(text(&c.schema)?),
        // A PostgreSQL key with a default: listed for PostgreSQL, elsewhere only when set.
        "pooler" => (c.kind == DatabaseType::Postgres || c.pooler != super::Pooler::None)
            .then(|| (json!(c.pooler.as_str()), None)),
        "filepath" => own(path(&c.filepath)?),
        "auth_source" => own(text(&c.auth_source)?),
        "replica_set" => own(text(&c.replica_set)?),
        "read_preference" => own(json!(c.read_preference?.as_str())),
        "max_open_conns" => Some((json!(pool.max_open), Some("max_open_conns"))),
        "max_idle_conns" => Some((json!(pool.max_idle), Some("max_idle_conns"))),
        "min_open_conns" => own(json!(pool.min_open)),
        "conn_max_lifetime" => Some((
            duration(c.conn_max_lifetime.unwrap_or(m.conn_max_lifetime)),
            Some("conn_max_lifetime"),
        )),
        "conn_max_idle_time" => Some((
            duration(c.conn_max_idle_time.unwrap_or(m.conn_max_idle_time)),
            Some("conn_max_idle_time"),
        )),
        "connect_timeout" => own(duration(c.connect_timeout)),
        "query_timeout" => own(duration(c.query_timeout)),
        "enable_tracing" => own(json!(c.enable_tracing)),
        "trace_statements" => own(json!(c.trace_statements)),
        "enable_metrics" => own(json!(c.enable_metrics)),
        "enable_logging" => own(json!(c.enable_logging)),
        "default_orm" => own(json!(c.default_orm.as_str())),
        "tags" => own(json!(c.tags)),
        "application_name" => own(text(&c.application_name)?),
        "critical" => own(json!(c.critical)),
        "trust_server_certificate" => own(json!(c.trust_server_certificate)),
        "init_sql" => own(json!(vec![REDACTED; c.init_sql.len()])),
        "leak_detection_threshold" => own(duration(c.leak_detection_threshold?)),
        "circuit_breaker" => own(match c.circuit_breaker_failures {
            Some(n) => json!({ super::keys::CIRCUIT_BREAKER_FAILURES: n }),
            None => json!("off"),
        }),
        "replicas" => own(json!(
            c.replicas
                .iter()
                .map(|r| replica_value(m, c, r))
                .collect::<Vec<_>>()
        )),
        "read_policy" => own(json!(c.read_policy.as_str())),
        "max_replica_lag" => own(duration(c.max_replica_lag)),
        "read_your_writes" => own(duration(c.read_your_writes)),
        "replica_fallback" => own(json!(c.replica_fallback.as_str())),
        _ => None,
    }
}

/// A replica as `config show` prints it: the keys whose value differs from its connection's
/// (what the entry overrides), secrets redacted as everywhere.
fn replica_value(
    m: &ManagerConfig,
    parent: &ConnectionConfig,
    replica: &ConnectionConfig,
) -> Value {
    let mut out = serde_json::Map::new();
    for key in CONNECTION
        .iter()
        .filter(|k| !REPLICATION_KEYS.contains(&k.name))
    {
        let mine = connection_value(m, replica, key).map(|(v, _)| v);
        let theirs = connection_value(m, parent, key).map(|(v, _)| v);
        let secret_changed = match key.name {
            "password" => {
                replica.password.as_ref().map(ExposeSecret::expose_secret)
                    != parent.password.as_ref().map(ExposeSecret::expose_secret)
            }
            "dsn" => {
                replica.dsn.as_ref().map(ExposeSecret::expose_secret)
                    != parent.dsn.as_ref().map(ExposeSecret::expose_secret)
            }
            _ => false,
        };
        if let Some(value) = mine
            && (secret_changed || Some(&value) != theirs.as_ref())
        {
            out.insert(key.name.to_owned(), value);
        }
    }
    Value::Object(out)
}

/// The default of a key, for the schema: what a config that does not set it gets. `None` for
/// keys without one, `type` (required), and a connection's keys that inherit the manager's.
#[cfg_attr(not(feature = "schema"), allow(dead_code))]
pub(crate) fn default_value(key: &Key, connection: bool) -> Option<Value> {
    let manager = ManagerConfig::default();
    if !connection {
        return manager_value(&manager, key);
    }
    if key.name == "type" {
        return None;
    }
    let c = ConnectionConfig::new("default", DatabaseType::Postgres);
    match connection_value(&manager, &c, key)? {
        (value, None) => Some(value),
        (_, Some(_)) => None,
    }
}

/// Query parameters of a URL `dsn` whose values are shown; every other value is redacted.
const SHOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "ssl",
    "tls",
    "application_name",
    "appname",
    "connect_timeout",
    "connecttimeoutms",
    "serverselectiontimeoutms",
    "target_session_attrs",
    "replicaset",
    "authsource",
    "authmechanism",
    "readpreference",
    "directconnection",
    "maxpoolsize",
    "minpoolsize",
    "mode",
    "cache",
    "charset",
    "timezone",
    "encrypt",
    "trustservercertificate",
    "statement-cache-capacity",
];

/// A `dsn` as `config show` prints it. A URL (`scheme://...`) keeps its scheme, user name,
/// hosts, path and the names of its query parameters; the password and the value of every
/// parameter not in a short list of harmless ones become [`REDACTED`]. Anything else (an ADO
/// string, `sqlite::memory:`) is redacted whole: its syntax is not known well enough to cut the
/// secret out.
pub(crate) fn redact_dsn(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return REDACTED.to_owned();
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return REDACTED.to_owned();
    }
    let mut out = format!("{scheme}://");
    // The last `@` ends the credentials: a password may hold `@`, `/`, `?` or `:` unencoded.
    let rest = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            out.push_str(user);
            out.push(':');
            out.push_str(REDACTED);
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    out.push_str(location);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value))
                    if SHOWN_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    format!("{name}={value}")
                }
                Some((name, _)) if super::load::is_word(name) => format!("{name}={REDACTED}"),
                _ => REDACTED.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_credentials_and_unknown_parameters_are_redacted() {
        assert_eq!(
            redact_dsn("postgres://app:S3cret@db:5432/app?sslmode=require&password=S3cret"),
            "postgres://app:[REDACTED]@db:5432/app?sslmode=require&password=[REDACTED]"
        );
        // A password with unencoded `@`, `/`, `?` and `:`.
        let odd = redact_dsn("mysql://root:S3/c?r:e@t@h:3306/db");
        assert_eq!(odd, "mysql://root:[REDACTED]@h:3306/db");
        assert_eq!(
            redact_dsn("mongodb+srv://u:S3cret@a,b/?replicaSet=rs0&x"),
            "mongodb+srv://u:[REDACTED]@a,b/?replicaSet=rs0&[REDACTED]"
        );
        assert_eq!(
            redact_dsn("sqlite://data/app.db?mode=rwc"),
            "sqlite://data/app.db?mode=rwc"
        );
        assert_eq!(
            redact_dsn("server=tcp:h,1433;user id=sa;password=S3cret"),
            REDACTED
        );
        assert_eq!(redact_dsn("S3cret"), REDACTED);
        assert_eq!(redact_dsn("p w://S3cret"), REDACTED);
        // A query with an encoded secret in an unlisted parameter.
        let q = redact_dsn("postgres://h/db?options=-c%20app.key%3DS3cret");
        assert!(!q.contains("S3cret"), "{q}");
    }

    #[test]
    fn every_key_has_a_value_when_set() {
        // A connection with every optional field set: each key yields a value, but `name`.
        let yaml = r#"
dbmanager:
  default_connection: a
  metric_tag_labels: [team]
  connections:
    a:
      type: postgres
      driver: tokio-postgres
      dsn: postgres://u:S3cret@h/db
      password: S3cret
      sslmode: require
      schema: app
      application_name: x
      max_open_conns: 3
      max_idle_conns: 1
      min_open_conns: 1
      conn_max_lifetime: 1m
      conn_max_idle_time: 1m
      leak_detection_threshold: 5s
      circuit_breaker: {failures: 3}
      init_sql: ["SET x = 'S3cret'"]
      tags: {team: data}
      replicas: [{dsn: "postgres://u:S3cret@h2/db"}]
    m:
      type: mongodb
      host: h
      port: 27017
      user: u
      password_file: /run/pw
      database: d
      auth_source: admin
      replica_set: rs0
      read_preference: nearest
      trust_server_certificate: true
    s:
      type: sqlite
      filepath: /tmp/x.db
    f:
      type: postgres
      hosts: ["db-1:5432", "[::1]:5433"]
      target_session_attrs: read-write
"#;
        let parsed = super::super::parse_yaml(yaml, &super::super::EnvSource::empty());
        assert!(parsed.problems.is_empty(), "{}", parsed.problems);
        let settings = settings(&parsed.config, &parsed.sources);
        for key in MANAGER.iter().filter(|k| k.shape != Shape::Connections) {
            assert!(
                settings
                    .iter()
                    .any(|s| s.connection.is_none() && s.key == key.name),
                "{}",
                key.name
            );
        }
        for key in CONNECTION.iter().filter(|k| k.name != "name") {
            assert!(
                settings
                    .iter()
                    .any(|s| s.connection.is_some() && s.key == key.name),
                "{}",
                key.name
            );
        }
        let shown = format!("{settings:?}");
        assert!(!shown.contains("S3cret"), "{shown}");
        let port = settings
            .iter()
            .find(|s| s.path() == "connections.m.port")
            .map(|s| (s.value.clone(), s.origins.clone()));
        let line = yaml
            .lines()
            .position(|l| l.trim() == "port: 27017")
            .map(|i| i + 1);
        assert_eq!(port, Some((json!(27017), vec![Origin::File { line }])));
    }

    /// An override that empties a list (`[]`) is the list's origin; it read as the file's,
    /// since an empty list has no scalar to carry where it came from.
    #[test]
    fn a_list_emptied_by_an_override_is_shown_as_the_override_s() {
        let yaml = "dbmanager:\n  metric_tag_labels: [team]\n  connections:\n    a:\n      type: sqlite\n      filepath: a.db\n      init_sql: [\"SELECT 1\"]\n      tags: {team: data}\n";
        let env: super::super::EnvSource = [
            ("DBMANAGER__CONNECTIONS__A__INIT_SQL", "[]"),
            ("DBMANAGER__METRIC_TAG_LABELS", "[]"),
        ]
        .into_iter()
        .collect();
        let parsed = super::super::parse_yaml(yaml, &env);
        assert!(parsed.problems.is_empty(), "{}", parsed.problems);
        let shown = settings(&parsed.config, &parsed.sources);
        let origins = |path: &str| {
            shown
                .iter()
                .find(|s| s.path() == path)
                .map(|s| (s.value.clone(), s.origins.clone()))
        };
        for (path, var) in [
            (
                "connections.a.init_sql",
                "DBMANAGER__CONNECTIONS__A__INIT_SQL",
            ),
            ("metric_tag_labels", "DBMANAGER__METRIC_TAG_LABELS"),
        ] {
            assert_eq!(
                origins(path),
                Some((
                    json!([]),
                    vec![Origin::Env {
                        var: var.to_owned()
                    }]
                )),
                "{path}"
            );
        }
        // A list the override fills is its, too; the file's own keys stay the file's.
        let env: super::super::EnvSource =
            [("DBMANAGER__CONNECTIONS__A__INIT_SQL", "[\"SELECT 2\"]")]
                .into_iter()
                .collect();
        let parsed = super::super::parse_yaml(yaml, &env);
        let shown = settings(&parsed.config, &parsed.sources);
        let init = shown
            .iter()
            .find(|s| s.path() == "connections.a.init_sql")
            .map(|s| s.origins.clone());
        assert_eq!(
            init,
            Some(vec![Origin::Env {
                var: "DBMANAGER__CONNECTIONS__A__INIT_SQL".to_owned()
            }])
        );
        let tags = shown
            .iter()
            .find(|s| s.path() == "connections.a.tags")
            .map(|s| s.origins.clone());
        assert_eq!(tags, Some(vec![Origin::File { line: Some(8) }]));
    }
}
