//! sqlx pool construction with the hooks that enforce and count what sqlx does not expose:
//! `max_idle_conns`, lifetime closes, and a liveness ping only for connections idle a while.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection as _, Database, Pool};

use crate::config::PoolSettings;
use crate::error::{Error, ErrorKind, Operation};
use crate::stats::{PoolCounters, PoolGauges};

/// A pooled connection used within this window is handed out without a ping (HikariCP's
/// 500 ms); one idle longer is pinged first, and a failed ping discards it.
pub(crate) const LIVENESS_WINDOW: Duration = Duration::from_millis(500);

/// Lets the release hook read the idle count of the pool it belongs to. Cleared when the owning
/// backend is dropped, which breaks the pool → hook → pool cycle.
pub(crate) type PoolSlot<DB> = Arc<ArcSwapOption<Pool<DB>>>;

pub(crate) fn pool_options<DB: Database>(
    settings: &PoolSettings,
    counters: &Arc<PoolCounters>,
    slot: &PoolSlot<DB>,
) -> PoolOptions<DB> {
    let lifetime = settings.max_lifetime;
    let max_idle = settings.max_idle as usize;
    let (on_connect, on_acquire, on_release) =
        (counters.clone(), counters.clone(), counters.clone());
    let slot = slot.clone();
    PoolOptions::<DB>::new()
        .max_connections(settings.max_open)
        .min_connections(settings.min_open)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(settings.max_idle_time)
        // Lifetime is enforced (and counted) by the hooks below instead.
        .max_lifetime(None)
        .test_before_acquire(false)
        .after_connect(move |_conn, _meta| {
            on_connect.opened.fetch_add(1, Relaxed);
            Box::pin(async { Ok(()) })
        })
        .before_acquire(move |conn, meta| {
            let counters = on_acquire.clone();
            Box::pin(async move {
                if lifetime.is_some_and(|max| meta.age >= max) {
                    counters.closed_max_lifetime.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                if meta.idle_for >= LIVENESS_WINDOW && conn.ping().await.is_err() {
                    counters.closed_broken.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .after_release(move |_conn, meta| {
            let keep = if lifetime.is_some_and(|max| meta.age >= max) {
                on_release.closed_max_lifetime.fetch_add(1, Relaxed);
                false
            } else if slot
                .load()
                .as_ref()
                .is_some_and(|pool| pool.num_idle() >= max_idle)
            {
                on_release.closed_max_idle.fetch_add(1, Relaxed);
                false
            } else {
                true
            };
            Box::pin(async move { Ok(keep) })
        })
}

pub(crate) fn gauges<DB: Database>(pool: &Pool<DB>) -> PoolGauges {
    PoolGauges {
        open: pool.size(),
        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        max_open: pool.options().get_max_connections(),
    }
}

/// Checks a connection out, counting waits when the pool was exhausted at the time of asking.
pub(crate) async fn acquire<DB: Database>(
    name: &str,
    pool: &Pool<DB>,
    counters: &PoolCounters,
) -> Result<PoolConnection<DB>, Error> {
    let exhausted = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
    let started = Instant::now();
    let result = pool.acquire().await;
    let waited = started.elapsed();
    if exhausted {
        counters.record_wait(waited);
    }
    #[cfg(feature = "metrics")]
    counters.acquire_wait_seconds.observe(waited);
    result.map_err(|e| {
        if matches!(e, sqlx::Error::PoolTimedOut) {
            counters.acquire_timeouts.fetch_add(1, Relaxed);
        }
        sqlx_error(name, Operation::Acquire, e)
    })
}

/// Wraps a sqlx error with its classification.
pub(crate) fn sqlx_error(name: &str, operation: Operation, e: sqlx::Error) -> Error {
    if matches!(e, sqlx::Error::PoolClosed) {
        return Error::closed(name, operation);
    }
    let kind = classify(&e);
    Error::database(name, operation, kind, e)
}

/// The retry-relevant classification of a sqlx error.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => ErrorKind::Transient,
        sqlx::Error::PoolClosed => ErrorKind::Closed,
        sqlx::Error::Configuration(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::ConfigFile(_) => ErrorKind::Configuration,
        sqlx::Error::Database(db) => classify_code(db.code().as_deref()),
        _ => ErrorKind::Query,
    }
}

/// SQLSTATE classes (PostgreSQL) and primary result codes (SQLite, as numbers).
fn classify_code(code: Option<&str>) -> ErrorKind {
    let Some(code) = code else {
        return ErrorKind::Query;
    };
    match code {
        // invalid_authorization_specification, invalid_password
        "28000" | "28P01" => ErrorKind::Authentication,
        // invalid_catalog_name (unknown database), insufficient_privilege on connect
        "3D000" | "42501" => ErrorKind::Configuration,
        // too_many_connections, admin/crash shutdown, cannot_connect_now, connection exceptions
        "53300" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" => ErrorKind::Transient,
        c if c.starts_with("08") => ErrorKind::Transient,
        // SQLite: BUSY, LOCKED (and extended codes of them), CANTOPEN, AUTH
        c => match c.parse::<i32>().map(|n| n & 0xff) {
            Ok(5 | 6) => ErrorKind::Transient,
            Ok(14) => ErrorKind::Configuration,
            Ok(23) => ErrorKind::Authentication,
            _ => ErrorKind::Query,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify() {
        assert_eq!(classify_code(Some("28P01")), ErrorKind::Authentication);
        assert_eq!(classify_code(Some("3D000")), ErrorKind::Configuration);
        assert_eq!(classify_code(Some("57P01")), ErrorKind::Transient);
        assert_eq!(classify_code(Some("08006")), ErrorKind::Transient);
        assert_eq!(classify_code(Some("42601")), ErrorKind::Query);
        assert_eq!(classify_code(Some("517")), ErrorKind::Transient); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(classify_code(Some("14")), ErrorKind::Configuration);
        assert_eq!(classify_code(None), ErrorKind::Query);
    }
}
