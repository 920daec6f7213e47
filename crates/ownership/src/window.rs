//! What an instance keeps of the state-changing messages it received but did not apply
//! (every instance receives every one of them, or for mapped calls the instances that
//! follow the partition's writes; only the owner of its partition applies it), and the
//! cut: which of them a new owner applies when it starts serving. A window may lack
//! any request: the cut applies only requests it holds that the previous owner did not
//! apply, so a missing one is answered by no one, never applied out of order.
//!
//! The window keeps each partition's unapplied messages in arrival order for two leases
//! (and at most `cap` per partition), and remembers until when messages may be missing
//! from it (it started late, the NATS connection dropped, messages were evicted).
//!
//! The cut, by how the partition came to this instance:
//! - **Handover** (the previous owner handed it over, or released it, live): the lease
//!   lists the requests the previous owner applied lately; every other request in the
//!   window is applied. Token events go by alignment (below).
//! - **Takeover** (the previous owner stopped renewing): requests in the window are not
//!   applied (the previous owner may have applied them, and the gateway has given up on
//!   them by now); token events go by alignment.
//! - **Fresh** (the partition never had an owner) and **Resume** (this instance holds the
//!   lease and stopped applying only because it could not renew in time): everything.
//!
//! Alignment: a token event sets a connection's token, so its effect does not depend
//! on what came before. Each connection keeps the digests of the last token events it
//! applied (connres's `store::TokenLog`); the previous owner applied a prefix
//! of the token events this instance saw for the connection, in the same order (one
//! publisher per connection's tokens), and the log ends the way that prefix does, so
//! the longest prefix of the window that ends like the log is at least what it
//! applied; the rest is applied here. Where equal tokens repeat, more may align than
//! was applied: then a login and logout that changed nothing in the end are skipped,
//! rather than an old logout applied again after a write acknowledged since.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::{Kind, Now};
use crate::hash::{event_of, is_superseded};

/// An unapplied message.
struct Entry<M> {
    received: Now,
    kind: Kind,
    msg: M,
}

pub(super) struct Window<M> {
    parts: Vec<VecDeque<Entry<M>>>,
    /// Messages received up to this time may be missing from each partition's window.
    missing_until: Vec<Now>,
    /// Set while the NATS connection is down: messages are being missed.
    disconnected: bool,
    /// Set when the connection dropped after every message received before was
    /// placed: then whatever is placed next arrived after the connection was back.
    backlog_placed: bool,
    /// The first message placed since, in that case: the gap ends just before it.
    first_after: Option<Now>,
    span: Duration,
    cap: usize,
    len: usize,
    /// Recently applied requests per partition, while this instance serves it: what a
    /// handover tells the next owner.
    applied: Vec<VecDeque<(Now, u64)>>,
}

/// How a partition came to this instance (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    Fresh,
    /// `applied`: the requests the previous owner handled lately; `handled_before`:
    /// every request received before then was handled too (the previous owner took the
    /// partition over then, or learnt so from its own previous owner).
    Handover {
        applied: HashSet<u64>,
        handled_before: Option<Now>,
        /// The previous owner may have missed messages received before then (and
        /// applied later ones): none of them is applied, token events included.
        missed_before: Option<Now>,
    },
    /// `after`: when this instance asked for the lease; the previous owner had
    /// stopped by then, so what arrived since is applied. `missed_before`: as for a
    /// handover (its last renewal said so).
    Takeover {
        after: Now,
        missed_before: Option<Now>,
    },
    Resume,
}

/// What a cut decided.
pub(super) struct Replay<M> {
    /// To apply, in arrival order, with the ids of requests.
    pub apply: Vec<(M, Option<u64>)>,
    /// Requests not applied (a takeover), or already applied by the previous owner,
    /// with the ids of requests (handled, for the next handover).
    pub skipped: Vec<(M, Option<u64>)>,
    /// The connections (cid hashes) whose latest token event is known for sure: one
    /// came after anything the window may be missing.
    pub known: Vec<u64>,
    /// The connections whose token events could not be told apart from ones the
    /// previous owner applied (the window may miss some): none was applied, and their
    /// token records are not to be trusted.
    pub doubtful: Vec<u64>,
    /// Token events of doubtful connections after the last one the previous owner
    /// surely applied, in arrival order: not applied, but counted as applied from now
    /// on (their digests go into the token log), so that no later owner applies them
    /// after what this one applies next.
    pub superseded: Vec<M>,
}

