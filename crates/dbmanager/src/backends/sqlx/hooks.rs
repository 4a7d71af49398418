//! sqlx pool construction with the hooks that enforce and count what sqlx does not expose:
//! `max_idle_conns`, lifetime closes, and a liveness ping only for connections idle a while;
//! the application's lifecycle hooks ([`crate::Hooks`]) run after the library's own checks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection as _, Database, Pool};

use super::executor::{Affected, Optional, Want, again, cache_failure};
use super::failover::Failover;
use super::{SqlxFlavor, sqlx_error};
use crate::backends::LIVENESS_WINDOW;
use crate::config::PoolSettings;
use crate::error::{Error, Operation, Result};
use crate::hooks::{HookRunner, HookSql};
use crate::sql::{Row, Value};
use crate::stats::PoolCounters;

/// One sqlx connection as the application's hooks see it.
pub(crate) struct HookConn<'c, F: SqlxFlavor> {
    pub name: &'c str,
    pub conn: &'c mut <F::DB as Database>::Connection,
    /// Whether statements may be named prepared statements; false behind a transaction-mode
    /// pooler, where each statement runs on the unnamed one in a transaction of its own.
    pub persistent: bool,
}

impl<F: SqlxFlavor> HookConn<'_, F> {
    fn error(&self, e: sqlx::Error) -> crate::error::Error {
        sqlx_error::<F>(self.name, Operation::Query, e)
    }
}

/// Ends the transaction a hook's statement ran in on its own (behind a transaction-mode
/// pooler, as the neutral handle's do): committed when it succeeded, else rolled back.
async fn settle<DB: Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    outcome: std::result::Result<T, sqlx::Error>,
) -> std::result::Result<T, sqlx::Error> {
    match outcome {
        Ok(out) => {
            tx.commit().await?;
            Ok(out)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

impl<F: SqlxFlavor> HookConn<'_, F> {
    /// One hook statement: on the connection's statement cache, prepared again once when it
    /// failed because of that cache (the hook's own `DISCARD ALL` on an earlier release, say),
    /// as the neutral handle does; behind a transaction-mode pooler in a transaction of its own.
    async fn statement<W: Want<F>>(
        &mut self,
        sql: &str,
        params: &[Value],
        want: W,
    ) -> Result<W::Out> {
        // A hook's statements are few; their column names are not worth sharing.
        let columns = super::rows::ColumnCache::default();
        let outcome = if self.persistent {
            match want.run(&mut *self.conn, sql, params, &columns, true).await {
                Err(e) if cache_failure::<F>(&e).is_some() => {
                    again::<F, W>(&mut *self.conn, sql, params, &columns, want).await
                }
                outcome => outcome,
            }
        } else {
            match sqlx::Connection::begin(&mut *self.conn).await {
                Ok(mut tx) => {
                    let outcome = want.run(&mut tx, sql, params, &columns, false).await;
                    settle(tx, outcome).await
                }
                Err(e) => Err(e),
            }
        };
        outcome.map_err(|e| self.error(e))
    }
}

impl<F: SqlxFlavor> HookSql for HookConn<'_, F> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.statement(sql, params, Affected))
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(self.statement(sql, params, Optional))
    }
}

/// Whether a connection being released would be one idle connection too many: `idle`
/// (sqlx's count) already at `max_idle`. sqlx pushes a released connection to its idle queue
/// before it counts it, and a checkout that takes it in between counts it down first: the count
/// wraps below zero (`usize::MAX`) for that moment. A count at or past the pool's `size` is such
/// a moment (the connection being released is in `size` and not idle), not a full cache: under
/// load it closed healthy connections (a pool of one kept none).
fn over_idle_cap(idle: usize, size: u32, max_idle: usize) -> bool {
    idle >= max_idle && idle < size as usize
}

/// Lets the release hook read the idle count of the pool it belongs to. Cleared when the owning
/// backend is dropped, which breaks the pool → hook → pool cycle.
pub(crate) type PoolSlot<DB> = Arc<ArcSwapOption<Pool<DB>>>;

