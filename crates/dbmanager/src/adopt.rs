//! Adopting a pool the application built already as a named connection: every layer, stats,
//! health, metrics, spans and close work on it, and a reconnect never replaces it.

use std::sync::Arc;

use crate::config::DatabaseType;
use crate::driver::BackendPool;
use crate::stats::PoolCounters;

mod sealed {
    pub trait Sealed {}
}

pub(crate) use sealed::Sealed;

/// What the adopting manager hands a pool.
pub struct AdoptContext {
    pub(crate) name: Arc<str>,
    pub(crate) counters: Arc<PoolCounters>,
}

/// A pool turned into the manager's backend.
pub struct Adopted(pub(crate) Box<dyn BackendPool>);

/// A pool or client the manager can adopt: `sqlx::PgPool`, `sqlx::SqlitePool`,
/// `sqlx::MySqlPool`, [`crate::MssqlPool`], `mongodb::Client` (each with its backend's
/// feature). Sealed: the backends implement it.
pub trait Adoptable: Sealed + Send + 'static {
    /// The backend it belongs to.
    fn kind(&self) -> DatabaseType;
    #[doc(hidden)]
    fn adopt(self, context: &AdoptContext) -> Adopted;
    /// Whether the pool was closed already (it would never serve: adopting it is refused).
    #[doc(hidden)]
    fn is_closed(&self) -> bool {
        false
    }
}

/// Why adopting a closed pool is refused.
pub(crate) fn closed_pool(name: &str) -> crate::error::Error {
    let mut problems = crate::config::ConfigProblems::default();
    problems.push(
        format!("connections.{name}"),
        "the pool to adopt is closed already; an adopted pool is never reopened, so adopt an open one",
    );
    crate::error::Error::Config(problems)
}
