//! Connect retry: exponential backoff with jitter, only for transient errors.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::config::RetryPolicy;
use crate::error::Result;

impl RetryPolicy {
    /// The delays between attempts: `delay`, doubling, capped at `max_delay`, each scaled by a
    /// random factor in [0.5, 1] ("equal jitter") so that restarted instances spread out and a
    /// delay never exceeds the cap.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + Sync + Unpin + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
            .map(jitter as fn(Duration) -> Duration)
    }
}

impl RetryPolicy {
    /// The delay after `failures` failed attempts of a loop that never gives up (a listener's
    /// reconnects): `delay`, doubling, capped at `max_delay`, with the same jitter.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        jitter(
            self.delay
                .saturating_mul(1 << doublings)
                .min(self.max_delay),
        )
    }
}

fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Runs `attempt` until it succeeds, fails with a non-transient error, or the policy's attempts
/// are spent. Returns the outcome and the number of attempts made.
pub(crate) async fn retry<T, F, Fut>(
    name: &str,
    policy: &RetryPolicy,
    log: bool,
    mut attempt: F,
) -> (Result<T>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = AtomicU32::new(0);
    let outcome = (|| {
        attempts.fetch_add(1, Relaxed);
        attempt()
    })
    .retry(policy.delays())
    .sleep(tokio::time::sleep)
    .when(|e: &crate::Error| e.is_retryable())
    .notify(|e, delay| {
        if log {
            tracing::warn!(
                connection = name,
                attempt = attempts.load(Relaxed),
                max_attempts = policy.attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = %e,
                "connect attempt failed; retrying"
            );
        }
    })
    .await;
    (outcome, attempts.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_are_capped_and_jittered_within_half() {
        let policy = RetryPolicy {
            attempts: 6,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 5);
        let nominal = [100u64, 200, 300, 300, 300];
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(*d >= n / 2 && *d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
        }
    }

    #[test]
    fn one_attempt_means_no_delay() {
        let policy = RetryPolicy {
            attempts: 1,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(policy.delays().count(), 0);
    }
}
