//! Metrics scraped from the text format, and spans collected with an in-memory OpenTelemetry
//! exporter.

mod support;

use std::time::Duration;

use dbmanager::{ConnectPolicy, ConnectionConfig, Manager};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;

/// The value of one sample line `name{labels} value`, matching every `labels` fragment.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_are_live_labelled_and_secret_free(driver: dbmanager::PostgresDriver) {
    let db = support::TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = db.config("primary");
    pg.driver = Some(driver);
    pg.password = Some("Metric-Secret-99".to_owned().into());
    let mut quiet = ConnectionConfig::sqlite("quiet", dir.path().join("q.db"));
    quiet.enable_metrics = false;
    let mut down = ConnectionConfig::new("down", dbmanager::DatabaseType::Postgres);
    down.driver = Some(driver);
    down.host = Some("127.0.0.1".into());
    down.port = Some(support::free_port());
    down.database = Some("x".into());
    let manager = Manager::new(
        support::fast_config()
            .with_connection(pg)
            .with_connection(quiet)
            .with_connection(down),
    )
    .unwrap();
    manager.connect_with(ConnectPolicy::Partial).await.unwrap();

    let text = manager.metrics_text();
    assert!(!text.contains("Metric-Secret-99"));
    assert!(
        !text.contains("quiet"),
        "enable_metrics: false leaves a connection out:\n{text}"
    );
    assert_eq!(
        sample(&text, "dbmanager_connections_total", &["type=\"postgres\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "dbmanager_connection_status",
            &["connection=\"primary\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "dbmanager_connection_status",
            &["connection=\"down\""]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "dbmanager_connection_pool_size",
            &["connection=\"primary\"", "state=\"max\""]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "dbmanager_connect_errors_total",
            &["connection=\"down\"", "kind=\"transient\""]
        ),
        Some(1.0),
        "{text}"
    );
    for family in [
        "dbmanager_connection_wait_count",
        "dbmanager_connection_wait_duration_seconds",
        "dbmanager_health_check_duration_seconds_count",
        "dbmanager_reconnect_attempts_total",
        "dbmanager_connection_lifetime_closed_total",
        "dbmanager_connection_idle_closed_total",
        "dbmanager_connection_acquire_wait_seconds_count",
        "dbmanager_connection_acquire_timeouts_total",
        "db_client_connection_count",
        "db_client_connection_max",
    ] {
        assert!(
            sample(&text, family, &["primary"]).is_some(),
            "{family} missing:\n{text}"
        );
    }

    // Values move with activity: hold a connection, run checks and a reconnect.
    let conn = manager.get("primary").unwrap();
    let held: Box<dyn std::any::Any + Send> = match driver {
        dbmanager::PostgresDriver::TokioPostgres => {
            Box::new(conn.tokio_postgres().unwrap().get().await.unwrap())
        }
        _ => Box::new(conn.postgres().unwrap().acquire().await.unwrap()),
    };
    conn.health_check().await.unwrap();
    conn.reconnect().await.unwrap();
    // Releases land in the background: wait until only the held connection is in use.
    let in_use = || {
        sample(
            &manager.metrics_text(),
            "dbmanager_connection_pool_size",
            &["connection=\"primary\"", "state=\"in_use\""],
        )
    };
    assert!(
        support::eventually(Duration::from_secs(5), || in_use() == Some(1.0)).await,
        "{:?}",
        in_use()
    );
    let text = manager.metrics_text();
    assert!(
        sample(
            &text,
            "dbmanager_health_check_duration_seconds_count",
            &["connection=\"primary\""]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        sample(
            &text,
            "dbmanager_reconnect_attempts_total",
            &["connection=\"primary\"", "result=\"success\""]
        ),
        Some(1.0)
    );
    drop(held);

    // An application can merge the collector into its own registry.
    let mut registry = dbmanager::reexports::prometheus_client::registry::Registry::default();
    manager.register_metrics(&mut registry);
    let mut out = String::new();
    dbmanager::reexports::prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    assert!(out.contains("dbmanager_connection_status"));
    manager.close(Duration::from_secs(5)).await;
}

async fn spans_carry_the_semantic_convention_attributes(driver: dbmanager::PostgresDriver) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dbmanager-tests")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = support::TestDb::create();
    let mut traced = db.config("traced");
    traced.driver = Some(driver);
    traced.enable_tracing = true;
    traced.trace_statements = true;
    let mut untraced = db.config("untraced");
    untraced.driver = Some(driver);
    untraced.enable_tracing = false;
    let manager = Manager::new(
        support::fast_config()
            .with_connection(traced)
            .with_connection(untraced),
    )
    .unwrap();
    manager.connect().await.unwrap();
    let sql = manager.database("traced").unwrap();
    sql.fetch_all("SELECT 42 AS answer", &[]).await.unwrap();
    let _ = sql.execute("SELEC broken", &[]).await.unwrap_err();
    manager.get("traced").unwrap().health_check().await.unwrap();
    // SeaORM's statements go through the same spans (SeaORM runs on the sqlx driver only).
    if driver == dbmanager::PostgresDriver::Sqlx {
        use dbmanager::reexports::sea_orm::{ConnectionTrait, DbBackend, Statement};
        let orm = manager.get("traced").unwrap().sea_orm().unwrap();
        orm.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
            .await
            .unwrap();
    }
    manager.get("traced").unwrap().reconnect().await.unwrap();
    manager
        .database("untraced")
        .unwrap()
        .fetch_all("SELECT 1", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let attr = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    let names: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    for expected in [
        "connect traced",
        "connect_attempt traced",
        "query traced",
        "execute traced",
        "health_check traced",
        "reconnect traced",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing span {expected:?} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("untraced")),
        "enable_tracing: false emits no span: {names:?}"
    );

    let query = spans.iter().find(|s| s.name == "query traced").unwrap();
    assert_eq!(attr(query, "db.system").as_deref(), Some("postgresql"));
    assert_eq!(attr(query, "db.namespace"), Some(db.name.clone()));
    assert_eq!(attr(query, "server.address"), Some(support::pg_host()));
    assert_eq!(
        attr(query, "server.port"),
        Some(support::pg_port().to_string())
    );
    assert_eq!(
        attr(query, "dbmanager.connection").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attr(query, "db.query.text").as_deref(),
        Some("SELECT 42 AS answer")
    );
    let failed = spans.iter().find(|s| s.name == "execute traced").unwrap();
    assert_eq!(attr(failed, "error.type").as_deref(), Some("query"));
    assert!(
        matches!(failed.status, opentelemetry::trace::Status::Error { .. }),
        "{:?}",
        failed.status
    );
    let attempt = spans
        .iter()
        .find(|s| s.name == "connect_attempt traced")
        .unwrap();
    assert_eq!(attr(attempt, "dbmanager.attempt").as_deref(), Some("1"));
}

#[tokio::test]
async fn per_query_metrics_count_operations_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let counted = ConnectionConfig::sqlite("counted", dir.path().join("c.db"));
    let mut quiet = ConnectionConfig::sqlite("quiet", dir.path().join("q.db"));
    quiet.enable_metrics = false;
    let manager = Manager::new(
        support::fast_config()
            .with_connection(counted)
            .with_connection(quiet),
    )
    .unwrap();
    manager.connect().await.unwrap();
    for name in ["counted", "quiet"] {
        let db = manager.database(name).unwrap();
        db.execute("CREATE TABLE t (v INTEGER)", &[]).await.unwrap();
        db.execute("insert into t values ($1)", &[1.into()])
            .await
            .unwrap();
        db.fetch_all("SELECT v FROM t", &[]).await.unwrap();
        db.fetch_one("/* hint */ select v from t", &[])
            .await
            .unwrap();
        db.fetch_all("SELECT nope FROM t", &[]).await.unwrap_err();
        let mut tx = db.begin().await.unwrap();
        tx.execute("UPDATE t SET v = 2", &[]).await.unwrap();
        tx.commit().await.unwrap();
    }

    let text = manager.metrics_text();
    let ok = |op: &str| {
        sample(
            &text,
            "db_queries_total",
            &[
                "connection=\"counted\"",
                &format!("operation=\"{op}\""),
                "status=\"ok\"",
            ],
        )
    };
    assert_eq!(ok("SELECT"), Some(2.0), "{text}");
    assert_eq!(ok("INSERT"), Some(1.0));
    assert_eq!(ok("CREATE"), Some(1.0));
    assert_eq!(ok("UPDATE"), Some(1.0));
    assert_eq!(ok("BEGIN"), Some(1.0));
    assert_eq!(ok("COMMIT"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "db_queries_total",
            &[
                "connection=\"counted\"",
                "operation=\"SELECT\"",
                "status=\"query\""
            ],
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "db_query_duration_seconds_count",
            &["connection=\"counted\"", "operation=\"SELECT\""],
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "db_client_operation_duration_seconds_count",
            &[
                "db_client_connection_pool_name=\"counted\"",
                "db_operation_name=\"SELECT\""
            ],
        ),
        Some(3.0)
    );
    assert!(!text.contains("quiet"), "{text}");
    assert!(
        manager.get("quiet").unwrap().stats().queries.is_empty(),
        "enable_metrics: false keeps no per-query figures"
    );
    let stats = manager.get("counted").unwrap().stats();
    let select = stats
        .queries
        .iter()
        .find(|q| q.operation == "SELECT")
        .unwrap();
    assert_eq!((select.ok, select.duration.count), (2, 3));
    manager.close(Duration::from_secs(1)).await;
}

