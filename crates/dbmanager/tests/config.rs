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
        vec![
            "connections.a.port: 99999 is not a valid port (1-65535) \
             (set by DBMANAGER__CONNECTIONS__A__PORT)"
                .to_owned()
        ]
    );
}

/// A connection segment of an override goes to the connection of exactly that name when there
/// is one, and is a problem when several names fold to it (`cache-db` and `cache_db`): it used
/// to go to the first in sorted order, silently (`CACHE` reached `Cache`, not `cache`).
#[test]
fn an_override_goes_to_its_exact_connection_and_an_ambiguous_one_is_refused() {
    let lite = |name: &str| format!("    {name}: {{type: sqlite, filepath: ':memory:'}}\n");
    let yaml = format!(
        "dbmanager:\n  connections:\n{}{}",
        lite("Cache"),
        lite("cache")
    );
    let env: EnvSource = [("DBMANAGER__CONNECTIONS__CACHE__MAX_OPEN_CONNS", "3")]
        .into_iter()
        .collect();
    let config = ManagerConfig::from_yaml_str_with_env(&yaml, &env).unwrap();
    assert_eq!(config.connections["cache"].max_open_conns, Some(3));
    assert_eq!(config.connections["Cache"].max_open_conns, None);

    let yaml = format!(
        "dbmanager:\n  connections:\n{}{}{}",
        lite("cache-db"),
        lite("Cache_DB"),
        lite("other")
    );
    let env: EnvSource = [("DBMANAGER__CONNECTIONS__CACHE_DB__MAX_OPEN_CONNS", "3")]
        .into_iter()
        .collect();
    assert_eq!(
        problems_env(&yaml, &env),
        [
            "env DBMANAGER__CONNECTIONS__CACHE_DB__MAX_OPEN_CONNS: `cache_db` matches the \
          connections `Cache_DB` and `cache-db` (ignoring case, `-` and `_`); rename one of them"
        ]
    );
}

/// A problem in a value an override set names the variable: the key is not in the file, so
/// the path alone sends the reader looking for it there (`nope: unknown key`).
#[test]
fn problems_of_overridden_values_name_their_variable() {
    let env: EnvSource = [
        ("DBMANAGER__NOPE", "1"),
        ("DBMANAGER__CONNECTIONS__CACHE_DB__FILEPTH", "x"),
        ("DBMANAGER__CONNECTIONS__CACHE_DB__MAX_OPEN_CONNS", "abc"),
        ("DBMANAGER__CONNECTIONS__CACHE_DB__PASSWORD", "Env-S3cret"),
    ]
    .into_iter()
    .collect();
    let p = problems_env(
        "dbmanager:\n  connections:\n    cache-db: {type: sqlite, filepath: ':memory:', port: 1}\n",
        &env,
    );
    assert_eq!(
        p,
        vec![
            "connections.cache-db.filepth: unknown key (did you mean `filepath`?) \
             (set by DBMANAGER__CONNECTIONS__CACHE_DB__FILEPTH)",
            "connections.cache-db.max_open_conns: `abc` is not a whole number (write decimal \
             digits, e.g. `10`) (set by DBMANAGER__CONNECTIONS__CACHE_DB__MAX_OPEN_CONNS)",
            "connections.cache-db.password: not used by sqlite (only by postgres, mssql, \
             mongodb, mysql) (set by DBMANAGER__CONNECTIONS__CACHE_DB__PASSWORD)",
            // Written in the file: no variable to name.
            "connections.cache-db.port: not used by sqlite (only by postgres, mssql, mongodb, \
             mysql)",
            "nope: unknown key (set by DBMANAGER__NOPE)",
        ]
    );
}

/// A list-valued key (`init_sql`, `hosts`, `metric_tag_labels`, `replicas`) can be set from
/// the environment as a YAML flow sequence, read by the same loader as the file: strings keep
/// exactly the text written. Every such override used to be refused with "expected a list of
/// strings", whatever was written.
#[test]
fn an_override_sets_a_list_written_as_a_flow_sequence() {
    let env: EnvSource = [
        (
            "DBMANAGER__CONNECTIONS__A__INIT_SQL",
            r#"["SET a = 1", "SET b = 2.50"]"#,
        ),
        ("DBMANAGER__CONNECTIONS__A__HOSTS", "[db-1, db-2:5433]"),
        (
            "DBMANAGER__CONNECTIONS__B__REPLICAS",
            "[{host: db-2}, {host: db-3, port: 5433}]",
        ),
        ("DBMANAGER__METRIC_TAG_LABELS", "[team]"),
        ("DBMANAGER__CONNECTIONS__C__INIT_SQL", "[]"),
    ]
    .into_iter()
    .collect();
    let config = ManagerConfig::from_yaml_str_with_env(
        "dbmanager:
  connections:
    a: {type: postgres, database: d}
    b: {type: postgres, host: db-1, database: d}
    c: {type: sqlite, filepath: ':memory:', init_sql: ['PRAGMA foreign_keys = ON']}
",
        &env,
    )
    .unwrap();
    let a = &config.connections["a"];
    assert_eq!(a.init_sql, ["SET a = 1", "SET b = 2.50"]);
    assert_eq!(
        a.hosts.as_deref(),
        Some(&["db-1".to_owned(), "db-2:5433".to_owned()][..])
    );
    let b = &config.connections["b"];
    let replicas: Vec<_> = b
        .replicas
        .iter()
        .map(|r| (r.host.as_deref(), r.port))
        .collect();
    assert_eq!(replicas, [(Some("db-2"), None), (Some("db-3"), Some(5433))]);
    assert_eq!(config.metric_tag_labels, ["team"]);
    assert!(
        config.connections["c"].init_sql.is_empty(),
        "`[]` empties it"
    );
}

