//! Writing to the bucket before publishing, without waiting for one write before
//! handling the next message. Each handled message lists the units it changed, at a
//! version; a unit's write carries its value as it is when the write starts, so one
//! write covers every change made to it before (a group commit), and a unit has one
//! write in flight at a time (each compares against the revision the last one made).
//! A message's outcome waits in its partition's queue until every unit it changed is
//! written at its version, and outcomes leave in the order their messages were handled
//! (per partition: a model's events and replies stay in order, and a slow partition
//! holds up no other).
//!
//! A write that fails is read back: a write whose reply was lost but which landed
//! counts; a value another instance left (an old owner's late write) is overwritten,
//! since this instance holds the partition; a write of a partition no longer held is
//! let go with the partition (`forget`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::bucket::{self, Write};
use crate::service::outcome::Finished;
use crate::store::record::{self, UnitRef};
use crate::store::{MemoryStore, Store, UnitKey};

/// A handled message waiting for its writes.
struct Pending {
    finished: Option<Finished>,
    /// Each unit it changed, at the version it needs written.
    needs: Vec<(UnitKey, u64)>,
}

/// One unit's writes.
#[derive(Default)]
struct UnitWrites {
    /// The version the unit must be written at.
    wanted: u64,
    /// The version its last successful write covered.
    written: u64,
    /// A write (or a read back) in flight: the version it covers, its fingerprint, and
    /// when it started.
    in_flight: Option<(u64, u64, Instant)>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Changes when the partition is forgotten: results of earlier writes are stale.
    generation: u64,
}

pub(super) struct Pipeline {
    queues: Vec<Queue>,
    units: HashMap<UnitKey, UnitWrites>,
    /// The units that may need a write started: changed since their last write
    /// started, or whose write failed. [`Pipeline::starts`] looks at these only, not at
    /// every unit it knows.
    startable: HashSet<UnitKey>,
    /// The revision and value fingerprint of each unit as last written or read.
    revisions: HashMap<UnitKey, (u64, u64)>,
    next_version: u64,
    partitions: u32,
}

/// A write to start.
pub(super) struct Start {
    pub p: u32,
    pub generation: u64,
    pub key: UnitKey,
    pub fingerprint: u64,
    pub write: Write,
}

impl Pipeline {
    pub(super) fn new(partitions: u32) -> Pipeline {
        Pipeline {
            queues: (0..partitions).map(|_| Queue::default()).collect(),
            units: HashMap::new(),
            startable: HashSet::new(),
            revisions: HashMap::new(),
            next_version: 0,
            partitions,
        }
    }

    fn partition(&self, key: &UnitKey) -> u32 {
        record::partition(key, self.partitions)
    }

    /// Queues a handled message's outcome (none: a change not caused by a message) in
    /// partition `p`, needing the units `changed` written.
    pub(super) fn submit(&mut self, p: u32, finished: Option<Finished>, changed: Vec<UnitKey>) {
        let mut needs = Vec::with_capacity(changed.len());
        for key in changed {
            self.next_version += 1;
            let v = self.next_version;
            self.units.entry(key.clone()).or_default().wanted = v;
            self.startable.insert(key.clone());
            needs.push((key, v));
        }
        self.queues[p as usize]
            .pending
            .push_back(Pending { finished, needs });
    }

    /// Remembers a unit as read from the bucket.
    pub(super) fn loaded(&mut self, key: UnitKey, revision: u64, fingerprint: u64) {
        self.revisions.insert(key, (revision, fingerprint));
    }

    /// Whether a unit has a change not written yet (its value in memory is still
    /// needed: it is not evicted).
    pub(super) fn unwritten(&self, key: &UnitKey) -> bool {
        self.units.get(key).is_some_and(|u| u.wanted > u.written)
    }

    /// Forgets a unit's revision (an evicted unit no longer remembered: the next read
    /// of it says it again).
    pub(super) fn forget_revision(&mut self, key: &UnitKey) {
        self.revisions.remove(key);
    }

    /// The writes to start now: every unit of a partition `held` says yes to that needs
    /// a write and has none in flight.
    pub(super) fn starts(&mut self, store: &MemoryStore, held: impl Fn(u32) -> bool) -> Vec<Start> {
        let mut out = Vec::new();
        let candidates: Vec<UnitKey> = self.startable.drain().collect();
        for key in candidates {
            let due = self
                .units
                .get(&key)
                .is_some_and(|u| u.wanted > u.written && u.in_flight.is_none());
            if !due {
                // Written since, or in flight: its write's end lists it again if needed.
                continue;
            }
            let p = self.partition(&key);
            if !held(p) {
                self.startable.insert(key);
                continue;
            }
            let value = match &key {
                UnitKey::Connection(cid) => store
                    .connection(cid)
                    .map(|c| record::encode(UnitRef::Connection(cid, c))),
                UnitKey::Shared(rid) => store
                    .shared(rid)
                    .map(|w| record::encode(UnitRef::Shared(w))),
            };
            let known = self.revisions.get(&key).copied();
            let unit = self.units.get_mut(&key).expect("listed");
            let version = unit.wanted;
            let (write, fingerprint) = match (value, known) {
                (Some(v), Some((_, h))) if bucket::hash(&v) == h => {
                    unit.written = version;
                    continue;
                }
                (Some(v), known) => {
                    let h = bucket::hash(&v);
                    (
                        Write::Put {
                            value: v.into(),
                            revision: known.map(|k| k.0),
                        },
                        h,
                    )
                }
                (None, Some((revision, _))) => (Write::Delete { revision }, 0),
                (None, None) => {
                    unit.written = version;
                    continue;
                }
            };
            unit.in_flight = Some((version, fingerprint, Instant::now()));
            out.push(Start {
                p,
                generation: self.queues[p as usize].generation,
                key,
                fingerprint,
                write,
            });
        }
        out
    }

