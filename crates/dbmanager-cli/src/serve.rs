//! `dbmanager serve`: `/healthz`, `/readyz`, `/metrics`, `/stats` for a config.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dbmanager::{ConnectPolicy, Manager};
use serde::Serialize;

use crate::http::{self, Limits};
use crate::reload::{self, Reloads};
use crate::{EXIT_DOWN, EXIT_OK, load};

/// How long shutdown waits for checked-out connections.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

pub async fn run(config: Option<&Path>, listen: SocketAddr, limits: Limits) -> u8 {
    let manager = match load::manager_or_exit(config) {
        Ok(m) => m,
        Err(code) => return code,
    };
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
                        eprintln!("warning: connection `{name}` is not up yet: {e}");
                    }
                }
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    });
    let reloads = Arc::new(Reloads::default());
    let watching =
        config.map(|path| reload::spawn(manager.clone(), path.to_path_buf(), reloads.clone()));
    let state = AppState {
        manager: manager.clone(),
        reloads,
    };
    http::serve(listener, router_with(state), limits, shutdown_signal()).await;
    connecting.abort();
    if let Some(watching) = watching {
        watching.abort();
    }
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
}

impl axum::extract::FromRef<AppState> for Manager {
    fn from_ref(state: &AppState) -> Manager {
        state.manager.clone()
    }
}

fn router_with(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
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

/// Readiness: every critical connection is up (healthy or degraded).
async fn readyz(State(manager): State<Manager>) -> Response {
    let connections: std::collections::BTreeMap<_, _> = manager
        .connections()
        .into_iter()
        .map(|c| {
            let health = c.health();
            let down = !health.status.is_up();
            let last_error = down.then_some(health.last_error).flatten();
            let reason = down.then(|| match (&last_error, health.last_check) {
                (Some(e), _) => e.clone(),
                (None, None) => "connecting: no attempt has finished yet".to_owned(),
                (None, Some(_)) => "not connected".to_owned(),
            });
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

async fn metrics(State(manager): State<Manager>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        manager.metrics_text(),
    )
        .into_response()
}

#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    stats: dbmanager::ManagerStats,
    /// The outcome of the last config reload, if there was one.
    last_reload: Option<reload::LastReload>,
}

async fn stats(State(state): State<AppState>) -> Response {
    axum::Json(StatsBody {
        stats: state.manager.stats(),
        last_reload: state.reloads.last(),
    })
    .into_response()
}