/// A list override that is not a flow sequence says how to write one; a broken one names the
/// variable; a problem inside the list names the variable too, and no secret is quoted.
#[test]
fn a_list_override_that_is_not_a_list_says_how_to_write_one() {
    let yaml = "dbmanager:\n  connections:\n    a: {type: postgres, host: db-1, database: d}\n";
    let env: EnvSource = [("DBMANAGER__CONNECTIONS__A__INIT_SQL", "SET a = 1")]
        .into_iter()
        .collect();
    let p = problems_env(yaml, &env);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("env DBMANAGER__CONNECTIONS__A__INIT_SQL: expected a list")
            && p[0].contains("YAML flow sequence")
            && p[0].contains("`[\"SET a = 1\", \"SET b = 2\"]`"),
        "{p:?}"
    );

    let env: EnvSource = [(
        "DBMANAGER__CONNECTIONS__A__REPLICAS",
        "[{host: db-2, pasword: S3cret-pw}",
    )]
    .into_iter()
    .collect();
    let p = problems_env(yaml, &env);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("env DBMANAGER__CONNECTIONS__A__REPLICAS: not a valid YAML flow sequence"),
        "{p:?}"
    );
    assert!(!p.concat().contains("S3cret"), "{p:?}");

    let env: EnvSource = [
        (
            "DBMANAGER__CONNECTIONS__A__REPLICAS",
            "[{host: db-2, pasword: S3cret-pw}]",
        ),
        ("DBMANAGER__CONNECTIONS__A__HOSTS", "[db-1, 'db-2:99999']"),
    ]
    .into_iter()
    .collect();
    let p = problems_env(yaml, &env);
    assert!(!p.concat().contains("S3cret"), "{p:?}");
    assert!(
        p.iter().any(|p| p.starts_with("connections.a.hosts[1]:")
            && p.ends_with("(set by DBMANAGER__CONNECTIONS__A__HOSTS)")),
        "{p:?}"
    );
    assert!(
        p.iter().any(
            |p| p.starts_with("connections.a.replicas[0].pasword: unknown key")
                && p.ends_with("(set by DBMANAGER__CONNECTIONS__A__REPLICAS)")
        ),
        "{p:?}"
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
      user: app
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

/// `${VAR:-default}` takes the default when the variable is unset *or empty*, as the shell
/// does (`${VAR-default}` is the unset-only form, not offered). An empty variable used to win:
/// `DBMANAGER_DATA_DIR=` made the quick-start `filepath: ${DBMANAGER_DATA_DIR:-data}/...` a
/// file at the root of the file system. `${VAR}` alone still gives the empty text.
#[test]
fn an_empty_variable_takes_the_default() {
    let env: EnvSource = [("DATA_DIR", ""), ("DB_PORT", ""), ("APP", "")]
        .into_iter()
        .collect();
    let config = ManagerConfig::from_yaml_str_with_env(
        "dbmanager:
  connections:
    a:
      type: postgres
      host: h
      port: ${DB_PORT:-6543}
      database: d
      application_name: x${APP}y
    lite:
      type: sqlite
      filepath: ${DATA_DIR:-data}/app.db
",
        &env,
    )
    .unwrap();
    assert_eq!(config.connections["a"].port, Some(6543));
    assert_eq!(
        config.connections["a"].application_name.as_deref(),
        Some("xy")
    );
    assert_eq!(
        config.connections["lite"].filepath.as_deref(),
        Some(std::path::Path::new("data/app.db"))
    );
}

#[test]
fn password_file_is_read_at_connect_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let yaml = format!(
        "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, user: u, password_file: '{}'}}\n",
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

const PLANTED: &str = "S3cret-Planted-91";

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

fn report(yaml: &str, env: &EnvSource) -> String {
    match ManagerConfig::from_yaml_str_with_env(yaml, env) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(p) => format!("{p}\n{p:?}\n{}", dbmanager::Error::from(p.clone())),
    }
}

#[test]
fn a_flow_key_missing_its_space_names_only_what_precedes_the_colon() {
    let p = problems(&format!(
        "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, password:{PLANTED}}}\n"
    ));
    assert_eq!(
        p,
        vec![
            "connections.a: `password:…` is not a key; a space is missing after `password:`?"
                .to_owned()
        ]
    );
    let text = report(
        "dbmanager:\n  connections:\n    a: {type: postgres, dsn:postgres://u:pw-Hidden@h/d}\n",
        &EnvSource::empty(),
    );
    assert!(
        text.contains("`dsn:…` is not a key; a space is missing after `dsn:`?"),
        "{text}"
    );
    assert_no_secret("dsn key", &text, &["pw-Hidden", "postgres://", "u:pw"]);
    // A missing colon, a key that is not a word, a manager key and a tag key: the same rule.
    let text = report(
        &format!(
            "dbmanager:\n  retry_delay:{PLANTED}: 1\n  connections:\n    a: {{type: sqlite, filepath: a.db, password {PLANTED}, tags: {{team:{PLANTED}}}}}\n"
        ),
        &EnvSource::empty(),
    );
    assert!(
        text.contains("`password …` is not a key; a `:` is missing after `password`?"),
        "{text}"
    );
    assert_no_secret("odd keys", &text, &[PLANTED, "Planted"]);
}

#[test]
fn interpolation_errors_quote_no_part_of_a_secret_value() {
    let env: EnvSource = [("DB_PASSWORD", PLANTED)].into_iter().collect();
    let text = report(
        "dbmanager:
  connections:
    a:
      type: postgres
      host: h
      database: d
      user: u
      password: 'Pre${fix Hidden-Part}'
    b:
      type: postgres
      host: h
      database: d
      user: u
      dsn: 'postgres://u:${Hidden_Name_7}@h/d'
    c:
      type: postgres
      host: h
      database: d
      user: u
      password: 'Lead${Unterminated-Tail'
    d:
      type: postgres
      host: h
      database: ${NOT_SET_HOST}
      port: ${DB_PASSWORD}
      sslmode: ${DB_PASSWORD}
      application_name: '${DB_PASSWORD'
",
        &env,
    );
    assert_no_secret(
        "interpolation errors",
        &text,
        &[
            "Hidden",
            "fix",
            "Pre",
            "Lead",
            "Unterminated",
            "Tail",
            PLANTED,
            "DB_PASSWORD",
        ],
    );
    // A non-secret field still names the missing variable.
    assert!(
        text.contains("connections.d.database: `${NOT_SET_HOST}` is not set"),
        "{text}"
    );
    assert!(text.contains("connections.d.port: "), "{text}");
    assert!(text.contains("connections.d.sslmode: "), "{text}");
}

#[test]
fn yaml_errors_quote_no_key_or_value() {
    for yaml in [
        format!(
            "dbmanager:\n  connections:\n    a: {{password:{PLANTED}: 1, password:{PLANTED}: 2}}\n"
        ),
        format!(
            "dbmanager:\n  connections:\n    a: {{password: {PLANTED}, password: {PLANTED}}}\n"
        ),
        format!("dbmanager:\n  connections:\n    a: {{password: !!int {PLANTED}}}\n"),
        format!("dbmanager:\n  connections:\n    a: {{password: !!float {PLANTED}}}\n"),
        format!("dbmanager:\n  connections:\n    a: {{password: \"{PLANTED}\\q\"}}\n"),
        format!(
            "dbmanager:\n  connections:\n    a:\n      type: postgres\n      password:{PLANTED}\n"
        ),
        format!("{{dbmanager:{PLANTED}: 1}}\n"),
        format!("dbmanagerx{PLANTED}: 1\n"),
        format!(
            "dbmanager:\n  connections:\n    a: {{type: sqlite, filepath: a.db, password{PLANTED}: 1}}\n"
        ),
    ] {
        let text = report(&yaml, &EnvSource::empty());
        assert_no_secret("YAML error", &text, &[PLANTED, "Planted"]);
    }
}

/// Spellings a YAML 1.1/1.2 parser would read as numbers, booleans or null.
const RETYPED: &[&str] = &[
    "1.50",
    "1e3",
    "0x1F",
    "0o17",
    "+7",
    "-0",
    "99999999999999999999999999",
    "18446744073709551616",
    "1_000",
    ".5",
    "1.",
    "on",
    "off",
    "yes",
    "no",
    "y",
    "True",
    "FALSE",
    "0755",
    ".inf",
    "-.Inf",
    ".NaN",
    "2001-12-14",
    "12:30:00",
];

#[test]
fn string_fields_get_exactly_what_was_written() {
    use secrecy::ExposeSecret;
    for text in RETYPED {
        // `12:30:00` is no host (it reads as `host:port`, a problem of its own).
        let host = if text.contains(':') { "h" } else { text };
        let yaml = format!(
            "dbmanager:
  default_connection: {text}
  connections:
    '{text}':
      type: postgres
      host: {host}
      user: {text}
      password: {text}
      database: {text}
      schema: {text}
      application_name: {text}
      tags: {{team: {text}, {text}: x}}
    m:
      type: mongodb
      host: h
      user: {text}
      password: {text}
      auth_source: {text}
      replica_set: {text}
"
        );
        let config = load(&yaml).unwrap_or_else(|p| panic!("{text}: {p}"));
        assert_eq!(config.default_connection.as_deref(), Some(*text));
        let c = &config.connections[*text];
        assert_eq!(c.host.as_deref(), Some(host));
        assert_eq!(c.user.as_deref(), Some(*text));
        assert_eq!(c.password.as_ref().unwrap().expose_secret(), *text);
        assert_eq!(c.database.as_deref(), Some(*text));
        assert_eq!(c.schema.as_deref(), Some(*text));
        assert_eq!(c.application_name.as_deref(), Some(*text));
        assert_eq!(c.tags["team"], *text);
        assert_eq!(c.tags[*text], "x");
        let m = &config.connections["m"];
        assert_eq!(m.auth_source.as_deref(), Some(*text));
        assert_eq!(m.replica_set.as_deref(), Some(*text));
        assert_eq!(m.password.as_ref().unwrap().expose_secret(), *text);
    }
    // Through an alias and a merge key too.
    let config = load(
        "base: &b {type: postgres, host: h, database: d, user: u, password: &pw 1.50}
dbmanager:
  connections:
    a:
      <<: *b
      schema: *pw
",
    )
    .unwrap();
    let a = &config.connections["a"];
    assert_eq!(a.password.as_ref().unwrap().expose_secret(), "1.50");
    assert_eq!(a.schema.as_deref(), Some("1.50"));
}

#[test]
fn a_null_in_a_string_field_is_rejected_with_a_hint_to_quote_it() {
    for null in ["null", "~", "Null", "NULL", ""] {
        let p = problems(&format!(
            "dbmanager:\n  connections:\n    a:\n      type: postgres\n      host: h\n      database: d\n      user: u\n      password: {null}\n"
        ));
        assert_eq!(
            p,
            vec![
                "connections.a.password: is null (`null`, `~` or nothing); quote the value if it is text, or remove the key"
                    .to_owned()
            ],
            "{null:?}"
        );
    }
    let config = load(
        "dbmanager:\n  connections:\n    a: {type: postgres, host: h, database: d, user: u, password: 'null'}\n",
    )
    .unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        config.connections["a"]
            .password
            .as_ref()
            .unwrap()
            .expose_secret(),
        "null"
    );
}

