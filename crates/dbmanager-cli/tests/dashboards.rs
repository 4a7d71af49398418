//! `deploy/grafana/dbmanager.json` and `deploy/prometheus/alerts.yaml` against what a running
//! `dbmanager serve` exports: every metric name and label value they use is scraped from
//! `/metrics`; the rule file follows Prometheus's schema and passes `promtool check rules` and its
//! unit tests (`promtool test rules`); the dashboard is well formed; and a real Prometheus scrapes
//! `serve`, evaluates every dashboard query and every rule without error, and has the alerts
//! pending that the down connections call for.
//!
//! Needs `promtool` and `prometheus` (the Debian package `prometheus`; `scripts/test.sh`
//! installs it when missing).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Served, wait_for, write_file};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/dbmanager.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alerts_path() -> PathBuf {
    repo().join("deploy/prometheus/alerts.yaml")
}

fn alerts() -> Value {
    let text = std::fs::read_to_string(alerts_path()).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("alerts.yaml: {e}"))
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names and exact label matchers an expression uses.

const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OPERATOR_WORDS: [&str; 24] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "start",
    "end",
];

/// Index just past the closing `close` of a group opened at `open_at`, skipping strings.
fn skip_group(chars: &[char], open_at: usize, close: char) -> usize {
    let mut i = open_at + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

fn skip_string(chars: &[char], at: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A `{label="value"}` or `{label=~"a|b"}` matcher: (metric, label, values).
type Matcher = (String, String, Vec<String>);

/// Metric names (identifiers that are not functions, keywords or labels) in a PromQL expression,
/// and its exact (or plain alternation) label matchers.
fn promql(expr: &str) -> (BTreeSet<String>, Vec<Matcher>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut matchers = Vec::new();
    let mut last_metric = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            let end = skip_group(&chars, i, '}');
            let inner: String = chars[i + 1..end.saturating_sub(1).max(i + 1)]
                .iter()
                .collect();
            for part in inner.split(',') {
                let (label, op_value) = match part.split_once("=~") {
                    Some((l, v)) => (l, v),
                    None => match part.split_once('=') {
                        Some((l, v)) if !l.ends_with('!') => (l, v),
                        _ => continue,
                    },
                };
                let value = op_value.trim().trim_matches('"');
                let values: Vec<String> = value.split('|').map(str::to_owned).collect();
                if values
                    .iter()
                    .all(|v| !v.is_empty() && v.chars().all(is_ident))
                {
                    matchers.push((last_metric.clone(), label.trim().to_owned(), values));
                }
            }
            i = end;
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || matches!(chars[i], '{' | '}')) {
                i += 1;
            }
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = chars.get(j) == Some(&'(');
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if call {
                    i = skip_group(&chars, j, ')');
                }
            } else if call || OPERATOR_WORDS.contains(&lower.as_str()) {
                // A function, an aggregation or an operator.
            } else {
                last_metric = word.clone();
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    (names, matchers)
}

#[test]
fn promql_names_and_matchers_are_extracted_exactly() {
    let (names, matchers) = promql(
        r#"histogram_quantile(0.99, sum by (connection, le) (rate(a_bucket{job=~"$job", x="y}"}[$__rate_interval])))
           / ignoring (state) group_left(type) (b{state="max"} > 0) unless on (instance) c offset 5m
           or label_replace(d, "dst", "$1", "src", "(.*)") and count_values("le", e) > bool 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b", "c", "d", "e"]
    );
    assert_eq!(
        matchers,
        [("b".to_owned(), "state".to_owned(), vec!["max".to_owned()])]
    );
    let (names, matchers) = promql(r#"sum without (kind) (x_total{kind=~"a|b", result!="c"})"#);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["x_total"]);
    assert_eq!(
        matchers,
        [(
            "x_total".to_owned(),
            "kind".to_owned(),
            vec!["a".to_owned(), "b".to_owned()]
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// The queries of the dashboard and the rules.

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, expression) for every query of the dashboard, template variables included (a
/// `label_values(selector, label)` query contributes its selector).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_owned(),
                t["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_owned(),
            ));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let query = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(s, _)| s)
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            out.push((format!("variable {}", v["name"]), selector.to_owned()));
        }
    }
    out
}

fn rules(alerts: &Value) -> Vec<&Value> {
    alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

fn rule_queries(alerts: &Value) -> Vec<(String, String)> {
    rules(alerts)
        .into_iter()
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A running serve with a healthy connection and two down ones (one of them optional).

fn config(dir: &Path) -> String {
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_file(
        dir,
        "c.yaml",
        &format!(
            "dbmanager:
  health_check_interval: 300ms
  retry_attempts: 1
  retry_delay: 100ms
  retry_max_delay: 200ms
  connections:
    lite:
      type: sqlite
      filepath: '{}'
      max_open_conns: 4
    pg-down:
      type: postgres
      host: 127.0.0.1
      port: {refused}
      database: app
      sslmode: disable
    optional:
      type: sqlite
      filepath: '{}/missing/o.db'
      critical: false
",
            dir.join("lite.db").display(),
            dir.display()
        ),
    )
}

/// Sample name → every `label="value"` pair seen on it, in an OpenMetrics exposition.
fn samples(exposition: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    let samples = into;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = samples.entry(line[..name_end].to_owned()).or_default();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            let inner = &rest[..rest.find('}').unwrap()];
            for pair in inner.split("\",") {
                labels.insert(format!("{}\"", pair.trim_end_matches('"')));
            }
        }
    }
}

/// What `serve` exports, plus the per-statement families of the library's collector, which
/// appear once a statement ran through the neutral handle (serve itself runs none): the same
/// collector on an in-process manager after a few statements.
fn exported(served: &Served) -> BTreeMap<String, BTreeSet<String>> {
    let response = served.get("/metrics");
    assert_eq!(response.status, 200);
    let mut exported = BTreeMap::new();
    samples(&response.body, &mut exported);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        let manager = dbmanager::Manager::from_yaml_str(
            "dbmanager:\n  connections:\n    lite: {type: sqlite, filepath: ':memory:'}\n",
        )
        .unwrap();
        manager.connect().await.unwrap();
        let db = manager.database("lite").unwrap();
        db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
        db.fetch_all("SELECT x FROM t", &[]).await.unwrap();
        assert!(db.execute("SELECT nope FROM t", &[]).await.is_err());
        let text = manager.metrics_text();
        manager.close(Duration::from_secs(5)).await;
        text
    });
    assert!(text.contains("db_queries_total{"), "{text}");
    samples(&text, &mut exported);
    exported
}

