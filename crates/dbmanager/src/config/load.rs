//! Loading: YAML → tree of exact scalar texts → environment overlay → `${VAR}` interpolation →
//! typed config.
//!
//! The tree is walked by hand rather than deserialized with serde so that every problem in the
//! document is collected, with its path, instead of stopping at the first one.
//!
//! No message quotes a value that could be secret: `password` and `dsn` never, a value produced
//! by `${VAR}` never (it may be any environment variable), and a key that is not a plain word
//! only up to its first separator (`password:S3cret` in flow style is one key).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::effective::{self, Sources};
use super::keys::{CONNECTION, CONNECTION_KEYS, MANAGER, MANAGER_KEYS, REPLICATION_KEYS, Shape};
use super::problems::did_you_mean;
use super::tree::{self, Kind, Node, Origin, Scalar};
use super::{
    ConfigProblems, ConnectionConfig, DatabaseType, DefaultOrm, ManagerConfig, Pooler,
    PostgresDriver, ReadPolicy, ReadPreference, ReplicaFallback, SslMode, TargetSessionAttrs,
};

/// Prefix of environment overrides: `DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD=...`.
pub const ENV_PREFIX: &str = "DBMANAGER__";

pub(crate) const ROOT_KEY: &str = "dbmanager";

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

/// What parsing found: the config, the connections too broken to be typed, the dotted paths whose
/// values came from `${VAR}` interpolation (never quoted by later checks either), and the
/// problems.
pub(crate) struct Parsed {
    pub config: ManagerConfig,
    pub broken: HashSet<String>,
    pub interpolated: HashSet<String>,
    pub problems: ConfigProblems,
    /// Where each key that is set got its value (for the effective view).
    pub sources: Sources,
}

/// Parses YAML with overrides and `${VAR}` values taken from `env`, without the semantic
/// checks.
pub(crate) fn parse(yaml: &str, env: &EnvSource) -> Parsed {
    let mut problems = ConfigProblems::default();
    let mut interpolated = HashSet::new();
    let mut root = parse_root(yaml, &mut problems);
    let mut env_lists = Vec::new();
    if let Some(root) = root.as_mut() {
        env_lists = overlay_env(root, env, &mut problems);
        interpolate(root, env, "", &mut interpolated, &mut problems);
    }
    let mut sources = match &root {
        Some(Node::Map(map)) => effective::sources(map),
        _ => Sources::new(),
    };
    for (path, var) in env_lists {
        effective::listed_by_env(&mut sources, &path, var);
    }
    let (config, broken) = match root {
        Some(Node::Map(map)) => walk_manager(&map, &mut problems),
        _ => (ManagerConfig::default(), HashSet::new()),
    };
    Parsed {
        config,
        broken,
        interpolated,
        problems,
        sources,
    }
}

fn parse_root(yaml: &str, problems: &mut ConfigProblems) -> Option<Node> {
    let document = match tree::parse(yaml) {
        Ok(node) => node,
        Err(message) => {
            problems.push("", message);
            return None;
        }
    };
    let Node::Map(mut top) = document else {
        problems.push(
            "",
            format!("the document must be a mapping with the root key `{ROOT_KEY}:`"),
        );
        return None;
    };
    // Other root keys are allowed: the file may hold the rest of the application's config.
    match top.remove(ROOT_KEY) {
        Some(node) if node.is_null() => Some(Node::Map(BTreeMap::new())),
        Some(node @ Node::Map(_)) => Some(node),
        Some(_) => {
            problems.push(ROOT_KEY, "must be a mapping");
            None
        }
        None => {
            // Only plain words of about the right length are offered: a longer key may hold a
            // value (`dbmanager:{...}`, `dbmanagerS3cret`).
            let candidates = top
                .keys()
                .map(String::as_str)
                .filter(|k| is_word(k) && k.chars().count() <= ROOT_KEY.len() + 2);
            let hint = did_you_mean(ROOT_KEY, candidates);
            problems.push("", format!("missing the root key `{ROOT_KEY}:`{hint}"));
            None
        }
    }
}

