//! A sqlx pool over a list of servers (`hosts:`), with libpq's `target_session_attrs`
//! semantics: the pool connects to the first server that accepts writes, and after a failover
//! (the primary gone, a standby promoted) points its new connections at the new primary.
//!
//! sqlx's connect options name one server, and a pool re-reads them before every connect
//! attempt (`Pool::set_connect_options`), so one pool serves the whole life of the connection
//! and every handle on it (neutral handle, native pool, SeaORM) follows a switch:
//!
//! - **finding** the server: every candidate is probed at once, each with a direct connection
//!   bounded by `connect_timeout`; the current server wins if it qualifies, else the first
//!   qualifying one in list order (as libpq, without waiting on dead servers one by one);
//! - **when**: a probe is requested (never awaited) by any error that may mean the server is
//!   gone or read-only: a failed connect or checkout, an I/O error, a shutdown or read-only
//!   error from the server, a failed health ping, or a new connection that turns out read-only.
//!   A background task per pool probes, with backoff while no server qualifies, until one does;
//! - **after a switch**: checkouts already waiting connect to the new server on their next
//!   attempt; connections opened before the switch are closed at their next checkout or release
//!   (they may be on a server that became read-only); with `read-write`, each new connection
//!   is checked before use (one round trip per physical connection, as libpq does) and a
//!   read-only one is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use sqlx::{Connection as _, Database, Pool};
use tokio::sync::Notify;

use super::{SqlxFlavor, classify};
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::stats::PoolCounters;

type Options<F> = <<<F as SqlxFlavor>::DB as Database>::Connection as sqlx::Connection>::Options;
type Conn<F> = <<F as SqlxFlavor>::DB as Database>::Connection;

/// The first wait between probes while no server qualifies; it doubles up to
/// [`PROBE_MAX_WAIT`].
const PROBE_FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between probes while no server qualifies: how late, at most, a promotion
/// is noticed once it happened.
const PROBE_MAX_WAIT: Duration = Duration::from_secs(1);
/// The shortest time between two probe rounds: a burst of errors costs one more round, not
/// one per error.
const PROBE_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What a flavor's backend hands to [`super::open`] for a server list.
pub(crate) struct FailoverPlan<DB: Database> {
    /// Each server as shown (`host:port`) with complete connect options for it.
    pub candidates: Vec<(Arc<str>, <DB::Connection as sqlx::Connection>::Options)>,
    /// `target_session_attrs=read-write`: only a server that accepts writes qualifies.
    pub require_writable: bool,
}

impl<DB: Database> FailoverPlan<DB> {
    /// The plan of a connection: its server list (`servers`; `None` without one) and
    /// `target_session_attrs`. `None` when there is nothing to choose from and nothing to check.
    /// `only` is the connection's one server when it has no list; `at` makes the options for
    /// one server.
    pub(crate) fn build(
        servers: Option<Vec<crate::hosts::Server>>,
        attrs: Option<crate::config::TargetSessionAttrs>,
        only: crate::hosts::Server,
        at: impl Fn(&crate::hosts::Server) -> <DB::Connection as sqlx::Connection>::Options,
    ) -> Option<Self> {
        let count = servers.as_ref().map_or(1, Vec::len);
        let require_writable = crate::hosts::require_writable(attrs, count);
        if servers.is_none() && !require_writable {
            return None;
        }
        let servers = servers.unwrap_or_else(|| vec![only]);
        let candidates = servers
            .iter()
            .map(|server| (Arc::from(server.to_string()), at(server)))
            .collect();
        Some(Self {
            candidates,
            require_writable,
        })
    }
}

/// How one candidate answered a probe.
enum Probe<F: SqlxFlavor> {
    Qualifies(Conn<F>),
    ReadOnly,
    /// Why not, classified, without the connection name (the error around it has it).
    Failed(ErrorKind, String),
}

/// The server list of one pool and which server its options point at.
pub(crate) struct Failover<F: SqlxFlavor> {
    name: Arc<str>,
    /// The connection's `enable_logging`.
    log: bool,
    candidates: Vec<(Arc<str>, Options<F>)>,
    require_writable: bool,
    /// Index into `candidates` of the server the pool's options point at.
    current: AtomicUsize,
    /// When this failover began; `switched_at` counts from here.
    born: Instant,
    /// Nanoseconds from `born` to the last switch (0: none yet). A connection opened before it
    /// may be on the old server.
    switched_at: AtomicU64,
    /// Woken by anything that asks for a probe.
    wanted: Notify,
    counters: Arc<PoolCounters>,
    credentials: Arc<CredentialSource>,
    connect_timeout: Duration,
}

