//! Connect options built from the structured fields and from a `dsn`: a structured field cannot
//! smuggle URL syntax (another database, TLS off, a port, credentials) into the connection, and
//! a `dsn` parameter the driver does not know is a configuration error that names the parameter
//! and never its value (sqlx logs unknown PostgreSQL parameters with their values at WARN).

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, Error, ErrorKind, Manager};
use support::{LogCapture, TestDb, fast_config};

/// Connects `c` alone (three attempts allowed) and returns its error, which must be a
/// configuration error tried once. A check at load time is accepted too.
async fn config_error_of(c: ConnectionConfig) -> Error {
    let name = c.name.clone();
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    let manager = match Manager::new(config) {
        Ok(manager) => manager,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
            return e;
        }
    };
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert!(
        report.connected.is_empty(),
        "`{name}` must not connect; it did"
    );
    assert_eq!(
        report.attempts[&name], 1,
        "configuration errors are not retried"
    );
    let (_, err) = report.failed.into_iter().next().unwrap();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    manager.close(Duration::from_secs(1)).await;
    err
}

/// Connects `c` alone and returns its error and the attempts made, or `None` if it connected
/// (asserts nothing, so that a test can check the logs first).
async fn outcome(c: ConnectionConfig) -> Option<(Error, u32)> {
    let name = c.name.clone();
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    let manager = match Manager::new(config) {
        Ok(manager) => manager,
        Err(e) => return Some((e, 0)),
    };
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    manager.close(Duration::from_secs(1)).await;
    let attempts = report.attempts[&name];
    report.failed.into_iter().next().map(|(_, e)| (e, attempts))
}

