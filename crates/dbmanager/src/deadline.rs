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

/// [`bounded`] for an operation that started at `started` (a clock reading the caller already
/// has: the timer then reads none of its own). It fails `limit` after `started`.
pub(crate) fn bounded_from<T, F>(
    name: &str,
    operation: Operation,
    limit: Duration,
    started: tokio::time::Instant,
    attempt: F,
) -> impl std::future::Future<Output = Result<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    let timer = match started.checked_add(limit) {
        Some(deadline) => tokio::time::timeout_at(deadline, attempt),
        None => tokio::time::timeout(limit, attempt),
    };
    timer.map(move |r| r.unwrap_or_else(|_| Err(Error::timeout(name, operation, limit))))
}
