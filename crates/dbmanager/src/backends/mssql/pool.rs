//! SQL Server: tiberius clients in a bb8 pool, with the cheap/expensive check split, the idle
//! cap enforced on release, and bb8's statistics mapped onto the crate's stats.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tiberius::{Config, SqlBrowser as _};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt as _};

use super::sql::HookClient;
use super::tiberius_error;
use crate::backends::LIVENESS_WINDOW;
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::hooks::HookRunner;
use crate::stats::{DriverCounts, PoolGauges};

/// The tiberius client type the pool holds.
pub type TiberiusClient = tiberius::Client<Compat<TcpStream>>;

/// A pooled client plus what the pool needs to know about it.
pub struct MssqlClient {
    pub(super) client: TiberiusClient,
    /// When the physical connection was opened.
    pub(super) created: Instant,
    pub(super) last_used: Instant,
    /// Set while an operation is in flight (a cancelled one leaves the stream mid-response)
    /// and when the release must close the connection; bb8 then discards it.
    pub(super) broken: bool,
    /// The client was lent to the caller through [`MssqlConnection`]'s `DerefMut` (the native
    /// layer) since it was last checked: an operation there may have been abandoned mid-way or
    /// left a transaction open, which the library cannot see, so the next checkout checks it.
    pub(super) lent: bool,
}

/// bb8 manager for tiberius 0.13. A new connection goes through the application's
/// after-connect hook ([`crate::Hooks`]) before bb8 pools it.
#[derive(Debug)]
pub struct MssqlManager {
    pub(super) config: Config,
    /// Where each new connection's login comes from, when it can change (`password_file`, a
    /// credential provider): read in `connect`, the file only when it changed.
    pub(super) credentials: Option<Arc<CredentialSource>>,
    pub(super) hooks: HookRunner,
    /// Connections whose after-connect hook failed (closed before bb8 counted them).
    pub(super) hook_failed: Arc<AtomicU64>,
    /// The last failure to resolve the credentials (shared with the pool).
    pub(super) credential_failures: Arc<CredentialFailures>,
}

/// The last time a new connection could not get credentials (an unreadable `password_file`, a
/// failing provider), and why. bb8 retries the connect until the checkout times out and then
/// reports only a timeout: a checkout that timed out meanwhile reports this instead, with its
/// own kind (`Credentials`, `Configuration`), as the sqlx backends do.
#[derive(Debug, Default)]
pub(super) struct CredentialFailures(Mutex<Option<(Instant, ErrorKind, String)>>);

impl CredentialFailures {
    fn record(&self, error: &Error) {
        let (kind, message) = match error {
            Error::Database { kind, source, .. } => (*kind, source.to_string()),
            other => (other.kind(), other.to_string()),
        };
        if let Ok(mut last) = self.0.lock() {
            *last = Some((Instant::now(), kind, message));
        }
    }

    /// `error` (of a checkout that started at `since`), or the credential failure behind it.
    fn explain(&self, name: &str, error: Error, since: Instant) -> Error {
        if error.kind() != ErrorKind::Transient {
            return error;
        }
        let last = self.0.lock().ok().and_then(|last| last.clone());
        match last {
            Some((at, kind, message)) if at >= since => {
                Error::database(name, Operation::Connect, kind, message)
            }
            _ => error,
        }
    }
}

impl MssqlManager {
    /// Opens a client logging in with the current credentials: read from the source (the file
    /// only when it changed, the provider's cached answer) when they can change, else the
    /// config's. A source that fails (an unreadable file, a failing provider) fails this
    /// connect; bb8 keeps the message as the last error. A refused login makes the source
    /// resolve again next time.
    pub(super) async fn open_with_credentials(&self) -> tiberius::Result<TiberiusClient> {
        let Some(source) = &self.credentials else {
            return open_client(&self.config).await;
        };
        let (credentials, _) = source.current().await.map_err(|e| {
            self.credential_failures.record(&e);
            tiberius::error::Error::Protocol(e.to_string().into())
        })?;
        let mut config = self.config.clone();
        super::config::authenticate(&mut config, &credentials);
        let outcome = open_client(&config).await;
        // A server error while logging in is a refused login.
        if matches!(outcome, Err(tiberius::error::Error::Server(_))) {
            source.invalidate();
        }
        outcome
    }