#[test]
fn durations_and_pool_sizes_beyond_the_limits_are_rejected_all_at_once() {
    let max = u64::MAX;
    let p = problems(&format!(
        "dbmanager:
  max_open_conns: 4000000000
  max_idle_conns: 3000000000
  conn_max_lifetime: 366days
  conn_max_idle_time: {max}s
  retry_delay: {max}s
  retry_max_delay: {max}s
  health_check_interval: 25h
  connections:
    a:
      type: sqlite
      filepath: a.db
      connect_timeout: {max}s
      query_timeout: {max}s
      conn_max_lifetime: {max}s
      conn_max_idle_time: 400days
      max_open_conns: 10001
      max_idle_conns: 4294967295
      min_open_conns: 2000000000
"
    ));
    let expected = [
        "conn_max_idle_time: longer than 365days, the largest accepted (0s means no limit)",
        "conn_max_lifetime: longer than 365days, the largest accepted (0s means no limit)",
        "connections.a.conn_max_idle_time: longer than 365days, the largest accepted (0s means no limit)",
        "connections.a.conn_max_lifetime: longer than 365days, the largest accepted (0s means no limit)",
        "connections.a.connect_timeout: longer than 24h, the largest accepted",
        "connections.a.max_idle_conns: more than 10000, the largest accepted pool size",
        "connections.a.max_open_conns: more than 10000, the largest accepted pool size",
        "connections.a.min_open_conns: more than 10000, the largest accepted pool size",
        "connections.a.query_timeout: longer than 24h, the largest accepted (0s means no limit)",
        "health_check_interval: longer than 24h, the largest accepted (0s turns the loop off)",
        "max_idle_conns: more than 10000, the largest accepted pool size",
        "max_open_conns: more than 10000, the largest accepted pool size",
        "retry_delay: longer than 24h, the largest accepted",
        "retry_max_delay: longer than 24h, the largest accepted",
    ];
    assert_eq!(p, expected, "{p:#?}");

    // The limits themselves are accepted.
    let config = load(
        "dbmanager:
  max_open_conns: 10000
  conn_max_lifetime: 365days
  health_check_interval: 24h
  retry_max_delay: 24h
  connections:
    a: {type: sqlite, filepath: a.db, connect_timeout: 24h, query_timeout: 24h, min_open_conns: 10000}
",
    )
    .unwrap();
    assert_eq!(
        config.connections["a"].connect_timeout,
        dbmanager::config::MAX_TIMEOUT
    );
    assert_eq!(config.conn_max_lifetime, dbmanager::config::MAX_LIFETIME);
    assert_eq!(config.max_open_conns, dbmanager::config::MAX_POOL_SIZE);

    // A config built in code meets the same limits.
    let mut c = dbmanager::ConnectionConfig::sqlite("a", "a.db");
    c.connect_timeout = Duration::MAX;
    c.min_open_conns = Some(u32::MAX);
    let mut config = ManagerConfig::default().with_connection(c);
    config.health_check_interval = Duration::MAX;
    let text = config.validate().unwrap_err().to_string();
    for path in [
        "connections.a.connect_timeout: longer than",
        "connections.a.min_open_conns: more than",
        "health_check_interval: longer than",
    ] {
        assert!(text.contains(path), "{text}");
    }
}

