//! The shared store's metrics: partitions held and served, live instances, lease
//! renewals, takeovers and losses, forwarded and dropped messages, units evicted past
//! `state.max_entries`, and the latency of the bucket's writes and reads.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket write latency buckets, in seconds: 100 µs to 1 s.
const KV_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

pub struct ClusterMetrics {
    pub(super) partitions: Gauge,
    pub(super) served: Gauge,
    pub(super) instances: Gauge,
    pub(super) renewals: Counter,
    pub(super) takeovers: Counter,
    pub(super) lost: Counter,
    pub(super) forwarded: Counter,
    /// 1 when nats-server routes this config's reads to their owners (the check).
    pub(super) reads_mapped: Gauge,
    pub(super) dropped: Counter,
    pub(super) stale: Counter,
    pub(super) undeclared: Counter,
    /// Units out of memory past `state.max_entries` that this instance remembers.
    pub(super) cold: Gauge,
    pub(super) evicted: Counter,
    kv_writes: Histogram,
    kv_reads: Histogram,
    kv_unit_reads: Histogram,
}

impl ClusterMetrics {
    pub(super) fn new() -> ClusterMetrics {
        ClusterMetrics {
            partitions: Gauge::default(),
            served: Gauge::default(),
            instances: Gauge::default(),
            renewals: Counter::default(),
            takeovers: Counter::default(),
            lost: Counter::default(),
            forwarded: Counter::default(),
            reads_mapped: Gauge::default(),
            dropped: Counter::default(),
            stale: Counter::default(),
            undeclared: Counter::default(),
            cold: Gauge::default(),
            evicted: Counter::default(),
            kv_writes: Histogram::new(KV_BUCKETS),
            kv_reads: Histogram::new(KV_BUCKETS),
            kv_unit_reads: Histogram::new(KV_BUCKETS),
        }
    }

    pub(super) fn kv_write(&self, took: Duration) {
        self.kv_writes.observe(took.as_secs_f64());
    }

    pub(super) fn kv_read(&self, took: Duration) {
        self.kv_reads.observe(took.as_secs_f64());
    }

    pub(super) fn kv_unit_read(&self, took: Duration) {
        self.kv_unit_reads.observe(took.as_secs_f64());
    }

    /// Units past `state.max_entries` out of memory, remembered to be read back.
    pub fn cold(&self) -> i64 {
        self.cold.get()
    }

    /// Units moved out of memory past `state.max_entries` (they stay in the bucket).
    pub fn evicted(&self) -> u64 {
        self.evicted.get()
    }

    /// The partitions this instance serves now.
    pub fn served(&self) -> i64 {
        self.served.get()
    }

    /// The partition leases this instance holds.
    pub fn held(&self) -> i64 {
        self.partitions.get()
    }

    /// Reads this instance forwarded to their partition's owner.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.get()
    }

    /// 1 when the check found nats-server mapping this config's reads to their owners.
    pub fn reads_mapped(&self) -> i64 {
        self.reads_mapped.get()
    }

    /// The instances this one sees alive, itself included.
    pub fn instances(&self) -> i64 {
        self.instances.get()
    }

    /// Lease renewals that succeeded.
    pub fn renewals(&self) -> u64 {
        self.renewals.get()
    }

    /// Partitions taken over from an owner that stopped renewing.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.get()
    }

    /// The registry to add to the service's metrics.
    pub(in crate::service) fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("connres_cluster");
        r.register(
            "partitions_held",
            "Partition leases this instance holds",
            self.partitions.clone(),
        );
        r.register(
            "partitions_served",
            "Partitions this instance serves (held and loaded)",
            self.served.clone(),
        );
        r.register(
            "instances",
            "Instances this one sees alive, itself included",
            self.instances.clone(),
        );
        r.register(
            "lease_renewals",
            "Lease renewals that succeeded",
            self.renewals.clone(),
        );
        r.register(
            "takeovers",
            "Partitions taken over from an owner that stopped renewing",
            self.takeovers.clone(),
        );
        r.register(
            "leases_lost",
            "Leases that could not be renewed",
            self.lost.clone(),
        );
        r.register(
            "forwarded",
            "Messages forwarded to their partition's owner",
            self.forwarded.clone(),
        );
        r.register(
            "reads_mapped",
            "1 when nats-server maps this config's reads to their partitions' owners (`connres mapping`), as checked at start and at each reload; else 0",
            self.reads_mapped.clone(),
        );
        r.register(
            "dropped",
            "Reads dropped after waiting two leases for their partition to have an owner, or because too many waited",
            self.dropped.clone(),
        );
        r.register(
            "stale",
            "Messages dropped because they arrived while this instance caught up after a pause, for partitions it does not hold",
            self.stale.clone(),
        );
        r.register(
            "undeclared",
            "Forwarded requests for names this instance's config does not declare (instances run different configs), answered with an error",
            self.undeclared.clone(),
        );
        r.register(
            "kv_write_seconds",
            "Latency of a unit's compare-and-set write to the bucket",
            self.kv_writes.clone(),
        );
        r.register(
            "kv_load_seconds",
            "Latency of reading a partition from the bucket on acquiring it",
            self.kv_reads.clone(),
        );
        r.register(
            "kv_unit_read_seconds",
            "Latency of reading one unit back from the bucket (evicted past `state.max_entries`, needed again or expiring)",
            self.kv_unit_reads.clone(),
        );
        r.register(
            "cold_units",
            "Units out of memory past `state.max_entries` that this instance remembers (they stay in the bucket and are read back when needed)",
            self.cold.clone(),
        );
        r.register(
            "evicted",
            "Units moved out of memory past `state.max_entries`; they stay in the bucket",
            self.evicted.clone(),
        );
        r
    }
}
