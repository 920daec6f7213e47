//! What connres counts, in Prometheus form (`prometheus-client`, the Prometheus
//! project's own crate): requests by kind, outcome and resource pattern with their
//! latency, events published, state held and dropped, reloads, the config in force, and
//! the NATS connection. Every request series the config in force can touch is created
//! when it is put in force ([`Requests`]), and only those: recording one is an index
//! and an atomic add, not a lookup, and no series shows a combination that cannot
//! happen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::config::{CallAccess, Config, Resource};
use crate::engine::Status;

/// The kinds of message connres handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Access,
    Call,
    Token,
    Api,
    Auth,
}

const KINDS: [&str; 6] = ["get", "access", "call", "token", "api", "auth"];

/// The `resource` label of a message that names no declared resource: a token event,
/// or a name no pattern of the config in force matches.
pub const NO_RESOURCE: &str = "-";

/// Outcome labels: a result, each RES error code, no answer, an ignored event.
const OUTCOMES: [&str; 9] = [
    "ok",
    "access_denied",
    "invalid_params",
    "not_found",
    "method_not_found",
    "internal_error",
    "unanswered",
    "ignored",
    "invalid_token",
];

/// The request series made for every resource pattern, as `(kind, outcome)`: what the
/// engine can answer for a name the pattern matches (see `possible`); a pattern with
/// call rules has [`CALLS_OK`] too. The series of names no pattern matches
/// ([`NO_RESOURCE`]) are [`NO_RESOURCE_SERIES`]. Spelled out once, for the tests that
/// check the text against it (this module's and `tests/metrics.rs`) and as
/// docs/monitoring.md lists them.
pub const RESOURCE_SERIES: [(&str, &str); 9] = [
    ("get", "ok"),
    ("get", "invalid_params"),
    ("access", "ok"),
    ("access", "invalid_params"),
    ("call", "access_denied"),
    ("call", "invalid_params"),
    ("call", "method_not_found"),
    ("api", "ok"),
    ("api", "invalid_params"),
];

/// The series of a resource pattern with call rules, besides [`RESOURCE_SERIES`].
pub const CALLS_OK: (&str, &str) = ("call", "ok");

/// The request series of names no pattern matches ([`NO_RESOURCE`]), without the
/// shared store; with it, `get` and `access` have `internal_error` too (a read
/// forwarded for a name this instance's config does not declare).
pub const NO_RESOURCE_SERIES: [(&str, &str); 7] = [
    ("get", "unanswered"),
    ("access", "unanswered"),
    ("call", "unanswered"),
    ("token", "ok"),
    ("token", "ignored"),
    ("api", "invalid_params"),
    ("api", "not_found"),
];

/// The kinds of event connres publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Change,
    Reaccess,
    SystemReset,
    /// A `conn.<cid>.token` event of a login or logout an auth method answered.
    Token,
    /// A `system.tokenReset` of a revocation.
    TokenReset,
}

const EVENTS: [&str; 5] = ["change", "reaccess", "system_reset", "token", "token_reset"];

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
    /// The pattern the message's name matched, or [`NO_RESOURCE`].
    resource: String,
}

const OK: usize = 0;
const ACCESS_DENIED: usize = 1;
const INVALID_PARAMS: usize = 2;
const NOT_FOUND: usize = 3;
const METHOD_NOT_FOUND: usize = 4;
const INTERNAL_ERROR: usize = 5;
const UNANSWERED: usize = 6;
const IGNORED: usize = 7;
const INVALID_TOKEN: usize = 8;

/// The index in [`OUTCOMES`] of how handling went.
fn outcome_of(status: Status) -> usize {
    match status {
        Status::Ok => OK,
        Status::Error("system.accessDenied") => ACCESS_DENIED,
        Status::Error("system.invalidParams") => INVALID_PARAMS,
        Status::Error("system.notFound") => NOT_FOUND,
        Status::Error("system.methodNotFound") => METHOD_NOT_FOUND,
        Status::Error(
            crate::protocol::INVALID_TOKEN
            | crate::protocol::INVALID_RESUME_KEY
            | crate::protocol::TOO_MANY_ATTEMPTS,
        ) => INVALID_TOKEN,
        Status::Error(_) => INTERNAL_ERROR,
        Status::Unanswered => UNANSWERED,
        Status::Ignored => IGNORED,
    }
}