#[test]
fn contradictory_settings_are_config_errors() {
    let p = problems(
        "dbmanager:
  connections:
    pg: {type: postgres, host: h, database: d, password: pw}
    pgfile: {type: postgres, host: h, database: d, password_file: /etc/hostname}
    my: {type: mysql, host: h, password: pw}
    ms: {type: mssql, host: h, password: pw}
    pgdsn: {type: postgres, dsn: 'postgres://u@h/d', host: h, port: 5433, user: u, database: d}
    lite: {type: sqlite, dsn: 'sqlite::memory:', filepath: a.db}
    msdsn: {type: mssql, dsn: 'server=tcp:h,1433;user id=sa;password=x', user: sa}
    msdsnpw: {type: mssql, dsn: 'server=tcp:h,1433;user id=sa', password: pw}
    mongodsnpw: {type: mongodb, dsn: 'mongodb://u@h/d', password: pw}
    mongo: {type: mongodb, host: h, password: pw}
",
    );
    let expected = [
        "connections.lite.dsn: conflicts with filepath: a dsn is used as is, so they would be ignored; put them in the dsn or remove the dsn",
        "connections.mongo.password: set without user; MongoDB would ignore it (set user, or remove password)",
        "connections.mongodsnpw.password: MongoDB reads a password only with user, which a dsn excludes; put the credentials in the dsn",
        "connections.ms.password: set without user; SQL Server would ignore it (set user, or remove password)",
        "connections.msdsn.dsn: conflicts with user: a dsn is used as is, so they would be ignored; put them in the dsn or remove the dsn",
        "connections.msdsn.user: with a dsn, SQL Server would replace the dsn's credentials with this user and an empty password; put `User ID=` in the dsn",
        "connections.msdsnpw.password: SQL Server reads a password only with user, which a dsn excludes; put `Password=` in the dsn",
        "connections.my.password: set without user; MySQL would log in as its default user `root` (set user, or remove password)",
        "connections.pg.password: set without user; PostgreSQL would ignore it (set user, or remove password)",
        "connections.pgdsn.dsn: conflicts with host, port, user, database: a dsn is used as is, so they would be ignored; put them in the dsn or remove the dsn",
        "connections.pgfile.password_file: set without user; PostgreSQL would ignore it (set user, or remove password_file)",
    ];
    assert_eq!(p, expected, "{p:#?}");

    // Supplying the password apart from the dsn stays allowed where the driver applies it.
    load(
        "dbmanager:
  connections:
    pg: {type: postgres, dsn: 'postgres://u@h/d', password: pw}
    my: {type: mysql, dsn: 'mysql://u@h/d', password_file: /etc/hostname}
    ms: {type: mssql, dsn: 'server=tcp:h,1433;user id=sa;password=x'}
",
    )
    .unwrap();
}

