//! The seam under the neutral handle: what a SQL backend implements so that [`super::Database`]
//! and [`super::Transaction`] can run statements on it. The driver futures are boxed once here;
//! the handle's timeout and span wrappers only hold the box.

use futures_util::future::BoxFuture;

use super::{Row, Value};
use crate::config::DefaultOrm;
use crate::error::Result;

/// Runs statements for the neutral handle: one checkout per call.
pub(crate) trait SqlExecutor: Send + Sync + 'static {
    /// The layer it runs on.
    fn layer(&self) -> DefaultOrm;

    /// Runs a statement; the rows affected.
    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>>;

    /// Runs a query; every row.
    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>>;

    /// Runs a query; the first row, reading no more than needed.
    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>>;

    /// Starts a transaction on one checked-out connection.
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>>;
}

/// An open transaction; dropped without commit or rollback, it rolls back (or its connection is
/// discarded).
pub(crate) trait SqlTransaction: Send + 'static {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>>;

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>>;

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>>;

    fn rollback(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}
