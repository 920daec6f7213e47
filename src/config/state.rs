//! The `state:` block: how much state the engine keeps, and where it lives (the embedded
//! memory store, or JetStream key-value shared by several instances).

use std::time::Duration;

use super::compile::Compiler;
use super::yaml::{Kind, Yaml};
use super::{DEFAULT_IDLE_TTL, DEFAULT_MAX_ENTRIES};

pub(crate) const STATE_KEYS: &[&str] = &[
    "idle_ttl",
    "max_entries",
    "max_token_bytes",
    "max_value_bytes",
    "max_bytes",
    "store",
    "bucket",
    "replicas",
    "partitions",
    "lease",
];
/// The values `state.store` takes.
pub(crate) const STORES: &[&str] = &["memory", "nats"];
/// Keys that only mean something with `store: nats`.
const SHARED_KEYS: &[&str] = &["bucket", "replicas", "partitions", "lease"];

/// Default `state.max_token_bytes`: a token of a few dozen claims, not a document.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest `state.max_token_bytes`.
pub const MAX_TOKEN_BYTES_LIMIT: usize = 1024 * 1024;
/// Default `state.max_value_bytes`: a paragraph of text or a small document, not a file.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest `state.max_value_bytes`.
pub const MAX_VALUE_BYTES_LIMIT: usize = 1024 * 1024;
/// Default `state.max_bytes`: 1 GiB, above what `max_entries` lets seed-like state take
/// (500,000 connections of two entries, counted about 1,700 bytes each), so that small
/// units reach `max_entries` first and units of kilobytes this (docs/behaviour.md,
/// "Bounded state").
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024 * 1024;

/// Default `state.bucket`.
pub const DEFAULT_BUCKET: &str = "connres";
/// Default `state.partitions`: enough to spread over a few dozen instances, few enough
/// that each instance renews its leases in a handful of writes a second.
pub const DEFAULT_PARTITIONS: u32 = 64;
/// The most partitions a bucket may have.
pub const MAX_PARTITIONS: u32 = 4096;
/// Default `state.lease`: how long a partition stays with an owner that stopped
/// renewing; a takeover after a crash takes about this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// The shortest lease: renewals go out four times a lease.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// How much state the engine keeps (`state:`). `idle_ttl`, `max_entries` and the byte
/// limits take effect on reload; the store, only on restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// A connection (or a model without `{cid}`) untouched this long is dropped.
    pub idle_ttl: Duration,
    /// The most models kept; past it the least recently touched connection goes first.
    /// With `store: nats`, per instance (over the partitions it owns).
    pub max_entries: usize,
    /// The largest token (as JSON) a connection may have: a token event with a larger
    /// one is ignored, a request carrying one is refused.
    pub max_token_bytes: usize,
    /// The largest value (as JSON) a write may store: a field's value, a collection's
    /// item. A write carrying a larger one is refused.
    pub max_value_bytes: usize,
    /// The most bytes of state kept in memory (accounted as [`crate::store`] says);
    /// past it the least recently touched connection goes first, as past
    /// `max_entries`. With `store: nats`, per instance, of memory only.
    pub max_bytes: usize,
    pub store: StoreSettings,
}

/// What a request may carry beside its token (a call's values, a backend write).
/// Parsing JSON into values costs 10 to 15 ns a byte at worst (a list of small numbers,
/// measured with `examples/parse_cost.rs`): 256 KiB is about 4 ms.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;

impl StateSettings {
    /// The largest message payload connres reads: twice `max_token_bytes` (a token
    /// written with room to spare, or a resume's two) plus [`MAX_PARAMS_BYTES`], or
    /// plus twice `max_value_bytes` when that is more (a value written with room to
    /// spare).
    /// Anything larger is refused unread, so parsing a message costs a few milliseconds
    /// at most whatever the NATS payload limit allows.
    pub fn max_payload_bytes(&self) -> usize {
        2 * self.max_token_bytes + MAX_PARAMS_BYTES.max(2 * self.max_value_bytes)
    }
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            idle_ttl: DEFAULT_IDLE_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            store: StoreSettings::Memory,
        }
    }
}

/// Where state lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreSettings {
    /// In this process: one instance per NATS cluster.
    #[default]
    Memory,
    /// In a JetStream key-value bucket, partitioned among every instance using it.
    Nats(SharedStore),
}

/// `store: nats`: the bucket, and how connections are split among instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStore {
    /// The key-value bucket, created if missing.
    pub bucket: String,
    /// Copies of the bucket the NATS cluster keeps (used when creating it).
    pub replicas: usize,
    /// Connections hash into this many partitions by cid; each has one owner.
    pub partitions: u32,
    /// How long an owner holds a partition without renewing.
    pub lease: Duration,
}