    /// Opens a client and runs the after-connect hook on it; a client whose hook fails is
    /// closed and the hook's error returned.
    pub(super) async fn open(&self) -> Result<MssqlClient> {
        let mut client = self
            .open_with_credentials()
            .await
            .map_err(|e| super::login_error(self.hooks.name(), e))?;
        let mut view = HookClient {
            name: self.hooks.name(),
            client: &mut client,
            out_of_step: false,
        };
        if let Err(e) = self.hooks.after_connect(&mut view).await {
            self.hook_failed.fetch_add(1, Relaxed);
            let _ = client.close().await;
            return Err(e);
        }
        let now = Instant::now();
        Ok(MssqlClient {
            client,
            created: now,
            last_used: now,
            broken: false,
            lent: false,
        })
    }
}

pub(super) async fn open_client(config: &Config) -> tiberius::Result<TiberiusClient> {
    // Resolves a named instance through the SQL Server Browser, else connects to host:port.
    let tcp = TcpStream::connect_named(config).await?;
    tcp.set_nodelay(true)?;
    detect_dead_peers(&tcp)?;
    tiberius::Client::connect(config.clone(), tcp.compat_write()).await
}

/// Keepalive probes after 5 s of silence, every 2 s, 3 of them; and on Linux a 15 s bound on
/// unacknowledged data: a silently dead server is noticed in about 15 s instead of hours.
fn detect_dead_peers(tcp: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(5))
        .with_interval(std::time::Duration::from_secs(2))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(std::time::Duration::from_secs(15)))?;
    Ok(())
}

/// A round trip that also proves the session is not inside a transaction (a client returned
/// mid-transaction would run the next caller's statements inside it).
async fn ping(client: &mut TiberiusClient) -> tiberius::Result<()> {
    let row = client
        .simple_query("SELECT @@TRANCOUNT AS n")
        .await?
        .into_row()
        .await?;
    match row.and_then(|r| r.get::<i32, _>(0)) {
        Some(0) => Ok(()),
        n => Err(tiberius::error::Error::Conversion(
            format!("the session is inside a transaction (@@TRANCOUNT {n:?})").into(),
        )),
    }
}

/// How long the check of a client lent to the native layer may take. A healthy one answers in
/// a round trip; one that is still receiving the response of an abandoned statement would make
/// its next user wait for that statement, so it is discarded instead.
const LENT_CHECK_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

impl bb8::ManageConnection for MssqlManager {
    type Connection = MssqlClient;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<MssqlClient, Self::Error> {
        self.open().await.map_err(|e| match e {
            // bb8 wants the driver's error type: the login error as it came, else the
            // hook's error as text (kept by the error sink; the checkout that times out
            // reports the hook's error itself, see `MssqlPool::acquire`).
            Error::Database { source, .. } => match source.downcast::<tiberius::error::Error>() {
                Ok(e) => *e,
                Err(other) => tiberius::error::Error::Protocol(other.to_string().into()),
            },
            other => tiberius::error::Error::Protocol(other.to_string().into()),
        })
    }

    async fn is_valid(&self, conn: &mut MssqlClient) -> Result<(), Self::Error> {
        ping(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut MssqlClient) -> bool {
        conn.broken
    }
}

/// Keeps the last connect error bb8 saw: its `get` only reports a timeout.
#[derive(Debug, Default)]
pub(super) struct LastError(Mutex<Option<String>>);

#[derive(Debug, Clone)]
pub(super) struct ErrorSink(pub(super) Arc<LastError>);

impl bb8::ErrorSink<tiberius::error::Error> for ErrorSink {
    fn sink(&self, error: tiberius::error::Error) {
        if let Ok(mut slot) = self.0.0.lock() {
            *slot = Some(error.to_string());
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tiberius::error::Error>> {
        Box::new(self.clone())
    }
}

/// The SQL Server pool of one connection. Cheap to clone.
#[derive(Clone)]
pub struct MssqlPool {
    pub(super) name: Arc<str>,
    pub(super) pool: bb8::Pool<MssqlManager>,
    pub(super) max_idle: u32,
    pub(super) idle_closes: Arc<AtomicU64>,
    /// Connections opened outside bb8 and handed to it (the connect probe), which bb8's
    /// `connections_created` does not count.
    pub(super) adopted: Arc<AtomicU64>,
    pub(super) last_error: Arc<LastError>,
    pub(super) closed: Arc<AtomicBool>,
    /// The application's lifecycle hooks.
    pub(super) hooks: HookRunner,
    /// Clients the before-checkout or after-release hook discarded (bb8 counts them broken).
    pub(super) hook_discards: Arc<AtomicU64>,
    /// Clients whose after-connect hook failed (shared with the manager).
    pub(super) hook_failed: Arc<AtomicU64>,
    /// Why new connections could not get credentials (shared with the manager).
    pub(super) credential_failures: Arc<CredentialFailures>,
}

impl std::fmt::Debug for MssqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlPool")
            .field("name", &self.name)
            .field("state", &self.pool.state())
            .finish()
    }
}

impl MssqlPool {
    /// Checks a client out. One idle longer than 500 ms is validated first, and so is one that
    /// was lent to the native layer (within a bound; see [`MssqlConnection`]).
    ///
    /// The application's before-checkout hook ([`crate::Hooks`]) is asked about each client
    /// taken from the idle ones; a client it refuses is discarded and another taken. When the
    /// after-connect hook failed while this checkout waited, its error is reported rather than
    /// the timeout, and likewise when new connections could not get their credentials (kind
    /// `Credentials` for a failing provider).
    pub async fn acquire(&self) -> Result<MssqlConnection> {
        if self.closed.load(Relaxed) {
            return Err(Error::closed(&self.name, Operation::Acquire));
        }
        let since = Instant::now();
        // Leak detection counts from when the client is handed over.
        let watch = crate::leak::checkout_started();
        let checkout = self.checkout().await;
        crate::leak::checked_out(watch);
        checkout
            .map_err(|e| self.hooks.failures().explain(e, since))
            .map_err(|e| self.credential_failures.explain(&self.name, e, since))
    }

