//! `state.max_entries` and `state.max_bytes` with the shared store: memory bounds, not
//! a retention policy. Past either, the least recently touched units leave memory and
//! stay in the bucket
//! ("cold", remembered by `crate::store::cold`, their revisions by the pipeline); no
//! `system.reset` is owed, since their state is still served.
//!
//! A message of a partition served here that needs a cold unit (its model's, its
//! requester's, a token event's connection) waits, with every later message and
//! action of its partition, until that unit is read back from the bucket (a task of its
//! own: the serving task never awaits the bucket); the unit then goes in as a loaded
//! partition's do (`engine::fit_unit`), and what waited is handled in order. A failed
//! read is tried again at the next tick. What waits for a partition that is lost is not
//! applied (the protocol hears so, as for outcomes left unwritten). Idle expiry reads a
//! cold unit past `state.idle_ttl` (gateways are told what its content says), then
//! deletes it through the pipeline.

use async_nats::Message;

use super::{io, Cluster};
use crate::clock::ticks;
use crate::config::Config;
use crate::engine::Request;
use crate::service::route::{route_request, Route};
use crate::service::serve::Admitted;
use crate::service::Service;
use crate::store::cold::Evicted;
use crate::store::record::{partition, partition_of_cid};
use crate::store::{Store, UnitKey};

/// Units evicted after a message at most (one adds at most a couple of entries).
pub(super) const EVICT_PER_MESSAGE: usize = 64;
/// Units evicted after any other step at most (a partition's load can add many).
pub(super) const EVICT_PER_STEP: usize = 10_000;
/// Cold units read at once to expire them.
const EXPIRING_MAX: usize = 256;

/// What waits in a partition's queue behind a cold unit's read, in arrival order.
pub(in crate::service) enum Held {
    /// A message to handle.
    Serve(Admitted),
    /// A token event a cut counts as applied (`Dropped::Superseded`).
    Supersede(Route, Message),
    /// The protocol trusts (or doubts) token records of the partition.
    Confirm {
        p: u32,
        conns: Option<Vec<u64>>,
        confirmed: bool,
    },
    /// A token event's step on the presence lists of partition `p` (`presence`).
    Presence {
        p: u32,
        cid: Box<str>,
        payload: bytes::Bytes,
    },
}

impl Held {
    fn partition(&self, n: u32) -> Option<u32> {
        match self {
            Held::Serve(a) => a.partition,
            Held::Supersede(route, msg) => {
                super::steps::token_cid(*route, msg).map(|cid| partition_of_cid(cid, n))
            }
            Held::Confirm { p, .. } | Held::Presence { p, .. } => Some(*p),
        }
    }

    /// The units it reads or changes.
    fn units(&self, config: &Config) -> Vec<UnitKey> {
        match self {
            Held::Serve(a) => units_of_message(config, a.route, &a.msg),
            Held::Supersede(route, msg) => super::steps::token_cid(*route, msg)
                .map(|cid| vec![UnitKey::Connection(cid.into())])
                .unwrap_or_default(),
            // Presence lists are never out of memory (`Service::evict`).
            Held::Confirm { .. } | Held::Presence { .. } => Vec::new(),
        }
    }

    /// Whether it is a message (one dropped is a change the next owner must not count
    /// on). A presence step is in no window: the next owner counts the list's
    /// connections as seen when it loads it.
    pub(super) fn is_message(&self) -> bool {
        !matches!(self, Held::Confirm { .. } | Held::Presence { .. })
    }
}

