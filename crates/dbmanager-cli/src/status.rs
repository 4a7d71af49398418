//! The status page of `serve`: `/` (one HTML page with its stylesheet and script, all compiled
//! into the binary), `/status.json` (what the page draws), and the short in-memory history
//! behind its sparklines, sampled by a background task.
//!
//! The page shows what `/readyz` and `/stats` already expose (name, type, status, the health
//! report's last error, pool sizes and counters), never a configuration value beyond the pool's
//! cap: errors come from the library's health report, which holds no secrets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dbmanager::Manager;
use serde::Serialize;

/// How far back the sparklines reach.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Samples kept per connection at most, whatever the sample interval: the memory bound.
pub const MAX_SAMPLES: usize = 600;

const INDEX_HTML: &str = include_str!("status/index.html");
const STATUS_CSS: &str = include_str!("status/status.css");
const STATUS_JS: &str = include_str!("status/status.js");

/// The page loads only its own stylesheet, script and JSON: nothing inline, nothing external.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One sample of one connection.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Unix time in milliseconds.
    at_ms: u64,
    in_use: u32,
    /// Mean duration of the health checks that finished since the previous sample, if any.
    health_ms: Option<f64>,
}

/// One connection's samples, oldest first, and where the health histogram stood at the last one.
#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    health_seen: Option<(u64, Duration)>,
}

/// The last [`WINDOW`] of every connection, at most [`MAX_SAMPLES`] samples each.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    rings: Mutex<BTreeMap<String, Ring>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl History {
    /// A history sampled every `interval`.
    pub fn new(interval: Duration) -> Self {
        let per_window = WINDOW.as_secs_f64() / interval.as_secs_f64().max(f64::EPSILON);
        Self {
            interval,
            capacity: (per_window.ceil() as usize).clamp(2, MAX_SAMPLES),
            rings: Mutex::default(),
        }
    }

    /// Takes one sample of every connection.
    pub fn sample(&self, manager: &Manager) {
        let at_ms = unix_ms(SystemTime::now());
        let stats: Vec<_> = manager.connections().iter().map(|c| c.stats()).collect();
        let Ok(mut rings) = self.rings.lock() else {
            return;
        };
        // Connections removed at runtime (a config reload) take their history with them.
        rings.retain(|name, _| stats.iter().any(|s| s.name == *name));
        for s in stats {
            let ring = rings.entry(s.name.clone()).or_default();
            let health = (s.health_check_seconds.count, s.health_check_seconds.sum);
            let health_ms = ring.health_seen.and_then(|(count, sum)| {
                let checks = health.0.checked_sub(count).filter(|n| *n > 0)?;
                let spent = health.1.checked_sub(sum)?;
                Some(spent.as_secs_f64() * 1000.0 / checks as f64)
            });
            ring.health_seen = Some(health);
            if ring.samples.len() == self.capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(Sample {
                at_ms,
                in_use: s.in_use,
                health_ms,
            });
        }
    }

    fn series(&self, name: &str) -> Series {
        let mut series = Series::default();
        if let Ok(rings) = self.rings.lock()
            && let Some(ring) = rings.get(name)
        {
            for s in &ring.samples {
                series.t.push(s.at_ms);
                series.in_use.push(s.in_use);
                series
                    .health_ms
                    .push(s.health_ms.map(|ms| (ms * 1000.0).round() / 1000.0));
            }
        }
        series
    }
}

/// Samples `manager` into `history` every interval until aborted.
pub fn spawn_sampler(manager: Manager, history: Arc<History>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(history.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            history.sample(&manager);
        }
    })
}

/// The state of the status routes.
#[derive(Clone)]
pub struct StatusState {
    pub manager: Manager,
    pub history: Arc<History>,
}

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STATUS_CSS)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", STATUS_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct Page {
    generated_at_ms: u64,
    window_seconds: u64,
    sample_interval_seconds: f64,
    /// What `/readyz` answers.
    ready: bool,
    total: usize,
    up: usize,
    connections: Vec<Card>,
}

