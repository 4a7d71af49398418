//! `dbmanager serve`: the status page (`/`), `/healthz`, `/readyz`, `/metrics`, `/stats` for a
//! config.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dbmanager::reexports::prometheus_client;
use dbmanager::{ConnectPolicy, HealthReport, Manager};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use serde::Serialize;

use crate::http::{self, Limits};
use crate::reload::{self, Reloads};
use crate::status::{self, History, StatusState};
use crate::tags::TagFilter;
use crate::text::escaped;
use crate::{EXIT_DOWN, EXIT_OK, load};

/// How long shutdown waits for checked-out connections.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

pub async fn run(
    config: Option<&Path>,
    listen: SocketAddr,
    limits: Limits,
    sample_interval: Duration,
    filter: TagFilter,
) -> u8 {
    // Before anything else: a SIGHUP while the config loads or the server starts must not end
    // the process (its default action), and neither must one without a config file.
    let hangup = reload::hangup_signal();
    let manager = match load::manager_or_exit(config, &filter) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // As `check`: serving nothing would report ready forever with nothing behind it.
    if manager.connections().is_empty() {
        eprintln!("error: {}", reload::NOTHING_TO_SERVE);
        return crate::EXIT_CONFIG;
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            manager.close(SHUTDOWN_DEADLINE).await;
            return EXIT_DOWN;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => eprintln!("warning: {e}"),
    }
    // Connecting happens behind the server: `/healthz` answers from the first moment and
    // `/readyz` says what is still connecting. The health loop connects what is not up yet.
    let connecting = tokio::spawn({
        let manager = manager.clone();
        async move {
            match manager.connect_with(ConnectPolicy::Partial).await {
                Ok(report) => {
                    for (name, e) in &report.failed {
                        eprintln!(
                            "warning: connection `{name}` is not up yet: {}",
                            escaped(&e.to_string())
                        );
                    }
                }
                Err(e) => eprintln!("warning: {}", escaped(&e.to_string())),
            }
        }
    });
    let reloads = Arc::new(Reloads::default());
    let tag_filter = filter.describe();
    let watching = match config {
        Some(path) => reload::spawn(
            manager.clone(),
            path.to_path_buf(),
            reloads.clone(),
            filter,
            hangup,
        ),
        None => reload::ignore_hangups(hangup),
    };
    let history = Arc::new(History::new(sample_interval));
    let sampler = status::spawn_sampler(manager.clone(), history.clone());
    let state = AppState {
        manager: manager.clone(),
        reloads,
        history,
        tag_filter: Arc::new(tag_filter),
    };
    http::serve(listener, router_with(state), limits, shutdown_signal()).await;
    sampler.abort();
    connecting.abort();
    watching.abort();
    let report = manager.close(SHUTDOWN_DEADLINE).await;
    for (name, n) in report.still_in_use {
        eprintln!("warning: connection `{name}` still had {n} connection(s) in use at shutdown");
    }
    EXIT_OK
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    manager: Manager,
    reloads: Arc<Reloads>,
    history: Arc<History>,
    /// The `--tag` filters (`key=value`) that chose the served connections.
    tag_filter: Arc<Vec<String>>,
}

impl axum::extract::FromRef<AppState> for Manager {
    fn from_ref(state: &AppState) -> Manager {
        state.manager.clone()
    }
}

impl axum::extract::FromRef<AppState> for StatusState {
    fn from_ref(state: &AppState) -> StatusState {
        StatusState {
            manager: state.manager.clone(),
            history: state.history.clone(),
        }
    }
}

fn router_with(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/", get(status::index))
        .route("/status.css", get(status::stylesheet))
        .route("/status.js", get(status::script))
        .route("/status.json", get(status::json))
        .with_state(state)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Liveness: the process answers. Never touches a database, so a database blip never
/// restarts the pod.
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    connections: std::collections::BTreeMap<String, ConnectionReadiness>,
}

#[derive(Serialize)]
struct ConnectionReadiness {
    #[serde(rename = "type")]
    kind: String,
    status: dbmanager::Status,
    critical: bool,
    /// Why it is not up: the last error, or that it has not connected yet.
    reason: Option<String>,
    last_error: Option<String>,
}

/// Why a connection is not up (its last error, or that it is still connecting), or `None` when
/// it is up.
pub fn down_reason(health: &HealthReport) -> Option<String> {
    if health.status.is_up() {
        return None;
    }
    Some(match (&health.last_error, health.last_check) {
        (Some(e), _) => e.clone(),
        (None, None) => "connecting: no attempt has finished yet".to_owned(),
        (None, Some(_)) => "not connected".to_owned(),
    })
}

/// Every critical connection is up (healthy or degraded).
pub fn is_ready(manager: &Manager) -> bool {
    manager
        .connections()
        .iter()
        .all(|c| !c.config().critical || c.status().is_up())
}

/// Readiness: every critical connection is up (healthy or degraded).
async fn readyz(State(manager): State<Manager>) -> Response {
    let connections: std::collections::BTreeMap<_, _> = manager
        .connections()
        .into_iter()
        .map(|c| {
            let health = c.health();
            let down = !health.status.is_up();
            let reason = down_reason(&health);
            let last_error = down.then_some(health.last_error).flatten();
            (
                c.name().to_owned(),
                ConnectionReadiness {
                    kind: c.kind().to_string(),
                    status: health.status,
                    critical: c.config().critical,
                    reason,
                    last_error,
                },
            )
        })
        .collect();
    let ready = connections
        .values()
        .all(|c| !c.critical || c.status.is_up());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(Readiness { ready, connections })).into_response()
}

/// What `serve` adds to the library's metrics: which connections readiness depends on, so that
/// an alert can tell a critical connection that is down from an optional one.
#[derive(Debug)]
struct ServeCollector(Manager);

impl Collector for ServeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "dbmanager_connection_critical",
            "Whether readiness depends on this connection (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        for c in self.0.connections() {
            if !c.config().enable_metrics {
                continue;
            }
            let labels = [
                ("connection", c.name().to_owned()),
                ("type", c.kind().to_string()),
            ];
            family
                .encode_family(&labels)?
                .encode_gauge(&i64::from(c.config().critical))?;
        }
        Ok(())
    }
}

/// The library's metrics plus [`ServeCollector`], in one exposition.
fn metrics_text(manager: &Manager) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    manager.register_metrics(&mut registry);
    registry.register_collector(Box::new(ServeCollector(manager.clone())));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        // Never half an exposition: the scrape fails visibly instead.
        out.clear();
        out.push_str("# encoding failed\n");
    }
    out
}

async fn metrics(State(manager): State<Manager>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics_text(&manager),
    )
        .into_response()
}

#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    stats: dbmanager::ManagerStats,
    /// The outcome of the last config reload, if there was one.
    last_reload: Option<reload::LastReload>,
    /// The `--tag` filters that chose the connections served (absent without any).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tag_filter: Arc<Vec<String>>,
}

async fn stats(State(state): State<AppState>) -> Response {
    axum::Json(StatsBody {
        stats: state.manager.stats(),
        last_reload: state.reloads.last(),
        tag_filter: state.tag_filter.clone(),
    })
    .into_response()
}
