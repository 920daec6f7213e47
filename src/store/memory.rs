//! The embedded in-memory store, for one engine instance per NATS cluster: two maps kept
//! in the order their units were last touched (`hashlink`'s linked hash map: a lookup
//! and a move to the back are O(1), so is taking the coldest unit).

use hashlink::LinkedHashMap;

use super::{Connection, Dropped, Store, Unit, UnitKey, Written};
use crate::clock::Tick;

#[derive(Debug, Default)]
pub struct MemoryStore {
    connections: LinkedHashMap<Box<str>, (Tick, Connection)>,
    shared: LinkedHashMap<Box<str>, (Tick, Written)>,
    /// The sum of the units' entries, kept current by every change.
    entries: usize,
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
            let Some((_, conn)) = self.connections.get_mut(&cid) else {
                continue;
            };
            let before = conn.fingerprint();
            change(conn);
            if conn.fingerprint() != before {
                self.mark(|| UnitKey::Connection(cid));
            }
        }
    }

    /// Puts in a unit loaded from elsewhere (it is not listed as changed), replacing
    /// what was there, as the most recently touched.
    pub fn insert(&mut self, key: UnitKey, unit: Unit, now: Tick) {
        self.forget(&key);
        match (key, unit) {
            (UnitKey::Connection(cid), Unit::Connection(conn)) => {
                self.entries += conn.entries();
                self.connections.insert(cid, (now, conn));
            }
            (UnitKey::Shared(rid), Unit::Shared(written)) if !written.is_empty() => {
                self.entries += 1;
                self.shared.insert(rid, (now, written));
            }
            _ => {}
        }
    }

    /// Takes a unit out without listing it as changed (it lives on elsewhere).
    pub fn forget(&mut self, key: &UnitKey) {
        match key {
            UnitKey::Connection(cid) => {
                if let Some((_, conn)) = self.connections.remove(cid) {
                    self.entries -= conn.entries();
                }
            }
            UnitKey::Shared(rid) => {
                if self.shared.remove(rid).is_some() {
                    self.entries -= 1;
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
            .take_while(|(_, (t, _))| *t >= since)
            .map(|(cid, _)| UnitKey::Connection(cid.clone()));
        let shared = self
            .shared
            .iter()
            .rev()
            .take_while(|(_, (t, _))| *t >= since)
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
    /// recently touched units until at most `max` entries are left, passing over those
    /// `keep` says yes to: at most `budget` units, after looking at no more than
    /// `budget` units kept. Returns each with when it was last touched.
    pub fn evict_oldest(
        &mut self,
        max: usize,
        budget: usize,
        mut keep: impl FnMut(&UnitKey) -> bool,
    ) -> Vec<(UnitKey, Tick)> {
        let mut over = self.entries.saturating_sub(max);
        let mut out = Vec::new();
        let mut kept = 0;
        let mut conns = self.connections.iter().peekable();
        let mut shared = self.shared.iter().peekable();
        while over > 0 && out.len() < budget && kept < budget {
            let conn = match (conns.peek(), shared.peek()) {
                (Some((_, (c, _))), Some((_, (s, _)))) => c <= s,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (key, touched, entries) = match conn {
                true => {
                    let (cid, (t, c)) = conns.next().expect("peeked");
                    (UnitKey::Connection(cid.clone()), *t, c.entries())
                }
                false => {
                    let (rid, (t, _)) = shared.next().expect("peeked");
                    (UnitKey::Shared(rid.clone()), *t, 1)
                }
            };
            if keep(&key) {
                kept += 1;
                continue;
            }
            over = over.saturating_sub(entries);
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
            (Some((_, (c, _))), Some((_, (s, _)))) => Some(c <= s),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }
}

impl Store for MemoryStore {
    fn connection(&self, cid: &str) -> Option<&Connection> {
        self.connections.get(cid).map(|(_, c)| c)
    }

    fn update_connection<R>(
        &mut self,
        cid: &str,
        now: Tick,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> R {
        let (touched, conn, created) = match self.connections.to_back(cid) {
            Some((touched, conn)) => (touched, conn, false),
            None => {
                self.entries += 1;
                let (touched, conn) = self
                    .connections
                    .entry(cid.into())
                    .or_insert((now, Connection::default()));
                (touched, conn, true)
            }
        };
        *touched = now;
        let before = conn.entries();
        let fingerprint = conn.fingerprint();
        let result = change(conn);
        let changed = created || conn.fingerprint() != fingerprint;
        self.entries = self.entries + conn.entries() - before;
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
        let (touched, conn) = self.connections.to_back(cid)?;
        *touched = now;
        let before = conn.entries();
        let fingerprint = conn.fingerprint();
        let result = change(conn);
        let changed = conn.fingerprint() != fingerprint;
        self.entries = self.entries + conn.entries() - before;
        if changed {
            self.mark(|| UnitKey::Connection(cid.into()));
        }
        Some(result)
    }

    fn remove_connection(&mut self, cid: &str) -> Option<Connection> {
        let (_, conn) = self.connections.remove(cid)?;
        self.mark(|| UnitKey::Connection(cid.into()));
        self.entries -= conn.entries();
        Some(conn)
    }

    fn shared(&self, rid: &str) -> Option<&Written> {
        self.shared.get(rid).map(|(_, w)| w)
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
        let (touched, written) = match self.shared.to_back(rid) {
            Some(unit) => unit,
            None => {
                self.entries += 1;
                self.shared
                    .entry(rid.into())
                    .or_insert((now, Written::default()))
            }
        };
        *touched = now;
        let result = change(written);
        if written.is_empty() {
            self.shared.remove(rid);
            self.entries -= 1;
        }
        result
    }

    fn entries(&self) -> usize {
        self.entries
    }

    fn oldest(&self) -> Option<Tick> {
        let c = self.connections.front().map(|(_, (t, _))| *t);
        let s = self.shared.front().map(|(_, (t, _))| *t);
        c.into_iter().chain(s).min()
    }

    fn pop_oldest(&mut self) -> Option<Dropped> {
        if self.oldest_is_connection()? {
            let (cid, (_, conn)) = self.connections.pop_front()?;
            self.entries -= conn.entries();
            self.mark(|| UnitKey::Connection(cid.clone()));
            Some(Dropped::Connection { cid, conn })
        } else {
            let (rid, (_, written)) = self.shared.pop_front()?;
            self.entries -= 1;
            self.mark(|| UnitKey::Shared(rid.clone()));
            Some(Dropped::Model { rid, written })
        }
    }

    fn unconfirm_all(&mut self) {
        for (_, c) in self.connections.values_mut() {
            c.confirmed = false;
        }
    }

    fn for_each_connection(&mut self, mut visit: impl FnMut(&str, &mut Connection)) {
        let mut entries = self.shared.len();
        for (cid, (_, conn)) in self.connections.iter_mut() {
            visit(cid, conn);
            entries += conn.entries();
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
        self.shared
            .retain(|rid, (_, written)| keep(rid, written) && !written.is_empty());
        self.entries -= before - self.shared.len();
    }
}

/// Moves a unit to the most recently touched end; says whether it exists.
fn touch<V>(units: &mut LinkedHashMap<Box<str>, (Tick, V)>, key: &str, now: Tick) -> bool {
    match units.to_back(key) {
        Some((touched, _)) => {
            *touched = now;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
