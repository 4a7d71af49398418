//! Closed-loop throughput runs and small statistics helpers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One operation, boxed the same way for every variant so the harness costs them alike.
pub type Op = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub fn op<F, Fut>(f: F) -> Op
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// Operations per second with `workers` tasks looping on `op` for `duration` (after a warm-up).
pub async fn throughput(workers: usize, duration: Duration, op: Op) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    op().await;
                    done.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (first, started) = (done.load(Relaxed), Instant::now());
    tokio::time::sleep(duration).await;
    let (last, elapsed) = (done.load(Relaxed), started.elapsed());
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (last - first) as f64 / elapsed.as_secs_f64()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn fmt_rate(v: f64) -> String {
    format!("{v:.0}/s")
}