#[derive(Serialize)]
struct Card {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    status: dbmanager::Status,
    up: bool,
    /// Why it is not up (as on `/readyz`).
    reason: Option<String>,
    /// The health report's last error, also after a recovery.
    last_error: Option<String>,
    consecutive_failures: u32,
    last_success_ms: Option<u64>,
    last_check_ms: Option<u64>,
    pool: Pool,
    wait_count: u64,
    wait_seconds: f64,
    acquire_timeouts: u64,
    reconnects_ok: u64,
    reconnects_failed: u64,
    history: Series,
}

#[derive(Serialize)]
struct Pool {
    open: u32,
    in_use: u32,
    idle: u32,
    max: u32,
}

#[derive(Serialize, Default)]
struct Series {
    t: Vec<u64>,
    in_use: Vec<u32>,
    health_ms: Vec<Option<f64>>,
}

pub async fn json(State(state): State<StatusState>) -> Response {
    let cards: Vec<Card> = state
        .manager
        .connections()
        .into_iter()
        .map(|c| {
            let health = c.health();
            let stats = c.stats();
            Card {
                name: c.name().to_owned(),
                kind: c.kind().to_string(),
                status: health.status,
                up: health.status.is_up(),
                reason: crate::serve::down_reason(&health),
                last_error: health.last_error.clone(),
                consecutive_failures: health.consecutive_failures,
                last_success_ms: health.last_success.map(unix_ms),
                last_check_ms: health.last_check.map(unix_ms),
                pool: Pool {
                    open: stats.open,
                    in_use: stats.in_use,
                    idle: stats.idle,
                    max: stats.max_open,
                },
                wait_count: stats.wait_count,
                wait_seconds: stats.wait_duration.as_secs_f64(),
                acquire_timeouts: stats.acquire_timeouts,
                reconnects_ok: stats.reconnects_ok,
                reconnects_failed: stats.reconnects_failed,
                history: state.history.series(c.name()),
            }
        })
        .collect();
    let ready = crate::serve::is_ready(&state.manager);
    let page = Page {
        generated_at_ms: unix_ms(SystemTime::now()),
        window_seconds: WINDOW.as_secs(),
        sample_interval_seconds: state.history.interval.as_secs_f64(),
        ready,
        total: cards.len(),
        up: cards.iter().filter(|c| c.up).count(),
        connections: cards,
    };
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        axum::Json(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_holds_the_window_and_never_more_than_its_bound() {
        assert_eq!(History::new(Duration::from_secs(5)).capacity, 120);
        assert_eq!(History::new(Duration::from_secs(1)).capacity, 600);
        assert_eq!(
            History::new(Duration::from_millis(100)).capacity,
            MAX_SAMPLES
        );
        assert_eq!(History::new(Duration::from_secs(3600)).capacity, 2);
    }

    #[tokio::test]
    async fn samples_beyond_the_capacity_push_out_the_oldest() {
        let manager = Manager::from_yaml_str(
            "dbmanager:\n  connections:\n    m: {type: sqlite, filepath: ':memory:'}\n",
        )
        .unwrap();
        let history = History::new(Duration::from_secs(300));
        assert_eq!(history.capacity, 2);
        for _ in 0..5 {
            history.sample(&manager);
        }
        let series = history.series("m");
        assert_eq!(series.t.len(), 2);
        assert_eq!(series.in_use, [0, 0]);
        assert!(series.health_ms.iter().all(Option::is_none));
        assert!(history.series("other").t.is_empty());
    }

    #[tokio::test]
    async fn a_removed_connection_takes_its_history_with_it() {
        let manager = Manager::from_yaml_str(
            "dbmanager:\n  connections:\n    a: {type: sqlite, filepath: ':memory:'}\n    b: {type: sqlite, filepath: ':memory:'}\n",
        )
        .unwrap();
        let history = History::new(Duration::from_secs(5));
        history.sample(&manager);
        assert_eq!(history.rings.lock().unwrap().len(), 2);
        manager.remove("b", Duration::from_secs(1)).await.unwrap();
        history.sample(&manager);
        let rings = history.rings.lock().unwrap();
        assert_eq!(rings.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(rings["a"].samples.len(), 2);
    }
}
