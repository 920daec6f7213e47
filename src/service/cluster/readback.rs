//! A cold unit's read back from the bucket (`evict`): put in memory for the messages
//! that wait for it, or, idle past `state.idle_ttl`, named in resets and deleted.

use std::time::Duration;

use crate::service::cluster::Loaded;
use crate::service::Service;
use crate::store::cold::{ColdNames, Done, ReadResult};
use crate::store::record::partition;
use crate::store::{Dropped, Unit, UnitKey};

impl Service {
    /// A cold unit's read came back.
    pub(super) fn cold_read(
        &mut self,
        key: UnitKey,
        id: u64,
        result: Result<Option<Loaded>, String>,
        took: Duration,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let p = partition(&key, cluster.settings.partitions);
        let held = cluster.machine.holds(p, cluster.now());
        let read = match &result {
            Ok(Some(_)) => ReadResult::Found,
            Ok(None) => ReadResult::Absent,
            Err(_) => ReadResult::Failed,
        };
        let done = cluster.cold.read_done(&key, id, read, held);
        if done != Done::Stale {
            cluster.metrics.kv_unit_read(took);
        }
        match (done, result) {
            (Done::Insert { confirmed }, Ok(Some(loaded))) => self.insert_cold(loaded, confirmed),
            (Done::Expire, Ok(Some(loaded))) => self.expire_cold(loaded),
            (Done::Gone, _) => cluster.pipeline.forget_revision(&key),
            (Done::Retry | Done::Later, Err(e)) => {
                if let Some(skipped) = cluster.cold_failed.occurred(std::time::Instant::now()) {
                    tracing::warn!(partition = p, error = %e, skipped, "could not read a unit evicted past `state.max_entries` back from the bucket; messages that need it wait, and it is read again (reported at most every 10s, `skipped` since the last line)");
                }
            }
            _ => {}
        }
    }

    /// A cold unit read back, its revision now known to the pipeline; `None` when
    /// memory holds the unit already (newer: never expected, messages that need it
    /// wait). The unit is `None` when it could not be read (replaced by the next write).
    fn read_back(&mut self, loaded: Loaded) -> Option<(UnitKey, Option<Unit>)> {
        let cluster = self.cluster.as_mut()?;
        let Loaded {
            key,
            unit,
            revision,
            hash,
        } = loaded;
        if self.engine.store().contains(&key) {
            return None;
        }
        cluster.pipeline.loaded(key.clone(), revision, hash);
        Some((key, unit))
    }

    /// Puts a cold unit read back in memory, checked against the config in force as a
    /// loaded partition's units are.
    fn insert_cold(&mut self, loaded: Loaded, confirmed: Option<bool>) {
        let Some((key, unit)) = self.read_back(loaded) else {
            return;
        };
        let Some(mut unit) = unit else {
            // Unreadable: replaced by the next write (the revision is known now).
            return;
        };
        let mut dropped = crate::engine::DroppedValues::default();
        let mut changed = crate::engine::fit_unit(&self.config, &mut unit, &key, &mut dropped);
        if let (Unit::Connection(c), Some(confirmed)) = (&mut unit, confirmed) {
            if c.confirmed != confirmed {
                c.confirmed = confirmed;
                changed = true;
            }
        }
        if !dropped.is_empty() {
            tracing::info!(unit = ?key, values = dropped.total(), "a unit read back from the bucket held values the config in force does not keep: dropped, the unit written back");
        }
        let now = self.engine.now();
        super::partition::put_loaded(&mut self.engine, key, unit, changed, now);
    }

    /// A cold unit idle past `state.idle_ttl`, read back: gateways are told what they
    /// are told of any expired unit, and the pipeline deletes it (at the revision read).
    fn expire_cold(&mut self, loaded: Loaded) {
        let Some((key, unit)) = self.read_back(loaded) else {
            return;
        };
        match (unit, &key) {
            (Some(Unit::Connection(conn)), UnitKey::Connection(cid)) => {
                let cid = cid.clone();
                self.engine
                    .owe_dropped(&self.config, Dropped::Connection { cid, conn });
            }
            (Some(Unit::Shared(written)), UnitKey::Shared(rid)) => {
                let rid = rid.clone();
                self.engine
                    .owe_dropped(&self.config, Dropped::Model { rid, written });
            }
            // Unreadable: its models are named by their patterns.
            _ => self.owe_cold(cold_names(&key), true),
        }
        self.engine.store_mut().mark_changed(key);
        self.metrics.expired(1);
    }

    /// Queues resets for cold units whose models are not known here: a connection's by
    /// the patterns with a `{cid}` (and their access again, with `access`), a model
    /// without a cid by its name, or by its pattern when the name is not known.
    pub(super) fn owe_cold(&mut self, names: ColdNames, access: bool) {
        for res in &self.config.resources {
            let cid = res.pattern.has_cid();
            if (cid && names.connections) || (!cid && names.overflowed) {
                self.engine.owe_pattern(res, access && cid);
            }
        }
        for rid in &names.shared {
            self.engine.owe_reset(&self.config, rid);
        }
    }
}

/// What to name for one unreadable unit.
fn cold_names(key: &UnitKey) -> ColdNames {
    match key {
        UnitKey::Connection(_) => ColdNames {
            connections: true,
            ..ColdNames::default()
        },
        UnitKey::Shared(rid) => ColdNames {
            shared: vec![rid.clone()],
            ..ColdNames::default()
        },
    }
}
