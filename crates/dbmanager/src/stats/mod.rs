//! Pool statistics: live counters kept with atomics, and the snapshots handed to callers.

mod histogram;
mod queries;
mod replication;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub(crate) use histogram::Histogram;
pub use histogram::HistogramSnapshot;
pub use queries::QuerySnapshot;
pub(crate) use queries::{OPERATIONS, QueryStats, operation_of};
pub use replication::{ReplicaStats, RoutingStats};

use crate::config::DatabaseType;
use crate::error::ErrorKind;
use crate::health::{ListenerStats, Status};

/// Counters one pool updates as events happen. Atomics only: the query path takes no lock.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    /// Failed connects by [`crate::ErrorKind`] (index from [`kind_index`]).
    pub connect_errors: [AtomicU64; KINDS.len()],
    pub health_seconds: Histogram,
    pub acquire_wait_seconds: Histogram,
    /// The neutral handle's statements by operation.
    pub queries: QueryStats,
    pub opened: AtomicU64,
    pub closed_max_lifetime: AtomicU64,
    pub closed_max_idle: AtomicU64,
    pub closed_broken: AtomicU64,
    pub closed_on_close: AtomicU64,
    /// Connections the application's lifecycle hooks failed, discarded or closed.
    pub closed_by_hook: AtomicU64,
    pub waits: AtomicU64,
    pub wait_nanos: AtomicU64,
    pub acquire_timeouts: AtomicU64,
    pub reconnects_ok: AtomicU64,
    pub reconnects_failed: AtomicU64,
    /// Checkouts held past `leak_detection_threshold`.
    pub leaks_detected: AtomicU64,
    /// Times the circuit breaker opened.
    pub circuit_opened: AtomicU64,
    /// Whether the circuit is open now.
    pub circuit_open: std::sync::atomic::AtomicBool,
    /// The connection's LISTEN/NOTIFY listeners, summed.
    pub listeners: ListenerCounters,
    /// The server of a `hosts:` list the pool connects to now (`host:port`).
    pub current_host: arc_swap::ArcSwapOption<String>,
    /// Times the pool switched to another server of its `hosts:` list.
    pub host_switches: AtomicU64,
}

/// What the listeners of one connection keep up to date (gauges are added to and taken back by
/// each listener's task).
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub open: AtomicU64,
    pub connected: AtomicU64,
    pub channels: AtomicU64,
    pub reconnects: AtomicU64,
    pub reconnect_failures: AtomicU64,
    pub notifications: AtomicU64,
    pub last_error: arc_swap::ArcSwapOption<String>,
}

impl ListenerCounters {
    pub(crate) fn set_last_error(&self, error: &crate::error::Error) {
        self.last_error
            .store(Some(std::sync::Arc::new(error.to_string())));
    }

    pub(crate) fn snapshot(&self) -> ListenerStats {
        let gauge = |a: &AtomicU64| u32::try_from(a.load(Relaxed)).unwrap_or(u32::MAX);
        ListenerStats {
            open: gauge(&self.open),
            connected: gauge(&self.connected),
            channels: gauge(&self.channels),
            reconnects: self.reconnects.load(Relaxed),
            reconnect_failures: self.reconnect_failures.load(Relaxed),
            notifications_received: self.notifications.load(Relaxed),
            last_error: self.last_error.load_full().map(|e| (*e).clone()),
        }
    }
}

/// The error kinds counted per connection, in label order.
pub(crate) const KINDS: [ErrorKind; 9] = [
    ErrorKind::Transient,
    ErrorKind::Authentication,
    ErrorKind::Configuration,
    ErrorKind::Closed,
    ErrorKind::NotFound,
    ErrorKind::Unsupported,
    ErrorKind::Query,
    ErrorKind::Credentials,
    ErrorKind::Hook,
];

pub(crate) fn kind_index(kind: ErrorKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

impl PoolCounters {
    pub(crate) fn record_connect_error(&self, kind: ErrorKind) {
        self.connect_errors[kind_index(kind)].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        self.waits.fetch_add(1, Relaxed);
        self.wait_nanos.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }
}

/// A snapshot of one connection's pool, in the spirit of Go's `sql.DBStats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connection name.
    pub name: String,
    /// Backend.
    #[serde(serialize_with = "as_str")]
    pub kind: DatabaseType,
    /// Health status.
    pub status: Status,
    /// Connections open now (in use + idle).
    pub open: u32,
    /// Connections checked out now.
    pub in_use: u32,
    /// Connections idle in the pool now.
    pub idle: u32,
    /// The pool's cap (`max_open_conns`).
    pub max_open: u32,
    /// Checkouts through this crate's API that had to wait for a connection.
    pub wait_count: u64,
    /// Total time those checkouts waited.
    #[serde(with = "humantime_serde_compat")]
    pub wait_duration: Duration,
    /// Checkouts that gave up after the acquire timeout.
    pub acquire_timeouts: u64,
    /// Connections opened since connect.
    pub opened_total: u64,
    /// Connections closed because they reached `conn_max_lifetime`.
    pub closed_max_lifetime: u64,
    /// Connections closed on release because `max_idle_conns` idle ones were already kept.
    pub closed_max_idle: u64,
    /// Connections closed after idling longer than `conn_max_idle_time`.
    pub closed_max_idle_time: u64,
    /// Connections closed because a liveness check found them broken (or a reconnect
    /// discarded them).
    pub closed_broken: u64,
    /// Connections the application's lifecycle hooks ([`crate::Hooks`]) closed: a failed
    /// after-connect, a before-checkout or after-release that said no (or failed).
    pub closed_by_hook: u64,
    /// Reconnects (manual or by the health loop) that succeeded.
    pub reconnects_ok: u64,
    /// Reconnects that failed.
    pub reconnects_failed: u64,
    /// Checkouts held past `leak_detection_threshold` (through this library's handle).
    pub leaks_detected: u64,
    /// Whether the circuit breaker is open now (callers fail fast).
    pub circuit_open: bool,
    /// Times the circuit breaker opened.
    pub circuit_opened_total: u64,
    /// Its LISTEN/NOTIFY listeners (`None` for a backend without them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listeners: Option<ListenerStats>,
    /// For a connection with a `hosts:` list: the server its pool connects to now
    /// (`host:port`; the primary, with `target_session_attrs: read-write`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_host: Option<String>,
    /// Times the pool switched to another server of its `hosts:` list (a failover followed).
    pub host_switches: u64,
    /// Failed connect attempts by error kind (every kind listed, zeros included).
    #[serde(skip)]
    pub connect_errors: Vec<(ErrorKind, u64)>,
    /// Health check durations.
    #[serde(skip)]
    pub health_check_seconds: HistogramSnapshot,
    /// Time to check a connection out through this library.
    #[serde(skip)]
    pub acquire_wait_seconds: HistogramSnapshot,
    /// Statements through the neutral handle, by operation (those that ran).
    #[serde(skip)]
    pub queries: Vec<QuerySnapshot>,
    /// For a read replica (a member connection such as `primary/replica:db-2:5432`): its
    /// connection, host, port, ban, lag and reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStats>,
    /// For a connection with read replicas: where its reads went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStats>,
}

