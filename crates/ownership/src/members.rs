//! Which instances are alive, which of them may own partitions with this one, and
//! which of them a partition belongs to.
//!
//! Each instance writes a heartbeat (`node.<id>`, a [`NodeInfo`]) four times a lease.
//! Another instance counts as alive while its heartbeat keeps changing: seen to change
//! within the last lease on this instance's own clock. The first sight of a heartbeat
//! counts as a change when its server timestamp is within a lease of the newest
//! timestamp seen from the server, so an instance that joins knows at once who is
//! alive (and the others know it), instead of waiting for each heartbeat to change.
//! Only liveness uses server timestamps; lease expiry never does (see `lease`).

use std::collections::HashMap;
use std::time::Duration;

use super::codec::NodeInfo;
use super::{Instance, Now};
use crate::hash::stable_hash;

/// Another instance's heartbeat as last seen.
struct NodeView {
    revision: u64,
    /// When it was last seen to change, on this instance's clock (never: not yet).
    changed: Option<Now>,
    info: NodeInfo,
}

/// The other instances' heartbeats.
pub(super) struct Members {
    me: Instance,
    mine: NodeInfo,
    nodes: HashMap<Instance, NodeView>,
    /// The newest server timestamp seen on any heartbeat (milliseconds since the epoch).
    server_now: u64,
}

/// How another instance's settings differ from this one's, if they do.
pub(super) fn incompatible(mine: &NodeInfo, theirs: &NodeInfo) -> Option<String> {
    if theirs.proto != mine.proto {
        return Some(format!(
            "it speaks ownership protocol {} (this instance {})",
            theirs.proto, mine.proto
        ));
    }
    if theirs.partitions != mine.partitions {
        return Some(format!(
            "`state.partitions` is {} there, {} here",
            theirs.partitions, mine.partitions
        ));
    }
    if theirs.lease_ms != mine.lease_ms {
        return Some(format!(
            "`state.lease` is {} there, {} here",
            humantime::format_duration(Duration::from_millis(theirs.lease_ms)),
            humantime::format_duration(Duration::from_millis(mine.lease_ms))
        ));
    }
    None
}

impl Members {
    pub(super) fn new(me: Instance, mine: NodeInfo) -> Members {
        Members {
            me,
            mine,
            nodes: HashMap::new(),
            server_now: 0,
        }
    }

    pub(super) fn me(&self) -> &Instance {
        &self.me
    }

    pub(super) fn mine_mut(&mut self) -> &mut NodeInfo {
        &mut self.mine
    }

    /// A heartbeat seen (`info` none: deleted, the instance left). This instance's own
    /// heartbeat only moves the server clock.
    pub(super) fn seen(
        &mut self,
        id: &Instance,
        revision: u64,
        info: Option<NodeInfo>,
        server_ms: Option<u64>,
        now: Now,
        lease: Duration,
    ) {
        if let Some(ms) = server_ms {
            self.server_now = self.server_now.max(ms);
        }
        if *id == self.me {
            return;
        }
        let Some(info) = info else {
            self.nodes.remove(id);
            return;
        };
        match self.nodes.get_mut(id) {
            Some(n) => {
                if n.revision != revision {
                    n.revision = revision;
                    n.changed = Some(now);
                }
                n.info = info;
            }
            None => {
                let fresh = server_ms.is_some_and(|ms| {
                    self.server_now.saturating_sub(ms) < lease.as_millis() as u64
                });
                self.nodes.insert(
                    id.clone(),
                    NodeView {
                        revision,
                        changed: fresh.then_some(now),
                        info,
                    },
                );
            }
        }
    }

    /// Whether another instance is alive (this one always is).
    pub(super) fn alive(&self, id: &str, now: Now, lease: Duration) -> bool {
        *id == *self.me
            || self
                .nodes
                .get(id)
                .and_then(|n| n.changed)
                .is_some_and(|t| now.saturating_sub(t) < lease)
    }

