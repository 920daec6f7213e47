//! The key-value bucket: opening it (created with the file's replicas when missing, its
//! partition count checked), watching the heartbeats and leases, reading a partition's
//! units, and writing a unit with compare-and-set on the revision this instance last
//! saw.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, Message};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;

use crate::config::SharedStore;
use crate::store::record::{self, partition_filter};
use crate::store::{Unit, UnitKey};

use super::super::ServiceError;

/// The key holding the bucket's partition count and how connections hash into them:
/// together they decide where every unit lives.
const META_KEY: &str = "meta.partitions";

/// What follows the count in [`META_KEY`]: connections are placed by 32-bit FNV-1a of
/// their cid (`crate::store::record::partition_of_cid`). A bare count is a bucket of
/// an earlier version, which placed them by another hash.
const CID_HASH: &str = "cid-hash=fnv1a32";

/// Opens the bucket (creating it when missing) and checks that it was made for the
/// same partition count.
pub(crate) async fn open(client: &Client, s: &SharedStore) -> Result<kv::Store, ServiceError> {
    let js = jetstream::new(client.clone());
    let fail = |what: &str, e: &dyn std::fmt::Display, hint: &str| {
        ServiceError::Nats(format!(
            "key-value bucket `{}`: {what}: {e} ({hint})",
            s.bucket
        ))
    };
    let store = match js.get_key_value(&s.bucket).await {
        Ok(store) => store,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: s.bucket.clone(),
                description: "connres per-connection state".into(),
                history: 1,
                num_replicas: s.replicas,
                ..kv::Config::default()
            })
            .await
            .map_err(|e| fail("cannot create it", &e, &create_hint(s, &e)))?,
    };
    let want = meta_value(s.partitions);
    let have = match store.create(META_KEY, Bytes::from(want.clone())).await {
        Ok(_) => want.clone(),
        Err(_) => match store.get(META_KEY).await {
            Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
            Ok(None) => want.clone(),
            Err(e) => return Err(fail("cannot read its partition count", &e, ACCESS_HINT)),
        },
    };
    match meta_mismatch(&have, s.partitions) {
        None => Ok(store),
        Some(why) => Err(ServiceError::Settings(format!(
            "key-value bucket `{}` {why}",
            s.bucket
        ))),
    }
}

/// The value of [`META_KEY`] for a bucket of `partitions`.
fn meta_value(partitions: u32) -> String {
    format!("{partitions} {CID_HASH}")
}

/// Why a bucket whose [`META_KEY`] holds `have` cannot be used with `partitions`.
fn meta_mismatch(have: &str, partitions: u32) -> Option<String> {
    let (count, hash) = have.split_once(' ').unwrap_or((have, ""));
    if count != partitions.to_string() {
        return Some(format!(
            "holds state in {count} partitions, but `state.partitions` is {partitions}: \
             use the bucket's count, or another bucket"
        ));
    }
    if hash != CID_HASH {
        return Some(
            "was written by an earlier version of connres, which placed connections in \
             partitions by another hash: use another bucket (`state.bucket`), or stop every \
             instance and delete this one (`nats kv del`; its state is lost)"
                .into(),
        );
    }
    None
}

/// What to check when the bucket cannot be used, unless the server said more.
const ACCESS_HINT: &str =
    "is JetStream enabled on the server (`nats-server -js`), and may this user use it?";

/// What to do about a bucket the server would not create: the copies `state.replicas`
/// asks for when the server cannot keep them, else JetStream and permissions.
fn create_hint(s: &SharedStore, e: &async_nats::jetstream::context::CreateKeyValueError) -> String {
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    use async_nats::jetstream::ErrorCode;
    let mut source = std::error::Error::source(e);
    let mut code = None;
    while let Some(err) = source {
        if let Some(create) = err.downcast_ref::<CreateStreamError>() {
            if let CreateStreamErrorKind::JetStream(js) = create.kind() {
                code = Some(js.error_code());
            }
        }
        source = err.source();
    }
    let n = s.replicas;
    match code {
        Some(ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED) => format!(
            "`state.replicas` is {n}, but this nats-server is not in a JetStream cluster: a single \
             server keeps one copy, in its JetStream storage directory (`-sd`, `store_dir`). \
             Set `state.replicas: 1`, or run a cluster of {n} or more servers with JetStream"
        ),
        Some(ErrorCode::CLUSTER_NO_PEERS | ErrorCode::INSUFFICIENT_RESOURCES) if n > 1 => format!(
            "`state.replicas` is {n}: the JetStream cluster needs {n} servers with JetStream \
             and room in their storage directories (`-sd`, `store_dir`). Lower \
             `state.replicas`, or add servers"
        ),
        _ => ACCESS_HINT.into(),
    }
}

/// Watches every heartbeat and lease: their current values, then every change.
pub(crate) async fn watch(store: &kv::Store) -> Result<kv::Watch, ServiceError> {
    store
        .watch_many_with_history(["node.>", "lease.>"])
        .await
        .map_err(|e| ServiceError::Nats(format!("cannot watch the bucket's leases: {e}")))
}

