//! Prometheus metrics, sampled from the live pools at scrape time.
//!
//! Gauges are read from the pools when scraped; counters and histograms are updated where the
//! event happens, with atomics only. Every family is labelled by `connection` and `type`; no
//! label carries a credential. Connections with `enable_metrics: false` are left out.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::manager::{Manager, WeakManager};
use crate::stats::HistogramSnapshot;

fn encode_histogram(h: &HistogramSnapshot, mut encoder: MetricEncoder) -> std::fmt::Result {
    encoder.encode_histogram::<NoLabelSet>(h.sum.as_secs_f64(), h.count, &h.buckets, None)
}

type Labels = Vec<(&'static str, String)>;

/// The scrape-time collector of one manager. Holds the manager weakly.
#[derive(Debug)]
pub struct ManagerCollector {
    manager: WeakManager,
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

/// One sample's value.
enum Value<'a> {
    Gauge(f64),
    Counter(u64),
    Histogram(&'a HistogramSnapshot),
}

/// A metric family: its descriptor and its samples.
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value<'a>)>,
}

impl<'a> Family<'a> {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, value: Value<'a>) {
        self.samples.push((labels, value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = m.encode_family(labels)?;
            match value {
                Value::Gauge(v) => {
                    let mut sample = sample;
                    sample.encode_gauge(v)?;
                }
                Value::Counter(v) => {
                    let mut sample = sample;
                    sample.encode_counter::<NoLabelSet, _, f64>(v, None)?;
                }
                Value::Histogram(h) => encode_histogram(h, sample)?,
            }
        }
        Ok(())
    }
}

/// Label names must be `&'static str` for the encoder; the few configured tag keys are leaked
/// once each (a set bounded by the config) and reused.
fn intern(name: &str) -> &'static str {
    type Names = std::sync::Mutex<std::collections::BTreeSet<&'static str>>;
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    let Ok(mut names) = NAMES.get_or_init(Default::default).lock() else {
        return "tag";
    };
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(manager) = self.manager.upgrade() else {
            return Ok(());
        };
        // Read replicas come after their connection, as members of it (`member_of`).
        let stats: Vec<_> = manager
            .connections()
            .into_iter()
            .filter(|c| c.config().enable_metrics)
            .flat_map(|c| {
                let members: Vec<_> = c.members().into_iter().zip(c.member_stats()).collect();
                let own = c.stats();
                std::iter::once((c, own)).chain(members)
            })
            .collect();
        let connections: Vec<_> = stats.iter().map(|(c, _)| c.clone()).collect();
        // Tag keys the operator made labels: the tag's value, empty where a connection lacks it.
        let tag_labels: Vec<&'static str> = manager
            .config()
            .metric_tag_labels
            .iter()
            .map(|l| intern(l))
            .collect();
        let labels = |c: &crate::Connection, s: &crate::ConnectionStats| -> Labels {
            let mut l = vec![
                ("connection", c.name().to_owned()),
                ("type", c.kind().to_string()),
            ];
            if let Some(replica) = &s.replica {
                l.push(("member_of", replica.member_of.clone()));
            }
            if !tag_labels.is_empty() {
                let tags = c.tags();
                for key in &tag_labels {
                    l.push((key, tags.get(*key).cloned().unwrap_or_default()));
                }
            }
            l
        };
        let pool = |c: &crate::Connection| -> Labels {
            vec![("db_client_connection_pool_name", c.name().to_owned())]
        };
        use MetricType::{Counter, Gauge, Histogram as Hist};

        let mut by_type = std::collections::BTreeMap::<&'static str, u64>::new();
        for c in &connections {
            *by_type.entry(c.kind().as_str()).or_default() += 1;
        }
        let mut total = Family::new(
            "dbmanager_connections_total",
            "Configured connections by type",
            Gauge,
        );
        for (kind, n) in by_type {
            total.add(vec![("type", kind.to_owned())], Value::Gauge(n as f64));
        }

        let mut status = Family::new(
            "dbmanager_connection_status",
            "Connection health (1 healthy or degraded, 0 not)",
            Gauge,
        );
        let mut sizes = Family::new(
            "dbmanager_connection_pool_size",
            "Pool connections by state",
            Gauge,
        );
        let mut waits = Family::new(
            "dbmanager_connection_wait_count",
            "Checkouts that waited for a connection",
            Gauge,
        );
        let mut wait_time = Family::new(
            "dbmanager_connection_wait_duration_seconds",
            "Total time checkouts waited",
            Gauge,
        );
        let mut health = Family::new(
            "dbmanager_health_check_duration_seconds",
            "Health check duration",
            Hist,
        );
        let mut acquire = Family::new(
            "dbmanager_connection_acquire_wait_seconds",
            "Time to check a connection out (through this library)",
            Hist,
        );
        let mut reconnects = Family::new(
            "dbmanager_reconnect_attempts",
            "Reconnect attempts by result",
            Counter,
        );
        let mut lifetime = Family::new(
            "dbmanager_connection_lifetime_closed",
            "Connections closed for reaching conn_max_lifetime",
            Counter,
        );
        let mut idle = Family::new(
            "dbmanager_connection_idle_closed",
            "Connections closed for idling past conn_max_idle_time or over max_idle_conns",
            Counter,
        );
        let mut leaks = Family::new(
            "dbmanager_connection_leaks",
            "Checkouts held past leak_detection_threshold",
            Counter,
        );
        let mut circuit = Family::new(
            "dbmanager_circuit_open",
            "Circuit breaker open (1): callers fail fast until the server answers",
            Gauge,
        );
        let mut timeouts = Family::new(
            "dbmanager_connection_acquire_timeouts",
            "Checkouts that gave up after the acquire timeout",
            Counter,
        );
        let mut errors = Family::new(
            "dbmanager_connect_errors",
            "Failed connect attempts by error kind",
            Counter,
        );
        // A `hosts:` list: the server in use (an info gauge) and the switches between them.
        let mut current_host = Family::new(
            "dbmanager_current_host",
            "The server of a hosts: list the pool connects to now (1, labelled host)",
            Gauge,
        );
        let mut host_switches = Family::new(
            "dbmanager_host_switches",
            "Switches to another server of a hosts: list (failovers followed)",
            Counter,
        );
        // LISTEN/NOTIFY listeners, for connections whose backend has them.
        let mut listeners = Family::new(
            "dbmanager_listeners",
            "LISTEN/NOTIFY listeners by state (open, connected); outside the pool",
            Gauge,
        );
        let mut listener_channels = Family::new(
            "dbmanager_listener_channels",
            "Channels the listeners listen to",
            Gauge,
        );
        let mut listener_reconnects = Family::new(
            "dbmanager_listener_reconnects",
            "Listener session reconnects by result",
            Counter,
        );
        let mut notifications = Family::new(
            "dbmanager_listener_notifications",
            "Notifications received by the listeners",
            Counter,
        );
        // OpenTelemetry database-client semantic-convention names, for dashboards built on them.
        let mut otel_count = Family::new(
            "db_client_connection_count",
            "Connections by state (OTel semconv)",
            Gauge,
        );
        let mut otel_max = Family::new(
            "db_client_connection_max",
            "Maximum connections (OTel semconv)",
            Gauge,
        );
        let mut otel_timeouts = Family::new(
            "db_client_connection_timeouts",
            "Checkout timeouts (OTel semconv)",
            Counter,
        );
        let mut otel_wait = Family::new(
            "db_client_connection_wait_time_seconds",
            "Checkout wait time (OTel semconv)",
            Hist,
        );

        // Per-query figures of the neutral handle: OpenTelemetry's `db.client.operation.duration`
        // and the reference's names, side by side.
        let mut op_duration = Family::new(
            "db_client_operation_duration_seconds",
            "Duration of statements through the neutral handle (OTel semconv)",
            Hist,
        );
        let mut query_duration = Family::new(
            "db_query_duration_seconds",
            "Duration of statements through the neutral handle",
            Hist,
        );
        let mut queries = Family::new(
            "db_queries",
            "Statements through the neutral handle by operation and outcome",
            Counter,
        );

        for (c, s) in &stats {
            let l = labels(c, s);
            status.add(
                l.clone(),
                Value::Gauge(f64::from(u8::from(s.status.is_up()))),
            );
            for (state, v) in [
                ("open", s.open),
                ("in_use", s.in_use),
                ("idle", s.idle),
                ("max", s.max_open),
            ] {
                sizes.add(with(l.clone(), "state", state), Value::Gauge(f64::from(v)));
            }
            waits.add(l.clone(), Value::Gauge(s.wait_count as f64));
            wait_time.add(l.clone(), Value::Gauge(s.wait_duration.as_secs_f64()));
            health.add(l.clone(), Value::Histogram(&s.health_check_seconds));
            acquire.add(l.clone(), Value::Histogram(&s.acquire_wait_seconds));
            reconnects.add(
                with(l.clone(), "result", "success"),
                Value::Counter(s.reconnects_ok),
            );
            reconnects.add(
                with(l.clone(), "result", "failure"),
                Value::Counter(s.reconnects_failed),
            );
            lifetime.add(l.clone(), Value::Counter(s.closed_max_lifetime));
            idle.add(
                l.clone(),
                Value::Counter(s.closed_max_idle_time + s.closed_max_idle),
            );
            timeouts.add(l.clone(), Value::Counter(s.acquire_timeouts));
            leaks.add(l.clone(), Value::Counter(s.leaks_detected));
            circuit.add(l.clone(), Value::Gauge(f64::from(u8::from(s.circuit_open))));
            for (kind, n) in &s.connect_errors {
                errors.add(with(l.clone(), "kind", kind.as_str()), Value::Counter(*n));
            }
            if let Some(host) = &s.current_host {
                current_host.add(with(l.clone(), "host", host), Value::Gauge(1.0));
                host_switches.add(l.clone(), Value::Counter(s.host_switches));
            }
            if let Some(ls) = &s.listeners {
                for (state, v) in [("open", ls.open), ("connected", ls.connected)] {
                    listeners.add(with(l.clone(), "state", state), Value::Gauge(f64::from(v)));
                }
                listener_channels.add(l.clone(), Value::Gauge(f64::from(ls.channels)));
                listener_reconnects.add(
                    with(l.clone(), "result", "success"),
                    Value::Counter(ls.reconnects),
                );
                listener_reconnects.add(
                    with(l.clone(), "result", "failure"),
                    Value::Counter(ls.reconnect_failures),
                );
                notifications.add(l.clone(), Value::Counter(ls.notifications_received));
            }
            let p = pool(c);
            otel_count.add(
                with(p.clone(), "db_client_connection_state", "idle"),
                Value::Gauge(f64::from(s.idle)),
            );
            otel_count.add(
                with(p.clone(), "db_client_connection_state", "used"),
                Value::Gauge(f64::from(s.in_use)),
            );
            otel_max.add(p.clone(), Value::Gauge(f64::from(s.max_open)));
            otel_timeouts.add(p.clone(), Value::Counter(s.acquire_timeouts));
            otel_wait.add(p.clone(), Value::Histogram(&s.acquire_wait_seconds));
            for q in &s.queries {
                op_duration.add(
                    with(p.clone(), "db_operation_name", q.operation),
                    Value::Histogram(&q.duration),
                );
                query_duration.add(
                    with(l.clone(), "operation", q.operation),
                    Value::Histogram(&q.duration),
                );
                let by_op = with(l.clone(), "operation", q.operation);
                queries.add(with(by_op.clone(), "status", "ok"), Value::Counter(q.ok));
                for (kind, n) in &q.errors {
                    queries.add(
                        with(by_op.clone(), "status", kind.as_str()),
                        Value::Counter(*n),
                    );
                }
            }
        }
        let replication = replication_families(&stats, &labels);
        for family in [
            total,
            status,
            sizes,
            waits,
            wait_time,
            health,
            acquire,
            reconnects,
            lifetime,
            idle,
            timeouts,
            leaks,
            circuit,
            errors,
            current_host,
            host_switches,
            listeners,
            listener_channels,
            listener_reconnects,
            notifications,
            otel_count,
            otel_max,
            otel_timeouts,
            otel_wait,
            op_duration,
            query_duration,
            queries,
        ]
        .into_iter()
        .chain(replication)
        {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The read replicas' series: each replica's state (labelled `member_of` its connection) and
/// each connection's routing decisions, fallbacks included.
fn replication_families<'a>(
    stats: &'a [(crate::Connection, crate::ConnectionStats)],
    labels: &dyn Fn(&crate::Connection, &crate::ConnectionStats) -> Labels,
) -> Vec<Family<'a>> {
    use MetricType::{Counter, Gauge};
    let mut info = Family::new(
        "dbmanager_replica_info",
        "A read replica of a connection (`member_of`), with its host and port; always 1",
        Gauge,
    );
    let mut banned = Family::new(
        "dbmanager_replica_banned",
        "Replica banned (1): no reads until a background probe succeeds",
        Gauge,
    );
    let mut bans = Family::new(
        "dbmanager_replica_bans",
        "Times a replica was banned",
        Counter,
    );
    let mut lagging = Family::new(
        "dbmanager_replica_lagging",
        "Replica over max_replica_lag at its last check (1): no reads until back under",
        Gauge,
    );
    let mut lag = Family::new(
        "dbmanager_replica_lag_seconds",
        "Replica lag measured on the server at its last check",
        Gauge,
    );
    let mut reads = Family::new(
        "dbmanager_replica_reads",
        "Reads routed to a replica",
        Counter,
    );
    let mut routed = Family::new(
        "dbmanager_read_routing",
        "Reads of a connection with replicas by where they went and why (replica, read_your_writes, not_select, fallback_primary, fallback_error)",
        Counter,
    );
    let mut fallbacks = Family::new(
        "dbmanager_replica_fallbacks",
        "Reads that found no usable replica, by what replica_fallback did (primary, error)",
        Counter,
    );
    for (c, s) in stats {
        let l = labels(c, s);
        if let Some(r) = &s.replica {
            let mut i = with(l.clone(), "host", &r.host);
            i = with(
                i,
                "port",
                &r.port.map(|p| p.to_string()).unwrap_or_default(),
            );
            info.add(i, Value::Gauge(1.0));
            banned.add(l.clone(), Value::Gauge(f64::from(u8::from(r.banned))));
            bans.add(l.clone(), Value::Counter(r.bans_total));
            lagging.add(l.clone(), Value::Gauge(f64::from(u8::from(r.lagging))));
            if let Some(d) = r.lag {
                lag.add(l.clone(), Value::Gauge(d.as_secs_f64()));
            }
            reads.add(l.clone(), Value::Counter(r.reads));
        }
        if let Some(r) = &s.routing {
            for (route, n) in [
                ("replica", r.to_replica),
                ("read_your_writes", r.read_your_writes),
                ("not_select", r.not_select),
                ("fallback_primary", r.fallback_primary),
                ("fallback_error", r.fallback_error),
            ] {
                routed.add(with(l.clone(), "route", route), Value::Counter(n));
            }
            fallbacks.add(
                with(l.clone(), "fallback", "primary"),
                Value::Counter(r.fallback_primary),
            );
            fallbacks.add(
                with(l.clone(), "fallback", "error"),
                Value::Counter(r.fallback_error),
            );
        }
    }
    // Nothing at all for a manager without replicas.
    vec![info, banned, bans, lagging, lag, reads, routed, fallbacks]
        .into_iter()
        .filter(|f| !f.samples.is_empty())
        .collect()
}
