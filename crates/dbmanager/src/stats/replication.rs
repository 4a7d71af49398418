//! What stats show of read replicas: each replica's routing state, and a connection's routing
//! decisions.

use std::time::Duration;

/// A replica's state for stats.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// The connection it is a replica of.
    pub member_of: String,
    /// Its host.
    pub host: String,
    /// Its port, as configured (the backend's default when absent).
    pub port: Option<u16>,
    /// Banned now: not used for reads until a background probe succeeds.
    pub banned: bool,
    /// Bans since the connection was opened.
    pub bans_total: u64,
    /// Over `max_replica_lag` at its last check (not used for reads until back under).
    pub lagging: bool,
    /// Its lag at the last check (`None`: not measured, or the server could not say).
    #[serde(with = "optional_seconds")]
    pub lag: Option<Duration>,
    /// Moving average of its query and check latency.
    #[serde(with = "optional_seconds")]
    pub latency: Option<Duration>,
    /// Reads routed to it.
    pub reads: u64,
    /// Reads in flight on it through the neutral handle.
    pub in_flight: u32,
    /// Why it was last banned or found lagging (redacted like every error).
    pub last_error: Option<String>,
}

/// The routing decisions of a connection with replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RoutingStats {
    /// The read policy.
    pub read_policy: String,
    /// Reads sent to a replica.
    pub to_replica: u64,
    /// Reads sent to the primary because their handle wrote within `read_your_writes`.
    pub read_your_writes: u64,
    /// `fetch_*` statements that were not a `SELECT`, sent to the primary.
    pub not_select: u64,
    /// Reads that fell back to the primary: no replica was usable.
    pub fallback_primary: u64,
    /// Reads refused: no replica was usable and `replica_fallback` is `error`.
    pub fallback_error: u64,
}

mod optional_seconds {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
