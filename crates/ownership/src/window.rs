//! What an instance keeps of the state-changing messages it received but did not apply
//! (every instance receives every one of them; only the owner of its partition applies
//! it), and the cut: which of them a new owner applies when it starts serving.
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
    /// stopped by then, so what arrived since is applied.
    Takeover {
        after: Now,
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
}

impl<M> Window<M> {
    pub(super) fn new(partitions: u32, span: Duration, cap: usize, now: Now) -> Window<M> {
        let n = partitions as usize;
        Window {
            parts: (0..n).map(|_| VecDeque::new()).collect(),
            missing_until: vec![now; n],
            disconnected: false,
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

    /// The NATS connection dropped: messages are being missed until [`Window::gap`].
    pub(super) fn disconnected(&mut self) {
        self.disconnected = true;
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
        let missing_until = self.missing_until[p as usize];
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
        match cut {
            Cut::Handover {
                applied,
                handled_before,
                missed_before,
            } => {
                // The previous owner may have missed these, and applied later ones.
                let missed = upto(*missed_before);
                for (i, e) in entries.iter().enumerate().take(missed) {
                    keep[i] = false;
                    if let Kind::Token { conn, .. } = e.kind {
                        if !doubtful.contains(&conn) {
                            doubtful.push(conn);
                        }
                    }
                }
                // Requests from before the previous owner stopped (it applied them, or
                // never got them: applied now, they would come after later ones it
                // applied), before its horizon, or in its list were handled.
                let handled = upto(*handled_before)
                    .max(upto(Some(since)))
                    .max(upto(missed_before.map(|m| m + self.span / 8)));
                for (i, e) in entries.iter().enumerate() {
                    if let Kind::Write { id } = e.kind {
                        if i < handled || applied.contains(&id) {
                            keep[i] = false;
                        }
                    }
                }
            }
            Cut::Takeover { after } => {
                let before = upto(Some(*after));
                for (i, e) in entries.iter().enumerate().take(before) {
                    if matches!(e.kind, Kind::Write { .. }) {
                        keep[i] = false;
                    }
                }
            }
            Cut::Fresh | Cut::Resume => {}
        }
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
                let applied = if matched >= fresh || (matched == 0 && log.is_empty()) {
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
        known.retain(|c| !doubtful.contains(c));
        let mut replay = Replay {
            apply: Vec::new(),
            skipped: Vec::new(),
            known,
            doubtful,
        };
        for (e, keep) in entries.into_iter().zip(keep) {
            let id = match e.kind {
                Kind::Write { id } => Some(id),
                _ => None,
            };
            if keep {
                replay.apply.push((e.msg, id));
            } else {
                replay.skipped.push((e.msg, id));
            }
        }
        replay
    }
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
pub(super) fn aligned(window: &[u32], log: &[u32]) -> usize {
    log.last()
        .and_then(|last| window.iter().rposition(|d| d == last))
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = w.cut(0, &cut, &logs, Duration::ZERO);
        assert_eq!(applied(&r), vec!["logout", "w3"]);
        let skipped: Vec<_> = r.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(skipped, vec!["w1", "login", "login again", "w2"]);
        assert_eq!(w.len(), 0);
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
            },
            &logs,
            Duration::ZERO,
        );
        assert_eq!(applied(&r), vec!["other", "logout"]);
        let skipped: Vec<_> = r.skipped.iter().map(|(m, _)| *m).collect();
        assert_eq!(skipped, vec!["w1", "login"]);
    }

    #[test]
    fn fresh_and_resumed_partitions_apply_everything() {
        for cut in [Cut::Fresh, Cut::Resume] {
            let mut w = window(&[(Kind::Write { id: 1 }, "w1"), (token(7, 10), "t")]);
            let r = w.cut(0, &cut, &HashMap::from([(7, vec![10])]), Duration::ZERO);
            assert_eq!(applied(&r), vec!["w1", "t"], "{cut:?}");
        }
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
