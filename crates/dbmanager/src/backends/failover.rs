//! A pool over a list of servers (`hosts:`), with libpq's `target_session_attrs` semantics,
//! whatever the driver: the pool connects to the first server that qualifies (with
//! `read-write`, one that accepts writes), and after a failover (the primary gone, a standby
//! promoted) points its new connections at the new server. What a driver supplies is how to
//! reach one server ([`Dialer`]) and how to point its pool elsewhere ([`SwitchTarget`]); the
//! sqlx flavors (`backends/sqlx/failover.rs`) and tokio-postgres
//! (`backends/tokio_postgres/failover.rs`) share everything else here:
//!
//! - **finding** the server: every candidate is probed at once, each with a direct connection
//!   bounded by `connect_timeout`; the current server wins if it qualifies, else the first
//!   qualifying one in list order (as libpq, without waiting on dead servers one by one);
//! - **when**: a probe is requested (never awaited, [`Failover::request_probe`]) by any error
//!   that may mean the server is gone or read-only: a failed connect or checkout, an I/O error,
//!   a shutdown or read-only error from the server, a failed health ping, or a new connection
//!   that turns out read-only. A background task per pool ([`Failover::spawn`]) probes, with
//!   backoff while no server qualifies, until one does; rounds are at least
//!   [`PROBE_MIN_INTERVAL`] apart;
//! - **after a switch**: new connections go to the new server; connections opened before the
//!   switch are refused at their next checkout or release ([`Failover::is_stale`]: they may be
//!   on a server that became read-only); with `read-write`, each new connection is checked
//!   before use (one round trip per physical connection, as libpq does) and a read-only one is
//!   closed. `current_host` and `host_switches` in the stats report the server and the switches.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;

use crate::config::TargetSessionAttrs;
use crate::credentials::{CredentialSource, Resolved};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::hosts::Server;
use crate::stats::PoolCounters;

/// The first wait between probes while no server qualifies; it doubles up to
/// [`PROBE_MAX_WAIT`].
const PROBE_FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between probes while no server qualifies: how late, at most, a promotion
/// is noticed once it happened.
const PROBE_MAX_WAIT: Duration = Duration::from_secs(1);
/// The shortest time between two probe rounds: a burst of errors costs one more round, not
/// one per error.
const PROBE_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What a backend hands to its pool for a server list: each server as shown (`host:port`) with
/// complete connect options (`O`, the driver's) for it.
pub(crate) struct FailoverPlan<O> {
    pub candidates: Vec<(Arc<str>, O)>,
    /// `target_session_attrs=read-write`: only a server that accepts writes qualifies.
    pub require_writable: bool,
}

impl<O> FailoverPlan<O> {
    /// The plan of a connection: its server list (`servers`; `None` without one) and
    /// `target_session_attrs`. `None` when there is nothing to choose from and nothing to check.
    /// `only` is the connection's one server when it has no list; `at` makes the options for
    /// one server.
    pub(crate) fn build(
        servers: Option<Vec<Server>>,
        attrs: Option<TargetSessionAttrs>,
        only: Server,
        mut at: impl FnMut(&Server) -> O,
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
pub(crate) enum Probe<C> {
    /// It qualifies; here is a connection to it.
    Qualifies(C),
    /// It answers but does not accept writes (asked only with `read-write`).
    ReadOnly,
    /// Why not, classified, without the connection name (the error around it has it).
    Failed(ErrorKind, String),
}

/// How a driver reaches one server of the list.
pub(crate) trait Dialer: Send + Sync + 'static {
    /// The driver's connect options for one server.
    type Options: Clone + Send + Sync + 'static;
    /// A direct connection, outside the pool.
    type Conn: Send + 'static;

    /// `options` logging in with `credentials`.
    fn with_credentials(options: Self::Options, credentials: &Resolved) -> Self::Options;

    /// Connects with `options` and, when `require_writable`, asks whether the server accepts
    /// writes (closing the connection when it does not). The caller bounds the time.
    fn probe<'a>(
        &'a self,
        options: &'a Self::Options,
        require_writable: bool,
    ) -> impl Future<Output = Probe<Self::Conn>> + Send + 'a;

    /// Closes a connection a probe opened and nobody needs.
    fn close(conn: Self::Conn) -> impl Future<Output = ()> + Send;
}

/// The pool a probe task serves.
pub(crate) trait SwitchTarget<O>: Send + Sync + 'static {
    /// Whether the pool is still open (once it is closed or dropped, the probe task ends).
    fn is_open(&self) -> bool;

    /// Points the pool's new connections at `options` (a pool that asks the [`Failover`] for
    /// the current server at each connect has nothing to do).
    fn point_at(&self, options: O);
}

