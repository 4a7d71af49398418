//! Bounding an operation in time, as every layer does the same way.

use std::time::Duration;

use crate::error::{Error, Operation, Result};

/// Runs `attempt` under a timeout, turning the elapsed timeout into a transient error.
pub(crate) async fn bounded<T, F>(
    name: &str,
    operation: Operation,
    limit: Duration,
    attempt: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(Error::timeout(name, operation, limit)))
}