    fn current(&self, p: u32, generation: u64) -> bool {
        self.queues[p as usize].generation == generation
    }

    /// A unit's write is done: the new revision (none: deleted), or the error. Says
    /// whether to read it back (the write failed), and how long it took.
    pub(super) fn written(
        &mut self,
        p: u32,
        generation: u64,
        key: UnitKey,
        fingerprint: u64,
        result: Result<Option<u64>, String>,
    ) -> (bool, Option<std::time::Duration>) {
        if !self.current(p, generation) {
            return (false, None);
        }
        let Some(unit) = self.units.get_mut(&key) else {
            return (false, None);
        };
        let took = unit.in_flight.map(|(_, _, t)| t.elapsed());
        match result {
            Ok(revision) => {
                if let Some((version, _, _)) = unit.in_flight.take() {
                    unit.written = unit.written.max(version);
                }
                if unit.wanted > unit.written {
                    // Changed while its write was in flight.
                    self.startable.insert(key.clone());
                }
                match revision {
                    Some(r) => {
                        self.revisions.insert(key, (r, fingerprint));
                    }
                    None => {
                        self.revisions.remove(&key);
                    }
                }
                (false, took)
            }
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "a unit's write failed; reading it back");
                (true, took)
            }
        }
    }

    /// A unit read back after a failed write: `Some((revision, fingerprint))` of what
    /// the bucket holds. The write counts if that is what it wrote; else the next write
    /// compares against what is there now.
    pub(super) fn read_back(
        &mut self,
        p: u32,
        generation: u64,
        key: UnitKey,
        result: Result<Option<(u64, u64)>, String>,
    ) {
        if !self.current(p, generation) {
            return;
        }
        let Some(unit) = self.units.get_mut(&key) else {
            return;
        };
        let Some((version, fingerprint, _)) = unit.in_flight.take() else {
            return;
        };
        // Whatever the bucket says, a write still owed starts again (at the next start).
        self.startable.insert(key.clone());
        match result {
            Ok(Some((revision, found))) if found == fingerprint => {
                unit.written = unit.written.max(version);
                self.revisions.insert(key, (revision, found));
            }
            Ok(Some((revision, found))) => {
                self.revisions.insert(key, (revision, found));
            }
            Ok(None) if fingerprint == 0 => {
                // A delete that landed.
                unit.written = unit.written.max(version);
                self.revisions.remove(&key);
            }
            Ok(None) => {
                self.revisions.remove(&key);
            }
            // Tried again at the next start.
            Err(_) => {}
        }
    }

    /// The outcomes at the head of a partition's queue whose writes are done, in order.
    pub(super) fn ready(&mut self, p: u32) -> Vec<Finished> {
        let mut out = Vec::new();
        let queue = &mut self.queues[p as usize];
        while let Some(head) = queue.pending.front() {
            let done = head
                .needs
                .iter()
                .all(|(k, v)| self.units.get(k).is_none_or(|u| u.written >= *v));
            if !done {
                break;
            }
            let head = queue.pending.pop_front().expect("just looked");
            out.extend(head.finished);
        }
        // Units no longer needed by anything queued are let go of when fully written.
        out
    }

    /// Whether nothing waits in the partition's queue.
    pub(super) fn is_empty(&self, p: u32) -> bool {
        self.queues[p as usize].pending.is_empty()
    }

    /// The partitions with something waiting.
    pub(super) fn busy(&self) -> Vec<u32> {
        (0..self.partitions)
            .filter(|&p| !self.queues[p as usize].pending.is_empty())
            .collect()
    }

    /// Lets go of a partition: its queued outcomes are dropped unpublished (another
    /// instance serves it now), and what is known of its units.
    pub(super) fn forget(&mut self, p: u32) -> usize {
        let queue = &mut self.queues[p as usize];
        let dropped = queue.pending.len();
        queue.pending.clear();
        queue.generation += 1;
        let n = self.partitions;
        self.units.retain(|k, _| record::partition(k, n) != p);
        self.startable.retain(|k| record::partition(k, n) != p);
        self.revisions.retain(|k, _| record::partition(k, n) != p);
        dropped
    }

    /// Forgets units fully written and no longer waited on (bounds the map).
    pub(super) fn trim(&mut self) {
        if self.units.len() < 4096 {
            return;
        }
        self.units
            .retain(|_, u| u.in_flight.is_some() || u.wanted > u.written);
    }
}

/// The units of the store changed since the last call, by partition; those of
/// partitions not held here are forgotten (nothing is kept of another partition's
/// connection).
pub(super) fn changed_units(
    store: &mut MemoryStore,
    partitions: u32,
    held: impl Fn(u32) -> bool,
    mut granted_elsewhere: impl FnMut(&str, &[Box<str>]),
) -> Vec<(u32, UnitKey)> {
    let mut out = Vec::new();
    for key in store.take_changed() {
        let p = record::partition(&key, partitions);
        if held(p) {
            out.push((p, key));
        } else {
            // Another instance's to keep; what was granted to it here is noted first.
            if let UnitKey::Connection(cid) = &key {
                if let Some(c) = store.connection(cid).filter(|c| !c.granted().is_empty()) {
                    granted_elsewhere(cid, c.granted());
                }
            }
            store.forget(&key);
        }
    }
    out
}

#[cfg(test)]
mod tests;
