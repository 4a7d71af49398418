//! Bounding an operation in time, as every layer does the same way.

use std::time::Duration;

use futures_util::FutureExt as _;

use crate::error::{Error, Operation, Result};

/// Runs `attempt` under a timeout, turning the elapsed timeout into a transient error.
///
/// A `map` on the timeout rather than an `async fn`: no wrapper future around it, so it is not
/// copied once more on the query path.
pub(crate) fn bounded<T, F>(
    name: &str,
    operation: Operation,
    limit: Duration,
    attempt: F,
) -> impl std::future::Future<Output = Result<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    tokio::time::timeout(limit, attempt)
        .map(move |r| r.unwrap_or_else(|_| Err(Error::timeout(name, operation, limit))))
}
