//! Prometheus metrics, sampled from the live pools at scrape time.
//!
//! Gauges are read from the pools when scraped; counters and histograms are updated where the
//! event happens, with atomics only. Every family is labelled by `connection` and `type`; no
//! label carries a credential. Connections with `enable_metrics: false` are left out.

use std::fmt::Write as _;
use std::sync::Weak;

use prometheus_client::collector::Collector;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::manager::{Inner, Manager};
use crate::stats::KINDS;

/// Upper bounds of the buckets: 0.5 ms doubling to about 16 s.
const BUCKETS: usize = 16;

fn bucket_bound(i: usize) -> f64 {
    0.0005 * f64::from(1u32 << i)
}

/// A histogram of durations kept with atomics only, so observing on the query path takes no
/// lock (prometheus-client's own histogram takes a mutex).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let bucket = (0..BUCKETS)
            .find(|&i| secs <= bucket_bound(i))
            .unwrap_or(BUCKETS);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let bound = if i < BUCKETS {
                bucket_bound(i)
            } else {
                f64::INFINITY
            };
            buckets.push((bound, cumulative));
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, cumulative, &buckets, None)
    }
}

type Labels = Vec<(&'static str, String)>;

/// Reads one cumulative count out of a stats snapshot.
type StatField = fn(&crate::ConnectionStats) -> u64;

/// The scrape-time collector of one manager. Holds the manager weakly.
#[derive(Debug)]
pub struct ManagerCollector {
    manager: Weak<Inner>,
}

impl Manager {
    /// Registers this manager's metrics in an application's registry.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ManagerCollector {
            manager: self.downgrade(),
        }));
    }

    /// The metrics in the OpenMetrics text format, as served on `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

