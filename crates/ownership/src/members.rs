//! Which instances are alive, which of them may own partitions with this one, and
//! which of them a partition belongs to.
//!
//! Each instance writes a heartbeat (`node.<id>`, a [`NodeInfo`]) four times a lease.
//! Another instance counts as alive while its heartbeat keeps changing: seen to change
//! within the last lease on this instance's own clock. The first sight of a heartbeat
//! counts as a change when its server timestamp is within a lease of the newest
//! timestamp seen from the server, so an instance that joins knows at once who is
//! alive (and the others know it), instead of waiting for each heartbeat to change.
//! Server timestamps also date lease writes (see [`ServerClock`]), only ever earlier
//! than they were seen; lease expiry never uses them (see `lease`).

use std::collections::HashMap;
use std::time::Duration;

use super::codec::NodeInfo;
use super::{Instance, Now};
use crate::hash::stable_hash_of;

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
    clock: ServerClock,
}

/// When the server wrote an entry, on this instance's clock: the entry's server
/// timestamp plus the smallest difference seen between when an entry arrived here and
/// its timestamp (the clocks' offset plus the shortest delivery). An entry delivered
/// late (a slow watch, a backlog) is so dated by when it was written, not when it
/// arrived. The smallest difference rises by 1/8 of the time passed, so that a clock
/// step is forgotten as new entries come (a step of 6 s in about 50 s); a step either
/// way can only make dates earlier than they were seen, never later.
#[derive(Default)]
pub(super) struct ServerClock {
    /// Local milliseconds minus server milliseconds, and when it was last lowered.
    offset: Option<(i128, Now)>,
}

impl ServerClock {
    /// An entry with server timestamp `server_ms` arrived `now`: when it was written,
    /// on this clock (never later than `now`).
    pub(super) fn written(&mut self, server_ms: u64, now: Now) -> Now {
        let sample = now.as_millis() as i128 - i128::from(server_ms);
        let offset = match self.offset {
            Some((o, at)) => (o + now.saturating_sub(at).as_millis() as i128 / 8).min(sample),
            None => sample,
        };
        self.offset = Some((offset, now));
        let at = i128::from(server_ms) + offset;
        Duration::from_millis(at.clamp(0, now.as_millis() as i128) as u64)
    }
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
            clock: ServerClock::default(),
        }
    }

    /// When an entry seen `now` with server timestamp `server_ms` was written, on this
    /// instance's clock (`now` when the server gave no timestamp).
    pub(super) fn written(&mut self, server_ms: Option<u64>, now: Now) -> Now {
        match server_ms {
            Some(ms) => self.clock.written(ms, now),
            None => now,
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
            self.clock.written(ms, now);
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
    let score = scorer(p);
    live.iter()
        .map(|id| (score(id), id))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, id)| id)
}

/// Whether `me` is among the first `k` instances rendezvous hashing ranks for the
/// partition (`live` holds `me`): the owner, and the instances that would take the
/// partition next when the ones before them leave.
pub(super) fn ranks_among(live: &[Instance], p: u32, me: &Instance, k: usize) -> bool {
    let score = scorer(p);
    let mine = (score(me), me);
    let ahead = live
        .iter()
        .filter(|id| *id != me)
        .filter(|id| (score(id), *id) > mine)
        .count();
    ahead < k
}

/// The hash of "<id>/<p>", as ever, without making that text for every instance on
/// every placement.
fn scorer(p: u32) -> impl Fn(&Instance) -> u64 {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = p;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    move |id: &Instance| stable_hash_of(&[id.as_bytes(), b"/", &digits[at..]])
}

#[cfg(test)]
mod tests {
    use super::ServerClock;

    #[test]
    fn the_server_clock_dates_entries_by_their_timestamps() {
        let ms = std::time::Duration::from_millis;
        let mut c = ServerClock::default();
        // The server's clock is 1,000 s ahead; entries arrive 5 ms after they were
        // written, then one 460 ms late: dated 386 ms before it was seen (the smallest
        // difference rose by 1/8 of the 555 ms since the last entry).
        assert_eq!(c.written(1_001_000, ms(1_005)), ms(1_005));
        assert_eq!(c.written(1_002_000, ms(2_005)), ms(2_005));
        assert_eq!(
            c.written(1_002_100, ms(2_560)),
            ms(2_174),
            "dated when written"
        );
        // Never later than seen, whatever the timestamp says.
        assert_eq!(c.written(1_009_000, ms(2_600)), ms(2_600));
        // After that step forward of the server's clock, entries look older than they
        // are (here as old as can be), until the smallest difference has risen again.
        assert_eq!(c.written(1_003_700, ms(2_700)), ms(0));
        assert_eq!(c.written(1_062_700, ms(61_700)), ms(61_700));
    }

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
    fn rendezvous_scores_instances_as_it_always_has() {
        // The owner of a partition must not change between versions: instances of two
        // versions run side by side during a rolling upgrade.
        use crate::hash::stable_hash;
        let ids: Vec<Instance> = ["a", "6OMO7yHAHCZF58vg6llghS", "x/y", ""]
            .iter()
            .map(|s| Instance::from(*s))
            .collect();
        for p in [0, 1, 9, 10, 63, 64, 999, 4_294_967_295] {
            let old = ids
                .iter()
                .max_by_key(|id| (stable_hash(&format!("{id}/{p}")), id.to_string()));
            assert_eq!(rendezvous(&ids, p), old, "partition {p}");
        }
    }

    #[test]
    fn the_first_two_ranked_are_the_owner_and_who_takes_over_from_it() {
        let all: Vec<Instance> = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        for p in 0..64 {
            let first = rendezvous(&all, p).unwrap().clone();
            let rest: Vec<Instance> = all.iter().filter(|i| **i != first).cloned().collect();
            let second = rendezvous(&rest, p).unwrap().clone();
            for me in &all {
                assert_eq!(ranks_among(&all, p, me, 1), *me == first, "partition {p}");
                assert_eq!(
                    ranks_among(&all, p, me, 2),
                    *me == first || *me == second,
                    "partition {p}"
                );
            }
            // Alone, an instance ranks first.
            assert!(ranks_among(&all[..1], p, &all[0], 1));
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
