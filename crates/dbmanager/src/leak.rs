//! Leak detection: a checkout held longer than `leak_detection_threshold` is reported once,
//! with the connection, how long, and where it was taken, and counted; when it is finally
//! returned, an info line says so (HikariCP's `leakDetectionThreshold`).
//!
//! A statement's watch is the task's while the statement runs ([`LeakGuard::scope`]); a
//! backend that tells when its checkout began and ended ([`checkout_started`],
//! [`checked_out`]) has the watch count from when the connection was handed over, so a
//! statement still waiting for a connection (the pool exhausted by whoever holds them) is not
//! reported. Without that, the watch counts from the statement's start.

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::Either;
use tokio::time::Instant;

tokio::task_local! {
    /// The watch of the statement this task runs, while it runs.
    static WATCHED: Arc<Watch>;
}

/// Held for as long as the checkout it watches; dropping it ends the watch.
#[derive(Debug)]
pub(crate) struct LeakGuard {
    state: Arc<Watch>,
    /// The task waiting out the threshold: ended when the checkout is returned, so a long
    /// threshold does not keep one sleeping task per statement alive until it expires.
    watcher: tokio::task::AbortHandle,
}

#[derive(Debug)]
pub(crate) struct Watch {
    connection: Arc<str>,
    at: &'static Location<'static>,
    started: Instant,
    returned: AtomicBool,
    reported: AtomicBool,
    /// A backend said the checkout began: until it says it ended, nothing is held.
    checking_out: AtomicBool,
    /// When the connection was handed over, in nanoseconds after `started` plus one (0: not
    /// yet).
    checked_out: AtomicU64,
}

impl Watch {
    /// Since when the connection is held; `None` while a checkout is still waiting for it.
    fn held_since(&self) -> Option<Instant> {
        match self.checked_out.load(Relaxed) {
            0 if self.checking_out.load(Relaxed) => None,
            0 => Some(self.started),
            at => Some(self.started + Duration::from_nanos(at - 1)),
        }
    }
}

impl LeakGuard {
    /// Starts watching a checkout taken at `at`; `None` when detection is off.
    pub(crate) fn watch(
        connection: &Arc<str>,
        threshold: Option<Duration>,
        counters: &Arc<crate::stats::PoolCounters>,
        at: &'static Location<'static>,
    ) -> Option<LeakGuard> {
        let threshold = threshold?;
        let state = Arc::new(Watch {
            connection: connection.clone(),
            at,
            started: Instant::now(),
            returned: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            checking_out: AtomicBool::new(false),
            checked_out: AtomicU64::new(0),
        });
        let watched = Arc::downgrade(&state);
        let counters = counters.clone();
        // Outside a runtime there is nothing to watch with; the checkout itself needs one.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let watcher = handle.spawn(async move {
            let mut wake = Instant::now() + threshold;
            loop {
                tokio::time::sleep_until(wake).await;
                let Some(state) = watched.upgrade() else {
                    return;
                };
                if state.returned.load(Relaxed) {
                    return;
                }
                // Still waiting for a connection: nothing held yet.
                let Some(since) = state.held_since() else {
                    wake = Instant::now() + threshold;
                    continue;
                };
                if since.elapsed() < threshold {
                    wake = since + threshold;
                    continue;
                }
                state.reported.store(true, Relaxed);
                counters.leaks_detected.fetch_add(1, Relaxed);
                tracing::warn!(
                    connection = &*state.connection,
                    held_for_ms = since.elapsed().as_millis() as u64,
                    acquired_at = %state.at,
                    "a connection has been checked out longer than leak_detection_threshold"
                );
                return;
            }
        });
        Some(LeakGuard {
            state,
            watcher: watcher.abort_handle(),
        })
    }

    /// Runs `statement` with `guard`'s watch as the task's (nothing when detection is off).
    /// The watched statement is boxed: the task-local scope around it would otherwise make
    /// every statement's future larger, detection on or not (it is a few dozen bytes, but it
    /// pushed the neutral handle's boxed statement past the allocator's small-size cache).
    pub(crate) fn scope<'a, F: Future + Send + 'a>(
        guard: Option<&LeakGuard>,
        statement: F,
    ) -> Either<futures_util::future::BoxFuture<'a, F::Output>, F> {
        match guard {
            Some(guard) => Either::Left(Box::pin(WATCHED.scope(guard.state.clone(), statement))),
            None => Either::Right(statement),
        }
    }
}

/// A backend's checkout for the task's watched statement begins; hand the result to
/// [`checked_out`] once the connection is there. `None` (nothing to do) outside a watch.
pub(crate) fn checkout_started() -> Option<Arc<Watch>> {
    WATCHED
        .try_with(|watch| {
            watch.checking_out.store(true, Relaxed);
            watch.clone()
        })
        .ok()
}

/// The checkout begun with [`checkout_started`] has its connection (or failed): the watch
/// counts from now.
pub(crate) fn checked_out(watch: Option<Arc<Watch>>) {
    if let Some(watch) = watch {
        let after = u64::try_from(watch.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        watch.checked_out.store(after.saturating_add(1), Relaxed);
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        self.state.returned.store(true, Relaxed);
        self.watcher.abort();
        if self.state.reported.load(Relaxed) {
            let since = self.state.held_since().unwrap_or(self.state.started);
            tracing::info!(
                connection = &*self.state.connection,
                held_for_ms = since.elapsed().as_millis() as u64,
                acquired_at = %self.state.at,
                "a connection reported as possibly leaked was returned"
            );
        }
    }
}