fn file_problem(path: &std::path::Path) -> Vec<String> {
    problems(&format!(
        "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, user: u, password_file: '{}'}}\n",
        path.display()
    ))
}

#[test]
fn password_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let shown = |p: &std::path::Path| p.display().to_string();
    assert_eq!(
        file_problem(dir.path()),
        vec![format!(
            "connections.a.password_file: `{}` is not a regular file (a directory)",
            shown(dir.path())
        )]
    );
    let zero = std::path::Path::new("/dev/zero");
    assert_eq!(
        file_problem(zero),
        vec![
            "connections.a.password_file: `/dev/zero` is not a regular file (a character device)"
                .to_owned()
        ]
    );
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    assert_eq!(
        file_problem(&fifo),
        vec![format!(
            "connections.a.password_file: `{}` is not a regular file (a FIFO)",
            shown(&fifo)
        )]
    );
    let big = dir.path().join("big");
    std::fs::write(
        &big,
        vec![b'x'; dbmanager::config::MAX_PASSWORD_FILE_BYTES as usize + 1],
    )
    .unwrap();
    assert_eq!(
        file_problem(&big),
        vec![format!(
            "connections.a.password_file: `{}` is larger than 64 KiB",
            shown(&big)
        )]
    );
    let exact = dir.path().join("exact");
    std::fs::write(
        &exact,
        vec![b'x'; dbmanager::config::MAX_PASSWORD_FILE_BYTES as usize],
    )
    .unwrap();
    assert!(file_problem_ok(&exact));
    // A path that came from `${VAR}` is not quoted (the variable might hold anything).
    let env: EnvSource = [("PW_FILE", shown(dir.path()))].into_iter().collect();
    let p = problems_env(
        "dbmanager:\n  connections:\n    a: {type: postgres, host: h, database: d, user: u, password_file: '${PW_FILE}'}\n",
        &env,
    );
    assert_eq!(
        p,
        vec!["connections.a.password_file: the value (from `${...}`) is not a regular file (a directory)".to_owned()]
    );
}