impl<F: SqlxFlavor> Failover<F> {
    pub(crate) fn new(
        name: &Arc<str>,
        log: bool,
        plan: FailoverPlan<F::DB>,
        counters: &Arc<PoolCounters>,
        credentials: &Arc<CredentialSource>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            name: name.clone(),
            log,
            candidates: plan.candidates,
            require_writable: plan.require_writable,
            current: AtomicUsize::new(0),
            born: Instant::now(),
            switched_at: AtomicU64::new(0),
            wanted: Notify::new(),
            counters: counters.clone(),
            credentials: credentials.clone(),
            connect_timeout,
        }
    }

    /// Whether there is another server to switch to (else no probe task is needed).
    pub(crate) fn has_alternatives(&self) -> bool {
        self.candidates.len() > 1
    }

    /// Whether new connections must accept writes.
    pub(crate) fn require_writable(&self) -> bool {
        self.require_writable
    }

    fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    fn label(&self, index: usize) -> Arc<str> {
        self.candidates
            .get(index)
            .map_or_else(|| Arc::from("?"), |(label, _)| label.clone())
    }

    /// The current server and its options as built at open (the credential refresher sets
    /// new credentials on a copy).
    pub(crate) fn current_options(&self) -> (usize, Options<F>) {
        let index = self.current().min(self.candidates.len().saturating_sub(1));
        (index, self.candidates[index].1.clone())
    }

    /// The index of the server the pool's options point at.
    pub(crate) fn current_index(&self) -> usize {
        self.current()
    }

    /// `index`'s options with the credentials current now (those the options were built with
    /// when the source cannot answer: a probe or a switch never fails on the provider).
    pub(crate) async fn options(&self, index: usize) -> Options<F> {
        let options = self.candidates[index].1.clone();
        match self.credentials.current().await {
            Ok((resolved, _)) => F::with_credentials(options, &resolved),
            Err(_) => options,
        }
    }

    /// Records `index` as the server the pool starts on (after [`Failover::find`] at open).
    pub(crate) fn start_on(&self, index: usize) {
        self.current.store(index, Ordering::Release);
        self.counters
            .current_host
            .store(Some(Arc::new(self.label(index).to_string())));
    }

    /// Asks for a probe when `e` may mean the server is gone or no longer accepts writes.
    /// Never waits.
    pub(crate) fn observe(&self, e: &sqlx::Error) {
        if self.has_alternatives() && may_mean_failover::<F>(e) {
            self.wanted.notify_one();
        }
    }

    /// Asks for a probe when a failed checkout from `pool` may mean the server is gone: not
    /// when every connection of a full pool is checked out (a timeout then says the pool is
    /// too small, not that the server left).
    pub(crate) fn observe_checkout(&self, e: &Error, pool: &Pool<F::DB>) {
        let saturated = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
        if self.has_alternatives() && e.kind() == ErrorKind::Transient && !saturated {
            self.wanted.notify_one();
        }
    }

    /// Whether a pooled connection of this `age` was opened before the last switch, so may be
    /// on the old server: it is closed instead of handed out or kept.
    pub(crate) fn is_stale(&self, age: Duration) -> bool {
        let switched = self.switched_at.load(Ordering::Acquire);
        if switched == 0 {
            return false;
        }
        let Some(opened) = Instant::now().checked_sub(age) else {
            return false;
        };
        let opened = u64::try_from(opened.saturating_duration_since(self.born).as_nanos())
            .unwrap_or(u64::MAX);
        opened < switched
    }

    /// Checks a new pooled connection (the pool's after-connect): with `read-write`, a
    /// read-only server's connection is refused (the pool then tries again, on the options a
    /// probe will have pointed elsewhere).
    pub(crate) async fn check_new(
        &self,
        conn: &mut Conn<F>,
    ) -> std::result::Result<(), sqlx::Error> {
        if !self.require_writable || F::is_writable(conn).await? {
            return Ok(());
        }
        self.wanted.notify_one();
        Err(sqlx::Error::Protocol(
            "the server does not accept writes (target_session_attrs=read-write); looking for the primary"
                .into(),
        ))
    }

    /// Probes every server at once and returns the one to use with a connection to it: the
    /// current one if it qualifies, else the first that does in list order. Every probe is
    /// bounded by `connect_timeout`. The error lists how each server answered.
    pub(crate) async fn find(&self) -> Result<(usize, Conn<F>)> {
        let current = self.current();
        // Current first, then list order.
        let order: Vec<usize> = std::iter::once(current)
            .chain((0..self.candidates.len()).filter(|&i| i != current))
            .collect();
        let mut answers: Vec<Option<Probe<F>>> = (0..self.candidates.len()).map(|_| None).collect();
        let mut probes: FuturesUnordered<_> = (0..self.candidates.len())
            .map(|i| async move { (i, self.probe(i).await) })
            .collect();
        while let Some((i, answer)) = probes.next().await {
            answers[i] = Some(answer);
            for &candidate in &order {
                match &answers[candidate] {
                    // Still waiting on a server that would win.
                    None => break,
                    Some(Probe::Qualifies(_)) => {
                        let Some(Probe::Qualifies(conn)) = answers[candidate].take() else {
                            break;
                        };
                        drop(probes);
                        for answer in answers.into_iter().flatten() {
                            if let Probe::Qualifies(other) = answer {
                                let _ = other.close().await;
                            }
                        }
                        return Ok((candidate, conn));
                    }
                    Some(_) => {}
                }
            }
        }
        Err(self.none_qualifies(answers))
    }

    async fn probe(&self, index: usize) -> Probe<F> {
        let options = self.options(index).await;
        let attempt = async {
            let mut conn = Conn::<F>::connect_with(&options).await?;
            if self.require_writable && !F::is_writable(&mut conn).await? {
                let _ = conn.close().await;
                return Ok(None);
            }
            Ok(Some(conn))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(Some(conn))) => Probe::Qualifies(conn),
            Ok(Ok(None)) => Probe::ReadOnly,
            Ok(Err(e)) => Probe::Failed(classify::<F>(&e), e.to_string()),
            Err(_) => Probe::Failed(
                ErrorKind::Transient,
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.connect_timeout)
                ),
            ),
        }
    }

    /// The error when no server qualifies: each server's answer, in list order. Transient
    /// (retried) unless every server refused for a reason a retry does not fix (a wrong
    /// password everywhere).
    fn none_qualifies(&self, answers: Vec<Option<Probe<F>>>) -> Error {
        let mut kinds = Vec::new();
        let mut lines = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            let label = self.label(i);
            let (kind, what) = match answer {
                Some(Probe::ReadOnly) => (
                    ErrorKind::Transient,
                    "does not accept writes (a standby or read-only)".to_owned(),
                ),
                Some(Probe::Failed(kind, text)) => (kind, text),
                _ => (ErrorKind::Transient, "no answer".to_owned()),
            };
            kinds.push(kind);
            lines.push(format!("{label}: {what}"));
        }
        let kind = match kinds.first() {
            Some(&first) if kinds.iter().all(|k| *k != ErrorKind::Transient) => first,
            _ => ErrorKind::Transient,
        };
        let wanted = if self.require_writable {
            "accepts writes"
        } else {
            "answers"
        };
        Error::database(
            &self.name,
            Operation::Connect,
            kind,
            format!(
                "no server of {} {wanted} ({})",
                self.candidates.len(),
                lines.join("; ")
            ),
        )
    }

    /// Points the pool at `to`: new connections go there, connections opened before are
    /// closed at their next checkout or release.
    async fn switch(&self, pool: &Pool<F::DB>, to: usize) {
        let options = self.options(to).await;
        // The index first: a credential refresh that read the old one then sees it changed and
        // installs the new server's options again (see `credentials::Refresher::refresh`).
        let from = self.current.swap(to, Ordering::AcqRel);
        pool.set_connect_options(options);
        let now = u64::try_from(self.born.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.switched_at.store(now, Ordering::Release);
        self.counters.host_switches.fetch_add(1, Ordering::Relaxed);
        let (from, to) = (self.label(from), self.label(to));
        self.counters
            .current_host
            .store(Some(Arc::new(to.to_string())));
        if self.log {
            tracing::warn!(connection = %self.name, from = %from, to = %to, "server switched: new connections go to the new server");
        }
    }

    /// The probe task: waits for a request, probes (again and again, with backoff, while no
    /// server qualifies), switches when another server does. Ends when the pool is closed or
    /// dropped (the slot is cleared then); the pool's close also aborts it.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        slot: super::hooks::PoolSlot<F::DB>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.wanted.notified().await;
                let mut wait = PROBE_FIRST_WAIT;
                let mut failing = false;
                loop {
                    let Some(pool) = slot.load_full() else {
                        return;
                    };
                    if pool.is_closed() {
                        return;
                    }
                    match this.find().await {
                        Ok((index, conn)) => {
                            let _ = conn.close().await;
                            if index != this.current() {
                                this.switch(&pool, index).await;
                            } else if failing && this.log {
                                tracing::info!(connection = %this.name, server = %this.label(index), "server answers again");
                            }
                            break;
                        }
                        Err(e) => {
                            // Once per failing stretch, not every probe.
                            if !failing && this.log {
                                tracing::warn!(connection = %this.name, error = %e, "no server to switch to yet; probing again");
                            }
                            failing = true;
                            drop(pool);
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(PROBE_MAX_WAIT);
                        }
                    }
                }
                tokio::time::sleep(PROBE_MIN_INTERVAL).await;
            }
        })
    }
}

/// Whether `e` may mean the pool's server is gone or no longer accepts writes: connection
/// failures, a checkout that timed out, and the server errors the flavor names (shutdown,
/// read-only transaction).
fn may_mean_failover<F: SqlxFlavor>(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => F::means_failover(db.as_ref()),
        other => classify::<F>(other) == ErrorKind::Transient,
    }
}
