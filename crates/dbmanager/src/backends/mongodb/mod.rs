//! MongoDB: client options from the config, a ping with the configured read preference, and
//! pool statistics from the driver's CMAP events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use mongodb::bson::doc;
use mongodb::event::EventHandler;
use mongodb::event::cmap::{CmapEvent, ConnectionCheckoutFailedReason, ConnectionClosedReason};
use mongodb::options::{
    ClientOptions, Credential, ReadPreference as MongoReadPreference, SelectionCriteria,
    ServerAddress, Tls, TlsOptions,
};
use secrecy::ExposeSecret;

use std::any::{Any, TypeId};

use futures_util::future::BoxFuture;

use crate::backends::{bounded, config_error};
use crate::config::ConnectionProblems;
use crate::config::{
    ConnectionConfig, DatabaseType, DefaultOrm, PoolSettings, ReadPreference, SslMode,
};
use crate::credentials::Resolved;
use crate::driver::{BackendPool, Driver, Field, OpenSpec};
use crate::dsn;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::SqlExecutor;
use crate::stats::{DriverCounts, PoolGauges};

/// MongoDB's default port.
pub const DEFAULT_PORT: u16 = 27017;

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Mongodb,
    variant: None,
    system_name: "mongodb",
    default_port: Some(DEFAULT_PORT),
    dsn_schemes: &["mongodb://", "mongodb+srv://"],
    fields: &[
        Field::Host,
        Field::Port,
        Field::User,
        Field::Password,
        Field::PasswordFile,
        Field::Database,
        Field::Sslmode,
        Field::AuthSource,
        Field::ReplicaSet,
        Field::ReadPreference,
        Field::TrustServerCertificate,
    ],
    required: &[Field::Host],
    no_sea_orm: Some("sea-orm is a SQL layer; mongodb has none"),
    check,
    classify: |e| e.downcast_ref::<mongodb::error::Error>().map(classify),
    open,
    listen: None,
    replica_lag: None,
};

/// Contradictions specific to MongoDB: a credential needs both a user and a password, and the
/// driver reads a separate password only together with a user (which a dsn excludes).
fn check(c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    crate::backends::check_host(c, p, |list| host_list(list, DEFAULT_PORT).map(drop));
    // The driver's own URI parser, without the SRV lookup that connecting adds: an option it
    // refuses is a problem at load, not a connection that is down.
    crate::backends::check_dsn(c, p, DRIVER.dsn_schemes, |dsn| {
        mongodb::options::ConnectionString::parse(dsn.expose_secret())
            .map_err(|e| config_error("", e.to_string()))
    });
    if c.user.is_some() && c.password.is_none() && c.password_file.is_none() {
        p.push(
            "password",
            "a user is set without a password; MongoDB would drop the credential",
        );
    }
    if c.user.is_none() {
        for (set, key) in [
            (c.password.is_some(), "password"),
            (c.password_file.is_some(), "password_file"),
        ] {
            if !set {
                continue;
            }
            let message = if c.dsn.is_some() {
                "MongoDB reads a password only with user, which a dsn excludes; put the credentials in the dsn".to_owned()
            } else {
                format!("set without user; MongoDB would ignore it (set user, or remove {key})")
            };
            p.push(key, message);
        }
    }
}

/// Pool activity seen through CMAP events.
#[derive(Debug, Default)]
struct PoolEvents {
    created: AtomicU64,
    closed: AtomicU64,
    closed_broken: AtomicU64,
    checked_out: AtomicU64,
    checked_in: AtomicU64,
    waits: AtomicU64,
    pending_waits: AtomicU64,
    wait_nanos: AtomicU64,
    timeouts: AtomicU64,
}

