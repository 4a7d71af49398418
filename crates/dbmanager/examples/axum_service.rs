//! An axum service that owns its databases through one `Manager` held in its state:
//!
//! - `notes` (PostgreSQL by default) through SeaORM, with a hand-written entity;
//! - `audit` (SQLite by default) through the backend-neutral handle, with `$n` parameters;
//! - `/metrics`: the application's own metrics and the manager's collector in one registry
//!   (`Manager::register_metrics`);
//! - a graceful shutdown on SIGTERM or Ctrl-C: stop accepting, finish requests, close the pools.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//!   cargo run -p dbmanager --example axum_service --features metrics
//! curl -X POST localhost:3000/notes -H 'content-type: application/json' -d '{"body":"hello"}'
//! curl localhost:3000/notes; curl localhost:3000/audit; curl localhost:3000/metrics
//! ```
//!
//! Environment: `DATABASE_URL` (the notes database), `AUDIT_DB` (an SQLite file; default an
//! in-memory database), `LISTEN_ADDR` (default `127.0.0.1:3000`), and any `DBMANAGER__...`
//! override of the configuration below.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dbmanager::reexports::prometheus_client::encoding::text::encode;
use dbmanager::reexports::prometheus_client::metrics::counter::Counter;
use dbmanager::reexports::prometheus_client::metrics::family::Family;
use dbmanager::reexports::prometheus_client::registry::Registry;
use dbmanager::{ErrorKind, Manager, Value};
use sea_orm::{ActiveModelTrait, ActiveValue, ConnectionTrait, EntityTrait, QueryOrder, Schema};

const CONFIG: &str = r#"
dbmanager:
  default_connection: notes
  connections:
    notes:
      type: postgres
      dsn: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
      default_orm: sea-orm
      max_open_conns: 8
    audit:
      type: sqlite
      filepath: ${AUDIT_DB:-:memory:}
      max_open_conns: 2
"#;

/// The SeaORM entity of the `notes` table, written by hand.
mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What every handler gets: the manager (cheap to clone, one pool per connection behind it),
/// the metrics registry and the application's own request counter.
#[derive(Clone)]
struct AppState {
    manager: Manager,
    registry: Arc<Registry>,
    requests: Family<Vec<(String, String)>, Counter>,
}

/// A database error as an HTTP answer. dbmanager's errors carry no secrets, so the message can
/// be shown; a database that is unreachable for now is a 503 the client may retry.
enum AppError {
    Manager(dbmanager::Error),
    /// A SeaORM error, with its kind as the manager classifies it.
    Orm(ErrorKind, sea_orm::DbErr),
}

impl From<dbmanager::Error> for AppError {
    fn from(e: dbmanager::Error) -> Self {
        Self::Manager(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (kind, message) = match self {
            Self::Manager(e) => (e.kind(), e.to_string()),
            Self::Orm(kind, e) => (kind, e.to_string()),
        };
        let status = match kind {
            ErrorKind::Transient | ErrorKind::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, message).into_response()
    }
}

/// A SeaORM error on the `notes` connection, classified as the manager would.
fn orm_error(state: &AppState, e: sea_orm::DbErr) -> AppError {
    let kind = state
        .manager
        .get("notes")
        .map_or(ErrorKind::Query, |c| c.error_kind(&e));
    AppError::Orm(kind, e)
}

#[derive(serde::Deserialize)]
struct NewNote {
    body: String,
}

async fn list_notes(State(state): State<AppState>) -> Result<Json<Vec<note::Model>>, AppError> {
    let orm = state.manager.sea_orm("notes")?;
    let notes = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(&orm)
        .await
        .map_err(|e| orm_error(&state, e))?;
    Ok(Json(notes))
}

async fn create_note(
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<note::Model>), AppError> {
    let orm = state.manager.sea_orm("notes")?;
    let note = note::ActiveModel {
        body: ActiveValue::Set(new.body),
        ..Default::default()
    }
    .insert(&orm)
    .await
    .map_err(|e| orm_error(&state, e))?;
    // The other connection, through the backend-neutral handle: the same code whatever its type.
    state
        .manager
        .database("audit")?
        .execute(
            "INSERT INTO audit (at, action, detail) VALUES ($1, $2, $3)",
            &[
                Value::Text(chrono_now()),
                "create_note".into(),
                Value::Text(format!("note {}", note.id)),
            ],
        )
        .await?;
    Ok((StatusCode::CREATED, Json(note)))
}

fn chrono_now() -> String {
    dbmanager::reexports::chrono::Utc::now().to_rfc3339()
}

async fn list_audit(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    let rows = state
        .manager
        .database("audit")?
        .fetch_all("SELECT at, action, detail FROM audit ORDER BY at", &[])
        .await?;
    let entries: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "at": row.get::<String>("at"),
                "action": row.get::<String>("action"),
                "detail": row.get::<String>("detail"),
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(entries)))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if encode(&mut text, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts each request by route and status: the application's own metric.
async fn count_requests(
    State(state): State<AppState>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = route.map_or_else(|| "unmatched".to_owned(), |r| r.as_str().to_owned());
    let response = next.run(request).await;
    state
        .requests
        .get_or_create(&vec![
            ("route".to_owned(), route),
            ("status".to_owned(), response.status().as_u16().to_string()),
        ])
        .inc();
    response
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::from_yaml_str(CONFIG)?;
    manager.connect().await?;

    // Create the tables: SeaORM from the entity (portable DDL), the audit table by hand.
    let orm = manager.sea_orm("notes")?;
    let backend = orm.get_database_backend();
    orm.execute(
        Schema::new(backend)
            .create_table_from_entity(note::Entity)
            .if_not_exists(),
    )
    .await?;
    manager
        .database("audit")?
        .execute(
            "CREATE TABLE IF NOT EXISTS audit (at TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
            &[],
        )
        .await?;

    // One registry for the application's metrics and the manager's.
    let mut registry = Registry::default();
    let requests = Family::<Vec<(String, String)>, Counter>::default();
    registry.register(
        "app_http_requests",
        "HTTP requests by route and status",
        requests.clone(),
    );
    manager.register_metrics(&mut registry);
    let state = AppState {
        manager: manager.clone(),
        registry: Arc::new(registry),
        requests,
    };

    let app = Router::new()
        .route("/notes", get(list_notes).post(create_note))
        .route("/audit", get(list_audit))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state);

    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    println!("shutting down: closing the pools");
    let report = manager.close(Duration::from_secs(10)).await;
    for (name, in_use) in &report.still_in_use {
        eprintln!("{name}: {in_use} connection(s) still in use at the deadline");
    }
    println!("closed");
    Ok(())
}
