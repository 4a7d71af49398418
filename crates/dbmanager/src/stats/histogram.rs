//! A duration histogram kept with atomics only, so observing on the query path takes no lock
//! (prometheus-client's own histogram takes a mutex), and its public snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets: 0.5 ms doubling to about 16 s.
const BUCKETS: usize = 16;

fn bucket_bound(i: usize) -> f64 {
    0.0005 * f64::from(1u32 << i)
}

/// Live histogram, updated where the event happens.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = (0..BUCKETS)
            .find(|&i| secs <= bucket_bound(i))
            .unwrap_or(BUCKETS);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                cumulative += count.load(Relaxed);
                let bound = if i < BUCKETS {
                    bucket_bound(i)
                } else {
                    f64::INFINITY
                };
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: Duration::from_nanos(self.sum_nanos.load(Relaxed)),
        }
    }
}

/// A histogram of durations at one moment, in the Prometheus shape.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`, the last bound being `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in total.
    pub count: u64,
    /// Sum of the observed durations.
    pub sum: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        assert!(s.buckets.last().is_some_and(|b| b.0.is_infinite()));
        assert_eq!(s.buckets.len(), BUCKETS + 1);
        assert!(s.sum > Duration::from_secs(100));
    }
}
