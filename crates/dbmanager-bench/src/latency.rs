//! Closed-loop runs that keep every sample: `workers` tasks each call a probe in a loop, and
//! what each call reports (which histogram, how long) goes into that task's own histograms,
//! merged when the run ends, so recording takes no lock and no shared cache line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hdrhistogram::Histogram;

/// One call's sample: the histogram it belongs to (e.g. the kind of request) and the duration
/// to record there.
pub type Sample = Result<(usize, Duration), String>;

/// Called once per loop iteration with a fresh random number.
pub type Probe = Arc<dyn Fn(u64) -> BoxFuture<'static, Sample> + Send + Sync>;

/// Nanoseconds, 1 ns to 60 s, two significant digits (1 % resolution; a few KiB each).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// What one run measured.
pub struct Run {
    /// One histogram per sample slot, over the measured window only.
    pub histograms: Vec<Histogram<u64>>,
    pub elapsed: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Run {
    /// Samples recorded in slot `i` per second of the window.
    pub fn rate(&self, i: usize) -> f64 {
        self.histograms[i].len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn total_rate(&self) -> f64 {
        (0..self.histograms.len()).map(|i| self.rate(i)).sum()
    }
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

/// Runs `probe` on `workers` tasks: a warm-up, then `duration` measured. A call is kept only
/// if it started and ended inside the window, so neither edge is counted half.
pub async fn run(
    workers: usize,
    slots: usize,
    warmup: Duration,
    duration: Duration,
    probe: Probe,
) -> Run {
    let phase = Arc::new(AtomicU8::new(WARMING));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (probe, phase) = (probe.clone(), phase.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w as u64 + 1);
                let mut histograms: Vec<_> = (0..slots).map(|_| histogram()).collect();
                let (mut errors, mut first_error) = (0u64, None);
                loop {
                    let before = phase.load(Relaxed);
                    if before == STOPPING {
                        break;
                    }
                    let sample = probe(rng.u64(..)).await;
                    let counted = before == MEASURING && phase.load(Relaxed) == MEASURING;
                    match sample {
                        Ok((slot, took)) if counted => record(&mut histograms[slot], took),
                        Ok(_) => {}
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            // A failing client fails fast; do not spin the core the others need.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                (histograms, errors, first_error)
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    phase.store(MEASURING, Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    phase.store(STOPPING, Relaxed);
    let elapsed = started.elapsed();
    let mut out = Run {
        histograms: (0..slots).map(|_| histogram()).collect(),
        elapsed,
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        let (histograms, errors, first_error) = task.await.expect("a worker panicked");
        for (into, from) in out.histograms.iter_mut().zip(&histograms) {
            into.add(from).expect("histograms of the same bounds");
        }
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out
}

/// A duration for tables: µs with two decimals below 10 µs, whole µs below 10 ms, ms above.
pub fn fmt_nanos(nanos: u64) -> String {
    let micros = nanos as f64 / 1000.0;
    if micros < 10.0 {
        format!("{micros:.2} µs")
    } else if micros < 10_000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.1} ms", micros / 1000.0)
    }
}

/// The spread of repeated measurements: (max - min) / median, in percent.
pub fn spread(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let median = crate::harness::median(values.to_vec());
    if median > 0.0 {
        (max - min) / median * 100.0
    } else {
        f64::NAN
    }
}
