//! The configuration's JSON Schema (`dbmanager::config::json_schema`, feature `schema`) checked
//! against the parser: the schema is valid draft-07; it names exactly the keys the README's key
//! tables list and the parser accepts; every example config in the repository passes both; and
//! for every key, valid values pass both while values of the wrong shape, wrong enum values and
//! unknown keys fail both.

use std::path::{Path, PathBuf};

use dbmanager::{EnvSource, ManagerConfig};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    dbmanager::config::json_schema()
}

fn validator() -> jsonschema::Validator {
    match jsonschema::draft7::new(&schema()) {
        Ok(v) => v,
        Err(e) => panic!("the schema does not compile: {e}"),
    }
}

/// The document as YAML types it (YAML 1.2 booleans, as the loader reads it), as JSON.
fn as_json(yaml: &str) -> Value {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(yaml, options).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Why the schema refuses `yaml` (empty when it accepts it).
fn schema_errors(validator: &jsonschema::Validator, yaml: &str) -> Vec<String> {
    let instance = as_json(yaml);
    validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn definition<'a>(schema: &'a Value, name: &str) -> &'a serde_json::Map<String, Value> {
    schema["definitions"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no definitions.{name}.properties in {schema:#}"))
}

/// The backticked keys in the first column of a README table under `heading`.
fn readme_keys(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme.split(heading).nth(1).unwrap();
    let mut keys = Vec::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            break;
        };
        for part in first.split('`').skip(1).step_by(2) {
            keys.push(part.to_owned());
        }
    }
    keys.retain(|k| k != "key");
    keys.sort();
    keys
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.sort();
    keys
}

#[test]
fn the_schema_is_valid_draft_07_and_closed_where_the_parser_is() {
    let schema = schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(
        jsonschema::draft7::meta::is_valid(&schema),
        "{:?}",
        jsonschema::draft7::meta::validate(&schema).err()
    );
    assert_eq!(schema["required"], serde_json::json!(["dbmanager"]));
    for name in ["ManagerConfig", "ConnectionConfig"] {
        assert_eq!(
            schema["definitions"][name]["additionalProperties"],
            Value::Bool(false),
            "{name}"
        );
    }
    // Every key is documented, and defaults are the loader's.
    for name in ["ManagerConfig", "ConnectionConfig"] {
        for (key, property) in definition(&schema, name) {
            assert!(property["description"].is_string(), "{name}.{key}");
        }
    }
    let manager = definition(&schema, "ManagerConfig");
    assert_eq!(manager["max_open_conns"]["default"], 25);
    assert_eq!(manager["conn_max_lifetime"]["default"], "30m");
    assert_eq!(manager["enable_auto_reconnect"]["default"], true);
    let connection = definition(&schema, "ConnectionConfig");
    assert_eq!(connection["connect_timeout"]["default"], "10s");
    assert_eq!(connection["default_orm"]["default"], "native");
    assert_eq!(connection["password"]["writeOnly"], true);
    // Inherited from the manager's value: no fixed default.
    assert!(connection["max_open_conns"].get("default").is_none());
}

#[test]
fn the_schema_names_exactly_the_keys_the_readme_lists_and_the_parser_accepts() {
    let schema = schema();
    let manager = sorted(definition(&schema, "ManagerConfig"));
    let connection = sorted(definition(&schema, "ConnectionConfig"));
    assert_eq!(manager, readme_keys("### Manager keys"));
    assert_eq!(connection, readme_keys("### Connection keys"));

    // The parser accepts each of them (no "unknown key"), and refuses a key next to them.
    let env = EnvSource::empty();
    let unknown = |yaml: &str, path: &str| -> bool {
        match ManagerConfig::from_yaml_str_with_env(yaml, &env) {
            Ok(_) => false,
            Err(problems) => problems
                .iter()
                .any(|p| p.path == path && p.message.starts_with("unknown key")),
        }
    };
    for key in &manager {
        let yaml = format!("dbmanager:\n  {key}: ~\n");
        assert!(!unknown(&yaml, key), "the parser refuses `{key}`");
    }
    for key in &connection {
        let yaml =
            format!("dbmanager:\n  connections:\n    c:\n      type: sqlite\n      {key}: x\n");
        assert!(
            !unknown(&yaml, &format!("connections.c.{key}")),
            "the parser refuses `{key}`"
        );
    }
    assert!(unknown(
        "dbmanager:\n  max_open_connz: 1\n",
        "max_open_connz"
    ));
    assert!(unknown(
        "dbmanager:\n  connections:\n    c: {type: sqlite, filepath: x, hots: h}\n",
        "connections.c.hots"
    ));
}

