//! PostgreSQL through tokio-postgres (`driver: tokio-postgres`): clients in a deadpool pool,
//! each with its prepared-statement cache; the neutral handle and the native pool
//! ([`TokioPgPool`], `Connection::tokio_postgres()`), and a LISTEN/NOTIFY listener on a client
//! of its own (`listener.rs`). SeaORM and `Connection::postgres()` are the sqlx driver's. A
//! server list (`hosts:`, `target_session_attrs`) works as on sqlx (`failover.rs`).
//!
//! The application's after-release hook runs when a released client is next taken from the
//! pool, before the before-checkout hook: deadpool has no release callback (`pool.rs`).
//!
//! Behind PgBouncer (`pooler`), as on the sqlx driver: no `options` in the startup packet, the
//! session settings as `SET` statements on each new connection (`session`), or as `SET LOCAL`
//! at the start of every transaction of the neutral handle (`transaction`), whose statements
//! then use the unnamed statement and never the cache (see `sql`).

mod failover;
mod listener;
mod options;
mod pool;
mod rows;
mod sql;
mod tls;

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::future::BoxFuture;

pub use pool::{TokioPgClient, TokioPgManager, TokioPgPool};

use crate::backends::columns::ColumnCache;
use crate::backends::pg_common::{
    self, classify_server_error, session_settings, transaction_settings,
};
use crate::backends::{bounded, config_error};
use crate::config::{DatabaseType, DefaultOrm, Pooler, PostgresDriver};
use crate::driver::{BackendPool, Driver, OpenSpec};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::SqlExecutor;
use crate::stats::{PoolCounters, PoolGauges};

/// PostgreSQL's checks, and the dsn as tokio-postgres parses it.
fn check(c: &crate::config::ConnectionConfig, p: &mut crate::config::ConnectionProblems<'_>) {
    pg_common::check(c, p);
    crate::backends::check_dsn(c, p, pg_common::DSN_SCHEMES, |dsn| {
        options::dsn_config("", dsn, None)
    });
}

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Postgres,
    variant: Some(PostgresDriver::TokioPostgres),
    system_name: "postgresql",
    default_port: Some(options::DEFAULT_PORT),
    // Both PostgreSQL drivers read the same keys with the same meanings.
    dsn_schemes: pg_common::DSN_SCHEMES,
    fields: pg_common::FIELDS,
    required: pg_common::REQUIRED,
    no_sea_orm: Some(
        "SeaORM runs on the sqlx driver; use `driver: sqlx` for SeaORM, or `default_orm: native`",
    ),
    check,
    classify: |e| e.downcast_ref::<tokio_postgres::Error>().map(classify),
    open,
    listen: Some(&listener::LISTEN),
    replica_lag: Some(&pg_common::replica_lag::PROBE),
};

/// Why SeaORM is not offered on this driver.
const NO_SEA_ORM: &str = "SeaORM runs on the sqlx driver (`driver: sqlx`); a tokio-postgres connection offers `database()` and `tokio_postgres()`";

/// The retry-relevant class of a tokio-postgres error. Its error kinds are private; the server's
/// SQLSTATE decides where there is one, else the kind's fixed description.
fn classify(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(db) = e.as_db_error() {
        return classify_server_error(Some(db.code().code()), db.message());
    }
    if e.is_closed() {
        return ErrorKind::Transient;
    }
    let text = e.to_string();
    let starts = |prefix: &str| text.starts_with(prefix);
    // A password the server asked for and the configuration lacks: a login refused, as the
    // sqlx driver reports it.
    let password_missing = starts("invalid configuration")
        && std::error::Error::source(e)
            .is_some_and(|cause| cause.to_string() == "password missing");
    if starts("authentication error") || password_missing {
        ErrorKind::Authentication
    } else if starts("invalid configuration")
        || starts("invalid connection string")
        || starts("error performing TLS handshake")
    {
        ErrorKind::Configuration
    } else if starts("error connecting to server")
        || starts("error communicating with the server")
        || starts("timeout waiting for server")
        || starts("unexpected message from server")
        || starts("error parsing response from server")
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Query
    }
}

/// A tokio-postgres error with its classification.
pub(crate) fn driver_error(name: &str, operation: Operation, e: tokio_postgres::Error) -> Error {
    Error::database(name, operation, classify(&e), DriverError(e))
}

/// The tokio-postgres error beneath one of the crate's errors, if there is one.
pub(crate) fn driver_cause(e: &Error) -> Option<&tokio_postgres::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(e) = s.downcast_ref::<tokio_postgres::Error>() {
            return Some(e);
        }
        source = s.source();
    }
    None
}