/// Folds `DBMANAGER__A__B=value` into the tree at `a.b`. A connection segment matches an existing
/// connection whose name equals it ignoring case, `-` and `_` (environment names cannot hold `-`).
/// Returns the list-valued keys the overlay replaced, with the variable that did: an empty list
/// has no scalar to carry its origin.
fn overlay_env(
    root: &mut Node,
    env: &EnvSource,
    problems: &mut ConfigProblems,
) -> Vec<(Vec<String>, String)> {
    let mut lists = Vec::new();
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
            if node.is_null() {
                *node = Node::Map(BTreeMap::new());
            }
            let Node::Map(map) = node else {
                problems.push(
                    format!("env {name}"),
                    format!("`{}` is not a mapping", path.join(".")),
                );
                break;
            };
            let key = if path.len() == 1 && path[0] == "connections" {
                match existing_connection_key(map, segment) {
                    Ok(key) => key,
                    Err(message) => {
                        problems.push(format!("env {name}"), message);
                        break;
                    }
                }
            } else {
                segment.clone()
            };
            path.push(key.clone());
            if i == last {
                let node = match list_shape(&path) {
                    None => Node::Scalar(Scalar::overridden(value.clone(), name)),
                    Some(shape) => match env_list(value, name, shape) {
                        Ok(list) => {
                            lists.push((path.clone(), name.clone()));
                            list
                        }
                        Err(message) => {
                            problems.push(format!("env {name}"), message);
                            break;
                        }
                    },
                };
                map.insert(key, node);
                break;
            }
            node = map.entry(key).or_insert_with(|| Node::Map(BTreeMap::new()));
        }
    }
    lists
}

/// The shape of the list-valued key at `path` (`metric_tag_labels`,
/// `connections.<name>.init_sql`, `.hosts`, `.metric_tag_labels`, `.replicas`), if it is one.
fn list_shape(path: &[String]) -> Option<Shape> {
    let (keys, key) = match path {
        [key] => (MANAGER, key),
        [connections, _, key] if connections == "connections" => (CONNECTION, key),
        _ => return None,
    };
    keys.iter()
        .find(|k| k.name == key)
        .map(|k| k.shape)
        .filter(|shape| matches!(shape, Shape::Strings | Shape::Replicas))
}

/// The value of the override `var` of a list-valued key: a YAML flow sequence, read by the
/// file's loader (each string exactly as written), every scalar in it marked as set by `var`
/// (so a problem names the variable, and `password`/`dsn` are not quoted, as in the file).
fn env_list(value: &str, var: &str, shape: Shape) -> Result<Node, String> {
    let example = match shape {
        Shape::Replicas => "`[{host: db-2}, {host: db-3, port: 5433}]`",
        _ => "`[\"SET a = 1\", \"SET b = 2\"]` or `[db-1, db-2:5433]`",
    };
    let how = format!(
        "write a YAML flow sequence, e.g. {example} (`[]` for none; quote an item that \
         holds `,`, `[`, `]`, `{{`, `}}` or `: `)"
    );
    if !value.trim_start().starts_with('[') {
        return Err(format!("expected a list: {how}"));
    }
    let node = tree::parse(value).map_err(|message| {
        let message = message
            .strip_prefix("the document is not valid YAML: ")
            .unwrap_or(&message)
            .to_owned();
        format!("not a valid YAML flow sequence: {message}; {how}")
    })?;
    let Node::Seq(mut items) = node else {
        return Err(format!("expected a list: {how}"));
    };
    fn mark(node: &mut Node, var: &str) {
        match node {
            Node::Scalar(s) => {
                s.origin = tree::Origin::Override;
                s.line = 0;
                s.env = Some(var.to_owned());
            }
            Node::Map(map) => map.values_mut().for_each(|v| mark(v, var)),
            Node::Seq(items) => items.iter_mut().for_each(|v| mark(v, var)),
        }
    }
    items.iter_mut().for_each(|item| mark(item, var));
    Ok(Node::Seq(items))
}