fn family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, unit, kind)
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.manager.upgrade() else {
            return Ok(());
        };
        let manager = Manager::from_inner(inner);
        let connections: Vec<_> = manager
            .connections()
            .into_iter()
            .filter(|c| c.config().enable_metrics)
            .collect();
        let stats: Vec<_> = connections.iter().map(|c| (c, c.stats())).collect();
        let labels = |c: &crate::Connection| -> Labels {
            vec![
                ("connection", c.name().to_owned()),
                ("type", c.kind().to_string()),
            ]
        };

        let mut by_type = std::collections::BTreeMap::<&'static str, u64>::new();
        for c in &connections {
            *by_type.entry(c.kind().as_str()).or_default() += 1;
        }
        let mut m = family(
            &mut encoder,
            "dbmanager_connections_total",
            "Configured connections by type",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in by_type {
            m.encode_family(&vec![("type", kind.to_owned())])?
                .encode_gauge(&(n as i64))?;
        }

        let mut m = family(
            &mut encoder,
            "dbmanager_connection_status",
            "Connection health (1 healthy or degraded, 0 not)",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            m.encode_family(&labels(c))?
                .encode_gauge(&i64::from(s.status.is_up()))?;
        }

        let mut m = family(
            &mut encoder,
            "dbmanager_connection_pool_size",
            "Pool connections by state",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            for (state, v) in [
                ("open", s.open),
                ("in_use", s.in_use),
                ("idle", s.idle),
                ("max", s.max_open),
            ] {
                let mut l = labels(c);
                l.push(("state", state.to_owned()));
                m.encode_family(&l)?.encode_gauge(&i64::from(v))?;
            }
        }

        let mut m = family(
            &mut encoder,
            "dbmanager_connection_wait_count",
            "Checkouts that waited for a connection",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            m.encode_family(&labels(c))?
                .encode_gauge(&(s.wait_count as i64))?;
        }
        let mut m = family(
            &mut encoder,
            "dbmanager_connection_wait_duration_seconds",
            "Total time checkouts waited",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            m.encode_family(&labels(c))?
                .encode_gauge(&s.wait_duration.as_secs_f64())?;
        }

        let mut m = family(
            &mut encoder,
            "dbmanager_health_check_duration_seconds",
            "Health check duration",
            None,
            MetricType::Histogram,
        )?;
        for c in &connections {
            c.counters()
                .health_seconds
                .encode(m.encode_family(&labels(c))?)?;
        }
        let mut m = family(
            &mut encoder,
            "dbmanager_connection_acquire_wait_seconds",
            "Time to check a connection out (through this library)",
            None,
            MetricType::Histogram,
        )?;
        for c in &connections {
            c.counters()
                .acquire_wait_seconds
                .encode(m.encode_family(&labels(c))?)?;
        }

        let mut m = family(
            &mut encoder,
            "dbmanager_reconnect_attempts",
            "Reconnect attempts by result",
            None,
            MetricType::Counter,
        )?;
        for (c, s) in &stats {
            for (result, v) in [
                ("success", s.reconnects_ok),
                ("failure", s.reconnects_failed),
            ] {
                let mut l = labels(c);
                l.push(("result", result.to_owned()));
                m.encode_family(&l)?
                    .encode_counter::<Labels, _, f64>(&v, None)?;
            }
        }
        let counters: [(&str, &str, StatField); 3] = [
            (
                "dbmanager_connection_lifetime_closed",
                "Connections closed for reaching conn_max_lifetime",
                |s| s.closed_max_lifetime,
            ),
            (
                "dbmanager_connection_idle_closed",
                "Connections closed for idling past conn_max_idle_time or over max_idle_conns",
                |s| s.closed_max_idle_time + s.closed_max_idle,
            ),
            (
                "dbmanager_connection_acquire_timeouts",
                "Checkouts that gave up after the acquire timeout",
                |s| s.acquire_timeouts,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = family(&mut encoder, name, help, None, MetricType::Counter)?;
            for (c, s) in &stats {
                m.encode_family(&labels(c))?
                    .encode_counter::<Labels, _, f64>(&get(s), None)?;
            }
        }
        let mut m = family(
            &mut encoder,
            "dbmanager_connect_errors",
            "Failed connect attempts by error kind",
            None,
            MetricType::Counter,
        )?;
        for c in &connections {
            for (i, kind) in KINDS.iter().enumerate() {
                let v = c.counters().connect_errors[i].load(Relaxed);
                let mut l = labels(c);
                l.push(("kind", kind.as_str().to_owned()));
                m.encode_family(&l)?
                    .encode_counter::<Labels, _, f64>(&v, None)?;
            }
        }

        // OpenTelemetry database-client semantic-convention names, for dashboards built on them.
        let pool = |c: &crate::Connection| -> Labels {
            vec![("db_client_connection_pool_name", c.name().to_owned())]
        };
        let mut m = family(
            &mut encoder,
            "db_client_connection_count",
            "Connections by state (OTel semconv)",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            for (state, v) in [("idle", s.idle), ("used", s.in_use)] {
                let mut l = pool(c);
                l.push(("db_client_connection_state", state.to_owned()));
                m.encode_family(&l)?.encode_gauge(&i64::from(v))?;
            }
        }
        let mut m = family(
            &mut encoder,
            "db_client_connection_max",
            "Maximum connections (OTel semconv)",
            None,
            MetricType::Gauge,
        )?;
        for (c, s) in &stats {
            m.encode_family(&pool(c))?
                .encode_gauge(&i64::from(s.max_open))?;
        }
        let mut m = family(
            &mut encoder,
            "db_client_connection_timeouts",
            "Checkout timeouts (OTel semconv)",
            None,
            MetricType::Counter,
        )?;
        for (c, s) in &stats {
            m.encode_family(&pool(c))?
                .encode_counter::<Labels, _, f64>(&s.acquire_timeouts, None)?;
        }
        let mut m = family(
            &mut encoder,
            "db_client_connection_wait_time_seconds",
            "Checkout wait time (OTel semconv)",
            None,
            MetricType::Histogram,
        )?;
        for c in &connections {
            c.counters()
                .acquire_wait_seconds
                .encode(m.encode_family(&pool(c))?)?;
        }
        Ok(())
    }
}
