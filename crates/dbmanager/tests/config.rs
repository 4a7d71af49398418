//! Configuration: the reference example, defaults, explicit values, durations, validation that
//! reports every problem with its path, environment overrides, interpolation, secrets files.

use std::time::Duration;

use dbmanager::{
    ConfigProblems, DatabaseType, DefaultOrm, EnvSource, ErrorKind, ManagerConfig, SslMode,
};
use proptest::prelude::*;

const SEED_EXAMPLE: &str = r#"
dbmanager:
  default_connection: "primary"
  max_open_conns: 25
  max_idle_conns: 5
  conn_max_lifetime: 30m
  conn_max_idle_time: 5m
  retry_attempts: 3
  retry_delay: 1s
  retry_max_delay: 10s
  health_check_interval: 30s
  enable_auto_reconnect: true
  connections:
    primary:
      type: postgres
      host: localhost
      port: 5432
      user: myuser
      password: mypassword
      database: myapp
      sslmode: disable
      default_orm: bun
      enable_metrics: true
      enable_tracing: true
      enable_logging: true
    analytics:
      type: postgres
      dsn: "postgres://readonly:pass@analytics:5432/analytics"
      default_orm: bun
      enable_metrics: true
    cache-db:
      type: sqlite
      filepath: /var/lib/app/cache.db
      max_open_conns: 1
    documents:
      type: mongodb
      host: localhost
      port: 27017
      database: documents
      user: mongouser
      password: mongopass
      auth_source: admin
      enable_metrics: true
"#;

fn load(yaml: &str) -> Result<ManagerConfig, ConfigProblems> {
    ManagerConfig::from_yaml_str_with_env(yaml, &EnvSource::empty())
}

fn problems(yaml: &str) -> Vec<String> {
    problems_env(yaml, &EnvSource::empty())
}