fn file_problem_ok(path: &std::path::Path) -> bool {
    load(&format!(
        "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, user: u, password_file: '{}'}}\n",
        path.display()
    ))
    .is_ok()
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_password_file_readable_by_others_is_warned_about_by_path_only() {
    use std::os::unix::fs::PermissionsExt;
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    let shared = dir.path().join("shared");
    for (path, mode) in [(&private, 0o600), (&shared, 0o644)] {
        std::fs::write(path, PLANTED).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert!(file_problem_ok(&private));
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains("WARN"), "{logs}");
    assert!(file_problem_ok(&shared));
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("readable by group or others"), "{logs}");
    assert!(logs.contains(&shared.display().to_string()), "{logs}");
    assert!(logs.contains("connections.a.password_file"), "{logs}");
    assert_no_secret("warning", &logs, &[PLANTED]);
}

// ---- The config fuzz target: hostile documents, bounded time, no secret in any output. ----

/// Planted directly in secret fields (`password`, `dsn`, flow keys missing their space).
const FUZZ_PW: &str = "Fz-Pw-Secret-6b1";
/// The value of `SECRET_VAR`, referenced from secret fields.
const FUZZ_REF: &str = "Fz-Ref-Secret-2c7";
/// The value of `ANY_VAR`, referenced from any field: never in a problem message.
const FUZZ_ANY: &str = "Fz-Any-Secret-9d3";
/// An environment override of the password.
const FUZZ_OVR: &str = "Fz-Ovr-Secret-4e8";

/// A budget per load: generous for a loaded CI machine, far below anything pathological.
const FUZZ_TIME_BOUND: Duration = Duration::from_secs(3);

fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

fn fuzz_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551615s".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("99999999999999999999999999999999ms".to_owned()),
        Just("-1".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e999".to_owned()),
        Just("-1.5e300".to_owned()),
        Just("1.50".to_owned()),
        Just(".nan".to_owned()),
        Just("0x1F".to_owned()),
        Just("0o777".to_owned()),
        Just("1_000".to_owned()),
        Just("+7".to_owned()),
        Just("on".to_owned()),
        Just("True".to_owned()),
        Just("~".to_owned()),
        Just("null".to_owned()),
        Just(String::new()),
        Just("30s".to_owned()),
        Just("4000000000".to_owned()),
        Just("'${ANY_VAR}'".to_owned()),
        Just("'${ANY_VAR}s'".to_owned()),
        Just("'x${UNSET_VAR_42}'".to_owned()),
        Just("'${bad ref}'".to_owned()),
        Just("'${'".to_owned()),
        Just("'$$5'".to_owned()),
        Just("[1, [2, [3, [4]]]]".to_owned()),
        Just("{a: {b: {c: {d: 1}}}}".to_owned()),
        Just("*shared".to_owned()),
        Just("*undefined".to_owned()),
        Just("!!int 12".to_owned()),
        Just("!!binary aGVsbG8=".to_owned()),
        Just("!custom x".to_owned()),
        Just(format!("'{}'", "x".repeat(70_000))),
        Just(format!("\"{}\"", "é€😀\u{202e}".repeat(200))),
        Just("[".repeat(80)),
        "\\PC{0,30}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        "[\\x00-\\x1f\\x7f\\u{85}\\u{2028}]{1,8}".prop_map(|s| format!("\"{}\"", escaped(&s))),
        "[a-z0-9:/@%.-]{0,16}",
    ]
}

fn fuzz_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type".to_owned()),
        Just("host".to_owned()),
        Just("port".to_owned()),
        Just("user".to_owned()),
        Just("database".to_owned()),
        Just("sslmode".to_owned()),
        Just("schema".to_owned()),
        Just("filepath".to_owned()),
        Just("password_file".to_owned()),
        Just("name".to_owned()),
        Just("max_open_conns".to_owned()),
        Just("max_idle_conns".to_owned()),
        Just("min_open_conns".to_owned()),
        Just("connect_timeout".to_owned()),
        Just("query_timeout".to_owned()),
        Just("conn_max_lifetime".to_owned()),
        Just("conn_max_idle_time".to_owned()),
        Just("tags".to_owned()),
        Just("application_name".to_owned()),
        Just("default_orm".to_owned()),
        Just("critical".to_owned()),
        Just("<<".to_owned()),
        "[a-z_]{1,12}",
        "\\PC{1,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
    ]
}

