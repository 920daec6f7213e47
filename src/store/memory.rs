//! The embedded in-memory store, for one engine instance per NATS cluster: two maps kept
//! in the order their units were last touched (`hashlink`'s linked hash map: a lookup
//! and a move to the back are O(1), so is taking the coldest unit). Each unit's slot
//! keeps the bytes it was last accounted, so the total changes by the difference after
//! each change, and a unit taken out takes exactly what it added.

use hashlink::LinkedHashMap;

use super::{Connection, Dropped, Store, Unit, UnitKey, Written, UNIT_OVERHEAD};
use crate::clock::Tick;

/// A unit in its map: when it was last touched, and the bytes it was last accounted
/// (saturating: a unit past 4 GiB counts 4 GiB).
#[derive(Debug)]
struct Slot<T> {
    touched: Tick,
    bytes: u32,
    unit: T,
}

impl<T> Slot<T> {
    fn new(touched: Tick, unit: T) -> Slot<T> {
        Slot {
            touched,
            bytes: 0,
            unit,
        }
    }

    /// Accounts the unit `bytes` now: the store's `total` moves by the difference.
    fn account(&mut self, total: &mut usize, bytes: usize) {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        *total = *total - self.bytes as usize + bytes as usize;
        self.bytes = bytes;
    }
}

/// The bytes a model without a cid counts (see [`Store::bytes`]).
fn shared_bytes(written: &Written) -> usize {
    UNIT_OVERHEAD + written.bytes()
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    connections: LinkedHashMap<Box<str>, Slot<Connection>>,
    shared: LinkedHashMap<Box<str>, Slot<Written>>,
    /// The sum of the units' entries, kept current by every change.
    entries: usize,
    /// The sum of the bytes the units were accounted, kept current by every change.
    bytes: usize,
    /// With [`MemoryStore::track_changes`]: the units changed or removed since the last
    /// [`MemoryStore::take_changed`] (a unit may be listed more than once).
    changed: Option<Vec<UnitKey>>,
}

impl MemoryStore {
    /// How many connection records it holds.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// How many models without a cid it holds.
    pub fn shared_models(&self) -> usize {
        self.shared.len()
    }