impl<M> Window<M> {
    pub(super) fn new(partitions: u32, span: Duration, cap: usize, now: Now) -> Window<M> {
        let n = partitions as usize;
        Window {
            parts: (0..n).map(|_| VecDeque::new()).collect(),
            missing_until: vec![now; n],
            disconnected: false,
            backlog_placed: false,
            first_after: None,
            span,
            cap: cap.max(1),
            len: 0,
            applied: (0..n).map(|_| VecDeque::new()).collect(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Keeps an unapplied message.
    pub(super) fn push(&mut self, p: u32, kind: Kind, msg: M, now: Now) {
        let q = &mut self.parts[p as usize];
        if q.len() >= self.cap {
            if let Some(old) = q.pop_front() {
                self.len -= 1;
                let m = &mut self.missing_until[p as usize];
                *m = (*m).max(old.received);
            }
        }
        q.push_back(Entry {
            received: now,
            kind,
            msg,
        });
        self.len += 1;
    }

    /// Forgets what is older than the span, except in the partitions `held` says this
    /// instance holds (what waits there for it is needed whatever its age: nobody else
    /// applies it); returns the messages let go.
    pub(super) fn expire(&mut self, now: Now, held: impl Fn(u32) -> bool) -> Vec<M> {
        let mut out = Vec::new();
        for (p, q) in self.parts.iter_mut().enumerate() {
            if held(p as u32) {
                continue;
            }
            while q
                .front()
                .is_some_and(|e| now.saturating_sub(e.received) > self.span)
            {
                let e = q.pop_front().expect("just looked");
                self.missing_until[p] = self.missing_until[p].max(e.received);
                out.push(e.msg);
            }
        }
        self.len -= out.len();
        // Kept longer than the window, with a margin for how much later another
        // instance may have received the same messages.
        let applied_span = self.span + self.span / 2;
        for q in &mut self.applied {
            while q
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) > applied_span)
            {
                q.pop_front();
            }
        }
        out
    }

    /// Messages may have been missed for every partition until now (the NATS
    /// connection is back, or the server dropped messages for a slow subscription).
    pub(super) fn gap(&mut self, now: Now) {
        self.disconnected = false;
        for m in &mut self.missing_until {
            *m = (*m).max(now);
        }
    }

    /// Forgets what the partition's window received since `since` (it arrived after a
    /// pause and is stale); returns it.
    pub(super) fn discard_since(&mut self, p: u32, since: Now) -> Vec<M> {
        let q = &mut self.parts[p as usize];
        let keep = q.iter().take_while(|e| e.received < since).count();
        let out: Vec<M> = q.drain(keep..).map(|e| e.msg).collect();
        self.len -= out.len();
        out
    }

    /// Messages may have been missed until now in the partitions `which` says.
    pub(super) fn gap_where(&mut self, now: Now, which: impl Fn(u32) -> bool) {
        for (p, m) in self.missing_until.iter_mut().enumerate() {
            if which(p as u32) {
                *m = (*m).max(now);
            }
        }
    }

    /// The NATS connection dropped: messages are being missed until
    /// [`Window::reconnected`]. `backlog_placed`: every message received before the drop
    /// has been placed (nothing arrives while the connection is down, so what is
    /// placed from now on arrived after it came back).
    pub(super) fn disconnected(&mut self, backlog_placed: bool) {
        self.disconnected = true;
        self.backlog_placed = backlog_placed;
        self.first_after = None;
    }

    /// A message is being placed (any message, read or applied ones included).
    pub(super) fn placing(&mut self, now: Now) {
        if self.disconnected && self.backlog_placed && self.first_after.is_none() {
            self.first_after = Some(now);
        }
    }

    /// The NATS connection is back: messages may have been missed for every partition
    /// until then. When what was received before the drop was all placed then, the
    /// first message placed since arrived after the connection was back (even if
    /// before this is known): the gap ends just before it.
    pub(super) fn reconnected(&mut self, now: Now) {
        let until = match self.first_after.take() {
            Some(first) if self.backlog_placed => first.saturating_sub(Duration::from_nanos(1)),
            _ => now,
        };
        self.backlog_placed = false;
        self.gap(until);
    }

    /// Messages received up to then may be missing from the partition's window.
    pub(super) fn missing_until(&self, p: u32) -> Now {
        self.missing_until[p as usize]
    }

    /// Whether every message of the partition received after `since` is here.
    pub(super) fn complete_since(&self, p: u32, since: Now) -> bool {
        !self.disconnected && self.missing_until[p as usize] < since
    }

    /// Records a request applied while serving the partition.
    pub(super) fn applied(&mut self, p: u32, id: u64, now: Now) {
        self.applied[p as usize].push_back((now, id));
    }

    /// The requests handled lately, for the next owner (kept: a handover may fail and
    /// be tried again, to another instance).
    pub(super) fn applied_ids(&self, p: u32) -> Vec<u64> {
        self.applied[p as usize].iter().map(|(_, id)| *id).collect()
    }

    /// Takes every message of the partition and decides which of them to apply.
    /// `logs`: each connection's token log as the previous owner left it, by the hash
    /// of its cid.
    /// `since`: for a handover, from a little before the previous owner stopped.
    pub(super) fn cut(
        &mut self,
        p: u32,
        cut: &Cut,
        logs: &HashMap<u64, Vec<u32>>,
        since: Now,
    ) -> Replay<M> {
        let entries: Vec<Entry<M>> = std::mem::take(&mut self.parts[p as usize]).into();
        self.len -= entries.len();
        let mut keep = vec![true; entries.len()];
        // While the connection is down, anything may be missing, however recent.
        let missing_until = if self.disconnected {
            Duration::MAX
        } else {
            self.missing_until[p as usize]
        };
        let mut known = Vec::new();
        for e in entries.iter().rev() {
            if let Kind::Token { conn, .. } = e.kind {
                if e.received > missing_until && !known.contains(&conn) {
                    known.push(conn);
                }
            }
        }
        let mut doubtful = Vec::new();
        // "Received before t" as a place: up to the last entry received at or before t.
        let upto = |t: Option<Now>| {
            t.map_or(0, |t| {
                entries
                    .iter()
                    .rposition(|e| e.received <= t)
                    .map_or(0, |i| i + 1)
            })
        };
        if let Cut::Handover { missed_before, .. } | Cut::Takeover { missed_before, .. } = cut {
            // The previous owner may have missed these, and applied later ones (with a
            // margin: this instance may have received them later than it did).
            let missed = upto(missed_before.map(|m| m + self.span / 8));
            // A connection with a token event after the region: alignment (below)
            // decides from there, whatever was missed before (a token event sets the
            // whole token).
            let later: HashSet<u64> = entries[missed..]
                .iter()
                .filter_map(|e| match e.kind {
                    Kind::Token { conn, .. } => Some(conn),
                    _ => None,
                })
                .collect();
            let mut current = Vec::new();
            for (i, e) in entries.iter().enumerate().take(missed) {
                keep[i] = false;
                if let Kind::Token { conn, .. } = e.kind {
                    if later.contains(&conn) || doubtful.contains(&conn) || current.contains(&conn)
                    {
                        continue;
                    }
                    // Unless the previous owner applied what this window holds last
                    // for the connection: then its token is current, whatever it
                    // missed before (the rest is skipped too).
                    let last = entries.iter().rev().find_map(|e| match e.kind {
                        Kind::Token { conn: c, digest } if c == conn => Some(digest),
                        _ => None,
                    });
                    let log_last = logs.get(&conn).and_then(|log| log.last());
                    if log_last.is_some_and(|d| !is_superseded(*d) && Some(event_of(*d)) == last) {
                        current.push(conn);
                    } else {
                        doubtful.push(conn);
                    }
                }
            }
            for (i, e) in entries.iter().enumerate() {
                if matches!(e.kind, Kind::Token { conn, .. } if current.contains(&conn)) {
                    keep[i] = false;
                }
            }
        }
        match cut {
            Cut::Handover {
                applied,
                handled_before,
                ..
            } => {
                // Requests from before the previous owner stopped (it applied them, or
                // never got them: applied now, they would come after later ones it
                // applied), before its horizon, before the last it listed, or in its
                // list were handled. A request this window holds before one the
                // previous owner applied and it did not was dropped there (received
                // while it caught up after a pause): one publisher's requests reach
                // every instance in the order sent, so applied here it would come
                // after a later one of its publisher.
                let last_listed = entries
                    .iter()
                    .rposition(|e| matches!(e.kind, Kind::Write { id } if applied.contains(&id)))
                    .map_or(0, |i| i + 1);
                let handled = upto(*handled_before)
                    .max(upto(Some(since)))
                    .max(last_listed);
                for (i, e) in entries.iter().enumerate() {
                    if let Kind::Write { id } = e.kind {
                        if i < handled || applied.contains(&id) {
                            keep[i] = false;
                        }
                    }
                }
            }
            Cut::Takeover { after, .. } => {
                let before = upto(Some(*after));
                for (i, e) in entries.iter().enumerate().take(before) {
                    if matches!(e.kind, Kind::Write { .. }) {
                        keep[i] = false;
                    }
                }
            }
            Cut::Fresh | Cut::Resume => {}
        }
        // Entries before this place were received before a token event the previous
        // owner applied (as alignment finds).
        let mut before_applied = 0;
        if matches!(cut, Cut::Handover { .. } | Cut::Takeover { .. }) {
            for (conn, indices) in token_runs(&entries, &keep) {
                let log = logs.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
                let digests: Vec<u32> = indices.iter().map(|run| run.0).collect();
                // Runs received before the window's last gap are never applied: the
                // gap may hide a later occurrence of what the previous owner applied
                // last. If the previous owner's last is only matched before the gap,
                // what came after the gap decides; if nothing did, nothing is certain:
                // none is applied, and the token record is not trusted (the gateway
                // fills it in).
                let fresh = indices
                    .iter()
                    .position(|run| entries[run.1[0]].received > missing_until)
                    .unwrap_or(indices.len());
                let matched = aligned(&digests, log);
                // Everything matched, the last only as seen by an earlier cut, never
                // applied: the record need not reflect it.
                let unapplied =
                    matched == indices.len() && log.last().is_some_and(|d| is_superseded(*d));
                let applied = if unapplied {
                    doubtful.push(conn);
                    indices.len()
                } else if matched >= fresh || (matched == 0 && log.is_empty()) {
                    if let Some(last) = matched.checked_sub(1).and_then(|m| indices[m].1.last()) {
                        before_applied = before_applied.max(last + 1);
                    }
                    matched
                } else if fresh < indices.len() {
                    fresh
                } else {
                    doubtful.push(conn);
                    indices.len()
                };
                for (_, run) in indices.iter().take(applied) {
                    for &i in run {
                        keep[i] = false;
                    }
                }
            }
        }
        // A request received before a token event the previous owner applied, and not
        // applied by it, was dropped there (received while it caught up after a pause,
        // or before its takeover): one publisher's messages reach every instance in the
        // order sent, so applied here it would come after a later one of its publisher.
        for (i, e) in entries.iter().enumerate().take(before_applied) {
            if matches!(e.kind, Kind::Write { .. }) {
                keep[i] = false;
            }
        }
        known.retain(|c| !doubtful.contains(c));
        let superseded = superseded(&entries, &keep, &doubtful, logs);
        let mut replay = Replay {
            apply: Vec::new(),
            skipped: Vec::new(),
            known,
            doubtful,
            superseded: Vec::new(),
        };
        for (i, (e, keep)) in entries.into_iter().zip(keep).enumerate() {
            let id = match e.kind {
                Kind::Write { id } => Some(id),
                _ => None,
            };
            if keep {
                replay.apply.push((e.msg, id));
            } else if superseded.contains(&i) {
                replay.superseded.push(e.msg);
            } else {
                replay.skipped.push((e.msg, id));
            }
        }
        replay
    }
}

/// The token events (entry indices) a cut supersedes: for each doubtful connection none
/// of whose token events is applied here, those after the latest place the window holds
/// the last one its log has (before that place, the log already covers them).
fn superseded<M>(
    entries: &[Entry<M>],
    keep: &[bool],
    doubtful: &[u64],
    logs: &HashMap<u64, Vec<u32>>,
) -> HashSet<usize> {
    let mut out = HashSet::new();
    for &conn in doubtful {
        let mine = |e: &Entry<M>| matches!(e.kind, Kind::Token { conn: c, .. } if c == conn);
        if entries.iter().zip(keep).any(|(e, k)| *k && mine(e)) {
            continue;
        }
        let all = vec![true; entries.len()];
        let Some(runs) = token_runs(entries, &all).remove(&conn) else {
            continue;
        };
        let log = logs.get(&conn).map(Vec::as_slice).unwrap_or(&[]);
        let digests: Vec<u32> = runs.iter().map(|run| run.0).collect();
        let covered = aligned(&digests, log);
        out.extend(runs.into_iter().skip(covered).flat_map(|run| run.1));
    }
    out
}

/// Each connection's token events in the window (those still kept), as runs of equal
/// digests (a token event equal to the one before it changes nothing): (digest, entry
/// indices).
type Runs = Vec<(u32, Vec<usize>)>;

fn token_runs<M>(entries: &[Entry<M>], keep: &[bool]) -> HashMap<u64, Runs> {
    let mut out: HashMap<u64, Runs> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        if let Kind::Token { conn, digest } = e.kind {
            let runs = out.entry(conn).or_default();
            match runs.last_mut() {
                Some((d, run)) if *d == digest => run.push(i),
                _ => runs.push((digest, vec![i])),
            }
        }
    }
    out
}