pub(crate) fn pool_options<F: SqlxFlavor>(
    settings: &PoolSettings,
    counters: &Arc<PoolCounters>,
    slot: &PoolSlot<F::DB>,
    init: Arc<[String]>,
    runner: &HookRunner,
    persistent: bool,
    failover: Option<Arc<Failover<F>>>,
) -> PoolOptions<F::DB> {
    let lifetime = settings.max_lifetime;
    // Checked on every new connection only when writes are required (one round trip).
    let connect_check = failover.clone().filter(|f| f.require_writable());
    let (acquire_failover, release_failover) = (failover.clone(), failover);
    let max_idle = settings.max_idle as usize;
    let (on_connect, on_acquire, on_release) =
        (counters.clone(), counters.clone(), counters.clone());
    let (connect_hooks, acquire_hooks, release_hooks) =
        (runner.clone(), runner.clone(), runner.clone());
    let slot = slot.clone();
    PoolOptions::<F::DB>::new()
        .max_connections(settings.max_open)
        .min_connections(settings.min_open)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(settings.max_idle_time)
        // Lifetime is enforced (and counted) by the hooks below instead.
        .max_lifetime(None)
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            on_connect.opened.fetch_add(1, Relaxed);
            let init = init.clone();
            let counters = on_connect.clone();
            let hooks = connect_hooks.clone();
            let failover = connect_check.clone();
            Box::pin(async move {
                if let Some(failover) = failover {
                    failover.check_new(conn).await?;
                }
                for statement in init.iter() {
                    F::execute(conn, statement, &[], persistent).await?;
                }
                let name = hooks.name().clone();
                let mut view = HookConn::<F> {
                    name: &name,
                    conn,
                    persistent,
                };
                if let Err(e) = hooks.after_connect(&mut view).await {
                    // sqlx closes the connection and tries a new one until its acquire timeout.
                    counters.closed_by_hook.fetch_add(1, Relaxed);
                    return Err(sqlx::Error::AnyDriverError(Box::new(e)));
                }
                Ok(())
            })
        })
        .before_acquire(move |conn, meta| {
            let counters = on_acquire.clone();
            // Cloned only when a hook is set: this runs on every checkout.
            let hooks = acquire_hooks
                .has_before_checkout()
                .then(|| acquire_hooks.clone());
            // Opened before the pool switched servers: it may be on the old one.
            let stale = acquire_failover
                .as_ref()
                .is_some_and(|f| f.is_stale(meta.age));
            Box::pin(async move {
                if stale {
                    counters.closed_broken.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                if lifetime.is_some_and(|max| meta.age >= max) {
                    counters.closed_max_lifetime.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                if meta.idle_for >= LIVENESS_WINDOW && conn.ping().await.is_err() {
                    counters.closed_broken.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                let Some(hooks) = hooks else {
                    return Ok(true);
                };
                let name = hooks.name().clone();
                let mut view = HookConn::<F> {
                    name: &name,
                    conn,
                    persistent,
                };
                if !hooks
                    .before_checkout(&mut view, meta.age, meta.idle_for)
                    .await
                {
                    counters.closed_by_hook.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .after_release(move |conn, meta| {
            let keep = if release_failover
                .as_ref()
                .is_some_and(|f| f.is_stale(meta.age))
            {
                on_release.closed_broken.fetch_add(1, Relaxed);
                false
            } else if lifetime.is_some_and(|max| meta.age >= max) {
                on_release.closed_max_lifetime.fetch_add(1, Relaxed);
                false
            } else if slot
                .load()
                .as_ref()
                .is_some_and(|pool| over_idle_cap(pool.num_idle(), pool.size(), max_idle))
            {
                on_release.closed_max_idle.fetch_add(1, Relaxed);
                false
            } else {
                true
            };
            // The hook's clones only when there is one to call: this runs on every release.
            if !keep || !release_hooks.has_after_release() {
                return Box::pin(std::future::ready(Ok(keep)));
            }
            let counters = on_release.clone();
            let hooks = release_hooks.clone();
            Box::pin(async move {
                let name = hooks.name().clone();
                let mut view = HookConn::<F> {
                    name: &name,
                    conn,
                    persistent,
                };
                if !hooks.after_release(&mut view, meta.age).await {
                    counters.closed_by_hook.fetch_add(1, Relaxed);
                    return Ok(false);
                }
                Ok(true)
            })
        })
}

/// Checks a connection out, counting waits when the pool was exhausted at the time of asking.
///
/// The driver's checkout future is large (it holds the connect path); a wrapping `async fn`
/// would copy it once more on every call, so the accounting is a `map` on it instead.
pub(crate) fn acquire<'a, F: SqlxFlavor>(
    name: &'a str,
    pool: &'a Pool<F::DB>,
    counters: &'a PoolCounters,
) -> impl Future<Output = Result<PoolConnection<F::DB>, Error>> + Send + 'a {
    let exhausted = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
    let started = Instant::now();
    pool.acquire().map(move |result| {
        let waited = started.elapsed();
        if exhausted {
            counters.record_wait(waited);
        }
        counters.acquire_wait_seconds.observe(waited);
        result.map_err(|e| {
            if matches!(e, sqlx::Error::PoolTimedOut) {
                counters.acquire_timeouts.fetch_add(1, Relaxed);
            }
            sqlx_error::<F>(name, Operation::Acquire, e)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::over_idle_cap;

    #[test]
    fn a_wrapped_idle_count_does_not_close_the_released_connection() {
        // A pool of four, two idle, cap two: the third is closed.
        assert!(over_idle_cap(2, 4, 2));
        assert!(!over_idle_cap(1, 4, 2));
        // sqlx's count wrapped below zero while a checkout raced the release.
        assert!(!over_idle_cap(usize::MAX, 1, 1));
        assert!(!over_idle_cap(usize::MAX, 4, 2));
        // Never more idle than the pool minus the connection being released.
        assert!(!over_idle_cap(1, 1, 1));
    }
}