    /// Lists every unit changed or removed from now on, for a store behind this one
    /// (the shared store writes them out after each message).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// The units changed or removed since the last call, each once.
    pub fn take_changed(&mut self) -> Vec<UnitKey> {
        let mut changed = self
            .changed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    fn mark(&mut self, key: impl FnOnce() -> UnitKey) {
        if let Some(changed) = &mut self.changed {
            changed.push(key());
        }
    }

    /// Lists a unit as changed (to be written out), when changed other than through the
    /// [`Store`] methods.
    pub fn mark_changed(&mut self, key: UnitKey) {
        self.mark(|| key);
    }

    /// Visits the connections whose cids `which` says yes to, to change them (each one
    /// changed is listed).
    pub fn update_where(
        &mut self,
        mut which: impl FnMut(&str) -> bool,
        mut change: impl FnMut(&mut Connection),
    ) {
        let cids: Vec<Box<str>> = self
            .connections
            .keys()
            .filter(|c| which(c))
            .cloned()
            .collect();
        for cid in cids {
            let Some(slot) = self.connections.get_mut(&cid) else {
                continue;
            };
            let before = slot.unit.fingerprint();
            let entries = slot.unit.entries();
            change(&mut slot.unit);
            self.entries = self.entries + slot.unit.entries() - entries;
            let bytes = slot.unit.bytes();
            slot.account(&mut self.bytes, bytes);
            if slot.unit.fingerprint() != before {
                self.mark(|| UnitKey::Connection(cid));
            }
        }
    }

    /// Puts in a unit loaded from elsewhere (it is not listed as changed), replacing
    /// what was there, as the most recently touched.
    pub fn insert(&mut self, key: UnitKey, unit: Unit, now: Tick) {
        self.forget(&key);
        match (key, unit) {
            (UnitKey::Connection(cid), Unit::Connection(mut conn)) => {
                self.entries += conn.entries();
                let bytes = conn.bytes();
                let mut slot = Slot::new(now, conn);
                slot.account(&mut self.bytes, bytes);
                self.connections.insert(cid, slot);
            }
            (UnitKey::Shared(rid), Unit::Shared(written)) if !written.is_empty() => {
                self.entries += 1;
                let mut slot = Slot::new(now, written);
                slot.account(&mut self.bytes, shared_bytes(&slot.unit));
                self.shared.insert(rid, slot);
            }
            _ => {}
        }
    }

    /// Takes a unit out without listing it as changed (it lives on elsewhere).
    pub fn forget(&mut self, key: &UnitKey) {
        match key {
            UnitKey::Connection(cid) => {
                if let Some(slot) = self.connections.remove(cid) {
                    self.entries -= slot.unit.entries();
                    self.bytes -= slot.bytes as usize;
                }
            }
            UnitKey::Shared(rid) => {
                if let Some(slot) = self.shared.remove(rid) {
                    self.entries -= 1;
                    self.bytes -= slot.bytes as usize;
                }
            }
        }
    }

    /// Takes out, without listing them as changed, every unit `keep` says no to.
    pub fn forget_where(&mut self, mut keep: impl FnMut(&UnitKey) -> bool) -> usize {
        let mut gone = Vec::new();
        for cid in self.connections.keys() {
            let key = UnitKey::Connection(cid.clone());
            if !keep(&key) {
                gone.push(key);
            }
        }
        for rid in self.shared.keys() {
            let key = UnitKey::Shared(rid.clone());
            if !keep(&key) {
                gone.push(key);
            }
        }
        for key in &gone {
            self.forget(key);
        }
        gone.len()
    }

    /// The units touched at or after `since`, most recent first (the maps keep touch
    /// order: only those are visited).
    pub fn touched_since(&self, since: Tick) -> Vec<UnitKey> {
        let conns = self
            .connections
            .iter()
            .rev()
            .take_while(|(_, slot)| slot.touched >= since)
            .map(|(cid, _)| UnitKey::Connection(cid.clone()));
        let shared = self
            .shared
            .iter()
            .rev()
            .take_while(|(_, slot)| slot.touched >= since)
            .map(|(rid, _)| UnitKey::Shared(rid.clone()));
        conns.chain(shared).collect()
    }

    /// Visits every unit's key.
    pub fn keys(&self) -> impl Iterator<Item = UnitKey> + '_ {
        self.connections
            .keys()
            .map(|c| UnitKey::Connection(c.clone()))
            .chain(self.shared.keys().map(|r| UnitKey::Shared(r.clone())))
    }

    /// Whether the unit is in memory.
    pub fn contains(&self, key: &UnitKey) -> bool {
        match key {
            UnitKey::Connection(cid) => self.connections.contains_key(cid),
            UnitKey::Shared(rid) => self.shared.contains_key(rid),
        }
    }

    /// Touches a unit if it is in memory; says whether it was.
    pub fn touch(&mut self, key: &UnitKey, now: Tick) -> bool {
        match key {
            UnitKey::Connection(cid) => touch(&mut self.connections, cid, now),
            UnitKey::Shared(rid) => touch(&mut self.shared, rid, now),
        }
    }