impl PoolEvents {
    fn handler(self: &Arc<Self>, max_pool: u32) -> EventHandler<CmapEvent> {
        let events = self.clone();
        EventHandler::callback(move |event: CmapEvent| {
            let e = &events;
            match event {
                CmapEvent::ConnectionCreated(_) => {
                    e.created.fetch_add(1, Relaxed);
                }
                CmapEvent::ConnectionClosed(closed) => {
                    e.closed.fetch_add(1, Relaxed);
                    if matches!(
                        closed.reason,
                        ConnectionClosedReason::Error | ConnectionClosedReason::Stale
                    ) {
                        e.closed_broken.fetch_add(1, Relaxed);
                    }
                }
                // A checkout that starts with every connection in use has to wait.
                CmapEvent::ConnectionCheckoutStarted(_) if e.in_use() >= u64::from(max_pool) => {
                    e.waits.fetch_add(1, Relaxed);
                    e.pending_waits.fetch_add(1, Relaxed);
                }
                CmapEvent::ConnectionCheckedOut(out) => {
                    e.checked_out.fetch_add(1, Relaxed);
                    let waited = e
                        .pending_waits
                        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                        .is_ok();
                    if waited {
                        e.wait_nanos.fetch_add(
                            u64::try_from(out.duration.as_nanos()).unwrap_or(u64::MAX),
                            Relaxed,
                        );
                    }
                }
                CmapEvent::ConnectionCheckedIn(_) => {
                    e.checked_in.fetch_add(1, Relaxed);
                }
                CmapEvent::ConnectionCheckoutFailed(failed) => {
                    let _ = e
                        .pending_waits
                        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
                    if matches!(failed.reason, ConnectionCheckoutFailedReason::Timeout) {
                        e.timeouts.fetch_add(1, Relaxed);
                    }
                }
                _ => {}
            }
        })
    }

    fn open(&self) -> u64 {
        self.created
            .load(Relaxed)
            .saturating_sub(self.closed.load(Relaxed))
    }

    fn in_use(&self) -> u64 {
        self.checked_out
            .load(Relaxed)
            .saturating_sub(self.checked_in.load(Relaxed))
    }

    fn idle(&self) -> u64 {
        self.open().saturating_sub(self.in_use())
    }
}

/// The open MongoDB client of one connection.
impl crate::adopt::Sealed for mongodb::Client {}

/// An adopted client: its default database and read preference are its own; pool figures come
/// from events this library did not subscribe to, so the sizes read zero.
impl crate::adopt::Adoptable for mongodb::Client {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Mongodb
    }

    fn adopt(self, context: &crate::adopt::AdoptContext) -> crate::adopt::Adopted {
        let database = self.default_database();
        crate::adopt::Adopted(Box::new(MongoBackend {
            name: context.name.clone(),
            database_name: database.as_ref().map(|d| d.name().to_owned()),
            database,
            client: self,
            criteria: None,
            events: Arc::default(),
            max_pool: 0,
            ping_timeout: Duration::from_secs(10),
        }))
    }
}

pub(crate) struct MongoBackend {
    name: Arc<str>,
    client: mongodb::Client,
    /// The configured database, if any.
    database: Option<mongodb::Database>,
    database_name: Option<String>,
    criteria: Option<SelectionCriteria>,
    events: Arc<PoolEvents>,
    max_pool: u32,
    ping_timeout: Duration,
}

impl MongoBackend {
    /// Sizes and counts from the pool events; reads only.
    pub(crate) fn gauges(&self) -> PoolGauges {
        let e = &self.events;
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        PoolGauges {
            open: clamp(e.open()),
            idle: clamp(e.idle()),
            max_open: self.max_pool,
            driver_counts: Some(DriverCounts {
                opened: e.created.load(Relaxed),
                closed_broken: e.closed_broken.load(Relaxed),
                // The driver manages its connections itself: no lifecycle hooks apply.
                closed_by_hook: 0,
                waits: e.waits.load(Relaxed),
                wait_nanos: e.wait_nanos.load(Relaxed),
                acquire_timeouts: e.timeouts.load(Relaxed),
                ..DriverCounts::default()
            }),
        }
    }

    /// Pings the configured database with the configured read preference.
    async fn ping(&self) -> Result<()> {
        ping(
            &self.name,
            &self.client,
            self.database_name.as_deref(),
            self.criteria.clone(),
            self.ping_timeout,
        )
        .await
    }
}

impl BackendPool for MongoBackend {
    fn gauges(&self) -> PoolGauges {
        MongoBackend::gauges(self)
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(MongoBackend::ping(self))
    }

    /// The driver's monitor re-discovers servers and clears its pool by itself.
    fn discard_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The driver has no idle cap; `conn_max_idle_time` (maxIdleTimeMS) bounds idle connections.
    fn trim_idle(&self, _max_idle: u32) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Graceful shutdown: waits for sessions and cursors in use.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.client.clone().shutdown().into_future())
    }

    fn close_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.client.clone().shutdown().immediate(true).into_future())
    }

    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        if type_id == TypeId::of::<mongodb::Client>() {
            return Some(&self.client);
        }
        if type_id == TypeId::of::<mongodb::Database>() {
            return self.database.as_ref().map(|d| d as _);
        }
        None
    }

    fn sql(&self, _layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str> {
        Err("MongoDB is not a SQL database")
    }
}

