//! The live side of a connection: one pool per connection, and the layers built on it.

#[cfg(feature = "mongodb")]
pub(crate) mod mongodb;
#[cfg(feature = "mssql")]
pub(crate) mod mssql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Database, Pool};

use crate::config::{ConnectionConfig, DatabaseType, PoolSettings};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::pool::PoolSlot;
use crate::stats::{PoolCounters, PoolGauges};

/// Everything a backend needs to open its pool.
pub(crate) struct ConnectSpec<'a> {
    pub name: &'a str,
    pub config: &'a ConnectionConfig,
    pub settings: &'a PoolSettings,
    pub counters: &'a Arc<PoolCounters>,
}

/// A sqlx pool plus the SeaORM connection that shares it.
pub(crate) struct SqlPool<DB: Database> {
    pub pool: Pool<DB>,
    slot: PoolSlot<DB>,
    #[cfg(feature = "sea-orm")]
    pub orm: sea_orm::DatabaseConnection,
}

impl<DB: Database> SqlPool<DB> {
    pub(crate) fn new(
        pool: Pool<DB>,
        slot: PoolSlot<DB>,
        #[cfg(feature = "sea-orm")] orm: sea_orm::DatabaseConnection,
    ) -> Self {
        slot.store(Some(Arc::new(pool.clone())));
        Self {
            pool,
            slot,
            #[cfg(feature = "sea-orm")]
            orm,
        }
    }
}

impl<DB: Database> Drop for SqlPool<DB> {
    fn drop(&mut self) {
        self.slot.store(None);
    }
}

/// The open pool of one connection.
pub(crate) enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(SqlPool<sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteBackend),
    #[cfg(feature = "mssql")]
    Mssql(mssql::MssqlPool),
    #[cfg(feature = "mongodb")]
    Mongo(mongodb::MongoBackend),
}

impl Backend {
    pub(crate) async fn open(spec: &ConnectSpec<'_>) -> Result<Backend> {
        match spec.config.kind {
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => postgres::open(spec).await.map(Backend::Postgres),
            #[cfg(feature = "sqlite")]
            DatabaseType::Sqlite => sqlite::open(spec).await.map(Backend::Sqlite),
            #[cfg(feature = "mssql")]
            DatabaseType::Mssql => mssql::open(spec).await.map(Backend::Mssql),
            #[cfg(feature = "mongodb")]
            DatabaseType::Mongodb => mongodb::open(spec).await.map(Backend::Mongo),
            #[allow(unreachable_patterns)]
            other => Err(Error::Unsupported {
                connection: spec.name.to_owned(),
                layer: "connect",
                backend: other,
                reason: "this build of dbmanager does not include that backend's cargo feature",
            }),
        }
    }

    pub(crate) fn gauges(&self, counters: &PoolCounters) -> PoolGauges {
        let _ = counters;
        match self {
            #[cfg(feature = "mssql")]
            Backend::Mssql(p) => p.gauges(counters),
            #[cfg(feature = "mongodb")]
            Backend::Mongo(m) => m.gauges(counters),
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => crate::pool::gauges(&p.pool),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(s) => crate::pool::gauges(&s.sql.pool),
        }
    }

    /// Pings through the pool, as a user's checkout would.
    pub(crate) async fn ping(&self, name: &str, counters: &PoolCounters) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => ping_pool(name, &p.pool, counters).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(s) => ping_pool(name, &s.sql.pool, counters).await,
            #[cfg(feature = "mssql")]
            Backend::Mssql(p) => p.ping(name).await,
            #[cfg(feature = "mongodb")]
            Backend::Mongo(m) => m.ping(name).await,
        }
    }

    /// Closes the idle pooled connections, which a server restart leaves dead; the pool opens
    /// fresh ones on demand.
    pub(crate) async fn discard_idle(&self, counters: &PoolCounters) {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => discard_idle_sqlx(&p.pool, counters).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(s) => discard_idle_sqlx(&s.sql.pool, counters).await,
            #[cfg(feature = "mssql")]
            Backend::Mssql(p) => p.discard_idle().await,
            // The driver's monitor re-discovers servers and clears its pool by itself.
            #[cfg(feature = "mongodb")]
            Backend::Mongo(_) => {}
        }
    }

    /// Closes idle connections beyond `max_idle`. The release hook enforces the cap, but
    /// releases racing each other can each see room for one more; this restores the bound.
    pub(crate) async fn trim_idle(&self, max_idle: u32, counters: &PoolCounters) {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => trim_idle_sqlx(&p.pool, max_idle, counters).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(s) => trim_idle_sqlx(&s.sql.pool, max_idle, counters).await,
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Closes the pool, waiting up to `deadline` for checked-out connections to come back.
    /// Returns how many were still checked out when the deadline passed.
    pub(crate) async fn close(&self, deadline: Duration, counters: &PoolCounters) -> u32 {
        #[cfg(feature = "mongodb")]
        if let Backend::Mongo(m) = self {
            let in_use = m.in_use();
            return if m.close(deadline).await {
                0
            } else {
                in_use.max(1)
            };
        }
        let closing = async {
            match self {
                #[cfg(feature = "postgres")]
                Backend::Postgres(p) => p.pool.close().await,
                #[cfg(feature = "sqlite")]
                Backend::Sqlite(s) => s.close().await,
                #[cfg(feature = "mssql")]
                Backend::Mssql(p) => p.close().await,
                #[cfg(feature = "mongodb")]
                Backend::Mongo(_) => {}
            }
        };
        match tokio::time::timeout(deadline, closing).await {
            Ok(()) => 0,
            Err(_) => {
                let g = self.gauges(counters);
                g.open.saturating_sub(g.idle)
            }
        }
    }
}