/// The example configs of the repository: the README's, the CLI's quick-start, the examples'.
fn examples() -> Vec<(String, String)> {
    let root = workspace();
    let mut out = Vec::new();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        if block.contains("dbmanager:") {
            out.push((format!("README block {i}"), block.to_owned()));
        }
    }
    assert!(!out.is_empty(), "the README has a YAML example");
    let quickstart = root.join("crates/dbmanager-cli/src/quickstart.yaml");
    out.push((
        "quickstart.yaml".to_owned(),
        std::fs::read_to_string(quickstart).unwrap(),
    ));
    for example in ["axum_service", "three_backends"] {
        let path = root.join(format!("crates/dbmanager/examples/{example}.rs"));
        let source = std::fs::read_to_string(path).unwrap();
        let config = source
            .split("const CONFIG: &str = r#\"")
            .nth(1)
            .and_then(|rest| rest.split("\"#;").next())
            .unwrap_or_else(|| panic!("{example} has a CONFIG"));
        out.push((example.to_owned(), config.to_owned()));
    }
    out
}

#[test]
fn every_example_config_passes_the_schema_and_the_loader() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("db-password");
    std::fs::write(&password, "pw\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let env: EnvSource = [("ANALYTICS_PASSWORD", "pw")].into_iter().collect();
    for (name, yaml) in examples() {
        let errors = schema_errors(&validator, &yaml);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // The README points at files of a real deployment; the loader checks they exist.
        let yaml = yaml
            .replace("/run/secrets/db-password", &password.display().to_string())
            .replace("/var/lib/app/", &format!("{}/", dir.path().display()));
        if let Err(problems) = ManagerConfig::from_yaml_str_with_env(&yaml, &env) {
            panic!("{name}: {problems}");
        }
    }
}

/// A connection of each kind that is valid as it stands, to add one key to.
const POSTGRES: &str = "type: postgres\n      host: h\n      database: d";
const MONGODB: &str = "type: mongodb\n      host: h";
const DSN: &str = "type: postgres";
/// The same without the key under test.
const UNTYPED: &str = "host: h\n      database: d";
const SQLITE_BARE: &str = "type: sqlite";
const NO_HOST: &str = "type: postgres\n      database: d";

/// (base connection, key, value, valid): what the loader and the schema must both say.
fn cases() -> Vec<(&'static str, &'static str, &'static str, bool)> {
    let p = POSTGRES;
    let m = MONGODB;
    vec![
        (p, "name", "c", true),
        (p, "name", "~", false),
        (p, "name", "[a]", false),
        (UNTYPED, "type", "postgres", true),
        (UNTYPED, "type", "postgress", false),
        (UNTYPED, "type", "Postgres", false),
        (DSN, "dsn", "postgres://u:pw@h/d", true),
        (DSN, "dsn", "{a: b}", false),
        (NO_HOST, "host", "db.internal", true),
        (NO_HOST, "host", "~", false),
        (p, "port", "5432", true),
        (p, "port", "'5432'", true),
        (p, "port", "~", true),
        (p, "port", "0", false),
        (p, "port", "70000", false),
        (p, "port", "-1", false),
        (p, "port", "5432.5", false),
        (p, "port", "abc", false),
        (p, "port", "[1]", false),
        (p, "user", "1234", true),
        (p, "user", "{a: b}", false),
        (p, "sslmode", "verify-full", true),
        (p, "sslmode", "verify_full", false),
        (p, "sslmode", "true", false),
        (p, "schema", "app", true),
        (SQLITE_BARE, "filepath", "/tmp/x.db", true),
        (SQLITE_BARE, "filepath", "~", false),
        (m, "auth_source", "admin", true),
        (m, "replica_set", "rs0", true),
        (m, "read_preference", "secondaryPreferred", true),
        (m, "read_preference", "secondary_preferred", false),
        (p, "max_open_conns", "10", true),
        (p, "max_open_conns", "0", false),
        (p, "max_open_conns", "10001", false),
        (p, "max_idle_conns", "0", true),
        (p, "min_open_conns", "2", true),
        (p, "min_open_conns", "two", false),
        (p, "conn_max_lifetime", "1h30m", true),
        (p, "conn_max_lifetime", "0s", true),
        (p, "conn_max_lifetime", "90", false),
        (p, "conn_max_idle_time", "'1.5 min'", true),
        (p, "conn_max_idle_time", "soon", false),
        (p, "connect_timeout", "500ms", true),
        (p, "connect_timeout", "5", false),
        (p, "connect_timeout", "5 parsecs", false),
        (p, "query_timeout", "~", true),
        (p, "query_timeout", "[1s]", false),
        (p, "enable_tracing", "true", true),
        (p, "enable_tracing", "'FALSE'", true),
        (p, "enable_tracing", "yes", false),
        (p, "enable_tracing", "1", false),
        (p, "trace_statements", "false", true),
        (p, "enable_metrics", "false", true),
        (p, "enable_logging", "false", true),
        (p, "critical", "false", true),
        (p, "critical", "nope", false),
        (m, "trust_server_certificate", "true", true),
        (p, "default_orm", "sea-orm", true),
        (p, "default_orm", "gorm", true),
        (p, "default_orm", "diesel", false),
        (p, "tags", "{team: data, tier: 1}", true),
        (p, "tags", "{team: [a]}", false),
        (p, "tags", "[a]", false),
        (p, "application_name", "billing", true),
        (p, "init_sql", "[\"SET TIME ZONE 'UTC'\"]", true),
        (p, "init_sql", "'SET x = 1'", false),
        (p, "init_sql", "[{a: b}]", false),
        (p, "leak_detection_threshold", "30s", true),
        (p, "leak_detection_threshold", "30", false),
        (p, "circuit_breaker", "{failures: 5}", true),
        (p, "circuit_breaker", "off", true),
        (p, "circuit_breaker", "false", true),
        (p, "circuit_breaker", "{failures: 0}", false),
        (p, "circuit_breaker", "{failures: 10001}", false),
        (p, "circuit_breaker", "{failures: 5, window: 1s}", false),
        (p, "circuit_breaker", "{}", false),
        (p, "circuit_breaker", "on", false),
        (p, "unknown_key", "1", false),
        (p, "hots", "h", false),
    ]
}

