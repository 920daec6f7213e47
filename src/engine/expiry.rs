//! Bounded state: idle connections expire, and past `state.max_entries` or
//! `state.max_bytes` (as the store counts them) the least recently touched connection
//! goes first. Dropped state that a gateway may still cache
//! is named in a `system.reset`, queued here and taken in batches by the service, which
//! paces them. With the shared store the service keeps both bounds itself
//! ([`Engine::bound_elsewhere`]): a unit past it leaves memory and stays in the bucket,
//! so nothing is dropped and no reset is owed (`service/cluster/evict.rs`).
//!
//! What a dropped connection owes the gateways, model by model (the gateway cannot be
//! told "this connection closed", so an idle one may still be open and must never be
//! shown as logged out):
//! - written values: under `resources`, so the gateway re-fetches the defaults;
//! - logged in, and values follow the token: under `access`: the gateway re-asks access
//!   with the connection's token, which fills the record in again (a re-get carries no
//!   token and would show the logged-out model);
//! - logged out, and access rules read the token (also for other resources it was
//!   granted): under `access`, so a later login's re-access is not lost with the record;
//! - logged out, and values follow the token: under `access` too. The gateway still
//!   caches the logged-out model and sends nothing more for it; the re-asked access
//!   makes connres remember the model again, so a later login's change event reaches
//!   the gateway (found through the real Resgate: the client never saw its login).
//!
//! A model that is both written and follows the token is named under `access` first: the
//! queue hands out `access` batches before `resources` ones, so the token is back before
//! the re-fetch.

use hashlink::LinkedHashSet;

use super::Engine;
use crate::clock::ticks;
use crate::config::{Config, Resource};
use crate::store::{Dropped, Store};

/// The most names in one `system.reset`.
pub const RESET_BATCH: usize = 500;
/// The most units one sweep drops; the next sweep goes on.
pub const SWEEP_BUDGET: usize = 10_000;
/// The most units one message may evict (a message adds at most a couple of entries).
pub(super) const BOUND_BUDGET_PER_MESSAGE: usize = 64;
/// Past this many waiting names, a dropped model is named by its pattern instead, so the
/// queue stays bounded whatever the churn while NATS is away.
const QUEUE_MAX: usize = 100_000;

/// One `system.reset` worth of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetBatch {
    pub resources: Vec<String>,
    pub access: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct ResetQueue {
    access: LinkedHashSet<Box<str>>,
    resources: LinkedHashSet<Box<str>>,
}

impl ResetQueue {
    fn push(set: &mut LinkedHashSet<Box<str>>, res: &Resource, rid: &str) {
        if set.len() < QUEUE_MAX {
            set.replace(rid.into());
        } else {
            set.replace(res.pattern.wildcard().into());
        }
    }

    fn push_pattern(set: &mut LinkedHashSet<Box<str>>, res: &Resource) {
        set.replace(res.pattern.wildcard().into());
    }

    fn take(&mut self, max: usize) -> Option<ResetBatch> {
        let drain = |set: &mut LinkedHashSet<Box<str>>| {
            std::iter::from_fn(|| set.pop_front())
                .take(max)
                .map(String::from)
                .collect()
        };
        if !self.access.is_empty() {
            Some(ResetBatch {
                resources: Vec::new(),
                access: drain(&mut self.access),
            })
        } else if !self.resources.is_empty() {
            Some(ResetBatch {
                resources: drain(&mut self.resources),
                access: Vec::new(),
            })
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.access.len() + self.resources.len()
    }
}

impl<S: Store> Engine<S> {
    /// Drops what idled past `state.idle_ttl` and what exceeds `state.max_entries` or
    /// `state.max_bytes`, at most [`SWEEP_BUDGET`] units; returns how many went.
    pub fn sweep(&mut self, config: &Config) -> usize {
        let now = self.clock.now();
        let ttl = ticks(config.state.idle_ttl);
        let mut dropped = 0;
        while dropped < SWEEP_BUDGET
            && self
                .store
                .oldest()
                .is_some_and(|t| now.saturating_sub(t) >= ttl)
        {
            let Some(unit) = self.store.pop_oldest() else {
                break;
            };
            self.dropped(config, unit);
            dropped += 1;
        }
        dropped + self.enforce_bound(config, SWEEP_BUDGET - dropped)
    }

