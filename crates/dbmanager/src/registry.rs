//! The one table of drivers compiled into this build: each backend's cargo feature adds its
//! line here, and nothing else in the core names a backend.

use crate::config::{ConnectionConfig, PostgresDriver};
use crate::driver::Driver;

/// Every driver of this build, in documentation order.
pub(crate) static DRIVERS: &[&Driver] = &[
    #[cfg(feature = "postgres")]
    &crate::backends::postgres::DRIVER,
    #[cfg(feature = "tokio-postgres")]
    &crate::backends::tokio_postgres::DRIVER,
    #[cfg(feature = "sqlite")]
    &crate::backends::sqlite::DRIVER,
    #[cfg(feature = "mssql")]
    &crate::backends::mssql::DRIVER,
    #[cfg(feature = "mongodb")]
    &crate::backends::mongodb::DRIVER,
    #[cfg(feature = "mysql")]
    &crate::backends::mysql::DRIVER,
];

/// The driver serving `c`, chosen by its `type` and, where a type has several, its `driver`,
/// if this build has it.
pub(crate) fn driver(c: &ConnectionConfig) -> Option<&'static Driver> {
    let wanted = c.driver.unwrap_or(PostgresDriver::DEFAULT);
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.kind == c.kind && d.variant.is_none_or(|v| v == wanted))
}
