#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// A build with only some backends leaves helpers of the others unused.
#![cfg_attr(
    not(all(feature = "postgres", feature = "sqlite", feature = "sea-orm")),
    allow(dead_code, unused_imports, unused_macros, unused_variables)
)]

#[cfg(not(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mssql",
    feature = "mysql",
    feature = "tokio-postgres"
)))]
compile_error!(
    "dbmanager needs at least one SQL backend feature: `postgres`, `tokio-postgres`, `sqlite`, `mssql` or `mysql`"
);

mod adopt;
mod backends;
mod breaker;
pub mod config;
mod connection;
mod credentials;
mod deadline;
mod driver;
mod dsn;
mod error;
mod health;
mod hooks;
mod hosts;
mod leak;
mod listen;
mod manager;
#[cfg(test)]
mod manager_logic_tests;
#[cfg(feature = "metrics")]
mod metrics;
mod registry;
mod replicas;
mod retry;
mod sql;
mod stats;
mod trace;
mod validate;

pub use adopt::{AdoptContext, Adoptable, Adopted};
#[cfg(feature = "mssql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mssql")))]
pub use backends::mssql::{MssqlConnection, MssqlManager, MssqlPool, TiberiusClient};
#[cfg(feature = "tokio-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
pub use backends::tokio_postgres::{TokioPgClient, TokioPgManager, TokioPgPool};
pub use config::{
    ConfigProblem, ConfigProblems, ConnectionConfig, DatabaseType, DefaultOrm, EnvSource,
    ManagerConfig, PoolSettings, Pooler, PostgresDriver, ReadPolicy, ReadPreference,
    ReplicaFallback, RetryPolicy, SslMode, TargetSessionAttrs,
};
pub use connection::Connection;
pub use credentials::{CredentialProvider, CredentialRequest, Credentials};
pub use error::{BoxError, Error, ErrorKind, Operation, Result};
pub use health::{HealthReport, ListenerStats, Status};
pub use hooks::{HookConnection, HookResult, Hooks};
pub use listen::{Listener, ListenerEvent, ListenerHandle, Notification};
pub use manager::{CloseReport, ConnectPolicy, ConnectReport, Manager, ReloadReport};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::ManagerCollector;
pub use sql::{ColumnRef, Database, FromValue, Interval, Row, Transaction, Value};
pub use stats::{ConnectionStats, HistogramSnapshot, ManagerStats, ReplicaStats, RoutingStats};

/// The driver and ORM crates this crate's API exposes, re-exported so applications use the very
/// same versions.
pub mod reexports {
    #[cfg(feature = "mssql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mssql")))]
    pub use bb8;
    pub use bigdecimal;
    pub use chrono;
    #[cfg(feature = "tokio-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
    pub use deadpool;
    #[cfg(feature = "tokio-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
    pub use deadpool_postgres;
    #[cfg(feature = "mongodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
    pub use mongodb;
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub use prometheus_client;
    #[cfg(feature = "sea-orm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
    pub use sea_orm;
    pub use secrecy;
    pub use serde_json;
    pub use sqlx;
    #[cfg(feature = "mssql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mssql")))]
    pub use tiberius;
    #[cfg(feature = "tokio-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
    pub use tokio_postgres;
    pub use uuid;
}