/// The connection an override's (lower-cased) segment names: the one of exactly that name, else
/// the only one equal to it ignoring case, `-` and `_`, else a new one. Several such names are
/// a problem: picking one (the first in sorted order) would send the value, a password say,
/// to a connection the reader did not mean.
fn existing_connection_key(map: &BTreeMap<String, Node>, segment: &str) -> Result<String, String> {
    if map.contains_key(segment) {
        return Ok(segment.to_owned());
    }
    let fold = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let matching: Vec<&String> = map.keys().filter(|k| fold(k) == *segment).collect();
    match matching.as_slice() {
        [] => Ok(segment.to_owned()),
        [one] => Ok((*one).clone()),
        [several @ .., last] => {
            let shown = |k: &String| format!("`{}`", super::problems::printable(k));
            let first: Vec<String> = several.iter().map(|k| shown(k)).collect();
            Err(format!(
                "`{segment}` matches the connections {} and {} (ignoring case, `-` and `_`); \
                 rename one of them",
                first.join(", "),
                shown(last)
            ))
        }
    }
}

/// Whether `key` is one of the configuration's own keys.
pub(crate) fn is_config_key(key: &str) -> bool {
    key == ROOT_KEY || MANAGER_KEYS.contains(&key) || CONNECTION_KEYS.contains(&key)
}

/// Keys whose values may be named in messages; everything else (`password`, `dsn`, unknown keys,
/// tag values) is treated as possibly secret.
fn is_public_key(key: &str) -> bool {
    key != "password"
        && key != "dsn"
        && (MANAGER_KEYS.contains(&key) || CONNECTION_KEYS.contains(&key))
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string; `$$` is a literal `$`. Records the
/// paths of values that a variable reached.
fn interpolate(
    node: &mut Node,
    env: &EnvSource,
    path: &str,
    interpolated: &mut HashSet<String>,
    problems: &mut ConfigProblems,
) {
    match node {
        Node::Scalar(scalar) if scalar.kind != Kind::Null && scalar.text.contains('$') => {
            let key = path.rsplit('.').next().unwrap_or(path);
            match expand(&scalar.text, env, is_public_key(key)) {
                Ok((expanded, substituted)) => {
                    if substituted {
                        scalar.expanded = referenced_variables(&scalar.text);
                    }
                    scalar.text = expanded;
                    scalar.kind = Kind::Text;
                    if substituted {
                        scalar.origin = Origin::Interpolated;
                        interpolated.insert(path.to_owned());
                    }
                }
                Err(message) => problems.push(path, message),
            }
        }
        Node::Map(map) => {
            for (k, v) in map.iter_mut() {
                interpolate(v, env, &join(path, k), interpolated, problems);
            }
        }
        Node::Seq(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                // A list item is named `list[i]`, as every problem names one.
                let item = format!("{path}[{i}]");
                interpolate(v, env, &item, interpolated, problems);
            }
        }
        Node::Scalar(_) => {}
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Expands `text`; returns the result and whether a variable was substituted. With `public`
/// false (a password, a dsn) an error names the reference by position only: the text between
/// `${` and `}` may be part of the secret.
fn expand(text: &str, env: &EnvSource, public: bool) -> Result<(String, bool), String> {
    expand_nested(text, env, public, 0)
}

/// How deep defaults may nest (`${A:-${B:-...}}`): a bound, so hostile input cannot exhaust the
/// stack.
const MAX_NESTED_DEFAULTS: usize = 16;

/// [`expand`] of a text `depth` defaults deep.
fn expand_nested(
    text: &str,
    env: &EnvSource,
    public: bool,
    depth: usize,
) -> Result<(String, bool), String> {
    if depth > MAX_NESTED_DEFAULTS {
        return Err(format!(
            "`${{...:-default}}` defaults nest more than {MAX_NESTED_DEFAULTS} deep"
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut substituted = false;
    let mut nth = 0;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            nth += 1;
            let end = closing_brace(body)
                .ok_or_else(|| "unterminated `${` (write `$$` for a literal `$`)".to_owned())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(if public {
                    format!("`${{{name}}}` is not a valid variable reference")
                } else {
                    format!(
                        "the {} `${{...}}` is not a valid variable reference (letters, digits and `_`; write `$$` for a literal `$`)",
                        ordinal(nth)
                    )
                });
            }
            // As in the shell, `:-` takes the default when the variable is unset or empty, and
            // the default is expanded in turn (`${A:-${B:-x}}`).
            match (env.get(name), default) {
                (Some(""), Some(d)) | (None, Some(d)) => {
                    out.push_str(&expand_nested(d, env, public, depth + 1)?.0);
                }
                (Some(v), _) => out.push_str(v),
                (None, None) => {
                    return Err(if public {
                        format!(
                            "`${{{name}}}` is not set in the environment (use `${{{name}:-default}}` for a fallback)"
                        )
                    } else {
                        format!(
                            "the {} `${{...}}` names a variable that is not set in the environment (use `${{NAME:-default}}` for a fallback, `$$` for a literal `$`)",
                            ordinal(nth)
                        )
                    });
                }
            }
            substituted = true;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, substituted))
}

/// Where the reference whose body (after `${`) is `body` ends: its `}`, past any reference
/// nested in a default (`${A:-${B}}`) and `$$`. `None` when it never ends.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'$', Some(b'$')) => i += 1,
            (b'$', Some(b'{')) => {
                depth += 1;
                i += 1;
            }
            (b'}', _) if depth == 0 => return Some(i),
            (b'}', _) => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The names of the variables `text` refers to with `${NAME}` or `${NAME:-default}`, in order,
/// once each (`text` expanded without error, so every reference is well formed).
fn referenced_variables(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).unwrap_or(body.len());
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, default),
                None => (expr, ""),
            };
            // A nested default's variables count too (they may be the value's origin).
            for name in std::iter::once(name.to_owned()).chain(referenced_variables(default)) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            rest = body.get(end + 1..).unwrap_or_default();
        } else {
            rest = after;
        }
    }
    names
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A key made of letters, digits, `_`, `-` and `.` only: safe to print whole.
pub(crate) fn is_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// What may be shown of a key: the whole of a plain word, else the word it starts with and `…`.
/// In flow style a missing space makes the value part of the key (`{password:S3cret}`), so the
/// rest is never shown.
pub(crate) fn safe_key(key: &str) -> String {
    if is_word(key) {
        return key.to_owned();
    }
    let (head, rest) = split_word(key);
    match rest.chars().next() {
        Some(':') => format!("{head}:…"),
        Some(c) if c.is_whitespace() => format!("{head} …"),
        _ => format!("{head}…"),
    }
}