fn as_str<S: serde::Serializer>(kind: &DatabaseType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Pool sizes as read from the driver at snapshot time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoolGauges {
    pub open: u32,
    pub idle: u32,
    pub max_open: u32,
    /// Counts the driver keeps itself (bb8's statistics, MongoDB's pool events); they replace
    /// the hook-maintained counters of the same names.
    pub driver_counts: Option<DriverCounts>,
}

/// Lifetime counts a driver keeps on its own.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DriverCounts {
    pub opened: u64,
    pub closed_max_lifetime: u64,
    pub closed_max_idle: u64,
    pub closed_broken: u64,
    pub closed_by_hook: u64,
    pub waits: u64,
    pub wait_nanos: u64,
    pub acquire_timeouts: u64,
}

impl ConnectionStats {
    pub(crate) fn from_parts(
        name: &str,
        kind: DatabaseType,
        status: Status,
        gauges: PoolGauges,
        c: &PoolCounters,
        listens: bool,
    ) -> Self {
        let counts = gauges.driver_counts.unwrap_or_else(|| DriverCounts {
            opened: c.opened.load(Relaxed),
            closed_max_lifetime: c.closed_max_lifetime.load(Relaxed),
            closed_max_idle: c.closed_max_idle.load(Relaxed),
            closed_broken: c.closed_broken.load(Relaxed),
            closed_by_hook: c.closed_by_hook.load(Relaxed),
            waits: c.waits.load(Relaxed),
            wait_nanos: c.wait_nanos.load(Relaxed),
            acquire_timeouts: c.acquire_timeouts.load(Relaxed),
        });
        let opened = counts.opened;
        let lifetime = counts.closed_max_lifetime;
        let max_idle = counts.closed_max_idle;
        let broken = counts.closed_broken;
        let by_hook = counts.closed_by_hook;
        let on_close = c.closed_on_close.load(Relaxed);
        // The driver's reaper closes idle-timed-out connections without a hook, so that count is
        // what remains of all closes once the others are taken out.
        let closed = opened.saturating_sub(u64::from(gauges.open));
        let idle_time = closed.saturating_sub(lifetime + max_idle + broken + by_hook + on_close);
        ConnectionStats {
            name: name.to_owned(),
            kind,
            status,
            open: gauges.open,
            in_use: gauges.open.saturating_sub(gauges.idle),
            idle: gauges.idle,
            max_open: gauges.max_open,
            wait_count: counts.waits,
            wait_duration: Duration::from_nanos(counts.wait_nanos),
            acquire_timeouts: counts.acquire_timeouts,
            opened_total: opened,
            closed_max_lifetime: lifetime,
            closed_max_idle: max_idle,
            closed_max_idle_time: idle_time,
            closed_broken: broken,
            closed_by_hook: by_hook,
            reconnects_ok: c.reconnects_ok.load(Relaxed),
            reconnects_failed: c.reconnects_failed.load(Relaxed),
            leaks_detected: c.leaks_detected.load(Relaxed),
            circuit_open: c.circuit_open.load(Relaxed),
            circuit_opened_total: c.circuit_opened.load(Relaxed),
            listeners: listens.then(|| c.listeners.snapshot()),
            current_host: c.current_host.load_full().map(|h| (*h).clone()),
            host_switches: c.host_switches.load(Relaxed),
            connect_errors: KINDS
                .iter()
                .zip(&c.connect_errors)
                .map(|(kind, n)| (*kind, n.load(Relaxed)))
                .collect(),
            health_check_seconds: c.health_seconds.snapshot(),
            acquire_wait_seconds: c.acquire_wait_seconds.snapshot(),
            queries: c.queries.snapshot(),
            replica: None,
            routing: None,
        }
    }
}

/// A snapshot of the whole manager.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Configured connections.
    pub total: usize,
    /// Connections that are up: status healthy or degraded (as the status gauge counts them).
    pub healthy: usize,
    /// Connections that are not up: unhealthy or unavailable (including never connected).
    pub unhealthy: usize,
    /// Per connection, by name.
    pub connections: BTreeMap<String, ConnectionStats>,
}