async fn ping(
    name: &str,
    client: &mongodb::Client,
    database: Option<&str>,
    criteria: Option<SelectionCriteria>,
    limit: Duration,
) -> Result<()> {
    let db = client.database(database.unwrap_or("admin"));
    let mut command = db.run_command(doc! { "ping": 1 });
    if let Some(criteria) = criteria {
        command = command.selection_criteria(criteria);
    }
    bounded(name, Operation::Ping, limit, async {
        command
            .await
            .map(|_| ())
            .map_err(|e| mongo_error(name, Operation::Ping, e))
    })
    .await
}

fn read_preference(pref: ReadPreference) -> MongoReadPreference {
    match pref {
        ReadPreference::Primary => MongoReadPreference::Primary,
        ReadPreference::PrimaryPreferred => MongoReadPreference::PrimaryPreferred { options: None },
        ReadPreference::Secondary => MongoReadPreference::Secondary { options: None },
        ReadPreference::SecondaryPreferred => {
            MongoReadPreference::SecondaryPreferred { options: None }
        }
        ReadPreference::Nearest => MongoReadPreference::Nearest { options: None },
    }
}

/// Parses the `host` list (`a,b:27018`); a problem names the entry by its position.
fn host_list(list: &str, default_port: u16) -> std::result::Result<Vec<ServerAddress>, String> {
    list.split(',')
        .enumerate()
        .map(|(i, h)| {
            server_address(h, default_port).map_err(|e| format!("entry {} of the list {e}", i + 1))
        })
        .collect()
}

/// Parses one entry of the `host` list: `host`, `host:port`, an IPv6 address, or `[v6]:port`,
/// with `default_port` when none is given. The host part is checked as every backend's (a name
/// or an IP address, nothing a URI could read more into); errors never quote the entry, which
/// may be a pasted `user:password@host`.
fn server_address(text: &str, default_port: u16) -> std::result::Result<ServerAddress, String> {
    let text = text.trim();
    if let Some(problem) = dsn::url_syntax(text) {
        return Err(problem);
    }
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => {
                let (bracketed, after) = text.split_at(end + 1);
                let port = match after {
                    "" => None,
                    _ => Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| "has text after `]` that is not `:port`".to_owned())?,
                    ),
                };
                (bracketed, port)
            }
            None => return Err("has an unclosed `[`".to_owned()),
        }
    } else {
        match text.split_once(':') {
            // One colon: `host:port`. More: an IPv6 address without a port (or an error).
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            _ => (text, None),
        }
    };
    let host = dsn::plain_host(host)?;
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| "has an invalid port (1-65535)".to_owned())?,
        None => default_port,
    };
    Ok(ServerAddress::Tcp {
        host: host.to_owned(),
        port: Some(port),
    })
}

/// Driver options: the `dsn` through the driver's own URI parser, or the structured fields set
/// directly; then the settings that apply either way. `credentials` give the SCRAM user and
/// password (a token is refused: MongoDB's token login, MONGODB-OIDC, is not wired).
pub(crate) async fn client_options(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
    credentials: &Resolved,
) -> Result<ClientOptions> {
    if credentials.token {
        return Err(config_error(
            name,
            "the credential provider returned a token; MongoDB takes a user and a password",
        ));
    }
    let mut options = match &c.dsn {
        // The driver's parse errors quote the dsn's option values: shown without them.
        Some(uri) => ClientOptions::parse(uri.expose_secret())
            .await
            .map_err(|e| {
                let message = dsn::without_values(&e.to_string(), uri.expose_secret());
                Error::database(name, Operation::Connect, classify(&e), message)
            })?,
        None => {
            let default_port = c.port.unwrap_or(DEFAULT_PORT);
            let hosts = host_list(c.host.as_deref().unwrap_or("localhost"), default_port)
                .map_err(|e| config_error(name, format!("host: {e}")))?;
            let mut options = ClientOptions::default();
            options.hosts = hosts;
            options
        }
    };
    if let Some(user) = &credentials.user {
        let mut credential = Credential::default();
        credential.username = Some(user.clone());
        credential.password = credentials.secret().map(str::to_owned);
        // `admin` only when credentials are given, as the driver's URI rules have it.
        credential.source = Some(c.auth_source.clone().unwrap_or_else(|| "admin".to_owned()));
        options.credential = Some(credential);
    } else if let (Some(source), Some(credential)) = (&c.auth_source, options.credential.as_mut()) {
        credential.source = Some(source.clone());
    }
    if let Some(rs) = &c.replica_set {
        options.repl_set_name = Some(rs.clone());
    }
    if let Some(pref) = c.read_preference {
        options.selection_criteria = Some(SelectionCriteria::ReadPreference(read_preference(pref)));
    }
    if let Some(db) = &c.database {
        options.default_database = Some(db.clone());
    }
    if let Some(mode) = c.sslmode {
        options.tls = Some(tls(mode, c.trust_server_certificate));
    }
    if let Some(app) = &c.application_name {
        options.app_name = Some(app.clone());
    }
    options.max_pool_size = Some(settings.max_open);
    options.min_pool_size = Some(settings.min_open);
    options.max_idle_time = settings.max_idle_time;
    options.connect_timeout = Some(settings.connect_timeout);
    options.server_selection_timeout = Some(settings.connect_timeout);
    Ok(options)
}

