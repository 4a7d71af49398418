//! Circuit breaking: after a run of failures to reach the server, the neutral handle fails at
//! once instead of every caller waiting out `connect_timeout`; a probe (the health loop's, or
//! one statement let through after a pause) closes the circuit again when the server is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::error::{Error, ErrorKind, Operation};

/// Why a statement is refused, and the health report's last error, while the circuit is open.
pub(crate) const CIRCUIT_OPEN: &str =
    "circuit open: the server could not be reached repeatedly; failing fast until it answers again";

/// One connection's breaker. Lock-free.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    /// Consecutive failures that open it (0: off).
    threshold: AtomicU32,
    failures: AtomicU32,
    open: AtomicBool,
    /// Set while the one statement let through to probe a half-open circuit runs.
    probing: AtomicBool,
    opened_at: ArcSwapOption<tokio::time::Instant>,
}

/// Whether an error says the server could not be reached (not that a statement was wrong).
pub(crate) fn is_unreachable(e: &Error) -> bool {
    e.kind() == ErrorKind::Transient
        && matches!(
            e,
            Error::Timeout {
                operation: Operation::Acquire | Operation::Connect | Operation::Ping,
                ..
            } | Error::Database {
                operation: Operation::Acquire | Operation::Connect | Operation::Ping,
                ..
            }
        )
}

impl Breaker {
    /// Whether callers are failing fast now.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    pub(crate) fn set_threshold(&self, failures: Option<u32>) {
        self.threshold.store(failures.unwrap_or(0), Relaxed);
    }

    /// Whether a statement may run now. While open, one statement every `half_open_after` is
    /// let through as a probe: it holds the probe until the [`Admission`] is dropped, so a
    /// probe whose future is dropped before it reports (a caller's own timeout, a cancelled
    /// request) lets the next statement probe instead of keeping the circuit open for good.
    pub(crate) fn admit(self: &Arc<Self>, half_open_after: Duration) -> Admission {
        if !self.open.load(Relaxed) {
            return Admission::Closed;
        }
        let waited = self
            .opened_at
            .load()
            .as_deref()
            .is_none_or(|at| at.elapsed() >= half_open_after);
        if waited
            && self
                .probing
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok()
        {
            return Admission::Probe {
                _guard: ProbeGuard(self.clone()),
            };
        }
        Admission::Refused
    }

    /// Records an outcome of reaching the server (a statement, a check, a connect). A probe's
    /// statement records its outcome before its [`Admission`] is dropped.
    pub(crate) fn record(&self, name: &str, reached: bool, counters: &crate::stats::PoolCounters) {
        if reached {
            self.failures.store(0, Relaxed);
            if self.open.swap(false, Relaxed) {
                counters.circuit_open.store(false, Relaxed);
                tracing::info!(
                    connection = name,
                    "circuit closed: the server answers again"
                );
            }
            return;
        }
        let threshold = self.threshold.load(Relaxed);
        if threshold == 0 {
            return;
        }
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if failures >= threshold {
            // Re-arms the half-open pause on every failure while open.
            self.opened_at
                .store(Some(std::sync::Arc::new(tokio::time::Instant::now())));
            if !self.open.swap(true, Relaxed) {
                counters.circuit_open.store(true, Relaxed);
                counters.circuit_opened.fetch_add(1, Relaxed);
                tracing::warn!(
                    connection = name,
                    failures,
                    "circuit open: failing fast until the server answers again"
                );
            }
        }
    }
}

/// What [`Breaker::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    Closed,
    /// The one statement probing a half-open circuit; dropping it ends the probe.
    Probe {
        _guard: ProbeGuard,
    },
    Refused,
}

/// The probe of a half-open circuit, held by the statement let through; dropped when that
/// statement ends, however it ends.
#[derive(Debug)]
pub(crate) struct ProbeGuard(Arc<Breaker>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.probing.store(false, Relaxed);
    }
}