/// The outcomes a kind of message can have for a resource (`None`: for a message that
/// names no declared resource), as the engine decides them (`engine::Engine::handle`);
/// `shared`: with the shared store, which answers a forwarded read for a name its
/// config does not declare with `system.internalError`.
fn possible(kind: Kind, resource: Option<&Resource>, shared: bool) -> Vec<usize> {
    match (kind, resource) {
        // A name a pattern matches: a reply, or the name is not a valid resource name.
        (Kind::Get | Kind::Access, Some(_)) => vec![OK, INVALID_PARAMS],
        // A call with no call rule is always denied.
        (Kind::Call, Some(res)) => {
            let rules = match &res.access.call {
                CallAccess::Deny => false,
                CallAccess::All(_) => true,
                CallAccess::Methods(rules) => !rules.is_empty(),
            };
            let mut outcomes = vec![ACCESS_DENIED, INVALID_PARAMS, METHOD_NOT_FOUND];
            if rules {
                outcomes.insert(0, OK);
            }
            outcomes
        }
        (Kind::Api, Some(_)) => vec![OK, INVALID_PARAMS],
        (Kind::Token | Kind::Auth, Some(_)) => Vec::new(),
        // No pattern matches: not answered; with the shared store, another instance
        // may forward a read for a name this one's config does not declare.
        (Kind::Get | Kind::Access, None) if shared => vec![UNANSWERED, INTERNAL_ERROR],
        (Kind::Get | Kind::Access | Kind::Call, None) => vec![UNANSWERED],
        (Kind::Token, None) => vec![OK, IGNORED],
        // Not a valid resource name, or no pattern matches it.
        (Kind::Api, None) => vec![INVALID_PARAMS, NOT_FOUND],
        // An auth request of a declared name (only with an `auth:` block).
        (Kind::Auth, None) => vec![OK, INVALID_TOKEN, INVALID_PARAMS, METHOD_NOT_FOUND],
    }
}

/// Calls `each(row, kind, outcome, labels)` for every request series of a config:
/// row by row (its resources in order, then [`NO_RESOURCE`]), each row at least once
/// (the token kind's series of [`NO_RESOURCE`] always exist).
fn for_each_series(
    config: &Config,
    shared: bool,
    mut each: impl FnMut(usize, usize, usize, RequestLabels),
) {
    let resources = config.resources.iter().map(|r| Some(&**r));
    for (row, res) in resources.chain([None]).enumerate() {
        let pattern = res.map_or(NO_RESOURCE, |r| r.pattern.as_str());
        let kinds = [
            Kind::Get,
            Kind::Access,
            Kind::Call,
            Kind::Token,
            Kind::Api,
            Kind::Auth,
        ];
        for (k, kind) in kinds.into_iter().enumerate() {
            if kind == Kind::Auth && config.auth.is_empty() {
                continue;
            }
            for outcome in possible(kind, res, shared) {
                let labels = RequestLabels {
                    kind: KINDS[k],
                    outcome: OUTCOMES[outcome],
                    resource: pattern.to_string(),
                };
                each(row, k, outcome, labels);
            }
        }
    }
}

/// Request series to remove from the text: see [`gone`].
#[derive(Debug, Default)]
pub struct Gone(Vec<RequestLabels>);

/// The request series of `old` that `new` cannot touch (its removed patterns, calls
/// of a resource left without call rules): computed beside the serving task, removed
/// when `new` is in force ([`Metrics::remove`]). The other way round, the series a
/// prepared config made that the one in force cannot touch, when it is not put in
/// force after all.
pub fn gone(old: &Config, new: &Config, shared: bool) -> Gone {
    let mut wanted = std::collections::HashSet::new();
    for_each_series(new, shared, |_, _, _, labels| {
        wanted.insert(labels);
    });
    let mut gone = Vec::new();
    for_each_series(old, shared, |_, _, _, labels| {
        if !wanted.contains(&labels) {
            gone.push(labels);
        }
    });
    Gone(gone)
}

/// Counters of one resource (or of none), by kind and outcome: only the possible ones.
type Row = [[Option<Counter>; OUTCOMES.len()]; KINDS.len()];

