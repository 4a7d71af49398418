//! Connect options built from the structured fields: a structured field cannot smuggle URL
//! syntax (another database, TLS off, a port, credentials) into the connection.

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, Error, ErrorKind, Manager};
use support::{TestDb, fast_config};

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