/// A tokio-postgres error as the crate shows it. tokio-postgres displays only its kind ("db
/// error", "error connecting to server"); what happened (the server's message, the I/O error)
/// is its `source`. Shown here as sqlx shows it: the kind, then the server's severity and
/// message, or the cause. The server's DETAIL is left out, as on sqlx: it may quote row values
/// (`Key (email)=(...) already exists`). The tokio-postgres error is this one's `source`.
#[derive(Debug)]
struct DriverError(tokio_postgres::Error);

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        if let Some(db) = self.0.as_db_error() {
            write!(f, ": {}: {}", db.severity(), db.message())
        } else if let Some(cause) = std::error::Error::source(&self.0) {
            write!(f, ": {cause}")
        } else {
            Ok(())
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A statement the library refuses before the server sees it (or a row it cannot decode).
pub(crate) fn statement_error(name: &str, message: String) -> Error {
    Error::database(name, Operation::Query, ErrorKind::Query, message)
}

/// The open backend: the pool and the neutral handle's executor on it.
struct TokioPgBackend {
    name: Arc<str>,
    pool: TokioPgPool,
    /// `min_open_conns`: reopened by the health loop after closes (deadpool keeps no minimum).
    min_open: usize,
    counters: Arc<PoolCounters>,
    native: Arc<dyn SqlExecutor>,
    /// The server list's probe task, when there is another server to switch to.
    prober: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TokioPgBackend {
    fn drop(&mut self) {
        if let Some(prober) = &self.prober {
            prober.abort();
        }
    }
}

impl BackendPool for TokioPgBackend {
    fn gauges(&self) -> PoolGauges {
        let status = self.pool.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolGauges {
            open: count(status.size),
            idle: count(status.available),
            max_open: count(status.max_size),
            // The counters the manager and `acquire` keep.
            driver_counts: None,
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let client = pool::acquire(&self.name, &self.pool, &self.counters).await?;
            let outcome = match client.simple_query("").await {
                Ok(_) => Ok(()),
                Err(e) => {
                    drop(TokioPgClient::take(client));
                    Err(driver_error(&self.name, Operation::Ping, e))
                }
            };
            failover::observe(
                self.pool.manager().failover.as_deref(),
                &self.pool,
                &outcome,
            );
            outcome
        })
    }

    fn discard_idle(&self) -> BoxFuture<'_, ()> {
        let removed = self.pool.retain(|_, _| false).removed.len();
        self.counters
            .closed_broken
            .fetch_add(removed as u64, Relaxed);
        Box::pin(async {})
    }

    /// deadpool has no release callback, so the idle cap is restored here (the health loop
    /// calls it; the neutral handle's releases keep it too); `conn_max_idle_time` too. Then
    /// the pool is topped up to `min_open_conns`.
    fn trim_idle(&self, max_idle: u32) -> BoxFuture<'_, ()> {
        let max_idle_time = self.pool.manager().max_idle_time;
        let mut kept = 0u32;
        let mut over_cap = 0u64;
        let mut stale = 0u64;
        let manager = self.pool.manager();
        self.pool.retain(|_, metrics| {
            if manager.is_stale(&metrics) {
                stale += 1;
                return false;
            }
            if max_idle_time.is_some_and(|max| metrics.last_used() >= max) {
                return false;
            }
            kept += 1;
            if kept > max_idle {
                over_cap += 1;
                return false;
            }
            true
        });
        self.counters.closed_max_idle.fetch_add(over_cap, Relaxed);
        self.counters.closed_broken.fetch_add(stale, Relaxed);
        Box::pin(async move {
            let mut held = Vec::new();
            while self.pool.status().size < self.min_open {
                match pool::acquire(&self.name, &self.pool, &self.counters).await {
                    Ok(client) => held.push(client),
                    Err(_) => break,
                }
            }
        })
    }

    /// Refuses new checkouts and closes the idle clients at once; returns when every
    /// checked-out client came back (each is closed on return).
    fn close(&self) -> BoxFuture<'_, ()> {
        if let Some(prober) = &self.prober {
            prober.abort();
        }
        self.pool.close();
        Box::pin(async move {
            while self.pool.status().size > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    }

    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        (type_id == TypeId::of::<TokioPgPool>()).then_some(&self.pool as _)
    }

    fn sql(&self, layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str> {
        match layer {
            DefaultOrm::Native => Ok(self.native.clone()),
            _ => Err(NO_SEA_ORM),
        }
    }
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        let (mut credentials, _) = spec.credentials.current().await?;
        let mut plan =
            options::connect_plan(spec.name, spec.config, spec.settings, &credentials, None)?;
        options::with_password_fallback(&mut plan, &mut credentials, spec.settings.connect_timeout)
            .await;
        let servers = failover::plan(spec.name, spec.config, spec.settings, &credentials, &plan)?;
        let tls = tls::RustlsConnector::new(plan.verify)
            .map_err(|e| config_error(spec.name, format!("TLS: {e}")))?;
        let s = spec.settings;
        let failover = servers.map(|servers| {
            Arc::new(failover::TokioPgFailover::new(
                spec.name,
                spec.config.enable_logging,
                failover::TokioPgDialer { tls: tls.clone() },
                servers,
                spec.counters,
                spec.credentials,
                s.connect_timeout,
            ))
        });
        match &failover {
            // The server to start on: every server probed at once (its error lists each one's
            // answer); the pool's first connection below goes there.
            Some(failover) => {
                let (index, probe) = bounded(
                    spec.name,
                    Operation::Connect,
                    s.connect_timeout,
                    failover.find(),
                )
                .await?;
                drop(probe);
                failover.start_on(index);
            }
            None => spec.counters.current_host.store(None),
        }
        let columns = Arc::new(ColumnCache::default());
        // Behind a pooler the session settings are statements (the startup packet carries none,
        // see `options`): once per connection in session mode, at the start of every
        // transaction in transaction mode (`init_sql` is refused there by `pg_common::check`).
        // sqlx's session defaults (`TimeZone`, `DateStyle`) come first: sqlx sends them in its
        // startup packet, which PgBouncer passes on.
        let (session, begin) = match spec.config.pooler {
            Pooler::None => (Vec::new(), None),
            Pooler::Session => {
                let mut session = options::sqlx_session_defaults(false);
                session.extend(session_settings(spec.config, s, false));
                (session, None)
            }
            Pooler::Transaction => {
                let mut begin = String::from("BEGIN;");
                for set in options::sqlx_session_defaults(true) {
                    begin.push(' ');
                    begin.push_str(&set);
                    begin.push(';');
                }
                let settings = transaction_settings(spec.config, s);
                if !settings.is_empty() {
                    begin.push(' ');
                    begin.push_str(&settings);
                }
                (Vec::new(), Some(Arc::<str>::from(begin)))
            }
        };
        let hooks = spec.hook_runner();
        let manager = TokioPgManager {
            name: spec.name.clone(),
            plan,
            tls,
            credentials: spec
                .credentials
                .is_dynamic()
                .then(|| spec.credentials.clone()),
            init: session
                .into_iter()
                .chain(spec.config.init_sql.iter().cloned())
                .collect(),
            unnamed: begin.is_some(),
            hooks,
            counters: spec.counters.clone(),
            columns: columns.clone(),
            max_lifetime: s.max_lifetime,
            max_idle_time: s.max_idle_time,
            connect_timeout: s.connect_timeout,
            failover: failover.clone(),
            retry_connects: std::sync::atomic::AtomicBool::new(false),
            waits: crate::deadline::Timers::for_pool(s.max_open),
        };
        let pool = deadpool::managed::Pool::builder(manager)
            .max_size(s.max_open as usize)
            .runtime(deadpool::Runtime::Tokio1)
            // A checkout waits at most `connect_timeout` for a client. Opening one and checking
            // an idle one bound themselves (`TokioPgManager`), so no timer is built around them
            // on every checkout, the native layer's included.
            .wait_timeout(Some(s.connect_timeout))
            .build()
            .map_err(|e| config_error(spec.name, e.to_string()))?;
        // The first connection is the connect attempt: its error is the real one. Then warm up
        // to `min_open_conns`.
        let warm = s.min_open.max(1) as usize;
        let mut held = Vec::with_capacity(warm);
        for _ in 0..warm.min(s.max_open as usize) {
            let client = bounded(spec.name, Operation::Connect, s.connect_timeout, async {
                pool.get()
                    .await
                    .map_err(|e| pool::pool_error(spec.name, spec.counters, e))
            })
            .await?;
            held.push(client);
        }
        pool.manager().retry_connects.store(true, Relaxed);
        if s.max_idle == 0 {
            held.into_iter().for_each(|c| drop(TokioPgClient::take(c)));
        }
        let native = Arc::new(sql::TokioPgExecutor {
            name: spec.name.clone(),
            pool: pool.clone(),
            counters: spec.counters.clone(),
            columns,
            max_idle: (s.max_idle < s.max_open).then_some(s.max_idle as usize),
            begin,
        });
        let prober = failover
            .filter(|f| f.has_alternatives())
            .map(|f| f.spawn(failover::PoolTarget(pool.weak())));
        Ok(Box::new(TokioPgBackend {
            name: spec.name.clone(),
            prober,
            pool,
            min_open: s.min_open as usize,
            counters: spec.counters.clone(),
            native,
        }) as Box<dyn BackendPool>)
    })
}
