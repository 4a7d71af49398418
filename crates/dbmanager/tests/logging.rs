//! Structured logs: connect, retry, health transitions, reconnect and close are logged with the
//! connection name as a field; `enable_logging: false` silences a connection.

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, Manager};

#[tokio::test]
async fn lifecycle_events_are_logged_per_connection_unless_disabled() {
    let capture = support::LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .json()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let mut quiet = ConnectionConfig::sqlite("quiet", dir.path().join("q.db"));
    quiet.enable_logging = false;
    let mut down = ConnectionConfig::new("down", DatabaseType::Postgres);
    down.host = Some("127.0.0.1".into());
    down.port = Some(support::free_port());
    down.database = Some("x".into());
    let mut config = support::fast_config()
        .with_connection(ConnectionConfig::sqlite("loud", dir.path().join("l.db")))
        .with_connection(quiet)
        .with_connection(down);
    config.retry_attempts = 2;
    let manager = Manager::new(config).unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    manager.reconnect("loud").await.unwrap();
    manager.close(Duration::from_secs(2)).await;

    let logs = capture.text();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |connection: &str, message: &str| {
        events.iter().any(|e| {
            e["fields"]["connection"] == connection
                && e["fields"]["message"].as_str() == Some(message)
        })
    };
    assert!(has("loud", "connected"), "{logs}");
    assert!(has("loud", "reconnected"), "{logs}");
    assert!(has("loud", "closed"), "{logs}");
    assert!(has("down", "connect attempt failed; retrying"), "{logs}");
    assert!(has("down", "connect failed"), "{logs}");
    assert!(has("loud", "health changed"), "{logs}");
    assert!(
        !events.iter().any(|e| e["fields"]["connection"] == "quiet"),
        "enable_logging: false silences the connection: {logs}"
    );
}