#[test]
fn every_metric_and_label_value_the_dashboard_and_alerts_use_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--config", &config(dir.path())], dir.path());
    // Wait until both failures were counted, so that every family has its samples.
    assert!(wait_for(Duration::from_secs(15), || {
        let metrics = served.get("/metrics").body;
        metrics.contains("dbmanager_connect_errors_total{connection=\"pg-down\"")
            && metrics
                .contains("dbmanager_connection_status{connection=\"lite\",type=\"sqlite\"} 1")
    }));
    let exported = exported(&served);
    assert!(
        exported.contains_key("dbmanager_connection_acquire_wait_seconds_bucket")
            && exported.contains_key("dbmanager_reconnect_attempts_total")
            && !exported.contains_key("dbmanager_reconnect_attempts"),
        "the exposition's sample names carry their suffixes: {exported:?}"
    );
    assert_eq!(
        exported["dbmanager_connection_critical"],
        [
            "connection=\"lite\"",
            "connection=\"optional\"",
            "connection=\"pg-down\"",
            "type=\"postgres\"",
            "type=\"sqlite\""
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
    );
    let served_text = served.get("/metrics").body;
    assert!(
        served_text
            .contains("dbmanager_connection_critical{connection=\"optional\",type=\"sqlite\"} 0")
    );
    assert!(
        served_text
            .contains("dbmanager_connection_critical{connection=\"lite\",type=\"sqlite\"} 1")
    );

    let dashboard = dashboard();
    let alerts = alerts();
    let mut used = BTreeSet::new();
    for (source, queries) in [
        ("dashboard", dashboard_queries(&dashboard)),
        ("alerts", rule_queries(&alerts)),
    ] {
        for (title, expr) in queries {
            let (names, matchers) = promql(&expr);
            assert!(!names.is_empty(), "{source} {title}: no metric in {expr}");
            for name in &names {
                assert!(
                    exported.contains_key(name),
                    "{source} {title}: `{name}` is not exported by serve (mind the \
                     _bucket/_count/_sum/_total suffixes)"
                );
            }
            for (metric, label, values) in matchers {
                for value in values {
                    let pair = format!("{label}=\"{value}\"");
                    assert!(
                        exported[&metric].contains(&pair),
                        "{source} {title}: no {metric} sample has {pair}"
                    );
                }
            }
            used.extend(names.into_iter().map(|n| (source, n)));
        }
    }
    // What the issue asks each of them to show.
    for name in [
        "dbmanager_connection_status",
        "dbmanager_connection_pool_size",
        "dbmanager_connection_wait_duration_seconds",
        "dbmanager_connection_acquire_wait_seconds_bucket",
        "dbmanager_reconnect_attempts_total",
        "dbmanager_connect_errors_total",
    ] {
        assert!(used.contains(&("dashboard", name.to_owned())), "{name}");
    }
    let queries: Vec<String> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for quantile in ["0.5", "0.95", "0.99"] {
        assert!(
            queries
                .iter()
                .any(|q| q.starts_with(&format!("histogram_quantile({quantile}"))
                    && q.contains("dbmanager_connection_acquire_wait_seconds_bucket")),
            "acquire latency p{quantile}"
        );
    }
    assert!(
        queries
            .iter()
            .any(|q| q.contains("by (connection, kind)")
                && q.contains("dbmanager_connect_errors_total")),
        "connect errors by kind"
    );
    for name in [
        "dbmanager_connection_status",
        "dbmanager_connection_critical",
        "dbmanager_connection_pool_size",
        "dbmanager_connection_acquire_timeouts_total",
        "dbmanager_reconnect_attempts_total",
    ] {
        assert!(used.contains(&("alerts", name.to_owned())), "{name}");
    }
    assert_eq!(served.stop(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// The rule file's schema.

fn duration_ok(text: &str) -> bool {
    // Prometheus durations: one or more <number><unit>, units y w d h m s ms, largest first.
    let units = ["y", "w", "d", "h", "ms", "m", "s"];
    let mut rest = text;
    let mut last = None::<usize>;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = units.iter().position(|u| rest.starts_with(u)) else {
            return false;
        };
        let order = ["y", "w", "d", "h", "m", "s", "ms"]
            .iter()
            .position(|u| *u == units[unit])
            .unwrap();
        if last.is_some_and(|l| l >= order) {
            return false;
        }
        last = Some(order);
        rest = &rest[units[unit].len()..];
    }
    true
}

fn label_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn string_map<'a>(value: &'a Value, what: &str) -> &'a serde_json::Map<String, Value> {
    let map = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} must be a map"));
    for (k, v) in map {
        assert!(label_name_ok(k), "{what}: `{k}` is not a valid name");
        assert!(v.is_string(), "{what}.{k} must be a string");
    }
    map
}

