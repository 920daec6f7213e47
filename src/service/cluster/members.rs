//! Which instances are alive, and which of them a partition belongs to.
//!
//! Each instance writes a heartbeat key (`node.<id>`) four times a lease. Another
//! instance counts as alive once its heartbeat is seen to change (a killed instance's
//! last heartbeat must not attract partitions), until it has not changed for a lease,
//! on this instance's own clock; a deleted heartbeat (an instance leaving) counts as
//! gone at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};

use crate::store::record::stable_hash;

/// Another instance's heartbeat as the watch last showed it.
struct NodeView {
    revision: u64,
    /// When it was last seen to change (never, if seen only once).
    changed: Option<Instant>,
}

/// The other instances' heartbeats.
#[derive(Default)]
pub(super) struct Members {
    nodes: HashMap<Arc<str>, NodeView>,
}

impl Members {
    /// A heartbeat entry from the watch (this instance's own, `me`, is ignored).
    pub(super) fn seen(&mut self, me: &str, e: kv::Entry) {
        let Some(id) = e.key.strip_prefix("node.") else {
            return;
        };
        if id == me {
            return;
        }
        match e.operation {
            Operation::Put => {
                let now = Instant::now();
                self.nodes
                    .entry(id.into())
                    .and_modify(|n| {
                        if n.revision != e.revision {
                            n.revision = e.revision;
                            n.changed = Some(now);
                        }
                    })
                    .or_insert(NodeView {
                        revision: e.revision,
                        changed: None,
                    });
            }
            Operation::Delete | Operation::Purge => {
                self.nodes.remove(id);
            }
        }
    }

    /// `me` and every instance seen alive within `lease`, sorted.
    pub(super) fn live(&self, me: &Arc<str>, lease: Duration) -> Vec<Arc<str>> {
        let now = Instant::now();
        let mut live: Vec<Arc<str>> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.changed.is_some_and(|t| now - t < lease))
            .map(|(id, _)| id.clone())
            .chain(std::iter::once(me.clone()))
            .collect();
        live.sort();
        live
    }
}

/// The instance a partition belongs to: the highest hash of (instance, partition).
/// An instance that joins takes about 1/N of the partitions; none move between the
/// others.
pub(super) fn rendezvous(live: &[Arc<str>], p: u32) -> &Arc<str> {
    live.iter()
        .max_by_key(|id| (stable_hash(&format!("{id}/{p}")), id.to_string()))
        .expect("this instance is always live")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_partitions_and_moves_few() {
        let three: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let four: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        let mut counts = HashMap::new();
        let mut moved = 0;
        for p in 0..256 {
            let t = rendezvous(&three, p);
            *counts.entry(t.clone()).or_insert(0) += 1;
            let t4 = rendezvous(&four, p);
            if t4 != t {
                // A newcomer only takes partitions; none move between old instances.
                assert_eq!(&**t4, "d");
                moved += 1;
            }
        }
        assert!(
            counts.values().all(|&n| (60..110).contains(&n)),
            "{counts:?}"
        );
        assert!((40..90).contains(&moved), "{moved}");
    }
}