fn problems_env(yaml: &str, env: &EnvSource) -> Vec<String> {
    match ManagerConfig::from_yaml_str_with_env(yaml, env) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn seed_example_parses_with_its_four_connections() {
    let config = load(SEED_EXAMPLE).unwrap();
    assert_eq!(config.connections.len(), 4);
    assert_eq!(config.default_connection.as_deref(), Some("primary"));
    let primary = &config.connections["primary"];
    assert_eq!(primary.kind, DatabaseType::Postgres);
    assert_eq!(primary.port, Some(5432));
    assert_eq!(primary.sslmode, Some(SslMode::Disable));
    assert_eq!(
        primary.default_orm,
        DefaultOrm::SeaOrm,
        "bun is an alias of sea-orm"
    );
    assert!(primary.enable_tracing);
    assert!(config.connections["analytics"].dsn.is_some());
    let cache = &config.connections["cache-db"];
    assert_eq!(cache.kind, DatabaseType::Sqlite);
    assert_eq!(config.pool_settings(cache).max_open, 1);
    assert_eq!(
        config.pool_settings(cache).max_idle,
        1,
        "the global idle cap is lowered to the pool size"
    );
    assert_eq!(config.connections["documents"].kind, DatabaseType::Mongodb);
    assert_eq!(
        config.connections["documents"].auth_source.as_deref(),
        Some("admin")
    );
}

#[test]
fn defaults_apply_only_where_keys_are_absent() {
    let config =
        load("dbmanager:\n  connections:\n    a: {type: sqlite, filepath: a.db}\n").unwrap();
    assert_eq!(config.max_open_conns, 25);
    assert_eq!(config.max_idle_conns, 5);
    assert_eq!(config.conn_max_lifetime, Duration::from_secs(1800));
    assert_eq!(config.conn_max_idle_time, Duration::from_secs(300));
    assert_eq!(config.retry_attempts, 3);
    assert_eq!(config.retry_delay, Duration::from_secs(1));
    assert_eq!(config.retry_max_delay, Duration::from_secs(10));
    assert_eq!(config.health_check_interval, Duration::from_secs(30));
    assert!(config.enable_auto_reconnect);
    let a = &config.connections["a"];
    assert_eq!(a.connect_timeout, Duration::from_secs(10));
    assert_eq!(a.query_timeout, Duration::from_secs(30));
    assert_eq!(a.name, "a");
    assert!(a.critical);
}

#[test]
fn explicit_zero_and_false_are_kept() {
    let config = load(
        "dbmanager:
  health_check_interval: 0s
  enable_auto_reconnect: false
  max_idle_conns: 0
  connections:
    a: {type: sqlite, filepath: a.db, query_timeout: 0s, enable_metrics: false}
",
    )
    .unwrap();
    assert_eq!(config.health_check_interval, Duration::ZERO);
    assert!(!config.enable_auto_reconnect);
    assert_eq!(config.max_idle_conns, 0);
    let a = &config.connections["a"];
    assert_eq!(config.pool_settings(a).max_idle, 0);
    assert_eq!(config.pool_settings(a).query_timeout, None);
    assert!(!a.enable_metrics);
}

#[test]
fn durations_take_units_and_bare_numbers_are_errors() {
    let config = load(
        "dbmanager:
  retry_delay: 500ms
  retry_max_delay: 1m30s
  conn_max_lifetime: 2h
  connections: {}
",
    )
    .unwrap();
    assert_eq!(config.retry_delay, Duration::from_millis(500));
    assert_eq!(config.retry_max_delay, Duration::from_secs(90));
    assert_eq!(config.conn_max_lifetime, Duration::from_secs(7200));

    let p = problems("dbmanager:\n  retry_delay: 10\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("retry_delay: `10` has no unit"), "{p:?}");
    assert!(p[0].contains("10s"), "{p:?}");
}

#[test]
fn every_problem_is_reported_at_once_with_paths_in_stable_order() {
    let yaml = "dbmanager:
  default_connection: missing
  max_open_conns: 0
  retry_attempts: 0
  connections:
    analytics:
      type: postgres
      host: db
      port: 70000
      database: a
      sslmode: sometimes
    cache:
      type: sqlite
      max_open_conns: 2
      max_idle_conns: 3
    docs:
      type: mongodb
      host: m
      read_preference: primary_preferred
      user: bob
    bad:
      type: postgress
    named:
      name: other
      type: sqlite
      filepath: x.db
    both:
      type: postgres
      host: h
      database: d
      password: p
      password_file: /nonexistent/pw
";
    let p = problems(yaml);
    let expected_prefixes = [
        "connections.analytics.port: 70000 is not a valid port",
        "connections.analytics.sslmode: `sometimes` is not valid",
        "connections.bad.type: `postgress` is not valid; expected one of postgres, sqlite, mssql, mongodb, mysql (did you mean `postgres`?)",
        "connections.both.password: set either password or password_file, not both",
        "connections.both.password_file: cannot read `/nonexistent/pw`",
        "connections.cache.filepath: required for sqlite when no dsn is given",
        "connections.cache.max_idle_conns: 3 is more than max_open_conns (2)",
        "connections.docs.password: a user is set without a password",
        "connections.docs.read_preference: `primary_preferred` is not valid",
        "connections.named.name: `other` contradicts the map key `named`",
        "default_connection: `missing` is not a configured connection",
        "max_open_conns: must be at least 1",
        "retry_attempts: must be at least 1",
    ];
    for prefix in expected_prefixes {
        assert!(
            p.iter().any(|x| x.starts_with(prefix)),
            "missing {prefix:?} in {p:#?}"
        );
    }
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(p, sorted, "problems come in a stable (sorted) order");
    // The same input gives the same report.
    assert_eq!(p, problems(yaml));
}

#[test]
fn unknown_keys_are_rejected_with_did_you_mean() {
    let p = problems(
        "dbmanager:
  max_open_con: 3
  connections:
    a: {type: sqlite, filepath: a.db, max_idle_con: 1, colour: blue}
",
    );
    assert!(
        p.contains(&"max_open_con: unknown key (did you mean `max_open_conns`?)".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(
            &"connections.a.max_idle_con: unknown key (did you mean `max_idle_conns`?)".to_owned()
        ),
        "{p:?}"
    );
    assert!(
        p.contains(&"connections.a.colour: unknown key".to_owned()),
        "{p:?}"
    );
}

#[test]
fn missing_root_key_is_named() {
    let p = problems("dbmanger:\n  connections: {}\n");
    assert_eq!(
        p,
        vec!["missing the root key `dbmanager:` (did you mean `dbmanger`?)".to_owned()]
    );
}

#[test]
fn applicability_of_fields_per_type_is_checked() {
    let p = problems(
        "dbmanager:
  connections:
    lite: {type: sqlite, filepath: a.db, host: h, sslmode: require, auth_source: admin}
    pg: {type: postgres, host: h, database: d, filepath: x.db, default_orm: native}
    ms: {type: mssql, host: h, default_orm: sea-orm}
",
    );
    for expected in [
        "connections.lite.auth_source: not used by sqlite (only by mongodb)",
        "connections.lite.host: not used by sqlite",
        "connections.lite.sslmode: not used by sqlite",
        "connections.pg.filepath: not used by postgres (only by sqlite)",
        "connections.ms.default_orm: sea-orm has no SQL Server driver; use `native`",
    ] {
        assert!(
            p.iter().any(|x| x.starts_with(expected)),
            "missing {expected:?} in {p:#?}"
        );
    }
}

#[test]
fn default_orm_accepts_rust_names_and_go_aliases() {
    let config = load(
        "dbmanager:
  connections:
    a: {type: sqlite, filepath: a.db, default_orm: native}
    b: {type: sqlite, filepath: b.db, default_orm: sea-orm}
    c: {type: sqlite, filepath: c.db, default_orm: gorm}
",
    )
    .unwrap();
    assert_eq!(config.connections["a"].default_orm, DefaultOrm::Native);
    assert_eq!(config.connections["b"].default_orm, DefaultOrm::SeaOrm);
    assert_eq!(config.connections["c"].default_orm, DefaultOrm::SeaOrm);
    let p = problems(
        "dbmanager:\n  connections:\n    a: {type: sqlite, filepath: a.db, default_orm: diesel}\n",
    );
    assert!(p[0].contains("expected one of native, sea-orm"), "{p:?}");
}

#[test]
fn environment_overrides_any_key_and_can_add_a_connection() {
    let env: EnvSource = [
        ("DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD", "from-env"),
        ("DBMANAGER__CONNECTIONS__PRIMARY__MAX_OPEN_CONNS", "7"),
        (
            "DBMANAGER__CONNECTIONS__CACHE_DB__FILEPATH",
            "/tmp/other.db",
        ),
        ("DBMANAGER__CONNECTIONS__EXTRA__TYPE", "sqlite"),
        ("DBMANAGER__CONNECTIONS__EXTRA__FILEPATH", ":memory:"),
        ("DBMANAGER__CONNECTIONS__EXTRA__TAGS__TEAM", "data"),
        ("DBMANAGER__DEFAULT_CONNECTION", "extra"),
        ("DBMANAGER__RETRY_DELAY", "250ms"),
        ("DBMANAGER__ENABLE_AUTO_RECONNECT", "false"),
        ("UNRELATED", "x"),
    ]
    .into_iter()
    .collect();
    let config = ManagerConfig::from_yaml_str_with_env(SEED_EXAMPLE, &env).unwrap();
    use secrecy::ExposeSecret;
    let primary = &config.connections["primary"];
    assert_eq!(
        primary.password.as_ref().unwrap().expose_secret(),
        "from-env"
    );
    assert_eq!(primary.max_open_conns, Some(7));
    assert_eq!(
        config.connections["cache-db"].filepath.as_deref(),
        Some(std::path::Path::new("/tmp/other.db")),
        "CACHE_DB matches the existing `cache-db`"
    );
    let extra = &config.connections["extra"];
    assert_eq!(extra.kind, DatabaseType::Sqlite);
    assert_eq!(extra.tags["team"], "data");
    assert_eq!(config.default_connection.as_deref(), Some("extra"));
    assert_eq!(config.retry_delay, Duration::from_millis(250));
    assert!(!config.enable_auto_reconnect);
}

#[test]
fn environment_values_are_validated_like_file_values() {
    let env: EnvSource = [("DBMANAGER__CONNECTIONS__A__PORT", "99999")]
        .into_iter()
        .collect();
    let p = problems_env(
        "dbmanager:\n  connections:\n    a: {type: postgres, host: h, database: d}\n",
        &env,
    );
    assert_eq!(
        p,
        vec!["connections.a.port: 99999 is not a valid port (1-65535)".to_owned()]
    );
}

#[test]
fn interpolation_reads_the_environment() {
    let env: EnvSource = [("DB_HOST", "db.internal"), ("DB_PASSWORD", "s3cret")]
        .into_iter()
        .collect();
    let config = ManagerConfig::from_yaml_str_with_env(
        "dbmanager:
  connections:
    a:
      type: postgres
      host: ${DB_HOST}
      port: ${DB_PORT:-6543}
      database: app
      password: ${DB_PASSWORD}
",
        &env,
    )
    .unwrap();
    let a = &config.connections["a"];
    assert_eq!(a.host.as_deref(), Some("db.internal"));
    assert_eq!(a.port, Some(6543));
    let p = problems(
        "dbmanager:\n  connections:\n    a: {type: postgres, host: '${NOPE}', database: d}\n",
    );
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("connections.a.host: `${NOPE}` is not set in the environment"),
        "{p:?}"
    );
}

#[test]
fn password_file_is_read_at_connect_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let yaml = format!(
        "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, password_file: '{}'}}\n",
        pw.display()
    );
    let config = load(&yaml).unwrap();
    assert_eq!(
        config.connections["a"].password_file.as_deref(),
        Some(pw.as_path())
    );
}

#[test]
fn invalid_yaml_is_one_clear_problem() {
    let p = problems("dbmanager:\n  connections: [\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("the document is not valid YAML"), "{p:?}");
    let err = dbmanager::Error::from(load("dbmanager:\n  connections: 5\n").unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(
        err.to_string().contains("connections: must be a mapping"),
        "{err}"
    );
}

#[test]
fn configs_built_in_code_are_validated_too() {
    let mut c = dbmanager::ConnectionConfig::new("pg", DatabaseType::Postgres);
    c.max_open_conns = Some(0);
    let config = ManagerConfig::default()
        .with_connection(c)
        .with_default("nope");
    let err = dbmanager::Manager::new(config).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("connections.pg.host: required for postgres"),
        "{text}"
    );
    assert!(
        text.contains("connections.pg.max_open_conns: must be at least 1"),
        "{text}"
    );
    assert!(text.contains("default_connection: `nope`"), "{text}");
}

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("~".to_owned()),
        Just("true".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("1.5".to_owned()),
        Just("10".to_owned()),
        Just("30s".to_owned()),
        Just("'${X}'".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{a: 1}".to_owned()),
        "[a-z0-9:@/%-]{0,12}",
    ]
}

fn yaml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type".to_owned()),
        Just("port".to_owned()),
        Just("dsn".to_owned()),
        Just("max_open_conns".to_owned()),
        Just("conn_max_lifetime".to_owned()),
        Just("tags".to_owned()),
        Just("sslmode".to_owned()),
        Just("password".to_owned()),
        "[a-z_]{1,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the input, loading returns a value or an error; it never panics.
    #[test]
    fn loading_never_panics_on_random_text(text in "\\PC{0,200}") {
        let _ = load(&text);
        let _ = load(&format!("dbmanager:\n{text}"));
    }

    #[test]
    fn loading_never_panics_on_random_structures(
        globals in prop::collection::vec((yaml_key(), yaml_scalar()), 0..5),
        fields in prop::collection::vec((yaml_key(), yaml_scalar()), 0..8),
    ) {
        let mut yaml = String::from("dbmanager:\n");
        for (k, v) in &globals {
            yaml.push_str(&format!("  {k}: {v}\n"));
        }
        yaml.push_str("  connections:\n    c:\n");
        for (k, v) in &fields {
            yaml.push_str(&format!("      {k}: {v}\n"));
        }
        match load(&yaml) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(dbmanager::Error::from(e).kind(), ErrorKind::Configuration),
        }
    }
}
