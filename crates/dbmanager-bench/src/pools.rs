//! The pools every measurement compares, built the same way for each: raw sqlx with dbmanager's
//! settings, raw deadpool-postgres, and a dbmanager `Manager`, all on one database of the
//! machine's PostgreSQL with TLS off.

use std::str::FromStr;
use std::time::Duration;

use dbmanager::reexports::sqlx::PgPool;
use dbmanager::reexports::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use dbmanager::{ConnectionConfig, DatabaseType, Manager, ManagerConfig, SslMode};

use crate::support;

pub fn url(database: &str) -> String {
    format!(
        "postgres://{}@{}:{}/{}?sslmode=disable",
        support::pg_user(),
        support::pg_host(),
        support::pg_port(),
        database
    )
}

/// A raw sqlx pool; `same_settings` gives it the settings dbmanager gives its own (no ping on
/// acquire, the same lifetimes), which makes it the baseline; without, sqlx's defaults.
pub async fn sqlx_pool(database: &str, size: u32, same_settings: bool) -> PgPool {
    let options = PgConnectOptions::from_str(&url(database)).expect("url");
    let mut pool = PgPoolOptions::new().max_connections(size);
    if same_settings {
        pool = pool
            .test_before_acquire(false)
            .max_lifetime(Duration::from_secs(1800))
            .idle_timeout(Duration::from_secs(300))
            .acquire_timeout(Duration::from_secs(30));
    }
    pool.connect_with(options).await.expect("sqlx pool")
}

/// A raw deadpool-postgres pool (tokio-postgres), recycling without a round trip.
pub fn deadpool(database: &str, size: usize) -> deadpool_postgres::Pool {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.host = Some(support::pg_host());
    cfg.port = Some(support::pg_port());
    cfg.user = Some(support::pg_user());
    cfg.dbname = Some(database.to_owned());
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
    cfg.manager = Some(deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    });
    cfg.create_pool(
        Some(deadpool_postgres::Runtime::Tokio1),
        tokio_postgres::NoTls,
    )
    .expect("deadpool")
}

/// A PostgreSQL connection named `name` on `database` with a pool of `size`.
pub fn pg_config(name: &str, database: &str, size: u32) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, DatabaseType::Postgres);
    c.host = Some(support::pg_host());
    c.port = Some(support::pg_port());
    c.user = Some(support::pg_user());
    c.database = Some(database.to_owned());
    c.sslmode = Some(SslMode::Disable);
    c.max_open_conns = Some(size);
    c.max_idle_conns = Some(size);
    c.connect_timeout = Duration::from_secs(30);
    // Metrics on (the default) and spans enabled with no subscriber installed.
    c.enable_tracing = std::env::var("BENCH_TRACING").map_or(true, |v| v != "0");
    // For profiling: BENCH_QUERY_TIMEOUT=0 drops the client-side query timer.
    if std::env::var("BENCH_QUERY_TIMEOUT").is_ok_and(|v| v == "0") {
        c.query_timeout = Duration::ZERO;
    }
    c
}

/// A connected manager holding `connections`.
pub async fn manager_with(connections: Vec<ConnectionConfig>) -> Manager {
    let config = connections
        .into_iter()
        .fold(ManagerConfig::default(), ManagerConfig::with_connection);
    let manager = Manager::new(config).expect("config");
    manager.connect().await.expect("connect");
    manager
}

/// The query matrix's manager: `pg`, and `pg_nometrics` with the same pool settings and
/// per-query metrics off, to price them (`enable_metrics: false`).
pub async fn manager(database: &str, size: u32) -> Manager {
    let c = pg_config("pg", database, size);
    let mut quiet = c.clone();
    quiet.name = "pg_nometrics".into();
    quiet.enable_metrics = false;
    manager_with(vec![c, quiet]).await
}

/// A dbmanager PostgreSQL driver under measurement.
pub struct Driver {
    /// The connection name it gets in a bench's manager.
    pub connection: &'static str,
    /// How tables name it.
    pub label: &'static str,
    /// How its connection config differs from [`pg_config`]'s (the default driver's).
    pub configure: fn(&mut ConnectionConfig),
}

/// The drivers whose neutral handle the mix, the checkout table and idle memory measure. A new
/// driver is one more line here: those three measurements pick it up.
pub const DRIVERS: &[Driver] = &[Driver {
    connection: "pg",
    label: "sqlx",
    configure: |_| {},
}];

impl Driver {
    /// Its connection on `database` with a pool of `size`.
    pub fn config(&self, database: &str, size: u32) -> ConnectionConfig {
        let mut c = pg_config(self.connection, database, size);
        (self.configure)(&mut c);
        c
    }
}

/// One connection per driver of [`DRIVERS`] on `database`, each with a pool of `size`.
pub fn driver_configs(database: &str, size: u32) -> Vec<ConnectionConfig> {
    DRIVERS.iter().map(|d| d.config(database, size)).collect()
}