/// How many of `window` (a connection's token digests, runs collapsed, oldest first)
/// count as applied, given `log` (the digests of the last token events the previous
/// owner applied, oldest first): everything up to the latest place the window holds the
/// last one it applied. Nothing after that place was applied (the previous owner
/// applied in the same order), so nothing is applied twice; and the token ends as the
/// last event sent either way. Where equal tokens repeat, an earlier login and logout
/// that changed nothing in the end may be skipped.
///
/// Superseded marks at the log's end were added by a cut after the events it applied,
/// but their events may have been sent before those (a cut supersedes what its window
/// held before a gap, while the log may already hold later events another owner
/// applied): the last applied event and each trailing mark count, whichever the window
/// holds latest.
pub(super) fn aligned(window: &[u32], log: &[u32]) -> usize {
    let tail = log.iter().rposition(|d| !is_superseded(*d)).unwrap_or(0);
    log[tail..]
        .iter()
        .filter_map(|last| window.iter().rposition(|d| *d == event_of(*last)))
        .max()
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows below are complete from before their first message on.
    const SINCE: Duration = Duration::from_millis(500);

    fn token(conn: u64, digest: u32) -> Kind {
        Kind::Token { conn, digest }
    }

    fn applied<M: Copy>(r: &Replay<M>) -> Vec<M> {
        r.apply.iter().map(|(m, _)| *m).collect()
    }

    fn window(entries: &[(Kind, &'static str)]) -> Window<&'static str> {
        let mut w = Window::new(1, Duration::from_secs(10), 100, Duration::ZERO);
        for (k, m) in entries {
            w.push(0, k.clone(), *m, Duration::from_secs(1));
        }
        w
    }

    #[test]
    fn alignment_finds_what_the_previous_owner_applied() {
        assert_eq!(aligned(&[1, 2, 3], &[]), 0);
        assert_eq!(aligned(&[1, 2, 3], &[9, 1]), 1);
        assert_eq!(aligned(&[1, 2, 3], &[1, 2]), 2);
        assert_eq!(aligned(&[1, 2, 3], &[7, 1, 2, 3]), 3);
        assert_eq!(aligned(&[1, 2, 3], &[5, 6]), 0);
        // The window starts after some of what was applied.
        assert_eq!(aligned(&[3, 4, 5], &[1, 2, 3, 4]), 2);
        // The previous owner missed some (its connection dropped): what it missed
        // before its last is not applied after it.
        assert_eq!(aligned(&[1, 8, 9, 2, 3], &[1, 2]), 4);
        // Repeats: the latest place (the safe side: never re-apply a logout that came
        // before an acknowledged write).
        assert_eq!(aligned(&[1, 2, 1, 2], &[1, 2]), 4);
        assert_eq!(aligned(&[2, 1, 2], &[1, 2]), 3);
        // Simulation seed 5978: one owner applied 3; the next superseded 1 and 2, which
        // its window held from before a gap (sent before 3), after it in the log. A
        // window holding 3 alone has it applied already.
        let sup = crate::hash::superseded;
        assert_eq!(aligned(&[3], &[1, 3, sup(1), sup(2)]), 1);
        // The marks still count where the window holds them latest.
        assert_eq!(aligned(&[3, 2], &[1, 3, sup(2)]), 2);
        assert_eq!(aligned(&[2, 3], &[3, sup(2)]), 2);
    }

    #[test]
    fn a_handover_applies_what_the_previous_owner_did_not() {
        let mut w = window(&[
            (Kind::Write { id: 1 }, "w1"),
            (token(7, 10), "login"),
            (token(7, 10), "login again"),
            (Kind::Write { id: 2 }, "w2"),
            (token(7, 20), "logout"),
            (Kind::Write { id: 3 }, "w3"),
        ]);
        let logs = HashMap::from([(7, vec![5, 10])]);
        let cut = Cut::Handover {
            applied: HashSet::from([1, 2]),
            handled_before: None,
            missed_before: None,
        };
        let r = w.cut(0, &cut, &logs, SINCE);
        assert_eq!(applied(&r), vec!["logout", "w3"]);
        let skipped: Vec<_> = r.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(skipped, vec!["w1", "login", "login again", "w2"]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_handover_applies_nothing_received_before_the_last_request_applied() {
        // Simulation seed 249: w1 reached the previous owner while it caught up after
        // a pause, and was dropped there; it applied w2, sent later by w1's publisher.
        let mut w = window(&[
            (Kind::Write { id: 1 }, "w1"),
            (Kind::Write { id: 2 }, "w2"),
            (Kind::Write { id: 3 }, "w3"),
        ]);
        let cut = Cut::Handover {
            applied: HashSet::from([2]),
            handled_before: None,
            missed_before: None,
        };
        let r = w.cut(0, &cut, &HashMap::new(), SINCE);
        assert_eq!(applied(&r), vec!["w3"]);
    }

    #[test]
    fn a_handover_applies_no_request_received_before_a_token_event_applied() {
        // Simulation seed 28618: w1 was not applied by the previous owner (it took the
        // partition over after w1 arrived), which then applied the login its publisher
        // sent after w1.
        let mut w = window(&[
            (Kind::Write { id: 1 }, "w1"),
            (token(7, 10), "login"),
            (Kind::Write { id: 2 }, "w2"),
        ]);
        let logs = HashMap::from([(7, vec![5, 10])]);
        let cut = Cut::Handover {
            applied: HashSet::new(),
            handled_before: None,
            missed_before: None,
        };
        let r = w.cut(0, &cut, &logs, SINCE);
        assert_eq!(applied(&r), vec!["w2"]);
    }

    #[test]
    fn token_events_a_cut_cannot_place_are_superseded() {
        let s = Duration::from_secs;
        let mut w: Window<&str> = Window::new(1, s(10), 100, s(0));
        // Before the previous owner's gap: it may have applied them or not.
        w.push(0, token(7, 10), "c7 login", s(1));
        w.push(0, token(8, 30), "c8 login", s(1));
        w.push(0, token(9, 50), "c9 login", s(1));
        // After it.
        w.push(0, token(8, 40), "c8 logout", s(5));
        w.push(0, token(9, 60), "c9 logout", s(5));
        w.push(0, Kind::Write { id: 1 }, "w1", s(6));
        let logs = HashMap::from([(7, vec![5]), (8, vec![30]), (9, vec![50, 60])]);
        let cut = Cut::Handover {
            applied: HashSet::new(),
            handled_before: None,
            missed_before: Some(s(2)),
        };
        let r = w.cut(0, &cut, &logs, SINCE);
        // c8's logout comes after the gap: applied. c9's was applied before (its log
        // ends with it), and so was its login (before it in the window).
        assert_eq!(applied(&r), vec!["c8 logout", "w1"]);
        // c7's login may or may not have been applied; nothing after it is applied
        // here, so it counts as applied for the next owner rather than being applied
        // by it after later writes.
        assert_eq!(r.superseded, vec!["c7 login"]);
        let skipped: Vec<_> = r.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(skipped, vec!["c8 login", "c9 login", "c9 logout"]);
        // c7's token may be out of date; c8's and c9's are the last the window holds
        // (c8's applied here: a logout after the gap sets the token whatever the
        // previous owner missed before it).
        assert_eq!(r.doubtful, vec![7]);
        let mut known = r.known.clone();
        known.sort();
        assert_eq!(known, vec![8, 9]);
    }

    #[test]
    fn a_takeover_skips_what_the_last_owner_said_it_may_have_missed() {
        let s = Duration::from_secs;
        let mut w: Window<&str> = Window::new(1, s(10), 100, s(0));
        w.push(0, token(7, 10), "c7 login", s(1));
        w.push(0, token(8, 40), "c8 logout", s(5));
        let logs = HashMap::from([(7, vec![5]), (8, vec![30])]);
        let cut = Cut::Takeover {
            after: s(4),
            missed_before: Some(s(2)),
        };
        let r = w.cut(0, &cut, &logs, SINCE);
        assert_eq!(applied(&r), vec!["c8 logout"]);
        assert_eq!(r.superseded, vec!["c7 login"]);
        assert_eq!(r.doubtful, vec![7]);
    }

    #[test]
    fn a_log_that_ends_with_the_latest_event_is_current_after_a_gap() {
        let s = Duration::from_secs;
        // This instance started at 3 s; the previous owner stopped at 2 s.
        let mut w: Window<&str> = Window::new(1, s(10), 100, s(3));
        w.push(0, token(7, 20), "c7 logout", s(4));
        // Its log ends with a logout: this one, or an earlier one before a login this
        // window never saw. Either way the token is the logout's.
        let logs = HashMap::from([(7, vec![10, 20])]);
        let cut = Cut::Handover {
            applied: HashSet::new(),
            handled_before: None,
            missed_before: None,
        };
        let r = w.cut(0, &cut, &logs, s(2));
        assert!(applied(&r).is_empty());
        assert!(r.doubtful.is_empty());
        assert_eq!(r.known, vec![7]);
    }

    #[test]
    fn a_match_with_a_superseded_event_leaves_the_record_to_be_filled_in() {
        // An earlier cut logged c7's login as seen without applying it; the same
        // login again later matches it, but the record never took either.
        let mut w = window(&[(token(7, 10), "login again")]);
        let logs = HashMap::from([(7, vec![5, crate::hash::superseded(10)])]);
        let cut = Cut::Handover {
            applied: HashSet::new(),
            handled_before: None,
            missed_before: None,
        };
        let r = w.cut(0, &cut, &logs, SINCE);
        assert!(applied(&r).is_empty());
        assert_eq!(r.doubtful, vec![7]);
        assert!(r.known.is_empty());
        // With an event after it, that one is applied and the record is current.
        let mut w = window(&[(token(7, 10), "login again"), (token(7, 20), "logout")]);
        let r = w.cut(0, &cut, &logs, SINCE);
        assert_eq!(applied(&r), vec!["logout"]);
        assert_eq!(r.known, vec![7]);
    }

    #[test]
    fn a_takeover_applies_token_events_only() {
        let mut w = window(&[
            (Kind::Write { id: 1 }, "w1"),
            (token(7, 10), "login"),
            (token(8, 30), "other"),
            (token(7, 20), "logout"),
        ]);
        let logs = HashMap::from([(7, vec![10])]);
        let r = w.cut(
            0,
            &Cut::Takeover {
                after: Duration::from_secs(5),
                missed_before: None,
            },
            &logs,
            SINCE,
        );
        assert_eq!(applied(&r), vec!["other", "logout"]);
        let skipped: Vec<_> = r.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(skipped, vec!["w1", "login"]);
    }

    #[test]
    fn fresh_and_resumed_partitions_apply_everything() {
        for cut in [Cut::Fresh, Cut::Resume] {
            let mut w = window(&[(Kind::Write { id: 1 }, "w1"), (token(7, 10), "t")]);
            let r = w.cut(0, &cut, &HashMap::from([(7, vec![10])]), SINCE);
            assert_eq!(applied(&r), vec!["w1", "t"], "{cut:?}");
        }
    }

    /// Found by the chaos run: messages publishers had kept during a NATS restart
    /// arrive before the instance learns that its connection is back; counted as
    /// before the gap, they left token records untrusted, and an old request's token
    /// filled them in.
    #[test]
    fn what_arrives_before_a_reconnection_is_known_comes_after_the_gap() {
        let s = Duration::from_secs;
        for backlog_placed in [true, false] {
            let mut w: Window<&str> = Window::new(1, s(10), 100, s(0));
            w.disconnected(backlog_placed);
            assert!(!w.complete_since(0, s(1)));
            w.placing(s(3));
            w.push(0, token(7, 10), "login", s(3));
            w.reconnected(s(4));
            let r = w.cut(0, &Cut::Resume, &HashMap::new(), s(1));
            assert_eq!(applied(&r), vec!["login"]);
            if backlog_placed {
                // Whatever was missed would have arrived before the first message
                // placed after the drop.
                assert!(w.missing_until(0) < s(3) && w.missing_until(0) > s(2));
                assert_eq!(r.known, vec![7]);
            } else {
                // Some of what arrived before the drop may have been placed after it.
                assert_eq!(w.missing_until(0), s(4));
                assert!(r.known.is_empty());
            }
        }
    }

    /// Found by the simulation: an instance that took a partition over while its
    /// connection was down (the reconnection not known yet) applied token events the
    /// previous owner had applied before a logout this one missed.
    #[test]
    fn a_cut_while_disconnected_trusts_nothing_recent() {
        let s = Duration::from_secs;
        let mut w: Window<&str> = Window::new(1, s(10), 100, s(0));
        w.push(0, token(7, 10), "login", s(3));
        w.push(0, token(7, 20), "login again", s(4));
        w.disconnected(false);
        // The previous owner applied both, then a logout (30) sent meanwhile.
        let logs = HashMap::from([(7, vec![10, 20, 30])]);
        let cut = Cut::Takeover {
            after: s(5),
            missed_before: None,
        };
        let r = w.cut(0, &cut, &logs, s(1));
        assert!(applied(&r).is_empty());
        assert_eq!(r.doubtful, vec![7]);
        assert!(r.known.is_empty());
    }

    #[test]
    fn evictions_and_gaps_say_what_may_be_missing() {
        let s = Duration::from_secs;
        let mut w: Window<u8> = Window::new(2, s(10), 2, s(0));
        assert!(!w.complete_since(0, s(0)));
        assert!(w.complete_since(0, s(1)));
        w.push(0, Kind::Write { id: 1 }, 1, s(2));
        w.push(0, Kind::Write { id: 2 }, 2, s(3));
        w.push(0, Kind::Write { id: 3 }, 3, s(4));
        assert!(!w.complete_since(0, s(2)), "the first was evicted");
        assert!(w.complete_since(0, s(3)));
        assert!(w.complete_since(1, s(3)));
        assert_eq!(w.expire(s(14), |_| false), vec![2]);
        assert_eq!(w.len(), 1);
        w.gap(s(20));
        assert!(!w.complete_since(1, s(19)));
    }
}
