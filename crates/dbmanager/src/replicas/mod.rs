//! Read replicas of a connection: their live state (bans, lag, latency, reads in flight), the
//! choice of the replica a read goes to, and the background monitor that checks them
//! ([`monitor`]).
//!
//! Each replica is a member connection of its own (pool, counters, health, metrics), run by
//! the same machinery as any connection; this module sees it only through [`Member`], so it
//! does not depend on `connection` (which owns the set). The routing path (`route`) reads
//! atomics only: no lock, no allocation but an error's.

mod config;
mod monitor;

pub(crate) use config::point_inherited_dsns;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;

use crate::config::{ReadPolicy, ReplicaFallback};
use crate::driver::LagProbe;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::{Database, ReadRoute, ReadRouter};
use crate::stats::{ReplicaStats, RoutingStats};

/// What a read replica's member name puts between its connection's name and its host
/// (`primary/replica:db-2:5432`, built by [`identity`]): no connection name may contain it.
pub(crate) const REPLICA_MARK: &str = "/replica:";

/// What the set needs of a member connection.
pub(crate) trait Member: Send + Sync + 'static {
    /// Its name (`primary/replica:db-2:5432`).
    fn member_name(&self) -> &str;
    /// Opens its pool with the retry policy (a no-op when open).
    fn open(&self) -> BoxFuture<'_, Result<()>>;
    /// Pings it, recording the outcome in its health.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    /// Its neutral handle (once open).
    fn handle(&self) -> Result<Database>;
    /// Closes its pool within `deadline`; returns how many connections were still checked
    /// out then.
    fn shut(&self, deadline: Duration) -> BoxFuture<'_, u32>;
    /// Every connection its pool may open is checked out now.
    fn saturated(&self) -> bool;
}

/// The origin of every set's clock (`ReplicaSet::now`), one for the process: a handle's
/// `wrote_at` outlives the set that stamped it (a `replace` or reload builds a new one) and is
/// read on the new set's clock.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Replica `index` of connection `connection`: its member name (`primary/replica:db-2:5432`)
/// and the host and port it is shown by: its dsn's server when it has a dsn (a `host`/`port`
/// beside one is a configuration problem), else its `host` and `port` (else `default_port`).
pub(crate) fn identity(
    connection: &str,
    index: usize,
    r: &crate::config::ConnectionConfig,
    default_port: Option<u16>,
) -> (String, String, Option<u16>) {
    let from_dsn = r
        .dsn
        .as_ref()
        .and_then(|dsn| crate::hosts::dsn_server(secrecy::ExposeSecret::expose_secret(dsn)));
    let (host, port) = match from_dsn {
        Some(server) => (Some(server.host), server.port),
        None => (r.host.clone(), r.port),
    };
    let port = port.or(default_port);
    let name = match (&host, port) {
        (Some(host), Some(port)) => format!(
            "{connection}{REPLICA_MARK}{}",
            crate::hosts::Server {
                host: host.clone(),
                port
            }
        ),
        (Some(host), None) => format!("{connection}{REPLICA_MARK}{host}"),
        _ => format!("{connection}{REPLICA_MARK}{index}"),
    };
    (name, host.unwrap_or_default(), port)
}

/// `lag_nanos` when the lag is not known (never measured, or the server could not say).
const LAG_UNKNOWN: u64 = u64::MAX;

/// One replica and its routing state.
pub(crate) struct Replica<M> {
    pub member: M,
    pub host: String,
    pub port: Option<u16>,
    /// Its neutral handle, made at its first successful open.
    handle: OnceLock<Database>,
    banned: AtomicBool,
    /// Nanoseconds since the clock's origin at which a banned replica is probed next.
    probe_at: AtomicU64,
    /// Bans in a row (the backoff exponent); reset by a successful probe.
    bans_in_row: AtomicU32,
    bans_total: AtomicU64,
    /// Above `max_replica_lag` at the last check (not a ban: it is used again once under).
    lagging: AtomicBool,
    lag_nanos: AtomicU64,
    /// Moving average of query and check latency (nanoseconds; 0 = none yet).
    latency_nanos: AtomicU64,
    in_flight: AtomicU32,
    reads: AtomicU64,
    /// A check of it is running (the monitor does not start a second).
    checking: AtomicBool,
    /// Nanoseconds since the clock's origin of its last check.
    checked_at: AtomicU64,
    /// Why it was last banned or found lagging.
    last_error: ArcSwapOption<String>,
}