/// What a watched entry tells the ownership protocol, if anything.
pub(crate) fn observation(e: &kv::Entry) -> Option<crate::ownership::Input> {
    use crate::ownership::{Input, LeaseValue, NodeInfo};
    let deleted = matches!(e.operation, Operation::Delete | Operation::Purge);
    let server_ms = (e.created.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    if let Some(id) = e.key.strip_prefix("node.") {
        return Some(Input::Node {
            id: id.into(),
            revision: e.revision,
            info: (!deleted).then(|| NodeInfo::decode(&e.value)),
            server_ms: Some(server_ms),
        });
    }
    let p = e.key.strip_prefix("lease.")?.parse().ok()?;
    Some(Input::Lease {
        p,
        revision: e.revision,
        value: (!deleted).then(|| LeaseValue::decode(&e.value)),
        server_ms: Some(server_ms),
    })
}

/// A unit read from the bucket, with the revision it was read at (`unit` none: its
/// value cannot be read; the revision is kept so that the next write replaces it).
pub(crate) struct Loaded {
    pub key: UnitKey,
    pub unit: Option<Unit>,
    pub revision: u64,
    pub hash: u64,
}

/// Reads every unit of a partition: the last value of each of its keys, through an
/// ordered consumer filtered to the partition, until the server says none is pending.
/// Values that cannot be read are skipped and logged (they stay in the bucket).
pub(crate) async fn load(
    store: &kv::Store,
    partition: u32,
    timeout: Duration,
) -> Result<Vec<Loaded>, String> {
    let filter = format!("{}{}", store.prefix, partition_filter(partition));
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: format!("_INBOX.{}", nuid::next()),
            filter_subject: filter,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("the consumer ended early".into()),
            Err(_) => return Err("timed out reading the partition".into()),
        };
        let (revision, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => return Err(e.to_string()),
        };
        if let Some(loaded) = unit_of(store, &message, revision) {
            out.push(loaded);
        }
        if pending == 0 {
            return Ok(out);
        }
    }
}

/// The unit a bucket message holds, if it holds one (deletes and other keys do not).
fn unit_of(store: &kv::Store, message: &Message, revision: u64) -> Option<Loaded> {
    let deleted = message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
    if deleted {
        return None;
    }
    let key = message.subject.strip_prefix(store.prefix.as_str())?;
    let (_, unit_key) = record::parse_key(key)?;
    let unit = match record::decode_unit(&unit_key, &message.payload) {
        Ok(unit) => Some(unit),
        Err(e) => {
            tracing::error!(key, error = %e, "a unit in the bucket cannot be read; it counts as empty and is replaced by the next write");
            None
        }
    };
    Some(Loaded {
        hash: hash(&message.payload),
        key: unit_key,
        unit,
        revision,
    })
}

/// What a unit's write must compare against, and the result.
pub(crate) enum Write {
    /// Put this value; `revision` is the last one seen (none: the key must not exist).
    Put { value: Bytes, revision: Option<u64> },
    /// Delete the key, last seen at `revision`.
    Delete { revision: u64 },
}

/// Writes one unit with compare-and-set; the new revision (none after a delete).
pub(crate) async fn write(
    store: &kv::Store,
    key: &str,
    write: Write,
) -> Result<Option<u64>, String> {
    match write {
        Write::Put {
            value,
            revision: Some(revision),
        } => store
            .update(key, value, revision)
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        Write::Put {
            value,
            revision: None,
        } => store
            .create(key, value)
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        Write::Delete { revision } => store
            .delete_expect_revision(key, Some(revision))
            .await
            .map(|_| None)
            .map_err(|e| e.to_string()),
    }
}

/// Reads one key back (after a write whose outcome is in doubt): its revision and the
/// fingerprint of its value, none when it is absent or deleted.
pub(crate) async fn read_back(store: &kv::Store, key: &str) -> Result<Option<(u64, u64)>, String> {
    match store.entry(key).await {
        Ok(Some(e)) if matches!(e.operation, Operation::Put) => {
            Ok(Some((e.revision, hash(&e.value))))
        }
        Ok(Some(e)) => Ok(Some((e.revision, 0))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads one unit (a cold one, evicted from memory past `state.max_entries`): none when
/// the bucket does not hold it. A deleted key reads as none too, with its revision
/// remembered by the caller through the next write's read back.
pub(crate) async fn read_unit(
    store: &kv::Store,
    key: &UnitKey,
    p: u32,
) -> Result<Option<Loaded>, String> {
    let bucket_key = record::key(p, key);
    match store.entry(&bucket_key).await {
        Ok(Some(e)) if matches!(e.operation, Operation::Put) => {
            let unit = match record::decode_unit(key, &e.value) {
                Ok(unit) => Some(unit),
                Err(err) => {
                    tracing::error!(key = bucket_key, error = %err, "a unit in the bucket cannot be read; it counts as empty and is replaced by the next write");
                    None
                }
            };
            Ok(Some(Loaded {
                hash: hash(&e.value),
                key: key.clone(),
                unit,
                revision: e.revision,
            }))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A value's fingerprint: a unit whose encoding did not change is not written again.
pub(crate) fn hash(value: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x0063_6f6e_6e72_6573).hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_of_another_count_or_hash_is_refused() {
        assert_eq!(meta_mismatch(&meta_value(64), 64), None);
        let count = meta_mismatch(&meta_value(32), 64).unwrap();
        assert!(count.contains("holds state in 32 partitions"), "{count}");
        // A bucket of an earlier version: the bare count.
        let earlier = meta_mismatch("64", 64).unwrap();
        assert!(earlier.contains("an earlier version"), "{earlier}");
    }
}