    async fn checkout(&self) -> Result<MssqlConnection> {
        let max = self.pool.state().connections.max(1) + 1;
        let mut refused = false;
        for _ in 0..=max {
            let mut conn = self.pool.get_owned().await.map_err(|e| self.run_error(e))?;
            if conn.lent || conn.last_used.elapsed() >= LIVENESS_WINDOW {
                // Broken until the check answers: an acquire cancelled during it discards the
                // client rather than returning it mid-response.
                conn.broken = true;
                let usable = if conn.lent {
                    let checked =
                        tokio::time::timeout(LENT_CHECK_BOUND, ping(&mut conn.client)).await;
                    matches!(checked, Ok(Ok(())))
                } else {
                    ping(&mut conn.client).await.is_ok()
                };
                if !usable {
                    continue;
                }
            }
            // A client bb8 just opened went through after-connect; one reused is asked.
            if conn.last_used > conn.created || conn.lent {
                conn.broken = true;
                let age = conn.created.elapsed();
                let idle_for = conn.last_used.elapsed();
                let mut view = HookClient {
                    name: &self.name,
                    client: &mut conn.client,
                    out_of_step: false,
                };
                let keep = self.hooks.before_checkout(&mut view, age, idle_for).await;
                if !keep || view.out_of_step {
                    self.hook_discards.fetch_add(1, Relaxed);
                    refused = true;
                    continue;
                }
            }
            conn.broken = false;
            conn.lent = false;
            return Ok(MssqlConnection {
                inner: Some(conn),
                pool: self.clone(),
            });
        }
        let why = if refused {
            "every pooled connection failed its liveness check or was refused by the before_checkout hook"
        } else {
            "every pooled connection failed its liveness check"
        };
        Err(Error::database(
            &self.name,
            Operation::Acquire,
            ErrorKind::Transient,
            why,
        ))
    }

    fn run_error(&self, e: bb8::RunError<tiberius::error::Error>) -> Error {
        match e {
            bb8::RunError::User(e) => tiberius_error(&self.name, Operation::Acquire, e),
            bb8::RunError::TimedOut => {
                let cause = self
                    .last_error
                    .0
                    .lock()
                    .ok()
                    .and_then(|s| s.clone())
                    .map(|e| format!("timed out waiting for a connection (last error: {e})"))
                    .unwrap_or_else(|| "timed out waiting for a connection".to_owned());
                Error::database(&self.name, Operation::Acquire, ErrorKind::Transient, cause)
            }
        }
    }

    /// Pings through a pooled client; a client whose ping fails is discarded.
    pub(crate) async fn ping(&self) -> Result<()> {
        let mut conn = self.acquire().await?;
        conn.begin_operation();
        ping(conn.client())
            .await
            .map_err(|e| tiberius_error(&self.name, Operation::Ping, e))?;
        conn.settle();
        Ok(())
    }

    /// The underlying bb8 pool.
    pub fn bb8(&self) -> &bb8::Pool<MssqlManager> {
        &self.pool
    }