#[test]
fn the_alert_rules_follow_the_rule_file_schema() {
    assert!(duration_ok("2m") && duration_ok("1h30m") && duration_ok("500ms"));
    assert!(!duration_ok("2") && !duration_ok("m") && !duration_ok("30m1h") && !duration_ok(""));

    let alerts = alerts();
    let root = alerts.as_object().expect("a map at the root");
    assert_eq!(
        root.keys().collect::<Vec<_>>(),
        ["groups"],
        "only `groups` at the root"
    );
    let mut group_names = BTreeSet::new();
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_array().expect("groups is a list") {
        let g = group.as_object().expect("a group is a map");
        for key in g.keys() {
            assert!(
                ["name", "interval", "limit", "rules"].contains(&key.as_str()),
                "unknown group key `{key}`"
            );
        }
        let name = g["name"].as_str().expect("a group has a name");
        assert!(group_names.insert(name), "group `{name}` twice");
        if let Some(interval) = g.get("interval") {
            assert!(duration_ok(interval.as_str().unwrap()), "{name}.interval");
        }
        let rules = g["rules"].as_array().expect("rules is a list");
        assert!(!rules.is_empty(), "group {name} has no rules");
        for rule in rules {
            let r = rule.as_object().expect("a rule is a map");
            for key in r.keys() {
                assert!(
                    [
                        "alert",
                        "record",
                        "expr",
                        "for",
                        "keep_firing_for",
                        "labels",
                        "annotations"
                    ]
                    .contains(&key.as_str()),
                    "unknown rule key `{key}` in {rule}"
                );
            }
            let alert = r["alert"]
                .as_str()
                .expect("every rule here is an alerting rule");
            assert!(!r.contains_key("record"), "{alert}: alert and record");
            assert!(label_name_ok(alert), "{alert}: not a valid alert name");
            assert!(alert_names.insert(alert), "alert {alert} twice");
            let expr = r["expr"].as_str().expect("expr is a string");
            assert!(!expr.trim().is_empty(), "{alert}: empty expr");
            for key in ["for", "keep_firing_for"] {
                if let Some(d) = r.get(key) {
                    assert!(
                        duration_ok(d.as_str().expect("a duration string")),
                        "{alert}.{key}: {d}"
                    );
                }
            }
            let labels = string_map(&r["labels"], &format!("{alert}.labels"));
            let severity = labels["severity"].as_str().unwrap();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}: severity {severity}"
            );
            let annotations = string_map(&r["annotations"], &format!("{alert}.annotations"));
            for key in ["summary", "description"] {
                let text = annotations
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{alert}: no {key}"));
                // Templates use only labels every series carries, and the value.
                for (at, _) in text.match_indices("$labels.") {
                    let label: String = text[at + 8..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        ["connection", "type", "instance", "job"].contains(&label.as_str()),
                        "{alert}.{key} uses $labels.{label}"
                    );
                }
                assert_eq!(
                    text.matches("{{").count(),
                    text.matches("}}").count(),
                    "{alert}.{key}: unbalanced template"
                );
            }
        }
    }
    for wanted in [
        "DbmanagerCriticalConnectionDown",
        "DbmanagerPoolSaturated",
        "DbmanagerAcquireTimeouts",
        "DbmanagerReconnectStorm",
    ] {
        assert!(alert_names.contains(wanted), "{wanted} is missing");
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard's structure.

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "dbmanager");
    assert!(d["title"].is_string());
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let variables: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
    let names: BTreeSet<&str> = variables
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for p in panels(&d) {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = p["title"].as_str().unwrap();
        let kind = p["type"].as_str().unwrap();
        assert!(
            ["row", "stat", "timeseries", "state-timeline", "bargauge"].contains(&kind),
            "{title}: panel type {kind}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("{title} overlaps {other}");
                }
            }
        }
        if kind == "row" {
            continue;
        }
        assert!(
            !p["description"].as_str().unwrap_or("").is_empty(),
            "{title}: no description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            let expr = t["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices('$') {
                let var: String = expr[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    var.starts_with("__") || names.contains(var.as_str()),
                    "{title}: ${var} is not a variable"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// promtool and a real Prometheus.

fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "`{name}` is needed: `apt-get install -y prometheus` (scripts/test.sh installs it when \
         missing)"
    );
}

fn promtool(args: &[&str]) {
    let out = Command::new(tool("promtool")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard's queries with Grafana's variables replaced by what they stand for here.
fn concrete(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$connection", ".*")
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_dashboard_queries() {
    let alerts = alerts_path();
    promtool(&["check", "rules", alerts.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        repo()
            .join("deploy/prometheus/alerts.test.yaml")
            .to_str()
            .unwrap(),
    ]);
    // The dashboard's queries, as recording rules, through promtool's PromQL parser.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries(&dashboard()).iter().enumerate() {
        let expr = serde_json::to_string(&concrete(expr, "5m")).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let file = write_file(dir.path(), "dashboard-rules.yaml", &rules);
    promtool(&["check", "rules", &file]);
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        let config = write_file(
            dir,
            "prometheus.yml",
            &format!(
                "global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - '{}'
scrape_configs:
  - job_name: dbmanager
    static_configs:
      - targets: ['{target}']
",
                alerts_path().display()
            ),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={config}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self { child, addr };
        assert!(
            wait_for(Duration::from_secs(20), || std::net::TcpStream::connect(
                &prometheus.addr
            )
            .is_ok()
                && common::get(&prometheus.addr, "/-/ready").status == 200),
            "prometheus did not become ready"
        );
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let r = common::get(&self.addr, path);
        let body: Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body));
        assert_eq!(body["status"], "success", "GET {path}: {body}");
        body["data"].clone()
    }

    fn query(&self, expr: &str) -> Vec<Value> {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[test]
fn a_real_prometheus_scrapes_serve_and_evaluates_every_query_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--config", &config(dir.path())], dir.path());
    let prometheus = Prometheus::start(dir.path(), &served.addr);
    // A few scrapes, so that rates over 5 s have their two samples, and one rule evaluation
    // after them.
    assert!(
        wait_for(Duration::from_secs(30), || {
            prometheus
                .query("count_over_time(up{job=\"dbmanager\"}[1m]) >= 4 and up == 1")
                .len()
                == 1
        }),
        "prometheus did not scrape serve: {}",
        prometheus.api("/api/v1/targets")
    );
    let ingested = prometheus.query("count({__name__=~\"dbmanager_.*\"})");
    assert!(
        ingested[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            > 50,
        "{ingested:?}"
    );

    for (title, expr) in dashboard_queries(&dashboard()) {
        let result = prometheus.query(&concrete(&expr, "5s"));
        // A query ending in a `> 0` filter may rightly be empty, and so may the per-statement
        // ones (serve runs no statement); every other one has data.
        assert!(
            !result.is_empty() || expr.trim_end().ends_with("> 0") || expr.contains("db_quer"),
            "{title}: no data for {expr}"
        );
    }

    // Every rule evaluated without error...
    assert!(wait_for(Duration::from_secs(10), || {
        prometheus.api("/api/v1/rules")["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
    }));
    for group in prometheus.api("/api/v1/rules")["groups"]
        .as_array()
        .unwrap()
    {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }
    // ...and the down connections have the alerts they call for pending: the critical one the
    // critical alert, the optional one the warning, the healthy one none.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let alerts = prometheus.api("/api/v1/alerts")["alerts"].clone();
            let alerts = alerts.as_array().unwrap();
            let has = |name: &str, connection: &str| {
                alerts.iter().any(|a| {
                    a["labels"]["alertname"] == name && a["labels"]["connection"] == connection
                })
            };
            has("DbmanagerCriticalConnectionDown", "pg-down")
                && has("DbmanagerConnectionDown", "optional")
                && !has("DbmanagerCriticalConnectionDown", "optional")
                && !alerts.iter().any(|a| a["labels"]["connection"] == "lite")
        }),
        "{}",
        prometheus.api("/api/v1/alerts")
    );
    drop(prometheus);
    assert_eq!(served.stop(), Some(0));
}
