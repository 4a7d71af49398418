//! Leak detection: a checkout held longer than `leak_detection_threshold` is reported once,
//! with the connection, how long, and where it was taken, and counted; when it is finally
//! returned, an info line says so (HikariCP's `leakDetectionThreshold`).

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// Held for as long as the checkout it watches; dropping it ends the watch.
#[derive(Debug)]
pub(crate) struct LeakGuard {
    state: Arc<Watch>,
    /// The task waiting out the threshold: ended when the checkout is returned, so a long
    /// threshold does not keep one sleeping task per statement alive until it expires.
    watcher: tokio::task::AbortHandle,
}

#[derive(Debug)]
struct Watch {
    connection: Arc<str>,
    at: &'static Location<'static>,
    started: tokio::time::Instant,
    returned: AtomicBool,
    reported: AtomicBool,
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
            started: tokio::time::Instant::now(),
            returned: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        });
        let watched = Arc::downgrade(&state);
        let counters = counters.clone();
        // Outside a runtime there is nothing to watch with; the checkout itself needs one.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let watcher = handle.spawn(async move {
            tokio::time::sleep(threshold).await;
            let Some(state) = watched.upgrade() else {
                return;
            };
            if state.returned.load(Relaxed) {
                return;
            }
            state.reported.store(true, Relaxed);
            counters.leaks_detected.fetch_add(1, Relaxed);
            tracing::warn!(
                connection = &*state.connection,
                held_for_ms = state.started.elapsed().as_millis() as u64,
                acquired_at = %state.at,
                "a connection has been checked out longer than leak_detection_threshold"
            );
        });
        Some(LeakGuard {
            state,
            watcher: watcher.abort_handle(),
        })
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        self.state.returned.store(true, Relaxed);
        self.watcher.abort();
        if self.state.reported.load(Relaxed) {
            tracing::info!(
                connection = &*self.state.connection,
                held_for_ms = self.state.started.elapsed().as_millis() as u64,
                acquired_at = %self.state.at,
                "a connection reported as possibly leaked was returned"
            );
        }
    }
}
