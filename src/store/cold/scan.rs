//! The cold units of a partition, or all of them, looked over: those idle past the TTL,
//! token record decisions, what a reset names, and forgetting a partition's.

use super::{partition, ColdNames, ColdSet, Part};
use crate::clock::Tick;
use crate::store::UnitKey;

impl<T> ColdSet<T> {
    /// Starts reads of cold units idle for `ttl` or more at `now`, in partitions
    /// `held` says yes to, with at most `max` such reads in flight: the keys and ids.
    pub fn expired(
        &mut self,
        now: Tick,
        ttl: Tick,
        max: usize,
        held: impl Fn(u32) -> bool,
    ) -> Vec<(UnitKey, u64)> {
        let mut due = Vec::new();
        for (key, cold) in self.keys.iter() {
            if self.expiring + due.len() >= max || now.saturating_sub(cold.touched) < ttl {
                break;
            }
            let p = partition(key, self.partitions);
            if !self.reads.contains_key(key) && !self.queues.pinned(key) && held(p) {
                due.push(key.clone());
            }
        }
        due.into_iter()
            .filter_map(|k| self.start_read(&k, true).map(|id| (k, id)))
            .collect()
    }

    /// The protocol doubted (`false`) or confirmed (`true`) the token records of
    /// partition `p` that `which` says yes to (by cid): each cold one gets it when read
    /// back. Doubt reaches the untracked ones of an overflowed partition too (all of
    /// them: unconfirming more than needed only has records filled in again).
    pub fn set_confirmed(&mut self, p: u32, which: impl Fn(&str) -> bool, confirmed: bool) {
        let n = self.partitions;
        let any = self.parts[p as usize].cold > 0;
        for (key, cold) in self.keys.iter_mut().filter(|_| any) {
            if let UnitKey::Connection(cid) = key {
                if partition(key, n) == p && which(cid) {
                    cold.confirmed = Some(confirmed);
                }
            }
        }
        let o = &mut self.parts[p as usize];
        if o.on && !confirmed {
            o.doubt = true;
        }
    }

    /// What a reset of partition `p` must name of its cold units touched at or after
    /// `since` (all: `None`).
    pub fn names(&self, p: u32, since: Option<Tick>) -> ColdNames {
        let mut out = ColdNames {
            overflowed: self.parts[p as usize].on,
            ..ColdNames::default()
        };
        out.connections = out.overflowed;
        let any = self.parts[p as usize].cold > 0;
        for (key, cold) in self.keys.iter().filter(|_| any) {
            if partition(key, self.partitions) != p || since.is_some_and(|s| cold.touched < s) {
                continue;
            }
            match key {
                UnitKey::Connection(_) => out.connections = true,
                UnitKey::Shared(rid) => out.shared.push(rid.clone()),
            }
        }
        out
    }

    /// Forgets what is known of partition `p`'s units (another instance serves it, or
    /// its units were loaded again); reads in flight become stale. Held items stay.
    pub fn clear_keys(&mut self, p: u32) {
        let n = self.partitions;
        if self.parts[p as usize].cold > 0 {
            self.keys.retain(|k, _| partition(k, n) != p);
        }
        let reads: Vec<UnitKey> = self
            .reads
            .keys()
            .filter(|k| partition(k, n) == p)
            .cloned()
            .collect();
        for k in reads {
            self.end_read(&k);
        }
        let part = &mut self.parts[p as usize];
        if part.on {
            self.overflowed -= 1;
            self.absent.retain(|k| partition(k, n) != p);
        }
        *part = Part::default();
    }
}