fn split_word(key: &str) -> (&str, &str) {
    let end = key
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .map_or(key.len(), |(i, _)| i);
    key.split_at(end)
}

/// The problem for a key that is not a plain word, reported on the mapping that holds it.
fn odd_key_message(key: &str, known: &[&str]) -> String {
    let (head, rest) = split_word(key);
    let shown = safe_key(key);
    let hint = if known.contains(&head) {
        String::new()
    } else {
        did_you_mean(head, known.iter().copied())
    };
    match rest.chars().next() {
        Some(':') => {
            format!("`{shown}` is not a key; a space is missing after `{head}:`?{hint}")
        }
        Some(c) if c.is_whitespace() => {
            format!("`{shown}` is not a key; a `:` is missing after `{head}`?{hint}")
        }
        _ => format!("`{shown}` is not a key{hint}"),
    }
}

fn check_keys(
    map: &BTreeMap<String, Node>,
    known: &[&str],
    path: &str,
    problems: &mut ConfigProblems,
) {
    for key in map.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        // `passwordS3cret`: a known key run together with what follows it.
        let glued = known
            .iter()
            .filter(|k| is_word(key) && key.len() > k.len() && key.starts_with(**k))
            .max_by_key(|k| k.len());
        if let Some(head) = glued {
            problems.push(
                path,
                format!("`{head}…` is not a key; `: ` is missing after `{head}`?"),
            );
        } else if is_word(key) {
            let hint = did_you_mean(key, known.iter().copied());
            problems.push(join(path, key), format!("unknown key{hint}"));
        } else {
            problems.push(path, odd_key_message(key, known));
        }
    }
}

