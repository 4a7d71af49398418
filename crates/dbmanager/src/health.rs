//! Per-connection health status, updated lock-free by connects and checks.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

/// Health of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Connected, and the last check (or the connect) succeeded.
    Healthy,
    /// Connected and the last check succeeded, but slowly (over half its timeout).
    Degraded,
    /// Connected, but the last check failed; the pool may still serve.
    Unhealthy,
    /// Not connected: never connected, its connect failed, or it was closed.
    Unavailable,
}

impl Status {
    /// Whether the connection serves (healthy or degraded).
    pub fn is_up(self) -> bool {
        matches!(self, Status::Healthy | Status::Degraded)
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Status::Healthy,
            1 => Status::Unhealthy,
            3 => Status::Degraded,
            _ => Status::Unavailable,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Unhealthy => 1,
            Status::Unavailable => 2,
            Status::Degraded => 3,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
            Status::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller can read about a connection's health.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HealthReport {
    /// Current status.
    pub status: Status,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last error's message (errors never carry secrets).
    pub last_error: Option<String>,
    /// When the last check or connect succeeded.
    pub last_success: Option<SystemTime>,
    /// When the last check or connect finished, successful or not.
    pub last_check: Option<SystemTime>,
    /// Its LISTEN/NOTIFY listeners (`None` for a backend without them). A listener that is
    /// reconnecting does not change `status`: the pool may serve while it does.
    pub listeners: Option<ListenerStats>,
    /// For a connection with a `hosts:` list: the server its pool connects to now
    /// (`host:port`).
    pub current_host: Option<String>,
}

/// The LISTEN/NOTIFY listeners of one connection (PostgreSQL), summed over its listeners.
/// Their sessions are outside the pool: `open`/`in_use` and `max_open` never count them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Listeners open now.
    pub open: u32,
    /// Of those, the ones whose session is up (the others are reconnecting).
    pub connected: u32,
    /// Channels listened to, summed over the listeners.
    pub channels: u32,
    /// Sessions re-established after a loss (or a replace of the connection).
    pub reconnects: u64,
    /// Reconnect attempts that failed.
    pub reconnect_failures: u64,
    /// Notifications received by the listeners' sessions.
    pub notifications_received: u64,
    /// The last error of a listener's session; cleared when one reconnects.
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct HealthState {
    status: AtomicU8,
    consecutive_failures: AtomicU32,
    last_error: ArcSwapOption<String>,
    last_success: ArcSwapOption<SystemTime>,
    last_check: ArcSwapOption<SystemTime>,
    /// When the last check finished on the monotonic (tokio) clock: what backoff measures.
    last_check_at: ArcSwapOption<tokio::time::Instant>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            status: AtomicU8::new(Status::Unavailable.as_u8()),
            consecutive_failures: AtomicU32::new(0),
            last_error: ArcSwapOption::empty(),
            last_success: ArcSwapOption::empty(),
            last_check: ArcSwapOption::empty(),
            last_check_at: ArcSwapOption::empty(),
        }
    }
}

impl HealthState {
    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status.load(Relaxed))
    }

    /// Records a success; returns the previous status.
    pub(crate) fn succeeded(&self, slow: bool) -> Status {
        let status = if slow {
            Status::Degraded
        } else {
            Status::Healthy
        };
        let now = std::sync::Arc::new(SystemTime::now());
        self.consecutive_failures.store(0, Relaxed);
        self.last_success.store(Some(now.clone()));
        self.last_check.store(Some(now));
        self.checked_now();
        Status::from_u8(self.status.swap(status.as_u8(), Relaxed))
    }

    /// Records a failed check of a connected pool (`connected`) or a failed connect; returns the
    /// previous status.
    pub(crate) fn failed(&self, connected: bool, error: &crate::Error) -> Status {
        let status = if connected {
            Status::Unhealthy
        } else {
            Status::Unavailable
        };
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_error
            .store(Some(std::sync::Arc::new(error.to_string())));
        self.last_check
            .store(Some(std::sync::Arc::new(SystemTime::now())));
        self.checked_now();
        Status::from_u8(self.status.swap(status.as_u8(), Relaxed))
    }

    fn checked_now(&self) {
        self.last_check_at
            .store(Some(std::sync::Arc::new(tokio::time::Instant::now())));
    }

    /// Time since the last check finished, if there was one.
    pub(crate) fn since_last_check(&self) -> Option<std::time::Duration> {
        self.last_check_at.load().as_deref().map(|t| t.elapsed())
    }

    pub(crate) fn closed(&self) {
        self.status.store(Status::Unavailable.as_u8(), Relaxed);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    pub(crate) fn report(&self) -> HealthReport {
        HealthReport {
            status: self.status(),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            last_error: self.last_error(),
            last_success: self.last_success.load_full().map(|t| *t),
            last_check: self.last_check.load_full().map(|t| *t),
            listeners: None,
            current_host: None,
        }
    }
}