/// While the circuit breaker fails callers fast, their statements still count as failures:
/// an error-rate alert on `db_queries_total` used to go quiet the moment the circuit opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_refused_by_an_open_circuit_count_as_failures() {
    let db = support::TestDb::create();
    let proxy = support::proxy::FaultProxy::start(support::pg_port()).await;
    let mut c = db.config("pg");
    c.port = Some(proxy.port);
    c.connect_timeout = Duration::from_secs(2);
    c.circuit_breaker_failures = Some(1);
    let mut config = support::fast_config().with_connection(c);
    config.retry_max_delay = Duration::from_secs(600);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    let db_handle = manager.database("pg").unwrap();
    db_handle.fetch_one("SELECT 1", &[]).await.unwrap();

    proxy.set(support::proxy::Fault::Refuse);
    proxy.cut_all();
    // Failures to reach the server open the circuit (a pooled connection that was cut may
    // fail a statement first, which does not count for the breaker).
    let conn = manager.get("pg").unwrap();
    for _ in 0..20 {
        if conn.stats().circuit_open {
            break;
        }
        db_handle.fetch_one("SELECT 1", &[]).await.unwrap_err();
    }
    assert!(conn.stats().circuit_open);
    let failed = |text: &str, op: &str| {
        sample(
            text,
            "db_queries_total",
            &[
                "connection=\"pg\"",
                &format!("operation=\"{op}\""),
                "status=\"transient\"",
            ],
        )
    };
    let before = failed(&manager.metrics_text(), "SELECT").unwrap_or(0.0);
    // Open: the next calls are refused at once, and counted.
    for _ in 0..5 {
        let err = db_handle.fetch_one("SELECT 1", &[]).await.unwrap_err();
        assert!(matches!(err, dbmanager::Error::Refused { .. }), "{err:?}");
    }
    let err = db_handle.begin().await.err().unwrap();
    assert!(matches!(err, dbmanager::Error::Refused { .. }), "{err:?}");

    let text = manager.metrics_text();
    assert_eq!(failed(&text, "SELECT"), Some(before + 5.0), "{text}");
    assert_eq!(failed(&text, "BEGIN"), Some(1.0), "{text}");
    manager.close(Duration::from_secs(2)).await;
}

on_both_drivers!(metrics_are_live_labelled_and_secret_free);

on_both_drivers!(spans_carry_the_semantic_convention_attributes);