impl Default for SharedStore {
    fn default() -> Self {
        SharedStore {
            bucket: DEFAULT_BUCKET.into(),
            replicas: 1,
            partitions: DEFAULT_PARTITIONS,
            lease: DEFAULT_LEASE,
        }
    }
}

impl StoreSettings {
    /// How `connres check` and `plan` show it.
    pub fn describe(&self) -> String {
        match self {
            StoreSettings::Memory => "memory".into(),
            StoreSettings::Nats(s) => format!(
                "nats (bucket {}, {} partition(s), lease {}, {} replica(s))",
                s.bucket,
                s.partitions,
                humantime::format_duration(s.lease),
                s.replicas
            ),
        }
    }

    /// The shared store's settings, if state is shared.
    pub fn shared(&self) -> Option<&SharedStore> {
        match self {
            StoreSettings::Memory => None,
            StoreSettings::Nats(s) => Some(s),
        }
    }
}

impl Compiler {
    pub(super) fn state(&mut self, node: &Yaml) -> StateSettings {
        let mut out = StateSettings::default();
        let mut shared = SharedStore::default();
        let mut store = None;
        let mut store_given = false;
        let mut shared_keys = Vec::new();
        for (key, value) in self
            .mapping(node, "`state`", STATE_KEYS)
            .unwrap_or_default()
        {
            if SHARED_KEYS.contains(&key.name.as_str()) {
                shared_keys.push((key.name.clone(), key.pos));
            }
            store_given |= key.name == "store";
            match key.name.as_str() {
                "idle_ttl" => {
                    if let Some(d) = self.duration(value, "`state.idle_ttl`", MIN_LEASE) {
                        out.idle_ttl = d;
                    }
                }
                "max_entries" => {
                    if let Some(n) = self.count(value, "`state.max_entries`", usize::MAX) {
                        out.max_entries = n;
                    }
                }
                "max_token_bytes" => {
                    if let Some(n) =
                        self.count(value, "`state.max_token_bytes`", MAX_TOKEN_BYTES_LIMIT)
                    {
                        out.max_token_bytes = n;
                    }
                }
                "max_value_bytes" => {
                    if let Some(n) =
                        self.count(value, "`state.max_value_bytes`", MAX_VALUE_BYTES_LIMIT)
                    {
                        out.max_value_bytes = n;
                    }
                }
                "max_bytes" => {
                    if let Some(n) = self.count(value, "`state.max_bytes`", usize::MAX) {
                        out.max_bytes = n;
                    }
                }
                "store" => match self.string(value, "`state.store`") {
                    Some(s) if STORES.contains(&s) => store = Some(s == "nats"),
                    Some(s) => self.error(
                        value.pos,
                        format!("`state.store` must be `memory` or `nats`, not `{s}`"),
                    ),
                    None => {}
                },
                "bucket" => {
                    let Some(s) = self.string(value, "`state.bucket`") else {
                        continue;
                    };
                    if !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        shared.bucket = s.to_string();
                    } else {
                        self.error(
                            value.pos,
                            format!("`state.bucket` `{s}` must be a key-value bucket name: letters, digits, `-` and `_`"),
                        );
                    }
                }
                "replicas" => {
                    if let Some(n) = self.count(value, "`state.replicas`", 5) {
                        shared.replicas = n;
                    }
                }
                "partitions" => {
                    if let Some(n) =
                        self.count(value, "`state.partitions`", MAX_PARTITIONS as usize)
                    {
                        shared.partitions = n as u32;
                    }
                }
                _ => {
                    if let Some(d) = self.duration(value, "`state.lease`", MIN_LEASE) {
                        shared.lease = d;
                    }
                }
            }
        }
        if store == Some(true) {
            out.store = StoreSettings::Nats(shared);
        } else if store == Some(false) || !store_given {
            for (name, pos) in shared_keys {
                self.error(
                    pos,
                    format!("`state.{name}` only applies with `store: nats` (the shared store); add it or remove this key"),
                );
            }
        }
        out
    }

    /// A whole number from 1 to `max`.
    fn count(&mut self, node: &Yaml, what: &str, max: usize) -> Option<usize> {
        match node.kind {
            Kind::Int(n) if n >= 1 && (n as u128) <= max as u128 => Some(n as usize),
            _ if max == usize::MAX => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be a whole number, 1 or more, not {}",
                        node.to_json()
                    ),
                );
                None
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be a whole number from 1 to {max}, not {}",
                        node.to_json()
                    ),
                );
                None
            }
        }
    }
}