/// Checks what [`outcome`] returned for a dsn with a bad parameter.
fn assert_rejected(outcome: Option<(Error, u32)>, parameter: &str) {
    let Some((err, attempts)) = outcome else {
        panic!("a dsn with a bad `{parameter}` connected");
    };
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(attempts <= 1, "configuration errors are not retried: {err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("`{parameter}`")), "{text}");
    assert_no_secret("the error", &text);
}

fn capture_logs() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

// ---------------------------------------------------------------------------------------------
// Item: URL injection through a structured field.

/// Hosts that carry URL syntax or a port: on the URL-building code the first one connected to
/// `template1` with TLS off.
const BAD_HOSTS: &[&str] = &[
    "127.0.0.1/template1?sslmode=disable&",
    "127.0.0.1?sslmode=disable",
    "127.0.0.1#x",
    "postgres:Secret-In-Host-1@127.0.0.1",
    "127.0.0.1 ",
    " 127.0.0.1",
    "127.0.0.1\tx",
    "127.0.0.1:5432",
    "db:5433",
    "[::1]:5432",
    "[127.0.0.1]",
    "",
];

#[tokio::test]
async fn a_postgres_host_with_url_syntax_or_a_port_is_rejected() {
    let db = TestDb::create();
    for host in BAD_HOSTS {
        let mut c = db.config("pg");
        c.host = Some((*host).into());
        // Absent, so a `sslmode=disable` smuggled in would have won over the default `prefer`.
        c.sslmode = None;
        let err = config_error_of(c).await;
        let text = err.to_string();
        assert!(text.contains("host"), "{host:?}: {text}");
        assert!(
            !text.contains("template1") && !text.contains("Secret-In-Host"),
            "the host value is not quoted (it may hold credentials): {text}"
        );
    }
    assert_eq!(db.backends(), 0);
}

#[tokio::test]
async fn postgres_structured_fields_still_reach_the_server() {
    let db = TestDb::create();
    support::admin_sql(&db.name, "CREATE SCHEMA \"Odd Schema\"");
    for host in [support::pg_host(), "localhost".to_owned()] {
        let mut c = db.config("pg");
        c.host = Some(host.clone());
        c.schema = Some("Odd Schema".into());
        c.query_timeout = Duration::from_millis(1500);
        c.application_name = Some("dbm app 'x'".into());
        c.password = Some(String::new().into());
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let pool = manager.postgres("pg").unwrap();
        let row: (String, String, String, String, String, String) =
            dbmanager::reexports::sqlx::query_as(
                "SELECT current_database()::text, current_schema()::text, \
                 current_setting('statement_timeout'), current_setting('application_name'), \
                 current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            row,
            (
                db.name.clone(),
                "Odd Schema".to_owned(),
                "1500ms".to_owned(),
                "dbm app 'x'".to_owned(),
                "5".to_owned(),
                "15000".to_owned()
            ),
            "host {host}"
        );
        manager.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn postgres_ipv6_literals_are_accepted_with_or_without_brackets() {
    // Nothing listens on that port; the options must be accepted (a refused connect is
    // transient, not a configuration error).
    for host in ["::1", "[::1]"] {
        let mut c = ConnectionConfig::new("v6", DatabaseType::Postgres);
        c.host = Some(host.into());
        c.port = Some(support::free_port());
        c.database = Some("d".into());
        c.connect_timeout = Duration::from_secs(2);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
        let (_, err) = &report.failed[0];
        assert_eq!(err.kind(), ErrorKind::Transient, "{host}: {err}");
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_mysql_host_with_url_syntax_or_a_port_is_rejected() {
    for host in BAD_HOSTS {
        let mut c = ConnectionConfig::new("my", DatabaseType::Mysql);
        c.host = Some((*host).into());
        c.user = Some("root".into());
        c.connect_timeout = Duration::from_secs(5);
        let err = config_error_of(c).await;
        let text = err.to_string();
        assert!(text.contains("host"), "{host:?}: {text}");
        assert!(!text.contains("Secret-In-Host"), "{text}");
    }
}

#[cfg(feature = "mssql")]
#[tokio::test]
async fn an_mssql_host_with_url_syntax_a_port_or_a_broken_instance_is_rejected() {
    let bad_instances = [
        "127.0.0.1\\",
        "\\SQLEXPRESS",
        "127.0.0.1\\a\\b",
        "127.0.0.1\\in stance",
        "127.0.0.1:14331\\SQLEXPRESS",
    ];
    for host in BAD_HOSTS.iter().copied().chain(bad_instances) {
        let mut c = support::mssql_config("ms");
        c.host = Some(host.into());
        let err = config_error_of(c).await;
        let text = err.to_string();
        assert!(text.contains("host"), "{host:?}: {text}");
        assert!(!text.contains("Secret-In-Host"), "{text}");
    }
}

#[cfg(feature = "mongodb")]
#[tokio::test]
async fn a_mongodb_host_list_entry_with_url_syntax_is_rejected_without_quoting_it() {
    for host in [
        "127.0.0.1/admin?authSource=other",
        "127.0.0.1?x",
        "127.0.0.1#x",
        "dbm_user:Secret-In-Host-2@127.0.0.1",
        "127.0.0.1:27018,evil@127.0.0.1",
        "127.0.0.1\tx",
        "127.0.0.1 :27018",
        "[::1]junk",
        "[::1",
        "[127.0.0.1]",
        "127.0.0.1:0",
        "127.0.0.1:",
        "127.0.0.1,,127.0.0.2",
        "127.0.0.1,",
        "a:b:c",
        "",
    ] {
        let mut c = support::mongo_config("mg", "dbm_test");
        c.host = Some(host.into());
        let err = config_error_of(c).await;
        let text = err.to_string();
        assert!(text.contains("host"), "{host:?}: {text}");
        assert!(
            !text.contains("Secret-In-Host") && !text.contains("junk") && !text.contains("evil"),
            "the entry is not quoted: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item: unknown dsn parameters are rejected, naming the parameter, never the value.

const PARAM_SECRET: &str = "Param-Secret-9Qx";

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PARAM_SECRET),
        "{what} contains a dsn parameter value:\n{text}"
    );
}

#[tokio::test]
async fn unknown_postgres_dsn_parameters_are_rejected_and_never_logged() {
    let (logs, _guard) = capture_logs();
    let db = TestDb::create();
    let base = format!(
        "postgres://{}@{}:{}/{}",
        support::pg_user(),
        support::pg_host(),
        support::pg_port(),
        db.name
    );
    let mut outcomes = Vec::new();
    for (query, parameter) in [
        (
            format!("sslmode=disable&sslpassword={PARAM_SECRET}"),
            "sslpassword",
        ),
        (format!("pasword={PARAM_SECRET}"), "pasword"),
        (format!("ssl%70assword={PARAM_SECRET}"), "sslpassword"),
        (format!("sslmode={PARAM_SECRET}"), "sslmode"),
        (format!("port={PARAM_SECRET}"), "port"),
    ] {
        let c = ConnectionConfig::from_dsn("pg", DatabaseType::Postgres, format!("{base}?{query}"));
        outcomes.push((outcome(c).await, parameter));
    }
    // A parameter without `=` is not named (it may be a pasted secret itself).
    let c = ConnectionConfig::from_dsn(
        "pg",
        DatabaseType::Postgres,
        format!("{base}?sslmode=disable&{PARAM_SECRET}"),
    );
    let bare = outcome(c).await;
    // The logs first: this is where sqlx put the values.
    assert_no_secret("the logs", &logs.text());
    for (outcome, parameter) in outcomes {
        assert_rejected(outcome, parameter);
    }
    let (err, _) = bare.expect("a dsn with a bare parameter connected");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert_no_secret("the error", &format!("{err} {err:?}"));

    // Known parameters still work.
    let c = ConnectionConfig::from_dsn(
        "pg",
        DatabaseType::Postgres,
        format!("{base}?sslmode=disable&application_name=from-dsn&options[search_path]=public"),
    );
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let app: String =
        dbmanager::reexports::sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&manager.postgres("pg").unwrap())
            .await
            .unwrap();
    assert_eq!(app, "from-dsn");
    manager.close(Duration::from_secs(5)).await;

    assert_no_secret("the logs", &logs.text());
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn unknown_mysql_dsn_parameters_are_rejected_and_never_logged() {
    let (logs, _guard) = capture_logs();
    let base = format!(
        "mysql://root@{}:{}/",
        support::mysql::mysql_host(),
        support::mysql::mysql_port()
    );
    for (query, parameter) in [
        (format!("pasword={PARAM_SECRET}"), "pasword"),
        (
            format!("ssl-mode=DISABLED&sslpassword={PARAM_SECRET}"),
            "sslpassword",
        ),
        (format!("ssl-mode={PARAM_SECRET}"), "ssl-mode"),
    ] {
        let c = ConnectionConfig::from_dsn("my", DatabaseType::Mysql, format!("{base}?{query}"));
        let outcome = outcome(c).await;
        assert_no_secret("the logs", &logs.text());
        assert_rejected(outcome, parameter);
    }
    let c = ConnectionConfig::from_dsn(
        "my",
        DatabaseType::Mysql,
        format!("{base}?ssl-mode=DISABLED&charset=utf8mb4"),
    );
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
    assert_no_secret("the logs", &logs.text());
}

#[tokio::test]
async fn unknown_sqlite_dsn_parameters_are_rejected_and_never_logged() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("sqlite:{}", dir.path().join("app.db").display());
    for (query, parameter) in [
        (format!("mode=rwc&pasword={PARAM_SECRET}"), "pasword"),
        (format!("mode={PARAM_SECRET}"), "mode"),
        (format!("cache={PARAM_SECRET}"), "cache"),
        (format!("immutable={PARAM_SECRET}"), "immutable"),
    ] {
        let c = ConnectionConfig::from_dsn("lite", DatabaseType::Sqlite, format!("{base}?{query}"));
        let outcome = outcome(c).await;
        assert_no_secret("the logs", &logs.text());
        assert_rejected(outcome, parameter);
    }
    let c = ConnectionConfig::from_dsn("lite", DatabaseType::Sqlite, format!("{base}?mode=rwc"));
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
    assert_no_secret("the logs", &logs.text());
}
