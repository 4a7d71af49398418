//! Tags that select connections and label metrics, and `init_sql` on every new connection.

mod support;

use std::time::Duration;

use dbmanager::{ConnectionConfig, EnvSource, ErrorKind, Manager, ManagerConfig};
use support::{TestDb, fast_config};

#[tokio::test]
async fn tags_select_connections_and_named_ones_become_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "dbmanager:
  metric_tag_labels: [tier]
  connections:
    a: {{type: sqlite, filepath: '{0}/a.db', tags: {{tier: analytics, region: eu}}}}
    b: {{type: sqlite, filepath: '{0}/b.db', tags: {{tier: web}}}}
    c: {{type: sqlite, filepath: '{0}/c.db'}}
",
        dir.path().display()
    );
    let manager = Manager::from_yaml_str_with_env(&yaml, &EnvSource::empty()).unwrap();
    manager.connect().await.unwrap();
    let names = |v: Vec<dbmanager::Connection>| -> Vec<String> {
        v.iter().map(|c| c.name().to_owned()).collect()
    };
    assert_eq!(
        names(manager.connections_tagged("tier", "analytics")),
        ["a"]
    );
    assert_eq!(names(manager.connections_tagged("tier", "web")), ["b"]);
    assert!(manager.connections_tagged("tier", "nope").is_empty());
    let text = manager.metrics_text();
    assert!(
        text.contains(
            "dbmanager_connection_status{connection=\"a\",type=\"sqlite\",tier=\"analytics\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("connection=\"c\",type=\"sqlite\",tier=\"\""),
        "{text}"
    );
    assert!(
        !text.contains("region"),
        "only the named tag keys become labels"
    );
    manager.close(Duration::from_secs(1)).await;

    // Label names are validated: all problems at once, with paths.
    let bad =
        "dbmanager:\n  metric_tag_labels: [ok_label, 'bad-label', connection, __x, ok_label]\n";
    let problems: Vec<String> = ManagerConfig::from_yaml_str_with_env(bad, &EnvSource::empty())
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems[0].starts_with("metric_tag_labels[1]: not a metric label name"),
        "{problems:?}"
    );
    assert!(problems[1].contains("reserved") && problems[2].contains("reserved"));
    assert!(problems[3].contains("listed twice"));
}

#[tokio::test]
async fn init_sql_runs_on_every_new_connection_and_a_bad_statement_fails_the_connect() {
    let db = TestDb::create();
    let mut c = db.config("pg");
    c.init_sql = vec![
        "SET application_name = 'from-init'".into(),
        "SET TIME ZONE 'Asia/Kolkata'".into(),
    ];
    c.max_open_conns = Some(3);
    c.max_idle_conns = Some(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let pool = manager.postgres("pg").unwrap();
    // Three connections held at once: each is a new physical connection.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.unwrap());
    }
    for conn in &mut held {
        let (app, zone): (String, String) = dbmanager::reexports::sqlx::query_as(
            "SELECT current_setting('application_name'), current_setting('TimeZone')",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap();
        assert_eq!((app.as_str(), zone.as_str()), ("from-init", "Asia/Kolkata"));
    }
    drop(held);
    // The neutral handle and SeaORM run on the same initialised connections.
    let row = manager
        .database("pg")
        .unwrap()
        .fetch_one("SELECT current_setting('TimeZone') AS z", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<String>("z").as_deref(), Some("Asia/Kolkata"));
    manager.close(Duration::from_secs(5)).await;

    let mut broken = db.config("broken");
    broken.init_sql = vec!["SET no_such_setting = 1".into()];
    let mut config = fast_config().with_connection(broken);
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    let report = manager
        .connect_with(dbmanager::ConnectPolicy::Partial)
        .await
        .unwrap();
    assert_eq!(
        report.attempts["broken"], 1,
        "a failing init statement is not retried"
    );
    let err = &report.failed[0].1;
    assert_ne!(err.kind(), ErrorKind::Transient);
    assert!(
        err.to_string().contains("init_sql statement 1 failed"),
        "{err}"
    );

    // Not every backend has SQL to run.
    let mut mongo = ConnectionConfig::new("m", dbmanager::DatabaseType::Mongodb);
    mongo.host = Some("h".into());
    mongo.init_sql = vec!["x".into()];
    let err = Manager::new(fast_config().with_connection(mongo)).unwrap_err();
    assert!(
        err.to_string()
            .contains("connections.m.init_sql: not used by mongodb"),
        "{err}"
    );
}