/// Where the planted secrets go: every form a secret field can take.
fn fuzz_secret_entry() -> impl Strategy<Value = (String, bool)> {
    // (entry, whether it needs flow style)
    prop_oneof![
        Just((format!("password: {FUZZ_PW}"), false)),
        Just((format!("password: '{FUZZ_PW}'"), false)),
        Just((format!("password:{FUZZ_PW}"), true)),
        Just((format!("password {FUZZ_PW}"), true)),
        Just((format!("pasword: {FUZZ_PW}"), false)),
        Just((format!("password{FUZZ_PW}: 1"), false)),
        Just((format!("password: [{FUZZ_PW}]"), false)),
        Just((format!("password: !!int {FUZZ_PW}"), false)),
        Just((format!("password: 'a${{{FUZZ_PW}}}'"), false)),
        Just((format!("password: 'a${{{FUZZ_PW} x}}'"), false)),
        Just(("password: '${SECRET_VAR}'".to_owned(), false)),
        Just(("password: 'pre${SECRET_VAR}post'".to_owned(), false)),
        Just((format!("dsn: 'postgres://u:{FUZZ_PW}@h/d'"), false)),
        Just((format!("dsn: 'mysql://u:{FUZZ_PW}@h/d'"), false)),
        Just((format!("dsn:postgres://u:{FUZZ_PW}@h/d"), true)),
        Just(("dsn: 'postgres://u:${SECRET_VAR}@h/d'".to_owned(), false)),
        Just(("dsn: 'postgres://u:${SECRET_VAR@h/d'".to_owned(), false)),
    ]
}