/// MongoDB has no opportunistic TLS: `allow` and `prefer` mean plain connections.
fn tls(mode: SslMode, trust: bool) -> Tls {
    let mut options = TlsOptions::default();
    match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => return Tls::Disabled,
        SslMode::Require => options.allow_invalid_certificates = Some(trust),
        // The rustls backend has no chain-only mode: verify-ca also checks the host name.
        SslMode::VerifyCa | SslMode::VerifyFull => {}
    }
    Tls::Enabled(options)
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move { Ok(Box::new(open_client(spec).await?) as Box<dyn BackendPool>) })
}

/// The driver keeps the credential inside the `Client` and authenticates every new connection
/// with it; nothing can change it afterwards. So when the password file or the provider's
/// answer changes, the connection reopens: a new `Client` on the new credentials replaces this
/// one (see `Connection::watch_credentials`), and this one drains.
async fn open_client(spec: &OpenSpec<'_>) -> Result<MongoBackend> {
    // Lifecycle hooks cannot be honoured here: refuse rather than ignore them.
    if !spec.hooks.is_empty() {
        return Err(crate::error::Error::Unsupported {
            connection: spec.name.to_string(),
            layer: "lifecycle hooks",
            backend: DatabaseType::Mongodb,
            reason: crate::hooks::NO_MONGODB_HOOKS,
        });
    }
    let (credentials, _) = spec.credentials.current().await?;
    spec.credentials.reopen_when_changed();
    let mut options = client_options(spec.name, spec.config, spec.settings, &credentials).await?;
    let events = Arc::new(PoolEvents::default());
    let max_pool = spec.settings.max_open;
    options.cmap_event_handler = Some(events.handler(max_pool));
    let criteria = options.selection_criteria.clone();
    let database = options.default_database.clone();
    let client = mongodb::Client::with_options(options)
        .map_err(|e| mongo_error(spec.name, Operation::Connect, e))?;
    let ping_timeout = spec
        .settings
        .query_timeout
        .unwrap_or(spec.settings.connect_timeout);
    // Building a client is lazy: the ping is what proves the server and the credentials.
    let probe = ping(
        spec.name,
        &client,
        database.as_deref(),
        criteria.clone(),
        spec.settings.connect_timeout,
    )
    .await;
    if let Err(e) = probe {
        client.shutdown().immediate(true).await;
        return Err(match e {
            Error::Database { source, kind, .. } => Error::Database {
                connection: spec.name.to_string(),
                operation: Operation::Connect,
                kind,
                source,
            },
            other => other,
        });
    }
    Ok(MongoBackend {
        name: spec.name.clone(),
        database: database.as_deref().map(|d| client.database(d)),
        database_name: database,
        client,
        criteria,
        events,
        max_pool,
        ping_timeout,
    })
}

pub(crate) fn mongo_error(name: &str, operation: Operation, e: mongodb::error::Error) -> Error {
    let kind = classify(&e);
    Error::database(name, operation, kind, e)
}

