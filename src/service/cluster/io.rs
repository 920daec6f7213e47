//! The bucket operations the ownership protocol asks for, each started as a task of its
//! own (a slow one never holds up another, nor the serving task), with its result sent
//! back as an [`Io`] for the serving task to hand to the machine.

use std::sync::Arc;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::bucket::{self, Loaded};
use crate::ownership::{LeaseError, LeaseValue, NodeInfo};
use crate::store::UnitKey;

/// A finished bucket operation, or a watched entry.
pub(in crate::service) enum Io {
    /// A heartbeat or lease as the watch showed it.
    Entry(kv::Entry),
    LeaseWritten {
        p: u32,
        op: u64,
        result: Result<u64, LeaseError>,
    },
    LeaseRead {
        p: u32,
        entry: Result<Option<(u64, LeaseValue)>, String>,
    },
    /// A partition's units, read; the load is complete once the probe that followed it
    /// comes back through the ordered channel.
    Loaded {
        p: u32,
        /// The load's id ([`ownership::Action::Load`]).
        op: u64,
        units: Result<Vec<Loaded>, String>,
        took: std::time::Duration,
    },
    /// A unit's write: its new revision (none after a delete), or why not.
    UnitWritten {
        p: u32,
        generation: u64,
        key: UnitKey,
        fingerprint: u64,
        result: Result<Option<u64>, String>,
    },
    /// A cold unit read (for a message that needs it, or to expire it): `id` tells
    /// which read it answers.
    ColdRead {
        key: UnitKey,
        id: u64,
        /// Boxed: a unit is large beside the other results.
        result: Result<Option<Box<Loaded>>, String>,
        took: std::time::Duration,
    },
    /// A unit read back after a write in doubt: its revision and value fingerprint.
    UnitRead {
        p: u32,
        generation: u64,
        key: UnitKey,
        result: Result<Option<(u64, u64)>, String>,
    },
}

/// Watches every heartbeat and lease (their current values, then every change), in a
/// task of its own that watches again whenever the watch ends.
pub(super) fn spawn_watch(kv: &Arc<kv::Store>, tx: &mpsc::UnboundedSender<Io>, first: kv::Watch) {
    use futures::StreamExt;
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let mut watch = first;
        loop {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(e) => {
                        if tx.send(Io::Entry(e)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "lease watch"),
                }
            }
            if tx.is_closed() {
                return;
            }
            tracing::warn!("the lease watch ended; watching again");
            loop {
                match bucket::watch(&kv).await {
                    Ok(w) => {
                        watch = w;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the leases; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        }
    });
}

/// Writes this instance's heartbeat, waiting for it (the first one, at start).
pub(super) async fn heartbeat(kv: &kv::Store, id: &str, info: &NodeInfo) -> Result<u64, String> {
    kv.put(format!("node.{id}"), Bytes::from(info.encode()))
        .await
        .map_err(|e| e.to_string())
}

/// Starts a heartbeat write (a failed one is logged; the next comes soon).
pub(super) fn spawn_heartbeat(kv: &Arc<kv::Store>, id: &str, info: NodeInfo) {
    let kv = kv.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = heartbeat(&kv, &id, &info).await {
            tracing::warn!(error = %e, "heartbeat not written");
        }
    });
}

/// Starts deleting this instance's heartbeat (leaving: others stop counting on it).
pub(super) fn spawn_goodbye(kv: &Arc<kv::Store>, id: &str) {
    let kv = kv.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = kv.delete(format!("node.{id}")).await {
            tracing::warn!(error = %e, "heartbeat not deleted");
        }
    });
}

/// Starts a lease write: create (`expect` none) or compare-and-set.
pub(super) fn spawn_lease_write(
    kv: &Arc<kv::Store>,
    tx: &mpsc::UnboundedSender<Io>,
    p: u32,
    op: u64,
    value: LeaseValue,
    expect: Option<u64>,
) {
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let key = format!("lease.{p}");
        let value = Bytes::from(value.encode());
        let result = match expect {
            None => kv.create(&key, value).await.map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => LeaseError::Conflict,
                _ => LeaseError::Other,
            }),
            Some(revision) => kv
                .update(&key, value, revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => LeaseError::Conflict,
                    _ => LeaseError::Other,
                }),
        };
        let _ = tx.send(Io::LeaseWritten { p, op, result });
    });
}

/// Starts reading a lease.
pub(super) fn spawn_lease_read(kv: &Arc<kv::Store>, tx: &mpsc::UnboundedSender<Io>, p: u32) {
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let entry = match kv.entry(format!("lease.{p}")).await {
            Ok(Some(e)) if matches!(e.operation, kv::Operation::Put) => {
                Ok(Some((e.revision, LeaseValue::decode(&e.value))))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let _ = tx.send(Io::LeaseRead { p, entry });
    });
}

/// Starts reading a partition's units; then sends the probe that marks the load
/// complete once everything received before it was placed.
pub(super) fn spawn_load(
    kv: &Arc<kv::Store>,
    tx: &mpsc::UnboundedSender<Io>,
    client: &async_nats::Client,
    probe: String,
    p: u32,
    op: u64,
    timeout: std::time::Duration,
) {
    let (kv, tx, client) = (kv.clone(), tx.clone(), client.clone());
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let units = bucket::load(&kv, p, timeout).await;
        let ok = units.is_ok();
        let took = started.elapsed();
        let _ = tx.send(Io::Loaded { p, op, units, took });
        if ok {
            if let Err(e) = client.publish(probe, Bytes::new()).await {
                tracing::warn!(error = %e, partition = p, "could not send the load's probe");
            }
        }
    });
}

/// Starts a unit's write.
pub(super) fn spawn_unit_write(
    kv: &Arc<kv::Store>,
    tx: &mpsc::UnboundedSender<Io>,
    p: u32,
    generation: u64,
    key: UnitKey,
    fingerprint: u64,
    write: bucket::Write,
) {
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let bucket_key = crate::store::record::key(p, &key);
        let result = bucket::write(&kv, &bucket_key, write).await;
        let _ = tx.send(Io::UnitWritten {
            p,
            generation,
            key,
            fingerprint,
            result,
        });
    });
}

/// Starts reading a unit back.
pub(super) fn spawn_unit_read(
    kv: &Arc<kv::Store>,
    tx: &mpsc::UnboundedSender<Io>,
    p: u32,
    generation: u64,
    key: UnitKey,
) {
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let bucket_key = crate::store::record::key(p, &key);
        let result = bucket::read_back(&kv, &bucket_key).await;
        let _ = tx.send(Io::UnitRead {
            p,
            generation,
            key,
            result,
        });
    });
}

/// Starts reading a cold unit (`id`: which read of it this is).
pub(super) fn spawn_cold_read(
    kv: &Arc<kv::Store>,
    tx: &mpsc::UnboundedSender<Io>,
    p: u32,
    key: UnitKey,
    id: u64,
) {
    let (kv, tx) = (kv.clone(), tx.clone());
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = bucket::read_unit(&kv, &key, p)
            .await
            .map(|u| u.map(Box::new));
        let took = started.elapsed();
        let _ = tx.send(Io::ColdRead {
            key,
            id,
            result,
            took,
        });
    });
}
