//! Secrets never reach Debug, Display, errors or logs: a distinctive password is set in every
//! place a secret can come from, and everything the library prints is scanned for it.

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, EnvSource, Manager, ManagerConfig};

const SECRET: &str = "Zq9-S3cr3t-Pa55";
const DSN_SECRET: &str = "Dsn-Hidden-77x";
const FILE_SECRET: &str = "File-Hidden-31y";

fn assert_clean(what: &str, text: &str) {
    for secret in [SECRET, DSN_SECRET, FILE_SECRET] {
        assert!(!text.contains(secret), "{what} leaks a secret:\n{text}");
    }
}

#[tokio::test]
async fn no_secret_in_debug_display_errors_or_logs() {
    let capture = support::LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = support::TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, FILE_SECRET).unwrap();
    let dead_port = support::free_port();
    let yaml = format!(
        "dbmanager:
  retry_attempts: 2
  retry_delay: 10ms
  retry_max_delay: 20ms
  health_check_interval: 0s
  default_connection: primary
  connections:
    primary:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      password: {SECRET}
      database: {db}
      max_open_conns: 2
    viadsn:
      type: postgres
      dsn: postgres://{user}:{DSN_SECRET}@{host}:{port}/{db}
      max_open_conns: 2
    fromfile:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      password_file: {file}
      database: {db}
      max_open_conns: 2
    down:
      type: postgres
      host: 127.0.0.1
      port: {dead_port}
      user: {user}
      password: {SECRET}
      database: {db}
    downdsn:
      type: postgres
      dsn: postgres://{user}:{DSN_SECRET}@127.0.0.1:{dead_port}/{db}
",
        host = support::pg_host(),
        port = support::pg_port(),
        user = support::pg_user(),
        db = db.name,
        file = pw_file.display(),
    );

    let config = ManagerConfig::from_yaml_str_with_env(&yaml, &EnvSource::empty()).unwrap();
    assert_clean("config Debug", &format!("{config:?}"));
    assert_clean("config Debug (pretty)", &format!("{config:#?}"));

    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.failed.len(), 2);
    for (_, err) in &report.failed {
        assert_clean("connect error Display", &err.to_string());
        assert_clean("connect error Debug", &format!("{err:?}"));
    }
    let fail_fast = manager.connect().await;
    assert!(fail_fast.is_err());

    assert_clean("manager Debug", &format!("{manager:?}"));
    for conn in manager.connections() {
        assert_clean("connection Debug", &format!("{conn:?}"));
        assert_clean("health", &format!("{:?}", conn.health()));
        if let Err(e) = conn.health_check().await {
            assert_clean("health check error", &format!("{e} {e:?}"));
        }
        if let Ok(sql) = conn.database() {
            assert_clean("database Debug", &format!("{sql:?}"));
            let err = sql.execute("SELECT nope", &[]).await.unwrap_err();
            assert_clean("query error", &format!("{err} {err:?}"));
        }
    }
    assert_clean("stats", &format!("{:?}", manager.stats()));
    assert_clean(
        "stats json",
        &serde_json::to_string(&manager.stats()).unwrap(),
    );
    manager.close(Duration::from_secs(5)).await;

    // Configuration errors around secrets do not quote them.
    for bad in [
        format!(
            "dbmanager:\n  connections:\n    a: {{type: postgres, dsn: 'mysql://u:{DSN_SECRET}@h/d'}}\n"
        ),
        format!(
            "dbmanager:\n  connections:\n    a: {{type: postgres, host: h, database: d, password: {SECRET}, pasword: {SECRET}x}}\n"
        ),
        format!("dbmanager:\n  connections:\n    a: {{type: postgres, password: [{SECRET}]}}\n"),
        format!(
            "dbmanager:\n  connections:\n    a:\n      password: {SECRET}\n     type: [broken\n"
        ),
        format!(
            "dbmanager:\n  connections:\n    a: {{type: sqlite, filepath: x.db, password: {SECRET}}}\n"
        ),
    ] {
        let err = ManagerConfig::from_yaml_str_with_env(&bad, &EnvSource::empty()).unwrap_err();
        let text = format!("{err} {err:?}");
        // Messages name keys, never values.
        assert_clean("config error", &text);
    }

    let logs = capture.text();
    assert!(logs.contains("connected"), "logs were captured: {logs}");
    assert!(logs.contains("retrying"), "retries were logged: {logs}");
    assert_clean("tracing output", &logs);
}

#[test]
fn env_source_debug_names_no_value() {
    let env: EnvSource = [
        ("DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD", SECRET),
        ("DBMANAGER__CONNECTIONS__PRIMARY__DSN", DSN_SECRET),
        ("DB_PASSWORD", FILE_SECRET),
    ]
    .into_iter()
    .collect();
    for text in [format!("{env:?}"), format!("{env:#?}")] {
        assert_clean("EnvSource Debug", &text);
        assert!(text.contains("EnvSource"), "{text}");
    }
    // The process environment too (whatever it holds, no value is printed).
    let process = EnvSource::process();
    let debug = format!("{process:?}");
    for (_, value) in std::env::vars() {
        if value.len() >= 8 {
            assert!(
                !debug.contains(&value),
                "EnvSource::process() Debug prints a value"
            );
        }
    }
}