fn fuzz_document() -> impl Strategy<Value = (String, bool)> {
    (
        prop::collection::vec((fuzz_key(), fuzz_value()), 0..6),
        prop::collection::vec((fuzz_key(), fuzz_value()), 0..10),
        fuzz_secret_entry(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(globals, fields, (secret, needs_flow), flow, dup, env_override)| {
                let mut yaml = String::from("shared: &shared {port: 1, host: h}\ndbmanager:\n");
                for (k, v) in &globals {
                    yaml.push_str(&format!("  {k}: {v}\n"));
                }
                yaml.push_str("  connections:\n");
                let mut entries: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                entries.push(secret.clone());
                if dup {
                    entries.push(secret);
                }
                if flow || needs_flow {
                    // Flow style; a value that is itself block-only breaks the document, which is
                    // fine: it must still fail cleanly.
                    yaml.push_str(&format!("    c: {{{}}}\n", entries.join(", ")));
                } else {
                    yaml.push_str("    c:\n");
                    for e in &entries {
                        yaml.push_str(&format!("      {e}\n"));
                    }
                }
                (yaml, env_override)
            },
        )
}

fn fuzz_env(with_override: bool) -> EnvSource {
    let mut pairs = vec![
        ("SECRET_VAR".to_owned(), FUZZ_REF.to_owned()),
        ("ANY_VAR".to_owned(), FUZZ_ANY.to_owned()),
        (
            "DBMANAGER__CONNECTIONS__C__APPLICATION_NAME".to_owned(),
            "${ANY_VAR}".to_owned(),
        ),
    ];
    if with_override {
        pairs.push((
            "DBMANAGER__CONNECTIONS__C__PASSWORD".to_owned(),
            FUZZ_OVR.to_owned(),
        ));
    }
    pairs.into_iter().collect()
}

/// Loads and validates; checks the time bound and that no output carries a secret.
fn fuzz_check(yaml: &str, env: &EnvSource) -> Result<(), TestCaseError> {
    let started = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(|| ManagerConfig::from_yaml_str_with_env(yaml, env));
    let elapsed = started.elapsed();
    let Ok(outcome) = outcome else {
        return Err(TestCaseError::fail(format!("loading panicked on:\n{yaml}")));
    };
    prop_assert!(elapsed < FUZZ_TIME_BOUND, "took {elapsed:?} on:\n{yaml}");
    match outcome {
        Ok(config) => {
            let text = format!("{config:?} {config:#?}");
            for secret in [FUZZ_PW, FUZZ_REF, FUZZ_OVR] {
                prop_assert!(
                    !text.contains(secret),
                    "config Debug leaks:\n{text}\n{yaml}"
                );
            }
            // A config that loads also validates again, the same way.
            prop_assert!(config.validate().is_ok());
        }
        Err(problems) => {
            let text = format!(
                "{problems}\n{problems:?}\n{}",
                dbmanager::Error::from(problems.clone())
            );
            for secret in [FUZZ_PW, FUZZ_REF, FUZZ_ANY, FUZZ_OVR] {
                prop_assert!(!text.contains(secret), "problems leak:\n{text}\n{yaml}");
            }
            // Pieces of a planted secret are not shown either.
            for piece in ["Pw-Secret", "Ref-Secret", "Any-Secret", "Ovr-Secret"] {
                prop_assert!(
                    !text.contains(piece),
                    "problems leak a part:\n{text}\n{yaml}"
                );
            }
            prop_assert!(!problems.is_empty());
        }
    }
    Ok(())
}

proptest! {
    // Bounded so the whole target runs in seconds on two shared cores (CI runs it every time).
    #![proptest_config(ProptestConfig {
        cases: 192,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_config_never_panics_stays_bounded_and_leaks_no_secret(
        (yaml, env_override) in fuzz_document()
    ) {
        fuzz_check(&yaml, &fuzz_env(env_override))?;
    }

    #[test]
    fn fuzz_raw_bytes_after_the_root_key(text in "\\PC{0,300}") {
        fuzz_check(&format!("dbmanager:\n  connections:\n    c: {{password: {FUZZ_PW}}}\n{text}"), &fuzz_env(false))?;
    }
}

fn billion_laughs(levels: usize) -> String {
    let mut yaml = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..levels {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    yaml.push_str(&format!(
        "dbmanager:\n  connections:\n    a: {{type: sqlite, filepath: a.db, tags: *l{}}}\n",
        levels - 1
    ));
    yaml
}

#[test]
fn a_billion_laughs_alias_bomb_is_rejected_quickly() {
    let started = std::time::Instant::now();
    let p = problems(&billion_laughs(10));
    let elapsed = started.elapsed();
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "the document is not valid YAML: the document exceeds the configuration YAML budget"
        ),
        "{p:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // Deep nesting and a document over the size cap are refused the same way.
    let deep = format!(
        "dbmanager:\n  connections: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    let p = problems(&deep);
    assert!(p[0].starts_with("the document is not valid YAML"), "{p:?}");
    let big = format!(
        "dbmanager:\n  connections: {{}}\nfiller: '{}'\n",
        "x".repeat(dbmanager::config::MAX_DOCUMENT_BYTES)
    );
    assert_eq!(
        problems(&big),
        vec!["the document is larger than 1024 KiB".to_owned()]
    );
    // Small, legitimate anchors and merge keys still work.
    let config = load(
        "base: &base {type: sqlite, max_open_conns: 2}\ndbmanager:\n  connections:\n    a: {<<: *base, filepath: a.db}\n    b: {<<: *base, filepath: b.db}\n",
    )
    .unwrap();
    assert_eq!(config.connections["b"].max_open_conns, Some(2));
}

/// A dsn its driver cannot parse is reported when the configuration is loaded, with its path and
/// with every other problem, by the same parsing the connect uses; it used to pass validation and
/// fail each connect (so `check` said "down", not "invalid"). The dsn is never quoted.
#[test]
fn a_dsn_its_driver_cannot_parse_is_a_problem_at_load() {
    let p = problems(
        "dbmanager:
  connections:
    pg: {type: postgres, dsn: 'postgres://u:pw-Hidden?x@127.0.0.1/db'}
    tokio: {type: postgres, driver: tokio-postgres, dsn: 'postgres://u:pw-Hidden@127.0.0.1:99999/db'}
    my: {type: mysql, dsn: 'mysql://root:pw-Hidden@127.0.0.1:99999/test'}
    mylist: {type: mysql, dsn: 'mysql://root:pw-Hidden@a:3306,b:3306/test'}
    unknown: {type: postgres, dsn: 'postgres://u:pw-Hidden@h/d?foo=1'}
    fine: {type: postgres, dsn: 'postgres://u:pw-Hidden@h:5433/d?sslmode=disable'}
    port: {type: port, host: h}
    pgmode: {type: postgres, dsn: 'postgres://u@h/d?sslmode=Mode-Hidden'}
    tokiomode: {type: postgres, driver: tokio-postgres, dsn: 'postgres://u@h/d?sslmode=Mode-Hidden'}
    mymode: {type: mysql, dsn: 'mysql://root@h/test?ssl-mode=Mode-Hidden'}
    mongomode: {type: mongodb, dsn: 'mongodb://root:pw-Hidden@h/test?readPreference=Mode-Hidden'}
    mongofine: {type: mongodb, dsn: 'mongodb://root:pw-Hidden@h1,h2:27019/test?replicaSet=rs0&authSource=admin'}
",
    );
    let keys: Vec<&str> = p
        .iter()
        .map(|line| line.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "connections.mongomode.dsn",
            "connections.my.dsn",
            "connections.mylist.dsn",
            "connections.mymode.dsn",
            "connections.pg.dsn",
            "connections.pgmode.dsn",
            "connections.port.type",
            "connections.tokio.dsn",
            "connections.tokiomode.dsn",
            "connections.unknown.dsn",
        ],
        "{p:#?}"
    );
    let text = p.join("\n");
    assert!(text.contains("invalid port"), "{text}");
    assert!(
        text.contains("not supported; list them in `hosts`"),
        "{text}"
    );
    assert_no_secret(
        "dsn",
        &text,
        &["pw-Hidden", "root:", "u:pw", "Mode-Hidden", "mode-hidden"],
    );
}