    /// This instance and every live instance whose settings match and that is ready
    /// to take partitions, sorted: the instances partitions are spread over.
    pub(super) fn peers(&self, now: Now, lease: Duration) -> Vec<Instance> {
        let mut live: Vec<Instance> = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                self.alive(id, now, lease)
                    && n.info.ready
                    && incompatible(&self.mine, &n.info).is_none()
            })
            .map(|(id, _)| id.clone())
            .chain(std::iter::once(self.me.clone()))
            .collect();
        live.sort();
        live
    }

    /// How many instances are alive, this one included.
    pub(super) fn live_count(&self, now: Now, lease: Duration) -> usize {
        1 + self
            .nodes
            .keys()
            .filter(|id| self.alive(id, now, lease))
            .count()
    }

    /// A live instance whose settings differ from this one's, with the difference.
    pub(super) fn disagreement(
        &self,
        now: Now,
        lease: Duration,
        owners: &[&Instance],
    ) -> Option<(Instance, String)> {
        owners
            .iter()
            .filter(|id| self.alive(id, now, lease))
            .filter_map(|id| {
                let n = self.nodes.get(*id)?;
                incompatible(&self.mine, &n.info).map(|why| ((*id).clone(), why))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
    }

    /// The config hash another live instance runs, if known.
    pub(super) fn config_of(&self, id: &str) -> Option<&str> {
        self.nodes.get(id).map(|n| n.info.config.as_str())
    }
}

/// The instance a partition belongs to: the highest hash of (instance, partition). An
/// instance that joins takes about 1/N of the partitions; none move between the others.
pub(super) fn rendezvous(live: &[Instance], p: u32) -> Option<&Instance> {
    live.iter()
        .max_by_key(|id| (stable_hash(&format!("{id}/{p}")), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            beat: 1,
            proto: super::super::codec::PROTOCOL,
            partitions: 8,
            lease_ms: 2000,
            config: "h".into(),
            ready: true,
        }
    }

    #[test]
    fn rendezvous_spreads_partitions_and_moves_few() {
        let three: Vec<Instance> = vec!["a".into(), "b".into(), "c".into()];
        let four: Vec<Instance> = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        let mut counts = HashMap::new();
        let mut moved = 0;
        for p in 0..256 {
            let t = rendezvous(&three, p).unwrap();
            *counts.entry(t.clone()).or_insert(0) += 1;
            let t4 = rendezvous(&four, p).unwrap();
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

    #[test]
    fn a_fresh_heartbeat_counts_at_once_and_a_stale_one_only_once_it_changes() {
        let lease = Duration::from_secs(2);
        let mut m = Members::new("me".into(), info());
        let now = Duration::from_secs(100);
        m.seen(&"me".into(), 1, Some(info()), Some(50_000), now, lease);
        m.seen(&"b".into(), 2, Some(info()), Some(49_500), now, lease);
        m.seen(&"c".into(), 3, Some(info()), Some(40_000), now, lease);
        assert!(m.alive("b", now, lease));
        assert!(
            !m.alive("c", now, lease),
            "c's heartbeat is ten seconds old"
        );
        m.seen(&"c".into(), 4, Some(info()), Some(50_100), now, lease);
        assert!(m.alive("c", now, lease));
        assert!(!m.alive("c", now + lease, lease), "no change for a lease");
        m.seen(&"b".into(), 2, None, None, now, lease);
        assert!(!m.alive("b", now, lease), "a deleted heartbeat is gone");
        assert_eq!(m.live_count(now, lease), 2);
    }

    #[test]
    fn instances_with_other_settings_are_not_peers_and_say_why() {
        let lease = Duration::from_secs(2);
        let mut m = Members::new("me".into(), info());
        let now = Duration::from_secs(1);
        let other = NodeInfo {
            lease_ms: 5000,
            ..info()
        };
        m.seen(&"b".into(), 1, Some(other), Some(1), now, lease);
        m.seen(&"c".into(), 1, Some(info()), Some(1), now, lease);
        let peers = m.peers(now, lease);
        assert_eq!(peers, vec![Instance::from("c"), Instance::from("me")]);
        let b: Instance = "b".into();
        let (who, why) = m.disagreement(now, lease, &[&b]).unwrap();
        assert_eq!(&*who, "b");
        assert_eq!(why, "`state.lease` is 5s there, 2s here");
    }
}
