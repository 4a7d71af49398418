//! SQL Server through tiberius clients in a bb8 pool, with the cheap/expensive check split, the
//! idle cap enforced on release, and bb8's statistics mapped onto the crate's stats.

mod config;
mod pool;
mod sql;

use std::any::{Any, TypeId};
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use pool::{MssqlConnection, MssqlManager, MssqlPool, TiberiusClient};

use crate::backends::bounded;
use crate::config::{ConnectionConfig, ConnectionProblems, DatabaseType, DefaultOrm};
use crate::driver::{BackendPool, Driver, Field, OpenSpec};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::SqlExecutor;
use crate::stats::PoolGauges;
use pool::{ErrorSink, LastError};

/// SQL Server's default port.
pub const DEFAULT_PORT: u16 = 1433;

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Mssql,
    variant: None,
    system_name: "microsoft.sql_server",
    default_port: Some(DEFAULT_PORT),
    // ADO.NET strings have no scheme.
    dsn_schemes: &[],
    fields: &[
        Field::Host,
        Field::Port,
        Field::User,
        Field::Password,
        Field::PasswordFile,
        Field::Database,
        Field::Sslmode,
        Field::Schema,
        Field::TrustServerCertificate,
    ],
    required: &[Field::Host],
    no_sea_orm: Some("sea-orm has no SQL Server driver; use `native`"),
    check,
    classify: |e| e.downcast_ref::<tiberius::error::Error>().map(classify),
    open,
    listen: None,
    replica_lag: None,
};

/// Contradictions specific to SQL Server: tiberius takes a password only together with a user,
/// and a user given beside a dsn replaces the dsn's credentials (with an empty password when
/// none is set).
fn check(c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    crate::backends::check_host(c, p, |h| config::host_and_instance(h).map(drop));
    let password_keys = [
        (c.password.is_some(), "password"),
        (c.password_file.is_some(), "password_file"),
    ];
    if c.dsn.is_some() {
        if c.user.is_some() {
            p.push(
                "user",
                "with a dsn, SQL Server would replace the dsn's credentials with this user and an empty password; put `User ID=` in the dsn",
            );
        } else {
            for (_, key) in password_keys.iter().filter(|(set, _)| *set) {
                p.push(
                    key,
                    "SQL Server reads a password only with user, which a dsn excludes; put `Password=` in the dsn",
                );
            }
        }
    } else if c.user.is_none() {
        for (_, key) in password_keys.iter().filter(|(set, _)| *set) {
            p.push(
                key,
                format!("set without user; SQL Server would ignore it (set user, or remove {key})"),
            );
        }
    }
}

/// The open SQL Server backend: the public pool and the neutral handle's executor on it.
struct MssqlBackend {
    pool: MssqlPool,
    native: Arc<dyn SqlExecutor>,
}

impl BackendPool for MssqlBackend {
    fn gauges(&self) -> PoolGauges {
        self.pool.gauges()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.pool.ping())
    }

    fn discard_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.discard_idle())
    }

    /// The cap is enforced when a client is released (`MssqlConnection::drop`), where bb8 lets
    /// the pool decide; no racing releases can overshoot it.
    fn trim_idle(&self, _max_idle: u32) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }

    fn close_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.discard_idle())
    }

    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        (type_id == TypeId::of::<MssqlPool>()).then_some(&self.pool as _)
    }

    fn sql(&self, layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str> {
        match layer {
            DefaultOrm::Native => Ok(self.native.clone()),
            _ => Err("open-source SeaORM has no SQL Server driver; use `mssql()` or `database()`"),
        }
    }
}

impl crate::adopt::Sealed for MssqlPool {}

impl crate::adopt::Adoptable for MssqlPool {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Mssql
    }

    fn adopt(self, context: &crate::adopt::AdoptContext) -> crate::adopt::Adopted {
        let native = Arc::new(sql::MssqlExecutor {
            name: context.name.clone(),
            pool: self.clone(),
        });
        crate::adopt::Adopted(Box::new(MssqlBackend { pool: self, native }))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        let pool = open_pool(spec).await?;
        let native = Arc::new(sql::MssqlExecutor {
            name: spec.name.clone(),
            pool: pool.clone(),
        });
        Ok(Box::new(MssqlBackend { pool, native }) as Box<dyn BackendPool>)
    })
}

async fn open_pool(spec: &OpenSpec<'_>) -> Result<MssqlPool> {
    let (credentials, _) = spec.credentials.current().await?;
    let config =
        config::connect_config(spec.name, spec.config, spec.settings, &credentials).await?;
    let manager = MssqlManager {
        config,
        credentials: spec
            .credentials
            .is_dynamic()
            .then(|| spec.credentials.clone()),
        hooks: spec.hook_runner(),
        hook_failed: Arc::default(),
        credential_failures: Arc::default(),
    };
    // The probe goes through the after-connect hook too: its failure fails the connect.
    let probe = bounded(
        spec.name,
        Operation::Connect,
        spec.settings.connect_timeout,
        manager.open(),
    )
    .await?;
    let last_error = Arc::new(LastError::default());
    let hook_failed = manager.hook_failed.clone();
    let credential_failures = manager.credential_failures.clone();
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
        .build_unchecked(manager);
    let pool = MssqlPool {
        name: spec.name.clone(),
        pool,
        max_idle: s.max_idle,
        idle_closes: Arc::default(),
        adopted: Arc::default(),
        last_error,
        closed: Arc::default(),
        hooks: spec.hook_runner(),
        hook_discards: Arc::default(),
        hook_failed,
        credential_failures,
    };
    // Keep the probe instead of opening a second connection; it counts as opened.
    if s.max_idle > 0 {
        let kept = pool.pool.add(probe);
        if kept.is_ok() {
            pool.adopted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    } else {
        let _ = probe.client.close().await;
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
