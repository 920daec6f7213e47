//! What connres counts, in Prometheus form (`prometheus-client`, the Prometheus
//! project's own crate): requests by kind and outcome with their latency, events
//! published, state held and dropped, reloads, the config in force, and the NATS
//! connection. Every series a request can touch is created up front, so recording one
//! is an atomic add, not a lookup.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::engine::Status;

/// The kinds of message connres handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Access,
    Call,
    Token,
    Api,
}

const KINDS: [&str; 5] = ["get", "access", "call", "token", "api"];

/// Outcome labels: a result, each RES error code, no answer, an ignored event.
const OUTCOMES: [&str; 8] = [
    "ok",
    "access_denied",
    "invalid_params",
    "not_found",
    "method_not_found",
    "internal_error",
    "unanswered",
    "ignored",
];

/// The kinds of event connres publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Change,
    Reaccess,
    SystemReset,
}

const EVENTS: [&str; 3] = ["change", "reaccess", "system_reset"];

/// Request latency buckets, in seconds: 50 µs to 1 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The same bounds in nanoseconds, to place an observation without floating point.
const LATENCY_BUCKETS_NS: [u64; 12] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// A latency histogram recorded with two atomic adds and no lock: the count of the
/// observation's bucket and the sum in nanoseconds. The count is the buckets' total.
/// Encoded exactly as `prometheus_client`'s `Histogram` with the same buckets.
#[derive(Debug, Clone, Default)]
struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative), the last one above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(LATENCY_BUCKETS_NS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabel {
    hash: String,
}

/// connres's metrics, shared by the serving task (which records) and the metrics
/// listener (which reads).
pub struct Metrics {
    registry: Registry,
    requests: Vec<Vec<Counter>>,
    latency: Vec<Latency>,
    events: Vec<Counter>,
    connections: Gauge,
    entries: Gauge,
    expired: Counter,
    reloads: [Counter; 2],
    generation: Gauge,
    config: Family<ConfigLabel, Gauge>,
    nats_connected: Gauge,
    reconnects: Counter,
    ready: AtomicBool,
    /// Metrics of parts that exist only in some setups (the shared store), added once.
    extra: std::sync::OnceLock<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests_family = Family::<RequestLabels, Counter>::default();
        registry.register(
            "connres_requests",
            "Messages handled, by kind (get, access, call, token, api) and outcome",
            requests_family.clone(),
        );
        let requests = KINDS
            .iter()
            .map(|&kind| {
                OUTCOMES
                    .iter()
                    .map(|&outcome| {
                        requests_family
                            .get_or_create(&RequestLabels { kind, outcome })
                            .clone()
                    })
                    .collect()
            })
            .collect();
        let latency_family = Family::<KindLabel, Latency>::default();
        registry.register(
            "connres_request_duration_seconds",
            "Time from taking a message to having published its events and reply",
            latency_family.clone(),
        );
        let latency = KINDS
            .iter()
            .map(|&kind| latency_family.get_or_create(&KindLabel { kind }).clone())
            .collect();
        let events_family = Family::<KindLabel, Counter>::default();
        registry.register(
            "connres_events",
            "Events published, by kind (change, reaccess, system_reset)",
            events_family.clone(),
        );
        let events = EVENTS
            .iter()
            .map(|&kind| events_family.get_or_create(&KindLabel { kind }).clone())
            .collect();
        let reloads_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "connres_reloads",
            "Config reloads, by result (applied, rejected)",
            reloads_family.clone(),
        );
        let reloads = ["applied", "rejected"].map(|result| {
            reloads_family
                .get_or_create(&ResultLabel { result })
                .clone()
        });
        let connections = Gauge::default();
        let entries = Gauge::default();
        let expired = Counter::default();
        let generation = Gauge::default();
        let config = Family::<ConfigLabel, Gauge>::default();
        let nats_connected = Gauge::default();
        let reconnects = Counter::default();
        registry.register(
            "connres_connections",
            "Connection records held",
            connections.clone(),
        );
        registry.register(
            "connres_entries",
            "Entries held, counted against state.max_entries",
            entries.clone(),
        );
        registry.register(
            "connres_expired",
            "Connections and models dropped by idle expiry or the size bound",
            expired.clone(),
        );
        registry.register(
            "connres_config_generation",
            "Configs put in force since start (1 for the first)",
            generation.clone(),
        );
        registry.register(
            "connres_config_info",
            "The config in force: 1, labelled with the SHA-256 of its text",
            config.clone(),
        );
        registry.register(
            "connres_nats_connected",
            "1 while connected to NATS",
            nats_connected.clone(),
        );
        registry.register(
            "connres_nats_reconnects",
            "Reconnections to NATS after losing the connection",
            reconnects.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            events,
            connections,
            entries,
            expired,
            reloads,
            generation,
            config,
            nats_connected,
            reconnects,
            ready: AtomicBool::new(false),
            extra: std::sync::OnceLock::new(),
        }
    }

    /// One message handled.
    pub fn request(&self, kind: Kind, status: Status, took: Duration) {
        let outcome = match status {
            Status::Ok => 0,
            Status::Error("system.accessDenied") => 1,
            Status::Error("system.invalidParams") => 2,
            Status::Error("system.notFound") => 3,
            Status::Error("system.methodNotFound") => 4,
            Status::Error(_) => 5,
            Status::Unanswered => 6,
            Status::Ignored => 7,
        };
        self.requests[kind as usize][outcome].inc();
        self.latency[kind as usize].observe(took);
    }

    pub fn event(&self, kind: EventKind) {
        self.events[kind as usize].inc();
    }

    /// The state held, after a change.
    pub fn state(&self, connections: usize, entries: usize) {
        self.connections.set(connections as i64);
        self.entries.set(entries as i64);
    }

    pub fn expired(&self, units: usize) {
        self.expired.inc_by(units as u64);
    }

    /// A config is in force: the first one, or a reload.
    pub fn config(&self, content_hash: &str, reloaded: bool) {
        if reloaded {
            self.reloads[0].inc();
        }
        self.generation.inc();
        self.config.clear();
        self.config
            .get_or_create(&ConfigLabel {
                hash: content_hash.to_string(),
            })
            .set(1);
    }

    /// Configs put in force since start (`connres_config_generation`).
    pub fn generation(&self) -> u64 {
        self.generation.get().max(0) as u64
    }

    pub fn reload_rejected(&self) {
        self.reloads[1].inc();
    }

    /// The NATS connection is up or down.
    pub fn nats(&self, connected: bool) {
        self.nats_connected.set(connected as i64);
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Ready: subscribed, announced and connected.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Entries counted against `state.max_entries`.
    pub fn entries(&self) -> usize {
        self.entries.get().max(0) as usize
    }

    /// Connection records held.
    pub fn connections(&self) -> usize {
        self.connections.get().max(0) as usize
    }

    /// Units dropped by idle expiry or the size bound since start.
    pub fn expired_total(&self) -> u64 {
        self.expired.get()
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(extra) = self.extra.get() {
            let _ = encode_registry(&mut out, extra);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// Adds the metrics of a part that only some setups have (once; later calls are
    /// ignored).
    pub fn add(&self, registry: Registry) {
        let _ = self.extra.set(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_show_in_the_text() {
        let m = Metrics::new();
        m.request(Kind::Get, Status::Ok, Duration::from_micros(80));
        m.request(Kind::Get, Status::Ok, Duration::from_micros(80));
        m.request(
            Kind::Call,
            Status::Error("system.accessDenied"),
            Duration::ZERO,
        );
        m.event(EventKind::Change);
        m.config("abc123", false);
        m.config("def456", true);
        m.state(3, 5);
        let text = m.encode();
        for line in [
            r#"connres_requests_total{kind="get",outcome="ok"} 2"#,
            r#"connres_requests_total{kind="call",outcome="access_denied"} 1"#,
            r#"connres_request_duration_seconds_bucket{le="0.0001",kind="get"} 2"#,
            r#"connres_events_total{kind="change"} 1"#,
            r#"connres_reloads_total{result="applied"} 1"#,
            "connres_config_generation 2",
            r#"connres_config_info{hash="def456"} 1"#,
            "connres_connections 3",
            "connres_entries 5",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("abc123"), "{text}");
        assert_eq!(m.generation(), 2);
    }

    /// The lock-free latency histogram reads as `prometheus_client`'s own with the
    /// same buckets: the same lines, bucket bounds included (a value on a bound counts
    /// in that bucket), and the same sum.
    #[test]
    fn latency_encodes_as_the_prometheus_histogram() {
        use prometheus_client::metrics::histogram::Histogram;
        let ours = Family::<KindLabel, Latency>::default();
        let theirs = Family::<KindLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let label = KindLabel { kind: "get" };
        let mut took: Vec<Duration> = LATENCY_BUCKETS_NS
            .iter()
            .flat_map(|&ns| [ns - 1, ns, ns + 1])
            .map(Duration::from_nanos)
            .collect();
        took.extend([
            Duration::ZERO,
            Duration::from_secs(3),
            Duration::from_secs(70),
        ]);
        for t in &took {
            ours.get_or_create(&label).observe(*t);
            theirs.get_or_create(&label).observe(t.as_secs_f64());
        }
        fn text(family: impl prometheus_client::registry::Metric) -> String {
            let mut registry = Registry::default();
            registry.register("latency", "h", family);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        }
        let (ours, theirs) = (text(ours), text(theirs));
        let sum = |text: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with("latency_sum")).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!((sum(&ours) - sum(&theirs)).abs() < 1e-6, "{ours}\n{theirs}");
        let without_sum = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with("latency_sum"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(without_sum(&ours), without_sum(&theirs));
        assert!(
            ours.contains(r#"latency_bucket{le="0.00005",kind="get"} 3"#),
            "{ours}"
        );
        assert!(
            ours.contains(r#"latency_bucket{le="+Inf",kind="get"} 39"#),
            "{ours}"
        );
    }
}