/// The units a message reads or changes: its model's (the connection of the cid in
/// its name, or the model itself without one), a token event's connection, and the
/// requester's connection of an access request or call.
fn units_of_message(config: &Config, route: Route, msg: &Message) -> Vec<UnitKey> {
    let subject = msg.subject.as_str();
    let Some(request) = route_request(route, subject, &msg.payload, &config.api.prefix) else {
        return Vec::new();
    };
    let (rid, payload) = match request {
        Request::Token { cid, .. } => return vec![UnitKey::Connection(cid.into())],
        // A take or a recheck reads and changes the session it names.
        Request::ResumeTake { from: cid, .. } | Request::Recheck { cid, .. } => {
            return vec![UnitKey::Connection(cid.into())]
        }
        // Answered wherever received: no state read here.
        Request::Auth { .. } | Request::Revoke { .. } => return Vec::new(),
        Request::Get { rid }
        | Request::ApiSet { rid, .. }
        | Request::ApiReset { rid, .. }
        | Request::ApiAdd { rid, .. }
        | Request::ApiRemove { rid, .. } => (rid, None),
        Request::Access { rid, payload } | Request::Call { rid, payload, .. } => {
            (rid, Some(payload))
        }
    };
    let mut out = Vec::with_capacity(2);
    if let Some(res) = config.resource_of(rid) {
        out.push(match res.pattern.cid_of(rid) {
            Some(cid) => UnitKey::Connection(cid.into()),
            None => UnitKey::Shared(rid.into()),
        });
    }
    if let Some(cid) = payload.and_then(crate::protocol::requester) {
        let key = UnitKey::Connection(cid.as_ref().into());
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

impl Service {
    /// Handles a message (or a token record decision) of the shared store now, or
    /// queues it behind its partition's reads of cold units.
    pub(in crate::service) async fn admit(&mut self, held: Held) {
        match self.must_wait(&held) {
            Some((p, needs)) => {
                let Some(cluster) = &mut self.cluster else {
                    return;
                };
                tracing::trace!(partition = p, units = ?needs, "waits for cold units");
                // Touched on arrival, as if handled now: idle expiry leaves them.
                let now = self.engine.now();
                let store = self.engine.store_mut();
                for k in &needs {
                    store.touch(k, now);
                }
                cluster.cold.hold(p, held, needs.clone());
                self.read_cold(&needs);
            }
            None => self.run_held(held).await,
        }
    }

    /// The partition and units of `held` when it must wait: something waits in its
    /// partition already, or a unit it needs is to be read.
    fn must_wait(&self, held: &Held) -> Option<(u32, Vec<UnitKey>)> {
        let cluster = self.cluster.as_ref()?;
        if cluster.cold.is_idle() {
            return None;
        }
        let p = held.partition(cluster.settings.partitions)?;
        let needs = held.units(&self.config);
        let store = self.engine.store();
        let wait = cluster.cold.has_held(p)
            || needs.iter().any(|k| {
                cluster
                    .cold
                    .needs_read(k, store.contains(k), cluster.pipeline.unwritten(k))
            });
        wait.then_some((p, needs))
    }

    /// Starts the reads of those of `keys` that must be read, unless in flight.
    fn read_cold(&mut self, keys: &[UnitKey]) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let store = self.engine.store();
        let n = cluster.settings.partitions;
        for k in keys {
            let unwritten = cluster.pipeline.unwritten(k);
            if !cluster.cold.needs_read(k, store.contains(k), unwritten) {
                continue;
            }
            if let Some(id) = cluster.cold.start_read(k, false) {
                io::spawn_cold_read(&cluster.kv, &cluster.io_tx, partition(k, n), k.clone(), id);
            }
        }
    }

    async fn run_held(&mut self, held: Held) {
        match held {
            Held::Serve(admitted) => self.serve(admitted).await,
            Held::Supersede(route, msg) => self.superseded(route, &msg),
            Held::Confirm {
                p,
                conns,
                confirmed,
            } => self.apply_confirmed(p, conns.as_deref(), confirmed),
            Held::Presence { p, cid, payload } => self.presence_step(p, &cid, &payload).await,
        }
    }

    /// Handles, partition by partition and in order, what waited and can go now (in
    /// partitions held here); starts the reads each partition's first item still needs.
    pub(super) async fn release_held(&mut self) {
        loop {
            let Some(cluster) = &mut self.cluster else {
                return;
            };
            if cluster.cold.held_count() == 0 {
                return;
            }
            let now = cluster.now();
            let store = self.engine.store();
            let mut next = None;
            let mut wanted = Vec::new();
            for p in cluster.cold.held_partitions() {
                if !cluster.machine.holds(p, now) {
                    continue;
                }
                let pipeline = &cluster.pipeline;
                let ready =
                    cluster
                        .cold
                        .pop_ready(p, |k| store.contains(k), |k| pipeline.unwritten(k));
                if ready.is_some() {
                    next = ready;
                    break;
                }
                wanted.extend(cluster.cold.head_needs(p).unwrap_or_default().to_vec());
            }
            self.read_cold(&wanted);
            let Some(held) = next else {
                return;
            };
            self.run_held(held).await;
        }
    }

    /// Moves units past `state.max_entries` or `state.max_bytes` out of memory (at most
    /// `budget`): those with a change not yet written, or that a waiting message
    /// needs, stay for now.
    pub(super) fn evict(&mut self, budget: usize) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let max = self.config.state.max_entries;
        let max_bytes = self.config.state.max_bytes;
        let config = &self.config;
        let store = self.engine.store_mut();
        if store.entries() <= max && store.bytes() <= max_bytes {
            return;
        }
        let Cluster {
            cold,
            pipeline,
            metrics,
            settings,
            ..
        } = cluster;
        // A presence list stays in memory: the engine's index of who joined it, its
        // ttl sweep and token events' steps need it (it empties within its ttl
        // without joins or pings, and goes).
        let list = |k: &UnitKey| match k {
            UnitKey::Shared(rid) => config
                .resource_of(rid)
                .is_some_and(|r| r.presence.is_some()),
            UnitKey::Connection(_) => false,
        };
        let keep = |k: &UnitKey| pipeline.unwritten(k) || cold.pinned(k) || list(k);
        let gone = store.evict_oldest(max, max_bytes, budget, keep);
        let evicted = !gone.is_empty();
        metrics.evicted.inc_by(gone.len() as u64);
        for (key, touched) in gone {
            // The set remembers as many units as `max_entries`.
            if let Evicted::Untracked { first } = cold.evict(key.clone(), touched, max) {
                pipeline.forget_revision(&key);
                if first {
                    let p = partition(&key, settings.partitions);
                    tracing::warn!(partition = p, remembered = cold.len(), "more units are out of memory past `state.max_entries` than this instance remembers (as many as `max_entries`): every unit of this partition not in memory is looked up in the bucket before a message uses it, and those not remembered expire only once the partition is loaded again (another owner, a restart)");
                }
            }
        }
        metrics.cold.set(cold.len() as i64);
        // The state gauges show what is left in memory.
        if evicted {
            self.update_stats();
        }
    }

    /// Starts reading the cold units idle past `state.idle_ttl`, to expire them.
    pub(in crate::service) fn sweep_cold(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = self.engine.now();
        let ttl = ticks(self.config.state.idle_ttl);
        let at = cluster.now();
        let n = cluster.settings.partitions;
        let machine = &cluster.machine;
        let due = cluster
            .cold
            .expired(now, ttl, EXPIRING_MAX, |p| machine.holds(p, at));
        for (key, id) in due {
            io::spawn_cold_read(&cluster.kv, &cluster.io_tx, partition(&key, n), key, id);
        }
    }

    /// Starts again the failed reads that messages wait for.
    pub(super) fn retry_cold(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let n = cluster.settings.partitions;
        for (key, id) in cluster.cold.retry() {
            io::spawn_cold_read(&cluster.kv, &cluster.io_tx, partition(&key, n), key, id);
        }
    }
}