    /// Sizes and bb8's own counts; reads only.
    pub(crate) fn gauges(&self) -> PoolGauges {
        let state = self.pool.state();
        let s = state.statistics;
        let idle_closes = self.idle_closes.load(Relaxed);
        let hook_discards = self.hook_discards.load(Relaxed);
        PoolGauges {
            open: state.connections,
            idle: state.idle_connections,
            max_open: self.pool.config().max_size,
            driver_counts: Some(DriverCounts {
                opened: s.connections_created
                    + self.adopted.load(Relaxed)
                    + self.hook_failed.load(Relaxed),
                closed_max_lifetime: s.connections_closed_max_lifetime,
                closed_max_idle: idle_closes,
                closed_broken: (s.connections_closed_broken + s.connections_closed_invalid)
                    .saturating_sub(idle_closes + hook_discards),
                closed_by_hook: hook_discards + self.hook_failed.load(Relaxed),
                waits: s.get_waited,
                wait_nanos: u64::try_from(s.get_wait_time.as_nanos()).unwrap_or(u64::MAX),
                acquire_timeouts: s.get_timed_out,
            }),
        }
    }

    /// Discards the idle clients (bb8 counts them as broken).
    pub(crate) async fn discard_idle(&self) {
        for _ in 0..self.pool.state().idle_connections {
            match tokio::time::timeout(std::time::Duration::from_millis(100), self.pool.get()).await
            {
                Ok(Ok(mut conn)) => conn.broken = true,
                _ => break,
            }
        }
    }

    /// Refuses new checkouts, waits for checked-out clients to come back (bounded by the
    /// caller), then closes the idle ones.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Relaxed);
        loop {
            let state = self.pool.state();
            if state.connections <= state.idle_connections {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.discard_idle().await;
    }
}

/// A checked-out client; returns to the pool when dropped.
///
/// It dereferences to the tiberius client (the native layer). The library cannot see when an
/// operation made through it ends, so a client used that way is checked before its next
/// checkout: it must answer within a second and not be inside a transaction, else it is
/// discarded (a statement abandoned mid-way, say by a timeout, would otherwise make the next
/// caller wait for its response, and a transaction left open would take in their statements).
pub struct MssqlConnection {
    /// Taken only by `drop`, to run the after-release hook in a task.
    inner: Option<bb8::PooledConnection<'static, MssqlManager>>,
    pool: MssqlPool,
}

impl MssqlConnection {
    fn pooled(&self) -> &MssqlClient {
        match &self.inner {
            Some(conn) => conn,
            None => unreachable!("the client is taken only when the connection is dropped"),
        }
    }

    fn pooled_mut(&mut self) -> &mut MssqlClient {
        match &mut self.inner {
            Some(conn) => conn,
            None => unreachable!("the client is taken only when the connection is dropped"),
        }
    }

    /// Marks the connection as possibly out of sync until [`Self::settle`]: if the operation is
    /// cancelled, the pool discards the connection.
    pub(crate) fn begin_operation(&mut self) {
        self.pooled_mut().broken = true;
    }

    /// The operation finished with the stream in sync.
    pub(crate) fn settle(&mut self) {
        self.pooled_mut().broken = false;
    }

    /// The client for the library's own operations, which track their state themselves.
    pub(crate) fn client(&mut self) -> &mut TiberiusClient {
        &mut self.pooled_mut().client
    }
}

impl Deref for MssqlConnection {
    type Target = TiberiusClient;
    fn deref(&self) -> &TiberiusClient {
        &self.pooled().client
    }
}

impl DerefMut for MssqlConnection {
    /// Lends the client to the caller; it is checked before its next checkout.
    fn deref_mut(&mut self) -> &mut TiberiusClient {
        let pooled = self.pooled_mut();
        pooled.lent = true;
        &mut pooled.client
    }
}

impl Drop for MssqlConnection {
    fn drop(&mut self) {
        let Some(mut conn) = self.inner.take() else {
            return;
        };
        conn.last_used = Instant::now();
        if !conn.broken && self.pool.pool.state().idle_connections >= self.pool.max_idle {
            conn.broken = true;
            self.pool.idle_closes.fetch_add(1, Relaxed);
        }
        if conn.broken || !self.pool.hooks.has_after_release() {
            return;
        }
        // The after-release hook is async: it runs in a task that holds the client, which
        // returns to the pool (or is discarded) when the task ends. Outside a runtime the
        // client returns without it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        runtime.spawn(async move {
            // Discarded if the task is dropped before the hook answers.
            conn.broken = true;
            if conn.lent {
                let checked = tokio::time::timeout(LENT_CHECK_BOUND, ping(&mut conn.client)).await;
                if !matches!(checked, Ok(Ok(()))) {
                    return;
                }
                conn.lent = false;
            }
            let age = conn.created.elapsed();
            let mut view = HookClient {
                name: &pool.name,
                client: &mut conn.client,
                out_of_step: false,
            };
            let keep = pool.hooks.after_release(&mut view, age).await && !view.out_of_step;
            if keep {
                conn.broken = false;
                conn.last_used = Instant::now();
            } else {
                pool.hook_discards.fetch_add(1, Relaxed);
            }
        });
    }
}
