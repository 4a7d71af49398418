//! SQL Server: tiberius clients in a bb8 pool, with the cheap/expensive check split, the idle
//! cap enforced on release, and bb8's statistics mapped onto the crate's stats.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use secrecy::ExposeSecret;
use tiberius::{AuthMethod, Config, EncryptionLevel, SqlBrowser as _};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt as _};

use super::{ConnectSpec, bounded, config_error};
use crate::config::{ConnectionConfig, PoolSettings, SslMode};
use crate::dsn;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::pool::LIVENESS_WINDOW;
use crate::stats::{PoolCounters, PoolGauges};

/// SQL Server's default port.
pub const DEFAULT_PORT: u16 = 1433;

/// The tiberius client type the pool holds.
pub type TiberiusClient = tiberius::Client<Compat<TcpStream>>;

/// A pooled client plus what the pool needs to know about it.
pub struct MssqlClient {
    client: TiberiusClient,
    last_used: Instant,
    /// Set while an operation is in flight (a cancelled one leaves the stream mid-response)
    /// and when the release must close the connection; bb8 then discards it.
    broken: bool,
}

/// bb8 manager for tiberius 0.13.
#[derive(Debug)]
pub struct MssqlManager {
    config: Config,
}

async fn open_client(config: &Config) -> tiberius::Result<TiberiusClient> {
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

async fn ping(client: &mut TiberiusClient) -> tiberius::Result<()> {
    client
        .simple_query("SELECT 1")
        .await?
        .into_results()
        .await?;
    Ok(())
}

impl bb8::ManageConnection for MssqlManager {
    type Connection = MssqlClient;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<MssqlClient, Self::Error> {
        open_client(&self.config).await.map(|client| MssqlClient {
            client,
            last_used: Instant::now(),
            broken: false,
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
struct LastError(Mutex<Option<String>>);

#[derive(Debug, Clone)]
struct ErrorSink(Arc<LastError>);

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
    name: Arc<str>,
    pool: bb8::Pool<MssqlManager>,
    max_idle: u32,
    idle_closes: Arc<AtomicU64>,
    last_error: Arc<LastError>,
    closed: Arc<AtomicBool>,
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
    /// Checks a client out. One idle longer than 500 ms is validated first.
    pub async fn acquire(&self) -> Result<MssqlConnection> {
        if self.closed.load(Relaxed) {
            return Err(Error::closed(&self.name, Operation::Acquire));
        }
        let max = self.pool.state().connections.max(1) + 1;
        for _ in 0..=max {
            let mut conn = self.pool.get_owned().await.map_err(|e| self.run_error(e))?;
            if conn.last_used.elapsed() >= LIVENESS_WINDOW && ping(&mut conn.client).await.is_err()
            {
                conn.broken = true;
                continue;
            }
            return Ok(MssqlConnection {
                inner: conn,
                pool: self.clone(),
            });
        }
        Err(Error::database(
            &self.name,
            Operation::Acquire,
            ErrorKind::Transient,
            "every pooled connection failed its liveness check",
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
    pub(crate) async fn ping(&self, name: &str) -> Result<()> {
        let mut conn = self.acquire().await?;
        conn.begin_operation();
        ping(&mut conn.inner.client)
            .await
            .map_err(|e| tiberius_error(name, Operation::Ping, e))?;
        conn.settle();
        Ok(())
    }

    /// The underlying bb8 pool.
    pub fn bb8(&self) -> &bb8::Pool<MssqlManager> {
        &self.pool
    }

    pub(crate) fn gauges(&self, counters: &PoolCounters) -> PoolGauges {
        let state = self.pool.state();
        let s = state.statistics;
        let idle_closes = self.idle_closes.load(Relaxed);
        counters.opened.store(s.connections_created, Relaxed);
        counters
            .closed_max_lifetime
            .store(s.connections_closed_max_lifetime, Relaxed);
        counters.closed_max_idle.store(idle_closes, Relaxed);
        counters.closed_broken.store(
            (s.connections_closed_broken + s.connections_closed_invalid)
                .saturating_sub(idle_closes),
            Relaxed,
        );
        counters.waits.store(s.get_waited, Relaxed);
        counters.wait_nanos.store(
            u64::try_from(s.get_wait_time.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        counters.acquire_timeouts.store(s.get_timed_out, Relaxed);
        PoolGauges {
            open: state.connections,
            idle: state.idle_connections,
            max_open: self.pool.config().max_size,
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
pub struct MssqlConnection {
    inner: bb8::PooledConnection<'static, MssqlManager>,
    pool: MssqlPool,
}

impl MssqlConnection {
    /// Marks the connection as possibly out of sync until [`Self::settle`]: if the operation is
    /// cancelled, the pool discards the connection.
    pub(crate) fn begin_operation(&mut self) {
        self.inner.broken = true;
    }

    /// The operation finished with the stream in sync.
    pub(crate) fn settle(&mut self) {
        self.inner.broken = false;
    }
}

impl Deref for MssqlConnection {
    type Target = TiberiusClient;
    fn deref(&self) -> &TiberiusClient {
        &self.inner.client
    }
}

impl DerefMut for MssqlConnection {
    fn deref_mut(&mut self) -> &mut TiberiusClient {
        &mut self.inner.client
    }
}

impl Drop for MssqlConnection {
    fn drop(&mut self) {
        self.inner.last_used = Instant::now();
        if !self.inner.broken && self.pool.pool.state().idle_connections >= self.pool.max_idle {
            self.inner.broken = true;
            self.pool.idle_closes.fetch_add(1, Relaxed);
        }
    }
}

/// Splits `host\instance`.
fn host_and_instance(host: &str) -> (&str, Option<&str>) {
    match host.split_once('\\') {
        Some((h, i)) if !i.is_empty() => (h, Some(i)),
        _ => (host, None),
    }
}

/// tiberius options: the ADO.NET `dsn` through tiberius's own parser, or the structured fields
/// set directly (no string escaping involved); then the settings that apply either way.
pub(crate) fn connect_config(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
) -> Result<Config> {
    let password = dsn::resolve_password(c)
        .map_err(|e| config_error(name, format!("cannot read password_file: {e}")))?;
    let mut config = match &c.dsn {
        Some(ado) => Config::from_ado_string(ado.expose_secret())
            .map_err(|e| config_error(name, format!("invalid dsn: {e}")))?,
        None => {
            let mut config = Config::new();
            let (host, instance) = host_and_instance(c.host.as_deref().unwrap_or("localhost"));
            config.host(host);
            if let Some(instance) = instance {
                config.instance_name(instance);
            }
            if c.port.is_some() || instance.is_none() {
                config.port(c.port.unwrap_or(DEFAULT_PORT));
            }
            if let Some(db) = &c.database {
                config.database(db);
            }
            config
        }
    };
    if let Some(user) = &c.user {
        let password = password.as_ref().map(|p| p.expose_secret()).unwrap_or("");
        config.authentication(AuthMethod::sql_server(user, password));
    }
    let mode = match (&c.dsn, c.sslmode) {
        (_, Some(mode)) => Some(mode),
        (None, None) => Some(SslMode::Prefer),
        (Some(_), None) => None,
    };
    if let Some(mode) = mode {
        let (level, verify) = encryption(mode);
        config.encryption(level);
        if !verify || c.trust_server_certificate {
            config.trust_cert();
        }
    }
    if let Some(app) = &c.application_name {
        config.application_name(app);
    }
    config.command_timeout(settings.query_timeout);
    config.handshake_timeout(Some(settings.connect_timeout));
    Ok(config)
}

/// `sslmode` → TDS encryption level, and whether the certificate is verified by default.
fn encryption(mode: SslMode) -> (EncryptionLevel, bool) {
    match mode {
        SslMode::Disable => (EncryptionLevel::NotSupported, false),
        // TDS "off" still encrypts the login packet; nothing to verify against.
        SslMode::Allow => (EncryptionLevel::Off, false),
        SslMode::Prefer => (EncryptionLevel::On, true),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            (EncryptionLevel::Required, true)
        }
    }
}

pub(crate) async fn open(spec: &ConnectSpec<'_>) -> Result<MssqlPool> {
    let config = connect_config(spec.name, spec.config, spec.settings)?;
    let probe = bounded(
        spec.name,
        Operation::Connect,
        spec.settings.connect_timeout,
        async {
            open_client(&config)
                .await
                .map_err(|e| login_error(spec.name, e))
        },
    )
    .await?;
    let last_error = Arc::new(LastError::default());
    let s = spec.settings;
    let pool = bb8::Pool::builder()
        .max_size(s.max_open)
        .min_idle((s.min_open > 0).then_some(s.min_open))
        .max_lifetime(s.max_lifetime)
        .idle_timeout(s.max_idle_time)
        .connection_timeout(s.connect_timeout)
        // Validation happens in `acquire`, only for clients idle past the liveness window.
        .test_on_check_out(false)
        .error_sink(Box::new(ErrorSink(last_error.clone())))
        .build_unchecked(MssqlManager { config });
    let pool = MssqlPool {
        name: Arc::from(spec.name),
        pool,
        max_idle: s.max_idle,
        idle_closes: Arc::default(),
        last_error,
        closed: Arc::default(),
    };
    // Keep the probe instead of opening a second connection.
    if s.max_idle > 0 {
        let _ = pool.pool.add(MssqlClient {
            client: probe,
            last_used: Instant::now(),
            broken: false,
        });
    } else {
        let _ = probe.close().await;
    }
    Ok(pool)
}

/// Errors while logging in: a server error token here means the login was refused.
fn login_error(name: &str, e: tiberius::error::Error) -> Error {
    let kind = match &e {
        tiberius::error::Error::Server(token) => match token.code() {
            // Azure SQL's documented transient login errors.
            40613 | 40197 | 40501 | 49918 | 49919 | 49920 | 4221 | 10928 | 10929 => {
                ErrorKind::Transient
            }
            // Cannot open the database requested by the login.
            4060 => ErrorKind::Configuration,
            _ => ErrorKind::Authentication,
        },
        _ => classify(&e),
    };
    Error::database(name, Operation::Connect, kind, e)
}

pub(crate) fn tiberius_error(name: &str, operation: Operation, e: tiberius::error::Error) -> Error {
    let kind = classify(&e);
    Error::database(name, operation, kind, e)
}

fn classify(e: &tiberius::error::Error) -> ErrorKind {
    use tiberius::error::Error as E;
    match e {
        E::Io { .. } | E::Protocol(_) | E::Routing { .. } => ErrorKind::Transient,
        E::Tls(_) => ErrorKind::Configuration,
        E::Server(token) => match token.code() {
            18456 | 18452 | 18486 | 18487 | 18488 => ErrorKind::Authentication,
            4060 => ErrorKind::Configuration,
            // Deadlock victim, lock timeout, Azure throttling.
            1205 | 1222 | 40613 | 40197 | 40501 => ErrorKind::Transient,
            _ => ErrorKind::Query,
        },
        _ => ErrorKind::Query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseType, ManagerConfig};

    fn base() -> ConnectionConfig {
        let mut c = ConnectionConfig::new("ms", DatabaseType::Mssql);
        c.host = Some("db.example".into());
        c
    }

    #[test]
    fn named_instances_are_split_from_the_host() {
        assert_eq!(
            host_and_instance("srv\\SQLEXPRESS"),
            ("srv", Some("SQLEXPRESS"))
        );
        assert_eq!(host_and_instance("srv"), ("srv", None));
        let mut c = base();
        c.host = Some("srv\\SQLEXPRESS".into());
        let settings = ManagerConfig::default().pool_settings(&c);
        let config = connect_config("ms", &c, &settings).unwrap();
        // No port: the SQL Server Browser (UDP 1434) resolves the instance.
        assert_eq!(config.get_addr(), "srv:1434");
    }

    #[test]
    fn host_and_port_reach_the_config() {
        let mut c = base();
        c.port = Some(14330);
        let settings = ManagerConfig::default().pool_settings(&c);
        assert_eq!(
            connect_config("ms", &c, &settings).unwrap().get_addr(),
            "db.example:14330"
        );
    }

    #[test]
    fn a_given_ado_string_is_parsed_by_tiberius() {
        let c = ConnectionConfig::from_dsn(
            "ms",
            DatabaseType::Mssql,
            "server=tcp:ado.example,1500;database=app;user id=sa;password='p;w'",
        );
        let settings = ManagerConfig::default().pool_settings(&c);
        assert_eq!(
            connect_config("ms", &c, &settings).unwrap().get_addr(),
            "ado.example:1500"
        );
        let bad = ConnectionConfig::from_dsn("ms", DatabaseType::Mssql, "server=tcp:x,notaport");
        let err = connect_config("ms", &bad, &settings).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }

    #[test]
    fn sslmode_maps_to_encryption() {
        assert!(matches!(
            encryption(SslMode::Disable),
            (EncryptionLevel::NotSupported, false)
        ));
        assert!(matches!(
            encryption(SslMode::Require),
            (EncryptionLevel::Required, true)
        ));
        assert!(matches!(
            encryption(SslMode::VerifyFull),
            (EncryptionLevel::Required, true)
        ));
    }
}
