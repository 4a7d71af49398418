//! The tokio-postgres side of a server list (`hosts:`, `target_session_attrs`; the design and
//! everything driver-neutral is `backends/failover.rs`): a probe is a direct client, and the
//! pool's manager asks the [`TokioPgFailover`] for the current server at every connect, so a
//! switch needs nothing from the pool itself. Clients opened before a switch are refused at
//! their next recycle (`pool.rs`), so the neutral handle and `tokio_postgres()` both follow.

use deadpool::managed::WeakPool;
use deadpool_postgres::ClientWrapper;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::config::Host;

use super::classify;
use super::options::{self, ConnectPlan, with_credentials};
use super::pool::TokioPgManager;
use super::tls::RustlsConnector;
use crate::backends::failover::{Dialer, Failover, FailoverPlan, Probe, SwitchTarget};
use crate::backends::pg_common::servers::server_list;
use crate::backends::pg_common::sqlstate_means_failover;
use crate::config::{ConnectionConfig, PoolSettings};
use crate::credentials::Resolved;
use crate::error::{Error, ErrorKind, Result};
use crate::hosts::Server;

/// The server list of one tokio-postgres pool.
pub(crate) type TokioPgFailover = Failover<TokioPgDialer>;

/// The failover plan of a connection, if it has one: a server list (`hosts:` or the dsn's),
/// or `target_session_attrs: read-write` on its one server. `first` is the connection's plan
/// for its first server; each other candidate is configured the same way for its own server.
pub(super) fn plan(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
    credentials: &Resolved,
    first: &ConnectPlan,
) -> Result<Option<FailoverPlan<tokio_postgres::Config>>> {
    let (servers, attrs) = server_list(name, c)?;
    let listed = servers.is_some();
    let only = Server {
        host: match first.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.to_string_lossy().into_owned(),
            None => "localhost".to_owned(),
        },
        port: first
            .config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(options::DEFAULT_PORT),
    };
    let mut failed = None;
    let plan = FailoverPlan::build(servers, attrs, only, |server| {
        if !listed {
            return first.config.clone();
        }
        match options::connect_plan(name, c, settings, credentials, Some(server)) {
            Ok(plan) => plan.config,
            Err(e) => {
                failed.get_or_insert(e);
                first.config.clone()
            }
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(plan),
    }
}

/// Opens one client on `config`; its connection task ends when the client is dropped
/// (deadpool-postgres aborts it).
pub(super) async fn open_client(
    config: &tokio_postgres::Config,
    tls: RustlsConnector,
) -> std::result::Result<ClientWrapper, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(ClientWrapper::new(client, task))
}

/// libpq's check for `target_session_attrs=read-write` on servers older than 14: a standby
/// and a server with `default_transaction_read_only` both say `on`. The simple query protocol:
/// no prepared statement is left behind.
pub(super) async fn is_writable(
    client: &tokio_postgres::Client,
) -> std::result::Result<bool, tokio_postgres::Error> {
    let messages = client.simple_query("SHOW transaction_read_only").await?;
    Ok(messages.iter().any(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0) == Some("off"),
        _ => false,
    }))
}

/// Direct clients for probes, with the pool's TLS.
pub(crate) struct TokioPgDialer {
    pub(super) tls: RustlsConnector,
}

impl Dialer for TokioPgDialer {
    type Options = tokio_postgres::Config;
    type Conn = ClientWrapper;

    fn with_credentials(
        mut options: tokio_postgres::Config,
        credentials: &Resolved,
    ) -> tokio_postgres::Config {
        with_credentials(&mut options, credentials);
        options
    }

    async fn probe(
        &self,
        options: &tokio_postgres::Config,
        require_writable: bool,
    ) -> Probe<ClientWrapper> {
        let attempt = async {
            let client = open_client(options, self.tls.clone()).await?;
            if require_writable && !is_writable(&client).await? {
                return Ok(None);
            }
            Ok(Some(client))
        };
        match attempt.await {
            Ok(Some(client)) => Probe::Qualifies(client),
            Ok(None) => Probe::ReadOnly,
            Err(e) => Probe::Failed(classify(&e), e.to_string()),
        }
    }

    async fn close(conn: ClientWrapper) {
        drop(conn);
    }
}

/// The pool a probe task serves, held weakly (the pool's manager holds the failover): the
/// manager reads the current server at every connect, so a switch has nothing to point.
pub(super) struct PoolTarget(pub WeakPool<TokioPgManager>);

impl SwitchTarget<tokio_postgres::Config> for PoolTarget {
    fn is_open(&self) -> bool {
        self.0.upgrade().is_some_and(|pool| !pool.is_closed())
    }

    fn point_at(&self, _options: tokio_postgres::Config) {}
}

/// Whether `e` may mean the pool's server is gone or no longer accepts writes: the server's
/// shutdown and read-only errors, connection failures, a checkout that timed out. A checkout
/// that timed out waiting on a full pool is not one (`saturated`: every client is in use, so
/// the pool is too small, not the server gone).
fn may_mean_failover(e: &Error, saturated: bool) -> bool {
    match super::driver_cause(e) {
        Some(driver) => match driver.as_db_error() {
            Some(db) => sqlstate_means_failover(db.code().code()),
            None => e.kind() == ErrorKind::Transient,
        },
        None => e.kind() == ErrorKind::Transient && !saturated,
    }
}

/// Asks for a probe when `outcome` failed in a way that may mean the server left. Never waits.
pub(super) fn observe<T>(
    failover: Option<&TokioPgFailover>,
    pool: &super::TokioPgPool,
    outcome: &Result<T>,
) {
    if let (Some(failover), Err(e)) = (failover, outcome) {
        let status = pool.status();
        let saturated = status.available == 0 && status.size >= status.max_size;
        if may_mean_failover(e, saturated) {
            failover.request_probe();
        }
    }
}