impl<M> Replica<M> {
    pub(crate) fn new(member: M, host: String, port: Option<u16>) -> Self {
        Self {
            member,
            host,
            port,
            handle: OnceLock::new(),
            banned: AtomicBool::new(false),
            probe_at: AtomicU64::new(0),
            bans_in_row: AtomicU32::new(0),
            bans_total: AtomicU64::new(0),
            lagging: AtomicBool::new(false),
            lag_nanos: AtomicU64::new(LAG_UNKNOWN),
            latency_nanos: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            reads: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            checked_at: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
        }
    }

    fn usable(&self) -> bool {
        !self.banned.load(Relaxed) && !self.lagging.load(Relaxed) && self.handle.get().is_some()
    }

    fn observe_latency(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.latency_nanos.load(Relaxed);
        // An exponential moving average (weight 1/8); a lost update under a race is harmless.
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_nanos.store(new, Relaxed);
    }
}

/// How the set behaves: the connection's replica keys and the manager's timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaPolicy {
    pub read_policy: ReadPolicy,
    pub max_lag: Duration,
    pub read_your_writes: Duration,
    pub fallback: ReplicaFallback,
    /// How often each replica is checked (ping and lag).
    pub check_interval: Duration,
    /// How long the connect waits for the replicas' first checks: the longest
    /// `connect_timeout` among them.
    pub first_check_wait: Duration,
    /// The first ban; each ban in a row doubles it, up to `ban_max`.
    pub ban_base: Duration,
    pub ban_max: Duration,
    pub log: bool,
}

/// Routing decisions, counted (the `routing` part of the connection's stats).
#[derive(Debug, Default)]
struct RoutingCounters {
    to_replica: AtomicU64,
    /// Reads sent to the primary because the handle wrote within `read_your_writes`.
    read_your_writes: AtomicU64,
    /// `fetch_*` statements that are not a `SELECT` (they may write): the primary's.
    not_select: AtomicU64,
    /// No replica was usable: sent to the primary (`replica_fallback: primary`).
    fallback_primary: AtomicU64,
    /// No replica was usable: refused (`replica_fallback: error`).
    fallback_error: AtomicU64,
}