/// The server list of one pool and which server its new connections go to.
pub(crate) struct Failover<D: Dialer> {
    name: Arc<str>,
    /// The connection's `enable_logging`.
    log: bool,
    dialer: D,
    candidates: Vec<(Arc<str>, D::Options)>,
    require_writable: bool,
    /// Index into `candidates` of the server new connections go to.
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

impl<D: Dialer> Failover<D> {
    pub(crate) fn new(
        name: &Arc<str>,
        log: bool,
        dialer: D,
        plan: FailoverPlan<D::Options>,
        counters: &Arc<PoolCounters>,
        credentials: &Arc<CredentialSource>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            name: name.clone(),
            log,
            dialer,
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

    /// The index of the server new connections go to.
    pub(crate) fn current_index(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    fn label(&self, index: usize) -> Arc<str> {
        self.candidates
            .get(index)
            .map_or_else(|| Arc::from("?"), |(label, _)| label.clone())
    }

    /// The current server and its options as built at open (without current credentials).
    pub(crate) fn current_options(&self) -> (usize, D::Options) {
        let index = self
            .current_index()
            .min(self.candidates.len().saturating_sub(1));
        (index, self.candidates[index].1.clone())
    }

    /// `index`'s options with the credentials current now (those the options were built with
    /// when the source cannot answer: a probe or a switch never fails on the provider).
    pub(crate) async fn options(&self, index: usize) -> D::Options {
        let options = self.candidates[index].1.clone();
        match self.credentials.current().await {
            Ok((resolved, _)) => D::with_credentials(options, &resolved),
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

    /// Asks the probe task for a round. Never waits; a no-op without another server.
    pub(crate) fn request_probe(&self) {
        if self.has_alternatives() {
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

    /// The error a new pooled connection gets when its server turned out read-only (with
    /// `read-write`); a probe is requested, and the pool's next attempt goes where the probe
    /// points it.
    pub(crate) fn refuse_read_only(&self) -> &'static str {
        self.request_probe();
        "the server does not accept writes (target_session_attrs=read-write); looking for the primary"
    }

    /// Probes every server at once and returns the one to use with a connection to it: the
    /// current one if it qualifies, else the first that does in list order. Every probe is
    /// bounded by `connect_timeout`. The error lists how each server answered.
    pub(crate) async fn find(&self) -> Result<(usize, D::Conn)> {
        let current = self.current_index();
        // Current first, then list order.
        let order: Vec<usize> = std::iter::once(current)
            .chain((0..self.candidates.len()).filter(|&i| i != current))
            .collect();
        let mut answers: Vec<Option<Probe<D::Conn>>> =
            (0..self.candidates.len()).map(|_| None).collect();
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
                                D::close(other).await;
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

    async fn probe(&self, index: usize) -> Probe<D::Conn> {
        let options = self.options(index).await;
        let attempt = self.dialer.probe(&options, self.require_writable);
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(answer) => answer,
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
    fn none_qualifies(&self, answers: Vec<Option<Probe<D::Conn>>>) -> Error {
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
    /// refused at their next checkout or release.
    async fn switch(&self, target: &impl SwitchTarget<D::Options>, to: usize) {
        let options = self.options(to).await;
        // The index first: a credential refresh that read the old one then sees it changed and
        // installs the new server's options again (see `sqlx::credentials::Refresher::refresh`).
        let from = self.current.swap(to, Ordering::AcqRel);
        target.point_at(options);
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
    /// dropped; the pool's close also aborts it.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        target: impl SwitchTarget<D::Options>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.wanted.notified().await;
                let mut wait = PROBE_FIRST_WAIT;
                let mut failing = false;
                loop {
                    if !target.is_open() {
                        return;
                    }
                    match this.find().await {
                        Ok((index, conn)) => {
                            D::close(conn).await;
                            if index != this.current_index() {
                                this.switch(&target, index).await;
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

#[cfg(test)]
mod tests {
    //! The choice among answers and the switch bookkeeping, with scripted answers (the
    //! behaviour on real servers is `tests/failover.rs`, on both PostgreSQL drivers).

    use std::sync::Mutex;

    use super::*;
    use crate::config::{ConnectionConfig, DatabaseType};

    /// How a scripted server answers a probe, after `delay`.
    #[derive(Clone, Copy)]
    enum Answer {
        Writable,
        ReadOnly,
        Refused(ErrorKind),
    }

    /// Options are the server's index; a connection is the index it reached.
    struct Scripted(Mutex<Vec<(Duration, Answer)>>);

    impl Dialer for Scripted {
        type Options = usize;
        type Conn = usize;

        fn with_credentials(options: usize, _credentials: &Resolved) -> usize {
            options
        }

        async fn probe(&self, options: &usize, require_writable: bool) -> Probe<usize> {
            let (delay, answer) = self.0.lock().unwrap()[*options];
            tokio::time::sleep(delay).await;
            match answer {
                Answer::Writable => Probe::Qualifies(*options),
                Answer::ReadOnly if require_writable => Probe::ReadOnly,
                Answer::ReadOnly => Probe::Qualifies(*options),
                Answer::Refused(kind) => Probe::Failed(kind, "refused".to_owned()),
            }
        }

        async fn close(_conn: usize) {}
    }

    /// Records where the pool was pointed.
    #[derive(Clone, Default)]
    struct Target(Arc<Mutex<Vec<usize>>>);

    impl SwitchTarget<usize> for Target {
        fn is_open(&self) -> bool {
            true
        }

        fn point_at(&self, options: usize) {
            self.0.lock().unwrap().push(options);
        }
    }

    fn failover(
        answers: &[(u64, Answer)],
        attrs: Option<TargetSessionAttrs>,
    ) -> Failover<Scripted> {
        let servers: Vec<Server> = (0..answers.len())
            .map(|i| Server {
                host: format!("db-{i}"),
                port: 5432,
            })
            .collect();
        let only = servers[0].clone();
        let mut next = 0..;
        let plan = FailoverPlan::build(Some(servers), attrs, only, |_| next.next().unwrap_or(0))
            .expect("a list is a plan");
        let c = ConnectionConfig::new("t", DatabaseType::Postgres);
        let name: Arc<str> = Arc::from("t");
        let credentials = Arc::new(CredentialSource::new(
            &name,
            &c,
            None,
            None,
            Duration::from_secs(1),
        ));
        let script = answers
            .iter()
            .map(|&(ms, answer)| (Duration::from_millis(ms), answer))
            .collect();
        Failover::new(
            &name,
            false,
            Scripted(Mutex::new(script)),
            plan,
            &Arc::default(),
            &credentials,
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn list_order_decides_unless_the_current_server_qualifies() {
        use Answer::*;
        // The second server answers last but comes before the third in the list.
        let f = failover(&[(0, ReadOnly), (50, Writable), (0, Writable)], None);
        assert!(f.require_writable(), "read-write by default for a list");
        assert_eq!(f.find().await.map(|(i, _)| i).ok(), Some(1));
        // The current server wins over an earlier one in the list.
        f.start_on(2);
        assert_eq!(f.find().await.map(|(i, _)| i).ok(), Some(2));
        assert_eq!(
            f.counters
                .current_host
                .load()
                .as_deref()
                .map(String::as_str),
            Some("db-2:5432")
        );
        // `any`: a standby answers, so the first server qualifies.
        let any = failover(
            &[(0, ReadOnly), (0, Writable)],
            Some(TargetSessionAttrs::Any),
        );
        assert_eq!(any.find().await.map(|(i, _)| i).ok(), Some(0));
    }

    #[tokio::test]
    async fn no_server_qualifying_is_transient_unless_every_server_refuses_for_good() {
        use Answer::*;
        let f = failover(&[(0, ReadOnly), (0, Refused(ErrorKind::Transient))], None);
        let err = f.find().await.expect_err("nothing qualifies");
        assert_eq!(err.kind(), ErrorKind::Transient);
        let text = err.to_string();
        assert!(text.contains("no server of 2 accepts writes"), "{text}");
        assert!(text.contains("db-0:5432: does not accept writes"), "{text}");
        assert!(text.contains("db-1:5432: refused"), "{text}");
        let f = failover(
            &[
                (0, Refused(ErrorKind::Authentication)),
                (0, Refused(ErrorKind::Authentication)),
            ],
            None,
        );
        let err = f.find().await.expect_err("nothing qualifies");
        assert_eq!(err.kind(), ErrorKind::Authentication);
    }

    #[tokio::test]
    async fn a_requested_probe_switches_and_connections_opened_before_are_stale() {
        use Answer::*;
        let f = Arc::new(failover(&[(0, Writable), (0, ReadOnly)], None));
        f.start_on(0);
        let target = Target::default();
        let task = f.spawn(target.clone());
        let opened_before = Instant::now();
        assert!(!f.is_stale(opened_before.elapsed()), "no switch yet");
        // The first server leaves, the second is promoted.
        f.dialer.0.lock().unwrap()[0].1 = Refused(ErrorKind::Transient);
        f.dialer.0.lock().unwrap()[1].1 = Writable;
        f.request_probe();
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.counters.host_switches.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no switch");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        assert_eq!(f.current_index(), 1);
        assert_eq!(*target.0.lock().unwrap(), [1]);
        assert_eq!(
            f.counters
                .current_host
                .load()
                .as_deref()
                .map(String::as_str),
            Some("db-1:5432")
        );
        assert!(f.is_stale(opened_before.elapsed()));
        assert!(!f.is_stale(Duration::ZERO), "opened after the switch");
    }
}