/// A direct connection, bounded by `connect_timeout`: a pool would report a refused port as a
/// bare pool timeout, while the connection says "connection refused".
pub(crate) async fn probe<DB: Database>(
    spec: &ConnectSpec<'_>,
    options: &<DB::Connection as sqlx::Connection>::Options,
) -> Result<DB::Connection> {
    use sqlx::Connection as _;
    bounded(
        spec.name,
        Operation::Connect,
        spec.settings.connect_timeout,
        async {
            DB::Connection::connect_with(options)
                .await
                .map_err(|e| crate::pool::sqlx_error(spec.name, Operation::Connect, e))
        },
    )
    .await
}

/// The pool, built lazily with the counting hooks and warmed to `min_open`.
pub(crate) async fn lazy_pool<DB: Database>(
    spec: &ConnectSpec<'_>,
    options: <DB::Connection as sqlx::Connection>::Options,
) -> Result<(Pool<DB>, PoolSlot<DB>)> {
    let slot: PoolSlot<DB> = Arc::new(arc_swap::ArcSwapOption::empty());
    let pool =
        crate::pool::pool_options(spec.settings, spec.counters, &slot).connect_lazy_with(options);
    warm_up(
        spec.name,
        &pool,
        spec.settings.min_open,
        spec.settings.connect_timeout,
    )
    .await?;
    Ok((pool, slot))
}

/// Opens `min_open` connections up front: a lazily built sqlx pool only tops up to its minimum
/// after its reaper closed something, so without this `min_open_conns` would start at zero.
pub(crate) async fn warm_up<DB: Database>(
    name: &str,
    pool: &Pool<DB>,
    min_open: u32,
    limit: Duration,
) -> Result<()> {
    if min_open == 0 {
        return Ok(());
    }
    bounded(name, Operation::Connect, limit, async {
        let held = futures_util::future::join_all((0..min_open).map(|_| pool.acquire())).await;
        for conn in held {
            conn.map_err(|e| crate::pool::sqlx_error(name, Operation::Connect, e))?;
        }
        Ok(())
    })
    .await
}

async fn trim_idle_sqlx<DB: Database>(pool: &Pool<DB>, max_idle: u32, counters: &PoolCounters) {
    while pool.num_idle() > max_idle as usize {
        let Some(conn) = pool.try_acquire() else {
            break;
        };
        counters
            .closed_max_idle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = conn.close().await;
    }
}

async fn discard_idle_sqlx<DB: Database>(pool: &Pool<DB>, counters: &PoolCounters) {
    for _ in 0..pool.num_idle() {
        let Some(conn) = pool.try_acquire() else {
            break;
        };
        counters
            .closed_broken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = conn.close().await;
    }
}

async fn ping_pool<DB: Database>(
    name: &str,
    pool: &Pool<DB>,
    counters: &PoolCounters,
) -> Result<()> {
    use sqlx::Connection as _;
    let mut conn = crate::pool::acquire(name, pool, counters).await?;
    conn.ping()
        .await
        .map_err(|e| crate::pool::sqlx_error(name, Operation::Ping, e))
}

/// Runs `attempt` under a timeout, turning the elapsed timeout into a transient error.
pub(crate) async fn bounded<T, F>(
    name: &str,
    operation: Operation,
    limit: Duration,
    attempt: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(Error::timeout(name, operation, limit)))
}

pub(crate) fn config_error(name: &str, message: impl Into<String>) -> Error {
    Error::database(
        name,
        Operation::Connect,
        ErrorKind::Configuration,
        message.into(),
    )
}
