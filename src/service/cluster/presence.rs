//! Presence lists with the shared store. A list lives in the partition of its name and
//! its members' connections in theirs, often on other instances. Every instance
//! receives every token event; the one that serves a list applies the event to it as a
//! step of the list's partition (`Held::Presence`): queued behind what waits there for
//! cold units, its changed list written before its events, like a message's. The ttl
//! sweep runs on each list's owner the same way, list by list. Which partitions and
//! lists is decided here without I/O ([`token_partitions`], [`sweep_lists`]); the
//! serving task's side follows.

use bytes::Bytes;

use super::evict::Held;
use crate::engine::{Outcome, Status};
use crate::service::outcome::Finished;
use crate::service::route::Route;
use crate::service::Service;
use crate::store::record::partition_of_name;

/// The partitions where a token event for a connection is applied to presence lists
/// here, ascending and each once: those served here holding a list the connection
/// joined (`joined`, from the engine's index), and those served here where messages
/// wait for cold units (`waiting`): a join of the connection may wait there, so the
/// step waits behind it and looks the connection up when its turn comes.
pub(super) fn token_partitions<'a>(
    joined: impl IntoIterator<Item = &'a str>,
    waiting: impl IntoIterator<Item = u32>,
    partitions: u32,
    serves: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let mut out: Vec<u32> = joined
        .into_iter()
        .map(|rid| partition_of_name(rid, partitions))
        .chain(waiting)
        .filter(|&p| serves(p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The lists due for the ttl sweep (`due`) that are swept here now, with their
/// partitions: those of partitions served here where nothing waits for cold units
/// (what waits arrived before: a ping among it keeps its connection listed; the list
/// is swept at the next sweep, a second later).
pub(super) fn sweep_lists(
    due: Vec<Box<str>>,
    partitions: u32,
    serves: impl Fn(u32) -> bool,
    waiting: impl Fn(u32) -> bool,
) -> Vec<(u32, Box<str>)> {
    due.into_iter()
        .map(|rid| (partition_of_name(&rid, partitions), rid))
        .filter(|&(p, _)| serves(p) && !waiting(p))
        .collect()
}

impl Service {
    /// A token event received (by every instance): its step on the presence lists of
    /// each partition served here that may list its connection, queued in that
    /// partition's order (with the shared store a token event changes no list as it is
    /// applied: `Engine::presence_apart`).
    pub(in crate::service) async fn presence_token(&mut self, cid: &str, payload: &Bytes) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let joined = self.engine.presence_joined(cid);
        let waiting = match cluster.cold.held_count() {
            0 => Vec::new(),
            _ if !self.config.resources.iter().any(|r| r.presence.is_some()) => Vec::new(),
            _ => cluster.cold.held_partitions(),
        };
        if joined.is_empty() && waiting.is_empty() {
            return;
        }
        let now = cluster.now();
        let machine = &cluster.machine;
        let steps = token_partitions(
            joined.iter().map(|r| &**r),
            waiting,
            cluster.settings.partitions,
            |p| machine.serves(p, now),
        );
        for p in steps {
            let held = Held::Presence {
                p,
                cid: cid.into(),
                payload: payload.clone(),
            };
            Box::pin(self.admit(held)).await;
        }
    }

    /// A token event's step on the presence lists of partition `p`, in its turn.
    pub(super) async fn presence_step(&mut self, p: u32, cid: &str, payload: &[u8]) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let n = cluster.settings.partitions;
        let events = self
            .engine
            .presence_token_event(&self.config, cid, payload, |rid| {
                partition_of_name(rid, n) == p
            });
        tracing::trace!(
            partition = p,
            cid,
            events = events.len(),
            "a token event's step on the presence lists of a partition served here"
        );
        self.submit_step(p, Route::Token, format!("conn.{cid}.token"), events)
            .await;
    }

    /// The ttl sweep of the presence lists served here: each list's removals written,
    /// then published, in its partition's order.
    pub(in crate::service) async fn presence_sweep_shared(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let due = self.engine.presence_due(&self.config);
        if due.is_empty() {
            return;
        }
        let now = cluster.now();
        let machine = &cluster.machine;
        let cold = &cluster.cold;
        let lists = sweep_lists(
            due,
            cluster.settings.partitions,
            |p| machine.serves(p, now),
            |p| cold.has_held(p),
        );
        for (p, rid) in lists {
            let events = self.engine.presence_expire(&self.config, &rid);
            self.submit_step(p, Route::Call, format!("call.{rid}.ping"), events)
                .await;
        }
    }

    /// Queues what a step that is no message changed (its events published once its
    /// units are written) in partition `p`'s order; it has no reply and counts as no
    /// request.
    async fn submit_step(
        &mut self,
        p: u32,
        route: Route,
        subject: String,
        events: Vec<(String, Bytes)>,
    ) {
        let finished = Finished {
            route,
            endpoint: None,
            subject: subject.into(),
            reply_to: None,
            outcome: Outcome {
                events,
                status: Status::Ok,
                ..Outcome::default()
            },
            counter: None,
            started: std::time::Instant::now(),
            partition: Some(p),
        };
        self.submit(finished).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u32 = 8;

    fn name_in(p: u32, skip: usize) -> String {
        (0..)
            .map(|i| format!("chat.room.r{i}.members"))
            .filter(|rid| partition_of_name(rid, N) == p)
            .nth(skip)
            .expect("some name falls in every partition")
    }

    #[test]
    fn a_token_event_goes_to_each_served_partition_of_its_lists_once() {
        let (a, b, c) = (name_in(1, 0), name_in(1, 1), name_in(5, 0));
        let joined = [a.as_str(), b.as_str(), c.as_str()];
        // Two lists in partition 1 are one step; partition 5 is served elsewhere.
        assert_eq!(token_partitions(joined, [], N, |p| p != 5), vec![1]);
        assert_eq!(token_partitions(joined, [], N, |_| true), vec![1, 5]);
        // Nothing joined, nothing waiting: no step.
        assert_eq!(token_partitions([], [], N, |_| true), Vec::<u32>::new());
    }

    #[test]
    fn a_token_event_waits_behind_what_waits_in_a_served_partition() {
        let a = name_in(1, 0);
        // A join may wait for a cold unit in partition 3 (the index does not know it
        // yet): the step goes there too, behind it; not where nothing is served.
        assert_eq!(
            token_partitions([a.as_str()], [3, 1, 6], N, |p| p != 6),
            vec![1, 3]
        );
    }

    #[test]
    fn the_sweep_covers_served_lists_where_nothing_waits() {
        let (a, b, c) = (name_in(1, 0), name_in(2, 0), name_in(4, 0));
        let due = vec![a.as_str().into(), b.as_str().into(), c.as_str().into()];
        let swept = sweep_lists(due, N, |p| p != 4, |p| p == 2);
        assert_eq!(swept, vec![(1, a.into_boxed_str())]);
    }
}