    /// Takes out, without listing them as changed (they live on elsewhere), the least
    /// recently touched units until at most `max_entries` entries and `max_bytes` bytes
    /// are left, passing over those `keep` says yes to: at most `budget` units, after
    /// looking at no more than `budget` units kept. Returns each with when it was last
    /// touched.
    pub fn evict_oldest(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        budget: usize,
        mut keep: impl FnMut(&UnitKey) -> bool,
    ) -> Vec<(UnitKey, Tick)> {
        let mut over = self.entries.saturating_sub(max_entries);
        let mut over_bytes = self.bytes.saturating_sub(max_bytes);
        let mut out = Vec::new();
        let mut kept = 0;
        let mut conns = self.connections.iter().peekable();
        let mut shared = self.shared.iter().peekable();
        while (over > 0 || over_bytes > 0) && out.len() < budget && kept < budget {
            let conn = match (conns.peek(), shared.peek()) {
                (Some((_, c)), Some((_, s))) => c.touched <= s.touched,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (key, touched, entries, bytes) = match conn {
                true => {
                    let (cid, slot) = conns.next().expect("peeked");
                    let key = UnitKey::Connection(cid.clone());
                    (key, slot.touched, slot.unit.entries(), slot.bytes)
                }
                false => {
                    let (rid, slot) = shared.next().expect("peeked");
                    (UnitKey::Shared(rid.clone()), slot.touched, 1, slot.bytes)
                }
            };
            if keep(&key) {
                kept += 1;
                continue;
            }
            over = over.saturating_sub(entries);
            over_bytes = over_bytes.saturating_sub(bytes as usize);
            out.push((key, touched));
        }
        for (key, _) in &out {
            self.forget(key);
        }
        out
    }

    /// Which unit is older: a connection (`true`) or a shared model (`false`).
    fn oldest_is_connection(&self) -> Option<bool> {
        match (self.connections.front(), self.shared.front()) {
            (Some((_, c)), Some((_, s))) => Some(c.touched <= s.touched),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }
}

impl Store for MemoryStore {
    fn connection(&self, cid: &str) -> Option<&Connection> {
        self.connections.get(cid).map(|slot| &slot.unit)
    }

    fn update_connection<R>(
        &mut self,
        cid: &str,
        now: Tick,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> R {
        let (slot, created) = match self.connections.to_back(cid) {
            Some(slot) => (slot, false),
            None => {
                self.entries += 1;
                let slot = self
                    .connections
                    .entry(cid.into())
                    .or_insert(Slot::new(now, Connection::default()));
                (slot, true)
            }
        };
        slot.touched = now;
        let conn = &mut slot.unit;
        let before = conn.entries();
        let fingerprint = conn.fingerprint();
        let result = change(conn);
        let changed = created || conn.fingerprint() != fingerprint;
        self.entries = self.entries + conn.entries() - before;
        let bytes = conn.bytes();
        slot.account(&mut self.bytes, bytes);
        if changed {
            self.mark(|| UnitKey::Connection(cid.into()));
        }
        result
    }

    fn touch_connection(&mut self, cid: &str, now: Tick) -> bool {
        touch(&mut self.connections, cid, now)
    }

    fn update_existing<R>(
        &mut self,
        cid: &str,
        now: Tick,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> Option<R> {
        let slot = self.connections.to_back(cid)?;
        slot.touched = now;
        let conn = &mut slot.unit;
        let before = conn.entries();
        let fingerprint = conn.fingerprint();
        let result = change(conn);
        let changed = conn.fingerprint() != fingerprint;
        self.entries = self.entries + conn.entries() - before;
        let bytes = conn.bytes();
        slot.account(&mut self.bytes, bytes);
        if changed {
            self.mark(|| UnitKey::Connection(cid.into()));
        }
        Some(result)
    }

    fn remove_connection(&mut self, cid: &str) -> Option<Connection> {
        let slot = self.connections.remove(cid)?;
        self.mark(|| UnitKey::Connection(cid.into()));
        self.entries -= slot.unit.entries();
        self.bytes -= slot.bytes as usize;
        Some(slot.unit)
    }

    fn shared(&self, rid: &str) -> Option<&Written> {
        self.shared.get(rid).map(|slot| &slot.unit)
    }

    fn touch_shared(&mut self, rid: &str, now: Tick) -> bool {
        touch(&mut self.shared, rid, now)
    }

    fn update_shared<R>(
        &mut self,
        rid: &str,
        now: Tick,
        change: impl FnOnce(&mut Written) -> R,
    ) -> R {
        self.mark(|| UnitKey::Shared(rid.into()));
        let slot = match self.shared.to_back(rid) {
            Some(slot) => slot,
            None => {
                self.entries += 1;
                self.shared
                    .entry(rid.into())
                    .or_insert(Slot::new(now, Written::default()))
            }
        };
        slot.touched = now;
        let result = change(&mut slot.unit);
        if slot.unit.is_empty() {
            self.bytes -= slot.bytes as usize;
            self.shared.remove(rid);
            self.entries -= 1;
        } else {
            let bytes = shared_bytes(&slot.unit);
            slot.account(&mut self.bytes, bytes);
        }
        result
    }

    fn entries(&self) -> usize {
        self.entries
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn oldest(&self) -> Option<Tick> {
        let c = self.connections.front().map(|(_, slot)| slot.touched);
        let s = self.shared.front().map(|(_, slot)| slot.touched);
        c.into_iter().chain(s).min()
    }

    fn pop_oldest(&mut self) -> Option<Dropped> {
        if self.oldest_is_connection()? {
            let (cid, slot) = self.connections.pop_front()?;
            self.entries -= slot.unit.entries();
            self.bytes -= slot.bytes as usize;
            self.mark(|| UnitKey::Connection(cid.clone()));
            Some(Dropped::Connection {
                cid,
                conn: slot.unit,
            })
        } else {
            let (rid, slot) = self.shared.pop_front()?;
            self.entries -= 1;
            self.bytes -= slot.bytes as usize;
            self.mark(|| UnitKey::Shared(rid.clone()));
            Some(Dropped::Model {
                rid,
                written: slot.unit,
            })
        }
    }

    fn unconfirm_all(&mut self) {
        for slot in self.connections.values_mut() {
            slot.unit.confirmed = false;
        }
    }

    fn for_each_connection(&mut self, mut visit: impl FnMut(&str, &mut Connection)) {
        let mut entries = self.shared.len();
        for (cid, slot) in self.connections.iter_mut() {
            visit(cid, &mut slot.unit);
            entries += slot.unit.entries();
            let bytes = slot.unit.bytes();
            slot.account(&mut self.bytes, bytes);
            if let Some(changed) = &mut self.changed {
                changed.push(UnitKey::Connection(cid.clone()));
            }
        }
        self.entries = entries;
    }

    fn retain_shared(&mut self, mut keep: impl FnMut(&str, &mut Written) -> bool) {
        let before = self.shared.len();
        if let Some(changed) = &mut self.changed {
            changed.extend(self.shared.keys().map(|r| UnitKey::Shared(r.clone())));
        }
        let total = &mut self.bytes;
        self.shared.retain(|rid, slot| {
            if keep(rid, &mut slot.unit) && !slot.unit.is_empty() {
                let bytes = shared_bytes(&slot.unit);
                slot.account(total, bytes);
                true
            } else {
                *total -= slot.bytes as usize;
                false
            }
        });
        self.entries -= before - self.shared.len();
    }

    fn for_each_shared(&self, mut visit: impl FnMut(&str, &Written)) {
        for (rid, slot) in self.shared.iter() {
            visit(rid, &slot.unit);
        }
    }
}

#[cfg(test)]
impl MemoryStore {
    /// What it holds in bytes, counted afresh from every unit, no length kept read:
    /// what the running total must equal.
    pub(crate) fn recount_bytes(&self) -> usize {
        let conns = self.connections.values().map(|slot| {
            let c = &slot.unit;
            let session = c.session.as_ref().map_or(0, |s| {
                s.tid.as_ref().map_or(0, |t| t.len()) + s.jwt.as_ref().map_or(0, |j| j.len())
            });
            let models: usize = c
                .models
                .iter()
                .map(|m| m.written().bytes() + m.reply.bytes())
                .sum();
            UNIT_OVERHEAD + c.token.as_ref().map_or(0, super::Token::bytes) + session + models
        });
        let shared = self.shared.values().map(|slot| shared_bytes(&slot.unit));
        conns.chain(shared).sum()
    }
}

/// Moves a unit to the most recently touched end; says whether it exists.
fn touch<V>(units: &mut LinkedHashMap<Box<str>, Slot<V>>, key: &str, now: Tick) -> bool {
    match units.to_back(key) {
        Some(slot) => {
            slot.touched = now;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