    /// Takes least recently touched units out until the store is within
    /// `state.max_entries` and `state.max_bytes`, at most `budget`; returns how many
    /// went. Nothing when the caller keeps the bounds ([`Engine::bound_elsewhere`]).
    pub(super) fn enforce_bound(&mut self, config: &Config, budget: usize) -> usize {
        if self.bound_elsewhere {
            return 0;
        }
        let over =
            |s: &S| s.entries() > config.state.max_entries || s.bytes() > config.state.max_bytes;
        let mut dropped = 0;
        while dropped < budget && over(&self.store) {
            let Some(unit) = self.store.pop_oldest() else {
                break;
            };
            self.dropped(config, unit);
            dropped += 1;
        }
        dropped
    }

    /// The next `system.reset` owed for dropped state: `access` names first.
    pub fn take_reset(&mut self, max: usize) -> Option<ResetBatch> {
        self.resets.take(max)
    }

    /// Queues a model gateways must re-fetch (its state came from elsewhere: a
    /// partition taken over from another instance).
    pub fn owe_reset(&mut self, config: &Config, rid: &str) {
        if let Some(res) = config.resource_of(rid) {
            ResetQueue::push(&mut self.resets.resources, res, rid);
        }
    }

    /// Queues a name whose access gateways must ask again (its connection's token
    /// record is to be filled in again from the next request that carries it).
    pub fn owe_reaccess(&mut self, config: &Config, rid: &str) {
        if let Some(res) = config.resource_of(rid) {
            ResetQueue::push(&mut self.resets.access, res, rid);
        }
    }

    /// Queues what gateways must be told of a unit dropped elsewhere (with the shared
    /// store, a unit idle past `state.idle_ttl` while out of memory, read back to be
    /// deleted): as for one dropped here.
    pub fn owe_dropped(&mut self, config: &Config, unit: Dropped) {
        self.dropped(config, unit);
    }

    /// Queues every model of a pattern (its wildcard) for gateways to re-fetch, and
    /// with `access` to ask access again: for units whose models are not known here.
    pub fn owe_pattern(&mut self, res: &Resource, access: bool) {
        ResetQueue::push_pattern(&mut self.resets.resources, res);
        if access {
            ResetQueue::push_pattern(&mut self.resets.access, res);
        }
    }

    /// How many names wait to be named in a `system.reset`.
    pub fn pending_resets(&self) -> usize {
        self.resets.len()
    }

    /// Queues what gateways must be told of a unit that was dropped.
    fn dropped(&mut self, config: &Config, unit: Dropped) {
        let q = &mut self.resets;
        match unit {
            Dropped::Connection { cid, conn } => {
                let logged_in = conn.token.is_some();
                for m in &conn.models {
                    let rid = m.rid(&cid);
                    let Some(res) = config.resource_of(&rid) else {
                        continue;
                    };
                    if res.fields_read_token() || (!logged_in && res.access_reads_token()) {
                        ResetQueue::push(&mut q.access, res, &rid);
                    }
                    if !m.written().is_empty() {
                        ResetQueue::push(&mut q.resources, res, &rid);
                    }
                }
                if !logged_in {
                    for rid in conn.granted() {
                        if let Some(res) = config.resource_of(rid) {
                            if res.access_reads_token() {
                                ResetQueue::push(&mut q.access, res, rid);
                            }
                        }
                    }
                }
            }
            Dropped::Model { rid, written } => {
                self.presence_gone(&rid, &written);
                let q = &mut self.resets;
                if let Some(res) = config.resource_of(&rid) {
                    if !written.is_empty() {
                        ResetQueue::push(&mut q.resources, res, &rid);
                    }
                }
            }
        }
    }
}
