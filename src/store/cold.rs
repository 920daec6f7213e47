//! Units the size bound took out of memory while the shared store still keeps them
//! ("cold"), and the messages that wait for one to be read back. Pure: the serving task
//! (`service/cluster/evict.rs`) asks, starts the reads and carries the decisions out.
//!
//! With `state.store: nats`, `state.max_entries` bounds memory, not what is kept: a
//! unit evicted past it stays in the bucket, and its owner remembers its key and when
//! it was last touched (the pipeline keeps its revision). A message that needs a cold
//! unit waits, with every later message of its partition, until the unit is read back;
//! a cold unit idle past `state.idle_ttl` is read (what gateways must be told needs its
//! content) and deleted. The set is bounded: when it is full, a partition whose unit
//! is evicted becomes *overflowed*: any of its units not in memory may be in the
//! bucket, so each is read before a message uses it (found absent, it is remembered as
//! such, up to [`ABSENT_MAX`] keys).

mod queue;
mod scan;

use std::collections::HashMap;

use hashlink::{LinkedHashMap, LinkedHashSet};

use super::record::partition;
use super::UnitKey;
use crate::clock::Tick;
use queue::Queues;

/// The most keys remembered as absent from the bucket in overflowed partitions.
pub const ABSENT_MAX: usize = 4096;

/// What is remembered of a cold unit besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdKey {
    /// When it was last touched (idle expiry counts from there).
    pub touched: Tick,
    /// What its token record's `confirmed` must become when it is read back (the
    /// ownership protocol doubted or confirmed the partition's records meanwhile).
    pub confirmed: Option<bool>,
}

/// A read of one unit in flight.
#[derive(Debug, Clone, Copy)]
struct Read {
    id: u64,
    /// Started by idle expiry, not by a message.
    expire: bool,
    /// It failed: started again by [`ColdSet::retry`].
    failed: bool,
}

/// What is known of a partition's cold units.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    /// How many are remembered.
    cold: usize,
    /// Overflowed: not all of its evicted units are remembered.
    on: bool,
    /// Overflowed, and token records were doubted since: one read back that was not
    /// remembered is unconfirmed.
    doubt: bool,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    Found,
    Absent,
    Failed,
}

/// What to do with a read's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Not the read in flight (the partition was forgotten since): ignore it.
    Stale,
    /// Put the unit in memory, its record's `confirmed` set to this if some.
    Insert { confirmed: Option<bool> },
    /// Idle past `idle_ttl`: tell gateways what its content says, and delete it.
    Expire,
    /// The bucket does not hold it (any more): nothing to read back.
    Gone,
    /// It failed and a message waits: tried again at the next [`ColdSet::retry`].
    Retry,
    /// It failed, or the partition is not held now: the next sweep tries again.
    Later,
}

/// Whether an evicted unit is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    Tracked,
    /// The set is full: its partition is overflowed (`first`: it just became so).
    Untracked {
        first: bool,
    },
}

/// What a `system.reset` for a partition must name of its cold units (their models are
/// not in memory: named by their patterns, except models without a cid).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ColdNames {
    /// Some cold connection (or, overflowed, any unit not in memory) qualifies.
    pub connections: bool,
    /// The names of the cold models without a cid.
    pub shared: Vec<Box<str>>,
    /// The partition is overflowed: models without a cid of unknown names too.
    pub overflowed: bool,
}

#[derive(Debug)]
pub struct ColdSet<T> {
    partitions: u32,
    /// In eviction order, which is nearly the order they were last touched in.
    keys: LinkedHashMap<UnitKey, ColdKey>,
    reads: HashMap<UnitKey, Read>,
    expiring: usize,
    /// What waits, and the units it needs (never evicted).
    queues: Queues<T>,
    parts: Vec<Part>,
    overflowed: usize,
    absent: LinkedHashSet<UnitKey>,
    next_id: u64,
}

impl<T> ColdSet<T> {
    pub fn new(partitions: u32) -> ColdSet<T> {
        ColdSet {
            partitions,
            keys: LinkedHashMap::new(),
            reads: HashMap::new(),
            expiring: 0,
            queues: Queues::new(),
            parts: vec![Part::default(); partitions as usize],
            overflowed: 0,
            absent: LinkedHashSet::new(),
            next_id: 0,
        }
    }

    fn partition(&self, key: &UnitKey) -> usize {
        partition(key, self.partitions) as usize
    }

    /// How many cold units are remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Nothing cold, read, held or overflowed: every message is handled at once.
    pub fn is_idle(&self) -> bool {
        self.keys.is_empty()
            && self.reads.is_empty()
            && self.queues.count() == 0
            && self.overflowed == 0
    }

    /// How many items wait.
    pub fn held_count(&self) -> usize {
        self.queues.count()
    }

    pub fn get(&self, key: &UnitKey) -> Option<&ColdKey> {
        self.keys.get(key)
    }