/// The replicas of one connection.
pub(crate) struct ReplicaSet<M> {
    /// The connection's name.
    name: Arc<str>,
    replicas: Vec<Replica<M>>,
    policy: ReplicaPolicy,
    probe: &'static LagProbe,
    next: AtomicUsize,
    counters: RoutingCounters,
    /// The monitor runs (started by the connection's connect, stopped by its close).
    running: AtomicBool,
    monitor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The first checks `start` spawned, aborted by `close`.
    first_checks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl<M: Member> ReplicaSet<M> {
    pub(crate) fn new(
        name: Arc<str>,
        replicas: Vec<Replica<M>>,
        policy: ReplicaPolicy,
        probe: &'static LagProbe,
    ) -> Self {
        // The first checks are `start`'s: the next are due one interval after the set is made.
        let made = u64::try_from(clock_origin().elapsed().as_nanos()).unwrap_or(u64::MAX);
        for r in &replicas {
            r.checked_at.store(made, Relaxed);
        }
        Self {
            name,
            replicas,
            policy,
            probe,
            next: AtomicUsize::new(0),
            counters: RoutingCounters::default(),
            running: AtomicBool::new(false),
            monitor: std::sync::Mutex::new(None),
            first_checks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The member connections.
    pub(crate) fn members(&self) -> impl Iterator<Item = &M> {
        self.replicas.iter().map(|r| &r.member)
    }

    fn now(&self) -> u64 {
        u64::try_from(clock_origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Opens every replica (in parallel, each with the retry policy), measures their lag, and
    /// starts the monitor. A replica that cannot be opened is banned, not an error: reads
    /// follow `replica_fallback` until it is back. Idempotent while running.
    pub(crate) async fn start(self: &Arc<Self>) {
        if self.running.swap(true, Relaxed) {
            return;
        }
        // The first checks run as tasks of their own: the connect waits for them (so reads go
        // to the replicas from the first statement) at most `first_check_wait`, one connect
        // timeout; a replica still retrying its connect then joins when it is up, and reads
        // take the fallback until then.
        let checks: Vec<_> = (0..self.replicas.len())
            .map(|i| {
                let set = self.clone();
                tokio::spawn(async move { set.check(i).await })
            })
            .collect();
        let aborts: Vec<_> = checks.iter().map(|t| t.abort_handle()).collect();
        *self
            .first_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = aborts;
        let checks = futures_util::future::join_all(checks);
        let _ = tokio::time::timeout(self.policy.first_check_wait, checks).await;
        monitor::spawn(self);
    }

    /// Stops the monitor and closes every replica within `deadline`; returns the replicas that
    /// still had connections checked out then (member name, how many).
    pub(crate) async fn close(&self, deadline: Duration) -> Vec<(String, u32)> {
        self.running.store(false, Relaxed);
        if let Some(task) = self
            .monitor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        // A first check still connecting a replica (see `start`) ends here too.
        let first_checks = std::mem::take(
            &mut *self
                .first_checks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        first_checks
            .iter()
            .for_each(tokio::task::AbortHandle::abort);
        let in_use =
            futures_util::future::join_all(self.replicas.iter().map(|r| r.member.shut(deadline)))
                .await;
        self.replicas
            .iter()
            .zip(in_use)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.member.member_name().to_owned(), n))
            .collect()
    }

    /// Checks replica `i`: opens it if it is not open, pings it and measures its lag. A
    /// failure bans it (longer each time in a row); a success lifts the ban.
    async fn check(&self, i: usize) {
        let Some(r) = self.replicas.get(i) else {
            return;
        };
        if !self.running.load(Relaxed) || r.checking.swap(true, Relaxed) {
            return;
        }
        let outcome = self.check_once(r).await;
        if !self.running.load(Relaxed) {
            // Closed (or replaced) while this check ran: a pool it opened must not outlive
            // the set.
            r.member.shut(Duration::ZERO).await;
            r.checking.store(false, Relaxed);
            return;
        }
        r.checked_at.store(self.now(), Relaxed);
        match outcome {
            Ok(measured) => {
                let (lag, unknown) = match measured {
                    Ok(lag) => (Some(lag), None),
                    Err(why) => (None, Some(why)),
                };
                let lag_nanos = lag.map_or(LAG_UNKNOWN, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(LAG_UNKNOWN - 1)
                });
                r.lag_nanos.store(lag_nanos, Relaxed);
                let bound = self.policy.max_lag;
                let lagging = !bound.is_zero() && lag.is_none_or(|d| d > bound);
                let was_lagging = r.lagging.swap(lagging, Relaxed);
                if lagging {
                    let why = match lag {
                        Some(d) => format!(
                            "{} behind, more than max_replica_lag ({})",
                            humantime::format_duration(round_ms(d)),
                            humantime::format_duration(bound)
                        ),
                        None => format!(
                            "its lag is unknown: {}",
                            unknown.as_deref().unwrap_or("the server did not say")
                        ),
                    };
                    if !was_lagging && self.policy.log {
                        tracing::warn!(connection = %self.name, replica = r.member.member_name(), reason = %why, "replica lagging; no reads until it is back under max_replica_lag");
                    }
                    r.last_error.store(Some(Arc::new(why)));
                } else {
                    if was_lagging && self.policy.log {
                        tracing::info!(connection = %self.name, replica = r.member.member_name(), "replica caught up; reads resume");
                    }
                    // Without a bound an unknown lag takes nothing away; it is still shown.
                    if let Some(why) = unknown {
                        r.last_error
                            .store(Some(Arc::new(format!("its lag is unknown: {why}"))));
                    }
                }
                if r.banned.swap(false, Relaxed) && self.policy.log {
                    tracing::info!(connection = %self.name, replica = r.member.member_name(), "replica ban lifted");
                }
                r.bans_in_row.store(0, Relaxed);
            }
            // Busy, not gone: its state stays as the last check left it.
            Err(e) if Self::waited_on_full_pool(r, &e) => {}
            Err(e) => self.ban(r, &e),
        }
        r.checking.store(false, Relaxed);
    }

    /// Open, ping, lag: the lag, or why it is unknown (the server cannot say).
    async fn check_once(&self, r: &Replica<M>) -> Result<std::result::Result<Duration, String>> {
        r.member.open().await?;
        let started = Instant::now();
        r.member.ping().await?;
        r.observe_latency(started.elapsed());
        let handle = match r.handle.get() {
            Some(handle) => handle,
            None => {
                let handle = r.member.handle()?;
                r.handle.get_or_init(|| handle)
            }
        };
        let mut last = None;
        for statement in self.probe.statements {
            match handle.fetch_optional(statement, &[]).await {
                Ok(row) => {
                    return Ok((self.probe.read)(row.as_ref()).map_err(str::to_owned));
                }
                Err(e) if e.kind() == ErrorKind::Query => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        // The replica answered, but refused every lag statement (on MySQL, a user without the
        // `REPLICATION CLIENT` / `REPLICA MONITOR` privilege): its lag is unknown, which
        // matters under a `max_replica_lag` bound only; it is not a ban.
        match last {
            Some(e) => Ok(Err(format!("the lag statement failed: {e}"))),
            None => Err(Error::database(
                r.member.member_name(),
                Operation::Query,
                ErrorKind::Query,
                "no replica lag statement",
            )),
        }
    }

    /// Bans `r` (or extends its ban, when a probe of it failed): no reads until a probe
    /// succeeds; the next probe after `ban_base · 2^(bans in a row − 1)`, at most `ban_max`.
    fn ban(&self, r: &Replica<M>, error: &Error) {
        let n = r.bans_in_row.fetch_add(1, Relaxed).min(20);
        let wait = self
            .policy
            .ban_base
            .saturating_mul(1 << n)
            .min(self.policy.ban_max);
        let wait_nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        r.probe_at
            .store(self.now().saturating_add(wait_nanos), Relaxed);
        r.last_error.store(Some(Arc::new(error.to_string())));
        if !r.banned.swap(true, Relaxed) {
            r.bans_total.fetch_add(1, Relaxed);
            if self.policy.log {
                tracing::warn!(connection = %self.name, replica = r.member.member_name(), error = %error, probe_in = %humantime::format_duration(wait), "replica banned");
            }
        }
    }

    /// Whether a read's error may mean replica `r` is gone: a transient error, but not a
    /// statement over `query_timeout` (the statement is slow, the replica answers) nor a
    /// [`Self::waited_on_full_pool`].
    fn means_replica_down(&self, r: &Replica<M>, e: &Error) -> bool {
        e.kind() == ErrorKind::Transient
            && !matches!(
                e,
                Error::Timeout {
                    operation: Operation::Query,
                    ..
                }
            )
            && !Self::waited_on_full_pool(r, e)
    }

    /// Whether `e` is a checkout (or the check's ping or lag statement, whose timers include
    /// their checkout) that timed out while every connection of `r`'s pool was in use: the
    /// pool is too small for the reads, the replica is not gone (and the primary would not
    /// serve them better).
    fn waited_on_full_pool(r: &Replica<M>, e: &Error) -> bool {
        let waited = matches!(
            e,
            Error::Timeout {
                operation: Operation::Acquire | Operation::Ping | Operation::Query,
                ..
            } | Error::Database {
                operation: Operation::Acquire,
                kind: ErrorKind::Transient,
                ..
            }
        );
        waited && r.member.saturated()
    }

    /// Whether replica `i` is due a check: banned and its probe time came, or not banned and
    /// its last check is `check_interval` old.
    fn due(&self, i: usize) -> bool {
        let Some(r) = self.replicas.get(i) else {
            return false;
        };
        let now = self.now();
        if r.banned.load(Relaxed) {
            return now >= r.probe_at.load(Relaxed);
        }
        let interval = u64::try_from(self.policy.check_interval.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_sub(r.checked_at.load(Relaxed)) >= interval
    }

    /// The replica a read goes to under the read policy, if any is usable.
    fn pick(&self) -> Option<usize> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let usable = |i: &usize| self.replicas[*i].usable();
        let rotation = |start: usize| (0..n).map(move |k| (start + k) % n);
        match self.policy.read_policy {
            ReadPolicy::Random => rotation(rand::random::<u32>() as usize % n).find(usable),
            ReadPolicy::LeastInUse => {
                let start = self.next.fetch_add(1, Relaxed) % n;
                rotation(start)
                    .filter(usable)
                    .min_by_key(|i| self.replicas[*i].in_flight.load(Relaxed))
            }
            ReadPolicy::LowestLatency => (0..n)
                .filter(usable)
                .min_by_key(|i| self.replicas[*i].latency_nanos.load(Relaxed)),
            _ => rotation(self.next.fetch_add(1, Relaxed) % n).find(usable),
        }
    }

    /// Why no replica is usable, for the error of `replica_fallback: error`.
    fn none_usable(&self) -> Error {
        let reasons: Vec<String> = self
            .replicas
            .iter()
            .map(|r| {
                let state = if r.banned.load(Relaxed) {
                    "banned"
                } else if r.lagging.load(Relaxed) {
                    "lagging"
                } else {
                    "not open"
                };
                match r.last_error.load_full() {
                    Some(why) if state != "not open" => {
                        format!("{} {state}: {why}", r.member.member_name())
                    }
                    _ => format!("{} {state}", r.member.member_name()),
                }
            })
            .collect();
        Error::Refused {
            connection: self.name.to_string(),
            operation: Operation::Query,
            reason: format!(
                "no replica is usable for reads ({}) and replica_fallback is `error`",
                reasons.join(", ")
            ),
        }
    }

    /// The member a read goes to now: a usable replica by the policy, else per
    /// `replica_fallback` (`Ok(None)`: the primary). For `Connection::reader()`.
    pub(crate) fn reader(&self) -> Result<Option<&M>> {
        match self.pick() {
            Some(i) => {
                self.counters.to_replica.fetch_add(1, Relaxed);
                self.replicas[i].reads.fetch_add(1, Relaxed);
                Ok(Some(&self.replicas[i].member))
            }
            None => self.fall_back().map(|()| None),
        }
    }

    fn fall_back(&self) -> Result<()> {
        match self.policy.fallback {
            ReplicaFallback::Error => {
                self.counters.fallback_error.fetch_add(1, Relaxed);
                Err(self.none_usable())
            }
            _ => {
                self.counters.fallback_primary.fetch_add(1, Relaxed);
                Ok(())
            }
        }
    }

    /// Each replica's state, paired with its member.
    pub(crate) fn replica_stats(&self) -> Vec<(&M, ReplicaStats)> {
        self.replicas
            .iter()
            .map(|r| {
                let lag = r.lag_nanos.load(Relaxed);
                let latency = r.latency_nanos.load(Relaxed);
                (
                    &r.member,
                    ReplicaStats {
                        member_of: self.name.to_string(),
                        host: r.host.clone(),
                        port: r.port,
                        banned: r.banned.load(Relaxed),
                        bans_total: r.bans_total.load(Relaxed),
                        lagging: r.lagging.load(Relaxed),
                        lag: (lag != LAG_UNKNOWN).then(|| Duration::from_nanos(lag)),
                        latency: (latency != 0).then(|| Duration::from_nanos(latency)),
                        reads: r.reads.load(Relaxed),
                        in_flight: r.in_flight.load(Relaxed),
                        last_error: r.last_error.load_full().map(|e| e.to_string()),
                    },
                )
            })
            .collect()
    }

    /// The routing decisions so far.
    pub(crate) fn routing_stats(&self) -> RoutingStats {
        let c = &self.counters;
        RoutingStats {
            read_policy: self.policy.read_policy.as_str().to_owned(),
            to_replica: c.to_replica.load(Relaxed),
            read_your_writes: c.read_your_writes.load(Relaxed),
            not_select: c.not_select.load(Relaxed),
            fallback_primary: c.fallback_primary.load(Relaxed),
            fallback_error: c.fallback_error.load(Relaxed),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<M: Member> ReadRouter for ReplicaSet<M> {
    fn route(&self, wrote_at: &AtomicU64, select: bool) -> Result<ReadRoute<'_>> {
        if !select {
            self.counters.not_select.fetch_add(1, Relaxed);
            self.wrote(wrote_at);
            return Ok(ReadRoute::Primary);
        }
        if !self.policy.read_your_writes.is_zero() {
            let at = wrote_at.load(Relaxed);
            let window = u64::try_from(self.policy.read_your_writes.as_nanos()).unwrap_or(u64::MAX);
            if at != 0 && self.now().saturating_sub(at) < window {
                self.counters.read_your_writes.fetch_add(1, Relaxed);
                return Ok(ReadRoute::Primary);
            }
        }
        let Some(i) = self.pick() else {
            self.fall_back()?;
            return Ok(ReadRoute::Primary);
        };
        let r = &self.replicas[i];
        let Some(handle) = r.handle.get() else {
            self.fall_back()?;
            return Ok(ReadRoute::Primary);
        };
        self.counters.to_replica.fetch_add(1, Relaxed);
        r.reads.fetch_add(1, Relaxed);
        r.in_flight.fetch_add(1, Relaxed);
        Ok(ReadRoute::Replica { index: i, handle })
    }

    fn wrote(&self, wrote_at: &AtomicU64) {
        if !self.policy.read_your_writes.is_zero() {
            // 0 means "never": a write at the very origin is recorded as 1 ns after it.
            wrote_at.store(self.now().max(1), Relaxed);
        }
    }

    fn finished(&self, index: usize, took: Duration, error: Option<&Error>) {
        let Some(r) = self.replicas.get(index) else {
            return;
        };
        match error {
            Some(e) if self.means_replica_down(r, e) => self.ban(r, e),
            _ => r.observe_latency(took),
        }
    }

    fn released(&self, index: usize) {
        if let Some(r) = self.replicas.get(index) {
            r.in_flight.fetch_sub(1, Relaxed);
        }
    }
}
