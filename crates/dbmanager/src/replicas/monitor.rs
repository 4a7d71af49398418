//! The background task of a replica set: checks each replica every `check_interval` (ping and
//! lag) and probes a banned one when its ban ends. It holds the set weakly and ends with it,
//! or when the connection closes it.

use std::sync::Arc;
use std::time::Duration;

use super::{Member, ReplicaSet};

/// How often the task looks for due checks: a quarter of the interval, from 50 ms to 1 s, so
/// a ban ends close to its time without the task spinning.
fn tick(interval: Duration, ban_base: Duration) -> Duration {
    (interval.min(ban_base) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

pub(super) fn spawn<M: Member>(set: &Arc<ReplicaSet<M>>) {
    let weak = Arc::downgrade(set);
    let tick = tick(set.policy.check_interval, set.policy.ban_base);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(set) = weak.upgrade() else {
                return;
            };
            if !set.running.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            for i in 0..set.replicas.len() {
                if set.due(i) {
                    // Each check on its own task: a replica whose connect retries for seconds
                    // does not hold up the others.
                    let set = set.clone();
                    tokio::spawn(async move { set.check(i).await });
                }
            }
        }
    });
    if let Some(old) = set
        .monitor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .replace(task)
    {
        old.abort();
    }
}