    /// A unit left memory (no write of it pending), last touched at `touched`; the set
    /// holds at most `cap` units.
    pub fn evict(&mut self, key: UnitKey, touched: Tick, cap: usize) -> Evicted {
        self.absent.remove(&key);
        if self.keys.len() >= cap {
            let p = self.partition(&key);
            let o = &mut self.parts[p];
            let first = !o.on;
            if first {
                o.on = true;
                self.overflowed += 1;
            }
            return Evicted::Untracked { first };
        }
        let p = self.partition(&key);
        self.parts[p].cold += 1;
        self.keys.insert(
            key,
            ColdKey {
                touched,
                confirmed: None,
            },
        );
        Evicted::Tracked
    }

    /// Whether a message must wait for `key` to be read: it is not in memory
    /// (`in_memory`), and it is cold, being read, or may be in the bucket untracked (an
    /// overflowed partition; not while a write of it is pending, `unwritten`: the
    /// pipeline's knowledge is newer than the bucket's).
    pub fn needs_read(&self, key: &UnitKey, in_memory: bool, unwritten: bool) -> bool {
        if in_memory {
            return false;
        }
        if self.reads.contains_key(key) || self.keys.contains_key(key) {
            return true;
        }
        self.parts[self.partition(key)].on && !unwritten && !self.absent.contains(key)
    }

    /// Whether a held item needs `key` (it must stay in memory).
    pub fn pinned(&self, key: &UnitKey) -> bool {
        self.queues.pinned(key)
    }

    /// Whether items wait in partition `p`.
    pub fn has_held(&self, p: u32) -> bool {
        self.queues.has(p)
    }

    /// The partitions where items wait.
    pub fn held_partitions(&self) -> Vec<u32> {
        self.queues.partitions()
    }

    /// Queues an item in partition `p`, behind every item already there.
    pub fn hold(&mut self, p: u32, item: T, needs: Vec<UnitKey>) {
        self.queues.push(p, item, needs);
    }

    /// The units the first item of partition `p` needs.
    pub fn head_needs(&self, p: u32) -> Option<&[UnitKey]> {
        self.queues.head_needs(p)
    }

    /// Takes the first item of partition `p` when none of the units it needs must be
    /// read first (see [`ColdSet::needs_read`]).
    pub fn pop_ready(
        &mut self,
        p: u32,
        in_memory: impl Fn(&UnitKey) -> bool,
        unwritten: impl Fn(&UnitKey) -> bool,
    ) -> Option<T> {
        let needs = self.queues.head_needs(p)?;
        if needs
            .iter()
            .any(|k| self.needs_read(k, in_memory(k), unwritten(k)))
        {
            return None;
        }
        self.queues.pop(p)
    }

    /// Starts a read of `key` (for a message, or `expire`) unless one is in flight:
    /// its id.
    pub fn start_read(&mut self, key: &UnitKey, expire: bool) -> Option<u64> {
        if self.reads.contains_key(key) {
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.reads.insert(
            key.clone(),
            Read {
                id,
                expire,
                failed: false,
            },
        );
        self.expiring += usize::from(expire);
        Some(id)
    }

    fn end_read(&mut self, key: &UnitKey) -> Option<Read> {
        let read = self.reads.remove(key)?;
        self.expiring -= usize::from(read.expire);
        Some(read)
    }

    /// A read ended; `held`: whether its partition is held here now.
    pub fn read_done(&mut self, key: &UnitKey, id: u64, result: ReadResult, held: bool) -> Done {
        let Some(read) = self.reads.get(key).copied() else {
            return Done::Stale;
        };
        if read.id != id {
            return Done::Stale;
        }
        let expire = read.expire && !self.queues.pinned(key);
        match result {
            ReadResult::Failed if expire => {
                self.end_read(key);
                return Done::Later;
            }
            ReadResult::Failed => {
                if let Some(r) = self.reads.get_mut(key) {
                    r.failed = true;
                }
                return Done::Retry;
            }
            // Expiry only deletes through a partition held here; it stays cold.
            ReadResult::Found if expire && !held => {
                self.end_read(key);
                return Done::Later;
            }
            _ => {}
        }
        self.end_read(key);
        let p = self.partition(key);
        let cold = self.keys.remove(key);
        if cold.is_some() {
            self.parts[p].cold -= 1;
        }
        match result {
            ReadResult::Absent => {
                if self.parts[p].on {
                    self.absent.replace(key.clone());
                    while self.absent.len() > ABSENT_MAX {
                        self.absent.pop_front();
                    }
                }
                Done::Gone
            }
            _ if expire => Done::Expire,
            _ => {
                let confirmed = match cold {
                    Some(c) => c.confirmed,
                    None if self.parts[p].doubt => Some(false),
                    None => None,
                };
                Done::Insert { confirmed }
            }
        }
    }

    /// The failed reads that messages wait for, started again (new ids).
    pub fn retry(&mut self) -> Vec<(UnitKey, u64)> {
        let mut out = Vec::new();
        for (key, read) in self.reads.iter_mut().filter(|(_, r)| r.failed) {
            self.next_id += 1;
            read.id = self.next_id;
            read.failed = false;
            out.push((key.clone(), read.id));
        }
        out
    }

    /// Lets go of partition `p`: what is known of its units, and its held items
    /// (returned, not applied).
    pub fn forget(&mut self, p: u32) -> Vec<T> {
        self.clear_keys(p);
        self.queues.take(p)
    }
}

#[cfg(test)]
mod tests;
