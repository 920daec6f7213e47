//! The protocol's actions on a whole partition's state: installing its loaded units,
//! the resets it owes gateways (after a takeover, or when it was lost after a pause),
//! and which token records to trust.

use std::time::Duration;

use super::evict::Held;
use crate::clock::Tick;
use crate::engine::Engine;
use crate::service::cluster::Loaded;
use crate::service::Service;
use crate::store::record::{partition_of_cid, stable_hash};
use crate::store::{Store, Unit, UnitKey, Written};

impl Service {
    /// Puts a partition's loaded units in the store, each checked against the config in
    /// force (written under another config, values may no longer fit: those dropped are
    /// said in the batch's log lines).
    pub(super) fn install(&mut self, p: u32, confirmed: bool) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let (_, units) = cluster.loaded.remove(&p).unwrap_or_default();
        // Every unit of the partition is loaded: none of it is cold.
        cluster.cold.clear_keys(p);
        cluster
            .partition_log
            .acquired(p, units.len(), std::time::Instant::now());
        tracing::debug!(
            partition = p,
            confirmed,
            units = units.len(),
            "installed a partition"
        );
        let now = self.engine.now();
        let mut dropped = crate::engine::DroppedValues::default();
        for Loaded {
            key,
            unit,
            revision,
            hash,
        } in units
        {
            cluster.pipeline.loaded(key.clone(), revision, hash);
            let Some(mut unit) = unit else {
                // Unreadable: replaced by the next write (the revision is known now).
                continue;
            };
            let mut changed = crate::engine::fit_unit(&self.config, &mut unit, &key, &mut dropped);
            if let Unit::Connection(c) = &mut unit {
                if !confirmed && c.confirmed {
                    c.confirmed = false;
                    changed = true;
                }
            }
            put_loaded(&mut self.engine, key, unit, changed, now);
        }
        cluster.partition_log.dropped(p, dropped);
        cluster.metrics.takeovers.inc();
    }

    /// Owes gateways a `system.reset` naming the partition's models: re-fetched, and
    /// their access asked again (token records are filled in again from it).
    pub(super) fn reset_partition(&mut self, p: u32) {
        let Some(cluster) = &self.cluster else { return };
        let n = cluster.settings.partitions;
        let store = self.engine.store();
        let names = models_in(store, store.keys(), p, n);
        let cold = cluster.cold.names(p, None);
        for (rid, access) in names {
            self.engine.owe_reset(&self.config, &rid);
            if access {
                self.engine.owe_reaccess(&self.config, &rid);
            }
        }
        self.owe_cold(cold, true);
    }

    /// Tells gateways to re-fetch the models of partition `p` touched within `ago`
    /// (resources only): events this instance published for them before it stopped may
    /// have reached gateways after the new owner's ([`Action::Recall`]).
    pub(super) fn recall_partition(&mut self, p: u32, ago: Duration) {
        let Some(cluster) = &self.cluster else { return };
        let n = cluster.settings.partitions;
        // Whole seconds: one more, so nothing touched in that second is left out.
        let since = self
            .engine
            .now()
            .saturating_sub(crate::clock::ticks(ago).saturating_add(1));
        let store = self.engine.store();
        let names = models_in(store, store.touched_since(since), p, n);
        let cold = cluster.cold.names(p, Some(since));
        tracing::debug!(
            partition = p,
            models = names.len(),
            "lost the partition after it stopped serving it: gateways re-fetch the models it changed last"
        );
        for (rid, _) in names {
            self.engine.owe_reset(&self.config, &rid);
        }
        self.owe_cold(cold, false);
    }

    /// Marks the token records of a partition's connections (those in `conns`, by cid
    /// hash, or all) confirmed or not: now, or after what waits in the partition for
    /// cold units (it arrived first).
    pub(super) fn set_confirmed(&mut self, p: u32, conns: Option<&[u64]>, confirmed: bool) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.cold.has_held(p) {
            let conns = conns.map(<[u64]>::to_vec);
            let held = Held::Confirm {
                p,
                conns,
                confirmed,
            };
            cluster.cold.hold(p, held, Vec::new());
            return;
        }
        self.apply_confirmed(p, conns, confirmed);
    }

    /// [`Service::set_confirmed`] now, in memory and for the cold units.
    pub(super) fn apply_confirmed(&mut self, p: u32, conns: Option<&[u64]>, confirmed: bool) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let n = cluster.settings.partitions;
        let which = |cid: &str| conns.is_none_or(|c| c.contains(&stable_hash(cid)));
        self.engine.store_mut().update_where(
            |cid| partition_of_cid(cid, n) == p && which(cid),
            |c| c.confirmed = confirmed,
        );
        cluster.cold.set_confirmed(p, which, confirmed);
    }
}

/// The models of the units `keys` that are in partition `p`: each name, and whether it
/// is a connection's (whose access a reset asks again).
fn models_in(
    store: &crate::store::MemoryStore,
    keys: impl IntoIterator<Item = UnitKey>,
    p: u32,
    n: u32,
) -> Vec<(String, bool)> {
    let mut names = Vec::new();
    for key in keys {
        if partition_of_unit(&key, n) != p {
            continue;
        }
        match &key {
            UnitKey::Connection(cid) => {
                if let Some(c) = store.connection(cid) {
                    names.extend(c.models.iter().map(|m| (m.rid(cid).into_owned(), true)));
                }
            }
            UnitKey::Shared(rid) => names.push((rid.to_string(), false)),
        }
    }
    names
}

/// A unit's partition.
pub(super) fn partition_of_unit(key: &UnitKey, n: u32) -> u32 {
    crate::store::record::partition(key, n)
}

/// Puts a unit read from the bucket (and fitted to the config) in the store, to be
/// written back when `changed`; a token of it that ends is followed (one that ended
/// while it was out of memory ends at the next sweep).
pub(super) fn put_loaded(engine: &mut Engine, key: UnitKey, unit: Unit, changed: bool, now: Tick) {
    let ends = match (&key, &unit) {
        (UnitKey::Connection(cid), Unit::Connection(c)) if c.token.is_some() => {
            Some((cid.clone(), c.expires))
        }
        _ => None,
    };
    // A presence list: its connections count as seen now, and go into the index.
    let list = match (&key, &unit) {
        (UnitKey::Shared(rid), Unit::Shared(Written::Presence(_))) => Some(rid.clone()),
        _ => None,
    };
    let store = engine.store_mut();
    store.insert(key.clone(), unit, now);
    if changed {
        store.mark_changed(key);
    }
    if let Some((cid, at)) = ends {
        engine.track_token_end(&cid, at);
    }
    if let Some(rid) = list {
        engine.presence_loaded(&rid);
    }
}