fn classify(e: &mongodb::error::Error) -> ErrorKind {
    use mongodb::error::ErrorKind as K;
    match e.kind.as_ref() {
        K::Authentication { .. } => ErrorKind::Authentication,
        K::InvalidArgument { .. } | K::InvalidTlsConfig { .. } => ErrorKind::Configuration,
        K::ServerSelection { .. }
        | K::Io(_)
        | K::ConnectionPoolCleared { .. }
        | K::DnsResolve { .. } => ErrorKind::Transient,
        // AuthenticationFailed, Unauthorized
        K::Command(c) if c.code == 18 || c.code == 13 => ErrorKind::Authentication,
        _ if e.contains_label("RetryableWriteError")
            || e.contains_label("TransientTransactionError") =>
        {
            ErrorKind::Transient
        }
        _ => ErrorKind::Query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_parse_with_default_ports() {
        let addr = |t| server_address(t, 27017).unwrap().to_string();
        assert_eq!(addr("db1"), "db1:27017");
        assert_eq!(addr("db1:27018"), "db1:27018");
        assert!(matches!(
            server_address("[::1]:27019", 1).unwrap(),
            ServerAddress::Tcp { host, port: Some(27019) } if host == "::1"
        ));
        assert!(matches!(
            server_address("::1", 7).unwrap(),
            ServerAddress::Tcp { host, port: Some(7) } if host == "::1"
        ));
        assert!(matches!(
            server_address(" [::1] ", 7).unwrap(),
            ServerAddress::Tcp { host, port: Some(7) } if host == "::1"
        ));
        for bad in [
            "db:x",
            "",
            "db:0",
            "db:",
            "[::1]junk",
            "[::1",
            "[db]:1",
            "a:b:c",
            "db/admin?authSource=x",
            "u:Pw-Hidden@db",
            "d b",
        ] {
            let err = server_address(bad, 1).unwrap_err();
            assert!(
                !err.contains("Pw-Hidden") && !err.contains("admin"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_provider_token_is_refused_without_showing_it() {
        let mut c = ConnectionConfig::new("m", crate::DatabaseType::Mongodb);
        c.host = Some("h".into());
        let settings = crate::ManagerConfig::default().pool_settings(&c);
        let err = client_options("m", &c, &settings, &Resolved::token("u", "Tok-Hidden"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(!format!("{err} {err:?}").contains("Tok-Hidden"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_host_list_entry_is_named_by_position() {
        let mut c = ConnectionConfig::new("m", crate::DatabaseType::Mongodb);
        c.host = Some("a:1, b ,u:Pw-Hidden@c".into());
        let settings = crate::ManagerConfig::default().pool_settings(&c);
        let err = client_options("m", &c, &settings, &Resolved::from_config(&c))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        let text = err.to_string();
        assert!(
            text.contains("host: entry 3 of the list contains `@`"),
            "{text}"
        );
        assert!(!text.contains("Pw-Hidden"), "{text}");
    }

    #[tokio::test]
    async fn structured_options_reach_the_driver() {
        let mut c = ConnectionConfig::new("m", crate::DatabaseType::Mongodb);
        c.host = Some("a:1,b".into());
        c.port = Some(2);
        c.user = Some("u".into());
        c.password = Some("p".to_owned().into());
        c.replica_set = Some("rs0".into());
        c.read_preference = Some(ReadPreference::SecondaryPreferred);
        c.min_open_conns = Some(1);
        let settings = crate::ManagerConfig::default().pool_settings(&c);
        let o = client_options("m", &c, &settings, &Resolved::from_config(&c))
            .await
            .unwrap();
        let hosts: Vec<String> = o.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["a:1", "b:2"]);
        let cred = o.credential.unwrap();
        assert_eq!(cred.source.as_deref(), Some("admin"));
        assert_eq!(o.repl_set_name.as_deref(), Some("rs0"));
        assert_eq!(o.max_pool_size, Some(25));
        assert_eq!(o.min_pool_size, Some(1));
        assert!(matches!(
            o.selection_criteria,
            Some(SelectionCriteria::ReadPreference(
                MongoReadPreference::SecondaryPreferred { .. }
            ))
        ));

        let mut anonymous = ConnectionConfig::new("m", crate::DatabaseType::Mongodb);
        anonymous.host = Some("h".into());
        let o = client_options(
            "m",
            &anonymous,
            &settings,
            &Resolved::from_config(&anonymous),
        )
        .await
        .unwrap();
        assert!(o.credential.is_none(), "no auth source without credentials");
    }
}
