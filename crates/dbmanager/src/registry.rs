//! The one table of drivers compiled into this build: each backend's cargo feature adds its
//! line here, and nothing else in the core names a backend.

use crate::config::DatabaseType;
use crate::driver::Driver;

/// Every driver of this build, in documentation order.
pub(crate) static DRIVERS: &[&Driver] = &[
    #[cfg(feature = "postgres")]
    &crate::backends::postgres::DRIVER,
    #[cfg(feature = "sqlite")]
    &crate::backends::sqlite::DRIVER,
    #[cfg(feature = "mssql")]
    &crate::backends::mssql::DRIVER,
    #[cfg(feature = "mongodb")]
    &crate::backends::mongodb::DRIVER,
    #[cfg(feature = "mysql")]
    &crate::backends::mysql::DRIVER,
];

/// The driver serving `kind`, if this build has it.
pub(crate) fn driver(kind: DatabaseType) -> Option<&'static Driver> {
    DRIVERS.iter().copied().find(|d| d.kind == kind)
}