/// Returns the config and the names of connections too broken to type (their `type` is bad).
fn walk_manager(
    map: &BTreeMap<String, Node>,
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
    config.metric_tag_labels = f.strings("metric_tag_labels");

    let mut broken = HashSet::new();
    match map.get("connections") {
        None => {}
        Some(node) if node.is_null() => {}
        Some(Node::Map(connections)) => {
            for (name, value) in connections {
                if value.is_null()
                    && !is_word(name)
                    && name.contains(|c: char| c == ':' || c.is_whitespace())
                {
                    // `{primary:{...}}` or `a:b` with the space missing: not a name.
                    problems.push("connections", odd_key_message(name, &[]));
                    continue;
                }
                if super::problems::has_unprintable(name) {
                    // The name goes into every message, log line and metric label.
                    problems.push(
                        "connections",
                        format!(
                            "`{}` is not a usable connection name: it holds a control or bidirectional character",
                            super::problems::printable(name)
                        ),
                    );
                    continue;
                }
                let path = format!("connections.{name}");
                let Node::Map(fields) = value else {
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
    map: &BTreeMap<String, Node>,
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
        None => {
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
    c.hosts = f.present("hosts").is_some().then(|| f.strings("hosts"));
    c.target_session_attrs = f.parse_enum(
        "target_session_attrs",
        TargetSessionAttrs::parse,
        TargetSessionAttrs::NAMES,
    );
    c.port = f.port("port");
    c.user = f.string("user");
    c.password = f.secret("password");
    c.password_file = f.string("password_file").map(PathBuf::from);
    c.database = f.string("database");
    c.sslmode = f.parse_enum("sslmode", SslMode::parse, SslMode::NAMES);
    c.driver = f.parse_enum("driver", PostgresDriver::parse, PostgresDriver::NAMES);
    c.schema = f.string("schema");
    if let Some(pooler) = f.parse_enum("pooler", Pooler::parse, Pooler::NAMES) {
        c.pooler = pooler;
    }
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
    c.init_sql = f.strings("init_sql");
    c.leak_detection_threshold = f
        .duration("leak_detection_threshold")
        .filter(|d| !d.is_zero());
    c.circuit_breaker_failures = f.circuit_breaker();
    c.application_name = f.string("application_name");
    if let Some(policy) = f.parse_enum("read_policy", ReadPolicy::parse, ReadPolicy::NAMES) {
        c.read_policy = policy;
    }
    f.set_duration("max_replica_lag", &mut c.max_replica_lag);
    f.set_duration("read_your_writes", &mut c.read_your_writes);
    if let Some(fallback) = f.parse_enum(
        "replica_fallback",
        ReplicaFallback::parse,
        ReplicaFallback::NAMES,
    ) {
        c.replica_fallback = fallback;
    }
    c.replicas = walk_replicas(key, map, path, problems);
    kind.map(|_| c)
}

/// The `replicas:` list: each entry is read as the connection's own mapping with the entry's
/// keys written over it, so an entry is checked like a connection and inherits every key it
/// does not set. Only the problems of the entry's own keys are reported under its path
/// (`connections.primary.replicas[1].port`): the inherited ones are the connection's, reported
/// once, under its own path.
fn walk_replicas(
    key: &str,
    map: &BTreeMap<String, Node>,
    path: &str,
    problems: &mut ConfigProblems,
) -> Vec<ConnectionConfig> {
    let items = match map.get("replicas") {
        None => return Vec::new(),
        Some(node) if node.is_null() => return Vec::new(),
        Some(Node::Seq(items)) => items,
        Some(_) => {
            problems.push(
                join(path, "replicas"),
                "expected a list of replica entries (e.g. `- host: db-2`)",
            );
            return Vec::new();
        }
    };
    let mut replicas = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}.replicas[{i}]");
        let empty = BTreeMap::new();
        let entry = match item {
            Node::Map(entry) => entry,
            _ => {
                problems.push(
                    item_path.clone(),
                    "expected a mapping of connection keys (e.g. `host: db-2`)",
                );
                // Read as an entry that sets nothing, so the next ones keep their index.
                &empty
            }
        };
        let own: Vec<&str> = CONNECTION_KEYS
            .iter()
            .copied()
            .filter(|k| !REPLICATION_KEYS.contains(k))
            .collect();
        check_keys(entry, CONNECTION_KEYS, &item_path, problems);
        for k in entry
            .keys()
            .filter(|k| REPLICATION_KEYS.contains(&k.as_str()))
        {
            problems.push(
                join(&item_path, k),
                "belongs to the connection, not to one of its replicas",
            );
        }
        // A connection's server list (and its read-write requirement) is its primary's: a
        // replica names its own server.
        let mut merged: BTreeMap<String, Node> = map
            .iter()
            .filter(|(k, _)| k.as_str() == "type" || !REPLICATION_KEYS.contains(&k.as_str()))
            .filter(|(k, _)| !matches!(k.as_str(), "hosts" | "target_session_attrs"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // An entry's own dsn replaces the connection's server keys, and its own password
        // source the connection's other one: inherited, they would conflict with it.
        let replaced: &[&str] = &["host", "port", "user", "database", "filepath"];
        if entry.contains_key("dsn") {
            merged.retain(|k, _| !replaced.contains(&k.as_str()));
        }
        for (set, other) in [("password", "password_file"), ("password_file", "password")] {
            if entry.contains_key(set) {
                merged.remove(other);
            }
        }
        for (k, v) in entry.iter().filter(|(k, _)| own.contains(&k.as_str())) {
            merged.insert(k.clone(), v.clone());
        }
        // An inherited dsn is pointed at the entry's `host`/`port`; the rest of what it holds
        // (user, database) an entry changes only with a dsn of its own.
        if !entry.contains_key("dsn") && map.get("dsn").is_some_and(|d| !d.is_null()) {
            for k in ["user", "database"] {
                if entry.contains_key(k) {
                    merged.remove(k);
                    problems.push(
                        join(&item_path, k),
                        "a replica of a connection given by a `dsn` takes that dsn pointed at \
                         its own `host`/`port`; for another user or database give the entry its \
                         own `dsn`",
                    );
                }
            }
        }
        let mut scratch = ConfigProblems::default();
        let replica = walk_connection(key, &merged, &item_path, &mut scratch);
        for problem in scratch.iter() {
            let field = problem
                .path
                .strip_prefix(item_path.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or_default();
            let head = field.split(['.', '[']).next().unwrap_or_default();
            if entry.contains_key(head) && own.contains(&head) {
                problems.push(problem.path.clone(), problem.message.clone());
            }
        }
        if let Some(replica) = replica {
            replicas.push(replica);
        }
    }
    replicas
}

const NULL_STRING: &str =
    "is null (`null`, `~` or nothing); quote the value if it is text, or remove the key";

/// Typed reads of one mapping's fields; a bad value becomes a problem and reads as absent.
struct Fields<'a> {
    map: &'a BTreeMap<String, Node>,
    path: String,
    problems: &'a mut ConfigProblems,
}

impl<'a> Fields<'a> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(join(&self.path, key), message);
    }

    /// The node at `key`, absent or null reading as `None` (numbers, booleans, durations).
    fn present(&self, key: &str) -> Option<&'a Node> {
        let map: &'a BTreeMap<String, Node> = self.map;
        map.get(key).filter(|v| !v.is_null())
    }

    /// A string field: exactly the text written. A YAML null is rejected rather than read as
    /// absent (`password: null` would otherwise silently mean no password).
    fn string_scalar(&mut self, key: &str) -> Option<&'a Scalar> {
        let map: &'a BTreeMap<String, Node> = self.map;
        match map.get(key)? {
            Node::Scalar(s) if s.kind == Kind::Null => {
                self.problem(key, NULL_STRING);
                None
            }
            Node::Scalar(s) => Some(s),
            _ => {
                self.problem(key, "expected a string");
                None
            }
        }
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.string_scalar(key).map(|s| s.text.clone())
    }

    /// Like [`Self::string`]; no message ever quotes it.
    fn secret(&mut self, key: &str) -> Option<SecretString> {
        self.string(key).map(SecretString::from)
    }

    /// A whole number written in decimal digits (`0x1F`, `1e3`, `1_000` are not).
    fn u64(&mut self, key: &str) -> Option<u64> {
        let parsed = match self.present(key)? {
            Node::Scalar(s) => {
                let text = s.text.trim();
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                    text.parse::<u64>()
                        .map_err(|_| format!("{} is too large", s.shown()))
                } else if text.starts_with('-') {
                    Err(format!("{} must not be negative", s.shown()))
                } else {
                    Err(format!(
                        "{} is not a whole number (write decimal digits, e.g. `10`)",
                        s.shown()
                    ))
                }
            }
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
            Some(Node::Scalar(s)) => match s.text.trim().to_ascii_lowercase().as_str() {
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
        let s = match self.present(key)? {
            Node::Scalar(s) => s,
            _ => {
                self.problem(key, "expected a duration such as `30s`");
                return None;
            }
        };
        if s.kind == Kind::Number {
            let n = s.text.trim();
            self.problem(
                key,
                format!("`{n}` has no unit; write it with one, e.g. `{n}s` or `{n}ms`"),
            );
            return None;
        }
        match humantime::parse_duration(s.text.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                // humantime's message quotes the text; only for a value that may be shown.
                let why = if s.quotable() {
                    format!(" ({e})")
                } else {
                    String::new()
                };
                self.problem(
                    key,
                    format!(
                        "{} is not a duration{why}; write e.g. `500ms`, `30s`, `1m30s`, `2h`",
                        s.shown()
                    ),
                );
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
        let s = self.string_scalar(key)?;
        let parsed = parse(&s.text);
        if parsed.is_none() {
            let hint = if s.quotable() {
                did_you_mean(&s.text, names.iter().copied())
            } else {
                String::new()
            };
            self.problem(
                key,
                format!(
                    "{} is not valid; expected one of {}{hint}",
                    s.shown(),
                    names.join(", ")
                ),
            );
        }
        parsed
    }

    fn default_orm(&mut self) -> Option<DefaultOrm> {
        let text = &self.present("default_orm").and_then(|n| match n {
            Node::Scalar(s) => Some(s.text.as_str()),
            _ => None,
        });
        // The reference's Go ORMs: both are ORMs over the shared pool, which in Rust is SeaORM.
        if matches!(text, Some("bun" | "gorm")) {
            return Some(DefaultOrm::SeaOrm);
        }
        self.parse_enum("default_orm", DefaultOrm::parse, DefaultOrm::NAMES)
    }

    /// `circuit_breaker: {failures: N}` (N ≥ 1), or `off`.
    fn circuit_breaker(&mut self) -> Option<u32> {
        match self.present("circuit_breaker")? {
            Node::Scalar(s) if matches!(s.text.trim(), "off" | "false") => None,
            Node::Map(map) => {
                if let Some(extra) = map.keys().find(|k| k.as_str() != "failures") {
                    let extra = safe_key(extra);
                    self.problem(
                        &format!("circuit_breaker.{extra}"),
                        "unknown key (expected `failures`)",
                    );
                }
                let failures = match map.get("failures") {
                    Some(Node::Scalar(s)) => s.text.trim().parse::<u32>().ok().filter(|n| *n >= 1),
                    _ => None,
                };
                if failures.is_none() {
                    self.problem(
                        "circuit_breaker.failures",
                        "expected a whole number of consecutive failures, at least 1",
                    );
                }
                failures
            }
            _ => {
                self.problem("circuit_breaker", "expected `{failures: N}` or `off`");
                None
            }
        }
    }

    /// A list of strings, each exactly as written.
    fn strings(&mut self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        match self.present(key) {
            None => {}
            Some(Node::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Node::Scalar(s) if s.kind != Kind::Null => out.push(s.text.clone()),
                        _ => self.problem(&format!("{key}[{i}]"), "expected a string"),
                    }
                }
            }
            Some(_) => self.problem(key, "expected a list of strings"),
        }
        out
    }

    fn tags(&mut self) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        match self.present("tags") {
            None => {}
            Some(Node::Map(map)) => {
                for (k, v) in map {
                    match v {
                        Node::Scalar(s) if s.kind == Kind::Null => {
                            if k.contains(|c: char| c == ':' || c.is_whitespace()) {
                                // `{team:data}`: the space is missing, the whole is the key.
                                self.problem("tags", odd_key_message(k, &[]));
                            } else {
                                self.problem(&format!("tags.{}", safe_key(k)), NULL_STRING);
                            }
                        }
                        Node::Scalar(s) => {
                            tags.insert(k.clone(), s.text.clone());
                        }
                        _ => self.problem(&format!("tags.{}", safe_key(k)), "expected a string"),
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
        let ok = |text: &str| expand(text, &env, true).unwrap();
        assert_eq!(ok("${HOST}:5432"), ("db.internal:5432".to_owned(), true));
        assert_eq!(ok("${PORT:-6543}"), ("6543".to_owned(), true));
        assert_eq!(ok("cost $$5 $x"), ("cost $5 $x".to_owned(), false));
        assert!(
            expand("${MISSING}", &env, true)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(
            expand("${HOST", &env, true)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(expand("${BAD-NAME}", &env, true).is_err());
        // For a secret, the reference is named by position only.
        let err = expand("a${x}b${Secret_Part}", &EnvSource::empty(), false).unwrap_err();
        assert!(err.starts_with("the 1st `${...}`"), "{err}");
        assert!(!err.contains("Secret_Part"), "{err}");
        let err = expand("pw${Bad Part}", &env, false).unwrap_err();
        assert!(!err.contains("Bad"), "{err}");
    }

    /// A default may itself refer to variables, as in the shell (it was taken literally:
    /// `${A:-${B}}` gave the text `${B}`).
    #[test]
    fn defaults_are_expanded_in_turn() {
        let env: EnvSource = [("HOST", "db.internal"), ("EMPTY", "")]
            .into_iter()
            .collect();
        let ok = |text: &str| expand(text, &env, true).unwrap().0;
        assert_eq!(ok("${NOPE:-${HOST}}"), "db.internal");
        assert_eq!(ok("${HOST:-${NOPE}}"), "db.internal");
        assert_eq!(ok("${NOPE:-${EMPTY:-${ALSO_NOPE:-x}}}:1"), "x:1");
        assert_eq!(ok("${NOPE:-a$$b}"), "a$b");
        assert_eq!(ok("${NOPE:-}"), "");
        let err = expand("${NOPE:-${ALSO_NOPE}}", &env, true).unwrap_err();
        assert!(err.contains("ALSO_NOPE"), "{err}");
        assert!(
            expand("${NOPE:-${HOST}", &env, true)
                .unwrap_err()
                .contains("unterminated")
        );
        // Secrets still name references by position only.
        let err = expand("${NOPE:-${Secret_Part}}", &env, false).unwrap_err();
        assert!(!err.contains("Secret_Part"), "{err}");
        assert_eq!(
            referenced_variables("${NOPE:-${HOST:-${X}}} ${Y}"),
            ["NOPE", "HOST", "X", "Y"]
        );
        // Hostile depth is an error, not a stack overflow.
        let deep = format!("{}x{}", "${NOPE:-".repeat(100_000), "}".repeat(100_000));
        let err = expand(&deep, &env, true).unwrap_err();
        assert!(err.contains("nest more than 16 deep"), "{err}");
        let just = format!("{}x{}", "${NOPE:-".repeat(16), "}".repeat(16));
        assert_eq!(ok(&just), "x");
    }

    #[test]
    fn odd_keys_show_only_their_first_word() {
        assert_eq!(safe_key("password"), "password");
        assert_eq!(safe_key("password:S3cret"), "password:…");
        assert_eq!(safe_key("password S3cret"), "password …");
        assert_eq!(safe_key("pass=word"), "pass…");
        assert_eq!(
            odd_key_message("password:x", CONNECTION_KEYS),
            "`password:…` is not a key; a space is missing after `password:`?"
        );
        assert_eq!(
            odd_key_message("pasword:x", CONNECTION_KEYS),
            "`pasword:…` is not a key; a space is missing after `pasword:`? (did you mean `password`?)"
        );
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(22), "22nd");
    }
}