#[test]
fn each_key_accepts_and_refuses_the_same_values_in_the_schema_and_the_loader() {
    let validator = validator();
    let env = EnvSource::empty();
    let mut disagreements = Vec::new();
    for (base, key, value, valid) in cases() {
        let yaml =
            format!("dbmanager:\n  connections:\n    c:\n      {base}\n      {key}: {value}\n");
        let loads = ManagerConfig::from_yaml_str_with_env(&yaml, &env);
        let schema = schema_errors(&validator, &yaml);
        let loader_ok = loads.is_ok();
        let schema_ok = schema.is_empty();
        if loader_ok != valid || schema_ok != valid {
            disagreements.push(format!(
                "{key}: {value} (expected {}): loader {}, schema {:?}",
                if valid { "valid" } else { "invalid" },
                match &loads {
                    Ok(_) => "accepts".to_owned(),
                    Err(p) => p.to_string(),
                },
                schema,
            ));
        }
    }
    let manager_cases = [
        ("default_connection", "c", true),
        ("default_connection", "~", false),
        ("max_open_conns", "30", true),
        ("max_open_conns", "0", false),
        ("max_idle_conns", "3", true),
        ("max_idle_conns", "-3", false),
        ("conn_max_lifetime", "2h", true),
        ("conn_max_idle_time", "1m", true),
        ("retry_attempts", "5", true),
        ("retry_attempts", "0", false),
        ("retry_delay", "200ms", true),
        ("retry_delay", "200", false),
        ("retry_max_delay", "20s", true),
        ("health_check_interval", "0s", true),
        ("health_check_interval", "often", false),
        ("enable_auto_reconnect", "false", true),
        ("enable_auto_reconnect", "off", false),
        ("metric_tag_labels", "[team]", true),
        ("metric_tag_labels", "team", false),
        ("connections", "[c]", false),
        ("max_open_connz", "3", false),
    ];
    for (key, value, valid) in manager_cases {
        let connections = if key == "connections" {
            String::new()
        } else {
            format!("  connections:\n    c:\n      {POSTGRES}\n")
        };
        let yaml = format!("dbmanager:\n  {key}: {value}\n{connections}");
        let loader_ok = ManagerConfig::from_yaml_str_with_env(&yaml, &env).is_ok();
        let schema = schema_errors(&validator, &yaml);
        if loader_ok != valid || schema.is_empty() != valid {
            disagreements.push(format!(
                "{key}: {value} (expected valid={valid}): loader ok={loader_ok}, schema {schema:?}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn variables_are_accepted_wherever_a_value_goes() {
    // `${VAR}` can stand for any value; only the environment can check it.
    let validator = validator();
    let yaml = "dbmanager:\n  max_open_conns: ${POOL}\n  enable_auto_reconnect: ${RECONNECT:-true}\n  connections:\n    c:\n      type: ${KIND}\n      host: ${HOST}\n      database: d\n      port: ${PORT:-5432}\n      connect_timeout: ${TIMEOUT}\n      circuit_breaker: {failures: '${FAILURES}'}\n";
    assert_eq!(schema_errors(&validator, yaml), Vec::<String>::new());
    let env: EnvSource = [
        ("POOL", "7"),
        ("KIND", "postgres"),
        ("HOST", "h"),
        ("TIMEOUT", "3s"),
        ("FAILURES", "4"),
    ]
    .into_iter()
    .collect();
    let config = ManagerConfig::from_yaml_str_with_env(yaml, &env).unwrap();
    assert_eq!(config.max_open_conns, 7);
    assert_eq!(config.connections["c"].port, Some(5432));
    assert_eq!(config.connections["c"].circuit_breaker_failures, Some(4));
}