/// The request counters of one config: every series a message can touch under it,
/// made when the config is put in force ([`Metrics::requests`]). Finding a message's
/// counter is an index by the position of its resource in the config
/// ([`crate::engine::Outcome::resource`]); none is looked up by name.
pub struct Requests {
    /// One row per resource of the config, in its order, then the row of
    /// [`NO_RESOURCE`].
    rows: Vec<Row>,
    /// The patterns, in the same order (for a series made late).
    patterns: Vec<String>,
    family: Family<RequestLabels, Counter>,
}

impl Requests {
    /// The counter of a message of `kind` handled with `status`, whose name matched
    /// the resource at `resource` in the config these counters were made for.
    pub fn counter(&self, kind: Kind, resource: Option<usize>, status: Status) -> Counter {
        let none = self.rows.len() - 1;
        let row = resource.filter(|&i| i < none).unwrap_or(none);
        let outcome = outcome_of(status);
        match &self.rows[row][kind as usize][outcome] {
            Some(counter) => counter.clone(),
            // Not one the engine can produce (see `possible`): counted all the same.
            None => self.family.get_or_create_owned(&RequestLabels {
                kind: KINDS[kind as usize],
                outcome: OUTCOMES[outcome],
                resource: self
                    .patterns
                    .get(row)
                    .map_or(NO_RESOURCE, String::as_str)
                    .to_string(),
            }),
        }
    }
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
    requests: Family<RequestLabels, Counter>,
    latency: Vec<Latency>,
    events: Vec<Counter>,
    connections: Gauge,
    entries: Gauge,
    bytes: Gauge,
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "connres_requests",
            "Messages handled, by kind (get, access, call, token, api), outcome and resource (the pattern the name matched; - for none)",
            requests.clone(),
        );
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
        let bytes = Gauge::default();
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
            "connres_state_bytes",
            "Bytes of state held, as counted against state.max_bytes",
            bytes.clone(),
        );
        registry.register(
            "connres_expired",
            "Connections and models dropped by idle expiry or the size bound",
            expired.clone(),
        );
        registry.register(
            "connres_rule_budget_exceeded",
            "Rule evaluations that ran out of steps (each denied)",
            crate::rule::OVER_BUDGET.clone(),
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
            bytes,
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

    /// The request series of a config about to be put in force (`shared`: with the
    /// shared store, which is fixed for the process's life), made now at zero; a
    /// series the config in force has already keeps its count. Made beside the serving
    /// task for a reload (a few milliseconds for 1,000 patterns); the series the new
    /// config cannot touch are removed once it is in force ([`Metrics::remove`]).
    pub fn requests(&self, config: &Config, shared: bool) -> Requests {
        let mut rows = Vec::with_capacity(config.resources.len() + 1);
        let mut patterns = Vec::with_capacity(config.resources.len() + 1);
        for_each_series(config, shared, |row, k, outcome, labels| {
            if rows.len() == row {
                rows.push(Row::default());
                patterns.push(labels.resource.clone());
            }
            rows[row][k][outcome] = Some(self.requests.get_or_create_owned(&labels));
        });
        Requests {
            rows,
            patterns,
            family: self.requests.clone(),
        }
    }

    /// Removes request series (those of a config no longer in force that the one in
    /// force cannot touch: [`gone`]).
    pub fn remove(&self, gone: &Gone) {
        for labels in &gone.0 {
            self.requests.remove(labels);
        }
    }

    /// One message handled: its counter (from [`Requests::counter`]) and its latency.
    pub fn request(&self, kind: Kind, counter: &Counter, took: Duration) {
        counter.inc();
        self.latency[kind as usize].observe(took);
    }

    pub fn event(&self, kind: EventKind) {
        self.events[kind as usize].inc();
    }

    /// The state held, after a change: connection records, entries and bytes.
    pub fn state(&self, connections: usize, entries: usize, bytes: usize) {
        self.connections.set(connections as i64);
        self.entries.set(entries as i64);
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
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

    /// Bytes counted against `state.max_bytes`.
    pub fn state_bytes(&self) -> usize {
        self.bytes.get().max(0) as usize
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

    const SEED: &str = include_str!("../tests/config/valid/seed.yaml");

    fn config(yaml: &str) -> Config {
        Config::parse("t.yaml", yaml).unwrap()
    }

    /// The `connres_requests_total` lines of the text.
    fn request_lines(m: &Metrics) -> Vec<String> {
        let mut lines: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| l.starts_with("connres_requests_total{"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn recorded_values_show_in_the_text() {
        let m = Metrics::new();
        let requests = m.requests(&config(SEED), false);
        let get = requests.counter(Kind::Get, Some(0), Status::Ok);
        m.request(Kind::Get, &get, Duration::from_micros(80));
        m.request(Kind::Get, &get, Duration::from_micros(80));
        let denied = requests.counter(Kind::Call, Some(1), Status::Error("system.accessDenied"));
        m.request(Kind::Call, &denied, Duration::ZERO);
        m.event(EventKind::Change);
        m.config("abc123", false);
        m.config("def456", true);
        m.state(3, 5, 4096);
        let text = m.encode();
        for line in [
            r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 2"#,
            r#"connres_requests_total{kind="call",outcome="access_denied",resource="session.prefs.{cid}"} 1"#,
            r#"connres_request_duration_seconds_bucket{le="0.0001",kind="get"} 2"#,
            r#"connres_events_total{kind="change"} 1"#,
            r#"connres_reloads_total{result="applied"} 1"#,
            "connres_config_generation 2",
            r#"connres_config_info{hash="def456"} 1"#,
            "connres_connections 3",
            "connres_entries 5",
            "connres_state_bytes 4096",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("abc123"), "{text}");
        assert_eq!(m.generation(), 2);
    }

    /// Only the series a request can touch: per resource by what the engine can answer
    /// for it (no call can succeed on a resource without call rules), and `-` for
    /// messages that name no resource.
    #[test]
    fn only_possible_series_are_made() {
        let yaml = format!(
            "{SEED}  board.{{id}}:\n    fields:\n      title: {{ type: string }}\n    access:\n      get: \"true\"\n"
        );
        let m = Metrics::new();
        m.requests(&config(&yaml), false);
        let line = |kind: &str, outcome: &str, resource: &str| {
            format!(
                r#"connres_requests_total{{kind="{kind}",outcome="{outcome}",resource="{resource}"}} 0"#
            )
        };
        let mut expected = Vec::new();
        for res in ["session.user.{cid}", "session.prefs.{cid}", "board.{id}"] {
            for (kind, outcome) in RESOURCE_SERIES {
                expected.push(line(kind, outcome, res));
            }
        }
        // Only session.prefs has call rules.
        let (kind, outcome) = CALLS_OK;
        expected.push(line(kind, outcome, "session.prefs.{cid}"));
        for (kind, outcome) in NO_RESOURCE_SERIES {
            expected.push(line(kind, outcome, NO_RESOURCE));
        }
        expected.sort();
        assert_eq!(request_lines(&m), expected);
        // With the shared store, a read forwarded for a name this instance's config does
        // not declare is answered with system.internalError.
        let shared = yaml.replace("version: 1\n", "version: 1\nstate:\n  store: nats\n");
        let m = Metrics::new();
        m.requests(&config(&shared), true);
        let lines = request_lines(&m);
        assert_eq!(lines.len(), expected.len() + 2);
        assert!(lines.contains(&line("get", "internal_error", NO_RESOURCE)));
        assert!(lines.contains(&line("access", "internal_error", NO_RESOURCE)));
    }

    /// Across a reload, a kept resource's series keep counting, a removed one's go, an
    /// added one's come at zero; counters of the old config taken before the swap still
    /// count without showing.
    #[test]
    fn a_reload_keeps_removes_and_adds_series() {
        let m = Metrics::new();
        let seed = config(SEED);
        let old = m.requests(&seed, false);
        let kept = old.counter(Kind::Get, Some(0), Status::Ok);
        let gone_counter = old.counter(Kind::Get, Some(1), Status::Ok);
        kept.inc();
        gone_counter.inc();
        let user = SEED.split("  session.prefs.{cid}:").next().unwrap();
        let new_config = config(&format!(
            "{user}  board.{{id}}:\n    fields:\n      title: {{ type: string }}\n    access:\n      get: \"true\"\n"
        ));
        // Made beside the serving task: the old series show until the swap.
        let new = m.requests(&new_config, false);
        let removed = gone(&seed, &new_config, false);
        assert!(request_lines(&m)
            .iter()
            .any(|l| l.contains("session.prefs")));
        m.remove(&removed);
        new.counter(Kind::Get, Some(0), Status::Ok).inc();
        gone_counter.inc();
        let lines = request_lines(&m);
        assert!(lines.contains(
            &r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 2"#
                .to_string()
        ));
        assert!(lines.contains(
            &r#"connres_requests_total{kind="get",outcome="ok",resource="board.{id}"} 0"#
                .to_string()
        ));
        assert!(
            !lines.iter().any(|l| l.contains("session.prefs")),
            "{lines:?}"
        );
        // Only the removed pattern's series went (board has no call rules, so neither
        // has session.user: nothing of theirs).
        assert_eq!(removed.0.len(), 10);
        // Back again: from zero.
        m.requests(&seed, false);
        m.remove(&gone(&new_config, &seed, false));
        let lines = request_lines(&m);
        assert!(lines.contains(
            &r#"connres_requests_total{kind="get",outcome="ok",resource="session.prefs.{cid}"} 0"#
                .to_string()
        ));
        assert!(!lines.iter().any(|l| l.contains("board")), "{lines:?}");
    }

    /// Every outcome the engine gives a message is one of the series made for it (none
    /// is made late, see [`Requests::counter`]): requests of every kind, valid and not,
    /// on a resource with call rules and one without, and on names no pattern matches.
    #[test]
    fn the_engine_gives_only_outcomes_with_a_series() {
        use crate::engine::{Engine, Request};
        let yaml = format!(
            "{SEED}  board.{{id}}:\n    fields:\n      title: {{ type: string }}\n    access:\n      get: \"true\"\n"
        );
        let config = config(&yaml);
        let mut engine = Engine::default();
        let names = [
            "session.user.c1",
            "session.prefs.c1",
            "session.prefs.c*",
            "board.b1",
            "nothing.here",
            "board",
            "a..b",
        ];
        let payloads: [&[u8]; 6] = [
            br#"{"cid":"c1"}"#,
            br#"{"cid":"c1","token":{"userId":1},"params":{"theme":"dark"}}"#,
            br#"{"cid":"c1","token":{"userId":1},"params":{"fontSize":99}}"#,
            br#"{"cid":"c 1"}"#,
            b"not json",
            br#"{"values":{"theme":"dark"}}"#,
        ];
        let mut seen = std::collections::HashSet::new();
        for rid in names {
            for payload in payloads {
                let mut requests = vec![
                    (Kind::Get, Request::Get { rid }),
                    (Kind::Access, Request::Access { rid, payload }),
                    (Kind::Api, Request::ApiSet { rid, payload }),
                    (Kind::Api, Request::ApiReset { rid, payload }),
                    (Kind::Api, Request::ApiAdd { rid, payload }),
                    (Kind::Api, Request::ApiRemove { rid, payload }),
                    (Kind::Token, Request::Token { cid: rid, payload }),
                ];
                for method in ["set", "reset", "delete"] {
                    requests.push((
                        Kind::Call,
                        Request::Call {
                            rid,
                            method,
                            payload,
                        },
                    ));
                }
                for (kind, request) in requests {
                    let out = engine.handle(&config, request);
                    let res = out.resource.map(|i| &*config.resources[i]);
                    let outcome = outcome_of(out.status);
                    assert!(
                        possible(kind, res, false).contains(&outcome),
                        "{kind:?} {request:?}: {} for {:?}",
                        OUTCOMES[outcome],
                        res.map(|r| r.pattern.as_str())
                    );
                    seen.insert((kind as usize, outcome, res.is_some()));
                }
            }
        }
        // Each possible outcome happened, but the internal error only the shared store
        // gives.
        let mut possible_all = std::collections::HashSet::new();
        for kind in [Kind::Get, Kind::Access, Kind::Call, Kind::Token, Kind::Api] {
            for res in [Some(&*config.resources[1]), None] {
                for o in possible(kind, res, false) {
                    possible_all.insert((kind as usize, o, res.is_some()));
                }
            }
        }
        let missing: Vec<_> = possible_all.difference(&seen).collect();
        assert!(missing.is_empty(), "never seen: {missing:?}");
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
