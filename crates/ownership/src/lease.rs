//! Each partition's lease as this instance sees it and holds it, and the transitions:
//! acquiring a free, released or expired lease, loading the partition, renewing, the
//! deadline passing (suspended) and renewing again (resumed), handing over to the
//! instance rendezvous hashing picks, and noticing that another instance took it.

use std::collections::{HashMap, HashSet};

use super::codec::LeaseValue;
use super::members::rendezvous;
use super::window::Cut;
use super::{
    Action, Dropped, Instance, LeaseError, Now, Ownership, BEATS_PER_LEASE, HANDOVERS_AT_ONCE,
    SERVE_SHARE,
};

/// A partition's lease as last seen.
pub(super) struct View {
    revision: u64,
    value: LeaseValue,
    /// When this instance first saw this revision.
    seen: Now,
    /// When the server wrote it, on this instance's clock (`members::ServerClock`):
    /// `seen` or earlier. It dates where a new owner's window must begin; what must
    /// not be earlier than it was seen (expiry, what the last owner handled or may
    /// have missed) goes by `seen`.
    written: Now,
}

/// This instance's hold on a partition's lease.
pub(super) struct Mine {
    revision: u64,
    /// Until when it may apply the partition's messages.
    pub(super) deadline: Now,
    /// A renewal in flight: its op and when it was sent.
    renewing: Option<(u64, Now)>,
    /// When the last renewal was sent.
    last_sent: Now,
}

/// What this instance does with a partition.
#[derive(Default)]
pub(super) enum Mode {
    #[default]
    Idle,
    /// A lease write to take it is in flight (`unsure`: it failed in a way that may
    /// have landed; the lease is being read back).
    Acquiring {
        op: u64,
        sent: Now,
        cut: Cut,
        need_since: Now,
        unsure: bool,
    },
    /// The lease is held; its units are being read (by the load `load`: the result of an
    /// earlier one, for an earlier holding of the partition, may still come back).
    Loading {
        load: u64,
        cut: Cut,
        need_since: Now,
        logs: Option<HashMap<u64, Vec<u32>>>,
        /// A failed load is tried again from then.
        retry_at: Option<Now>,
    },
    Serving,
    /// Held, but the deadline passed before a renewal came back: messages wait in the
    /// window until the lease is renewed (then applied) or lost.
    Suspended {
        since: Now,
    },
    /// Stopped applying it; handing it to `to` (none: releasing it) once everything
    /// handled for it is out.
    HandingOver {
        to: Option<Instance>,
        /// When it stopped applying the partition's messages.
        since: Now,
        drained: bool,
        /// The lease write in flight, and the value it writes (kept for a retry).
        write: Option<u64>,
        value: Option<LeaseValue>,
        /// A handover write failed in a way that does not say whether it landed:
        /// neither served again nor written again until the lease is read back.
        unsure: bool,
    },
}

#[derive(Default)]
pub(super) struct Part {
    pub(super) view: Option<View>,
    pub(super) mine: Option<Mine>,
    pub(super) mode: Mode,
    /// When this instance last tried to acquire it.
    tried: Option<Now>,
    /// A failed lease read is tried again from then.
    reread_at: Option<Now>,
    /// When this instance last stopped holding it without handing it over.
    lost_at: Option<Now>,
    /// A handover that took too long is tried again from then.
    hand_over_after: Option<Now>,
    /// While held here: every request received (by its stamp) before then was handled
    /// (see [`Cut::Handover`]).
    horizon: Option<Now>,
    /// While held here: messages received before then may have been missed (see
    /// [`Cut::Handover`]).
    missed: Option<Now>,
}

impl Part {
    /// The owner the lease names.
    pub(super) fn owner(&self) -> Option<&Instance> {
        self.view.as_ref().and_then(|v| v.value.owner.as_ref())
    }

    pub(super) fn serving(&self, now: Now) -> bool {
        matches!(self.mode, Mode::Serving) && self.mine.as_ref().is_some_and(|m| m.deadline > now)
    }

    /// Serving past the deadline: suspended from it on.
    pub(super) fn suspend_if_late(&mut self, now: Now) {
        if let (Mode::Serving, Some(m)) = (&self.mode, &self.mine) {
            if m.deadline <= now {
                self.mode = Mode::Suspended { since: m.deadline };
            }
        }
    }

    /// The NATS connection dropped: nothing is applied until a renewal comes back.
    pub(super) fn disconnected(&mut self, now: Now) {
        if matches!(self.mode, Mode::Serving) {
            self.mode = Mode::Suspended { since: now };
        }
    }

    /// Whether messages wait in the window for this instance to apply them (held, not
    /// serving right now): they are kept whatever their age.
    pub(super) fn waiting(&self) -> bool {
        self.mine.is_some() && !matches!(self.mode, Mode::Serving)
    }

    fn handing_over(&self) -> bool {
        matches!(self.mode, Mode::HandingOver { .. })
    }
}

impl<M: Clone> Ownership<M> {
    /// The decisions that time or a change may call for, on every partition.
    pub(super) fn leases(&mut self, now: Now, out: &mut Vec<Action<M>>) {
        let lease = self.lease();
        let peers = self.members.peers(now, lease);
        self.check_settings(now, out);
        let mut handing = self.parts.iter().filter(|p| p.handing_over()).count();
        for i in 0..self.parts.len() {
            let p = i as u32;
            self.parts[i].suspend_if_late(now);
            if self.parts[i].reread_at.is_some_and(|t| t <= now) {
                self.parts[i].reread_at = None;
                out.push(Action::ReadLease { p });
            }
            self.renew(p, now, out);
            match &self.parts[i].mode {
                Mode::Idle if self.parts[i].mine.is_none() => {
                    self.adopt(p, out);
                    if self.parts[i].mine.is_none() {
                        self.maybe_acquire(p, &peers, now, out);
                    }
                }
                Mode::Loading {
                    retry_at: Some(t), ..
                } if *t <= now => {
                    let op = self.op();
                    if let Mode::Loading { retry_at, load, .. } = &mut self.parts[i].mode {
                        *retry_at = None;
                        *load = op;
                    }
                    out.push(Action::Load { p, op });
                }
                Mode::Serving if self.parts[i].serving(now) => {
                    let stay = !self.leaving && self.refusing.is_none();
                    let target = if stay {
                        rendezvous(&peers, p).cloned()
                    } else {
                        rendezvous(
                            &peers
                                .iter()
                                .filter(|id| *id != self.me())
                                .cloned()
                                .collect::<Vec<_>>(),
                            p,
                        )
                        .cloned()
                    };
                    let moves = target.as_ref() != Some(self.me());
                    // Not while catching up after a pause: what waits in the connection
                    // is older than its stop would look to the next owner.
                    let deferred = self.catching_up.is_some()
                        || (stay && self.parts[i].hand_over_after.is_some_and(|t| t > now));
                    if moves && !deferred && (!stay || handing < HANDOVERS_AT_ONCE) {
                        handing += 1;
                        self.parts[i].mode = Mode::HandingOver {
                            to: target,
                            since: now,
                            drained: false,
                            write: None,
                            value: None,
                            unsure: false,
                        };
                        out.push(Action::Drain { p });
                    }
                }
                Mode::HandingOver {
                    to,
                    since,
                    drained,
                    write: None,
                    unsure: false,
                    ..
                } => {
                    let since = *since;
                    let gone = to.as_ref().is_some_and(|t| !peers.contains(t));
                    // Draining must not outlast what the next owner keeps of the
                    // messages that arrive meanwhile: past half a lease, it waits.
                    let slow = !*drained && now.saturating_sub(since) > lease / 2;
                    if (gone || slow) && !self.leaving {
                        // Serve it again (what arrived meanwhile is applied), and try
                        // the handover again later.
                        if slow {
                            self.parts[i].hand_over_after = Some(now + lease);
                            tracing::warn!(partition = p, "a handover waited too long for writes to the bucket; serving the partition again");
                        }
                        if self.parts[i]
                            .mine
                            .as_ref()
                            .is_some_and(|m| m.deadline > now)
                        {
                            self.resume(p, since, now, out);
                        } else {
                            self.parts[i].mode = Mode::Suspended { since };
                        }
                    } else if *drained {
                        self.write_handover(p, now, out);
                    }
                }
                _ => {}
            }
        }
        if self.leaving && !self.left && self.parts.iter().all(|p| p.mine.is_none()) {
            self.left = true;
            out.push(Action::Left);
        }
    }

    /// Refuses partitions while a live owner's settings differ (the one holding more
    /// partitions, or as many and a smaller ID, wins), and says so once.
    fn check_settings(&mut self, now: Now, out: &mut Vec<Action<M>>) {
        let mut held: HashMap<&Instance, usize> = HashMap::new();
        for part in &self.parts {
            if let Some(o) = part.owner() {
                *held.entry(o).or_default() += 1;
            }
        }
        let mine = held.get(self.me()).copied().unwrap_or(0);
        let owners: Vec<&Instance> = held
            .iter()
            .filter(|(id, n)| **n > mine || (**n == mine && ***id < *self.me()))
            .map(|(id, _)| *id)
            .collect();
        let why = self
            .members
            .disagreement(now, self.lease(), &owners)
            .map(|(id, why)| format!("instance {id} owns partitions and {why}"));
        if why != self.refusing {
            if let Some(why) = &why {
                out.push(Action::Refuse { why: why.clone() });
            }
            self.refusing = why;
        }
    }

    /// Sends a renewal when one is due: four times a lease, and at once (but not more
    /// than sixteen times a lease) once the deadline has passed.
    fn renew(&mut self, p: u32, now: Now, out: &mut Vec<Action<M>>) {
        let lease = self.lease();
        let part = &self.parts[p as usize];
        let Some(m) = &part.mine else { return };
        let handing = matches!(part.mode, Mode::HandingOver { write: Some(_), .. });
        if m.renewing.is_some() || handing || matches!(part.mode, Mode::Acquiring { .. }) {
            return;
        }
        let since = now.saturating_sub(m.last_sent);
        let due = since >= lease / BEATS_PER_LEASE
            || (m.deadline <= now && since >= lease / (BEATS_PER_LEASE * 4));
        if !due {
            return;
        }
        let expect = m.revision;
        // Suspended, it applies nothing until this comes back: an instance that takes
        // the partition over (this renewal landing late) needs what arrived since.
        let stopped = match part.mode {
            Mode::Suspended { since } => Some(since),
            Mode::Serving if m.deadline <= now => Some(m.deadline),
            _ => None,
        };
        let stopped_ms = stopped.map_or(0, |t| now.saturating_sub(t).as_millis().max(1) as u64);
        let op = self.op();
        let me = self.me().clone();
        // What this owner may have missed, for an instance that takes the partition
        // over if it stops renewing.
        let missed_ms = missed_ms(self.parts[p as usize].missed, now);
        let m = self.parts[p as usize].mine.as_mut().expect("held");
        m.renewing = Some((op, now));
        m.last_sent = now;
        out.push(Action::WriteLease {
            p,
            op,
            value: LeaseValue {
                missed_ms,
                stopped_ms,
                ..LeaseValue::held(&me)
            },
            expect: Some(expect),
        });
    }

    /// Takes the partition when rendezvous hashing gives it to this instance and its
    /// lease is free, released, or expired.
    fn maybe_acquire(&mut self, p: u32, peers: &[Instance], now: Now, out: &mut Vec<Action<M>>) {
        if !self.joined || self.leaving || self.refusing.is_some() || self.catching_up.is_some() {
            return;
        }
        // A lease still naming this instance, which lost track of it, is taken back
        // here wherever the partition belongs: no other instance takes a lease from a
        // live one (below), so no one would serve it. Served, it moves on to its
        // owner by the usual handover.
        let names_me = self.parts[p as usize]
            .view
            .as_ref()
            .is_some_and(|v| v.value.owner.as_ref() == Some(self.me()) && !v.value.handed_over());
        if rendezvous(peers, p) != Some(self.me()) && !names_me {
            return;
        }
        let lease = self.lease();
        let part = &self.parts[p as usize];
        if part
            .tried
            .is_some_and(|t| now.saturating_sub(t) < lease / BEATS_PER_LEASE)
        {
            return;
        }
        let (expect, cut, need_since) = match &part.view {
            None => (None, Cut::Fresh, Now::ZERO),
            Some(v) => match &v.value.owner {
                // Released by its last owner, or handed to an instance that never took
                // it (it applied nothing): the list says what was applied.
                None => (
                    Some(v.revision),
                    handover_cut(&v.value, v.seen, lease),
                    handed_since(v, lease),
                ),
                // Still names this instance, which lost track of it: taken as if
                // expired (token events by alignment, gateways re-fetch).
                Some(o) if o == self.me() && !v.value.handed_over() => (
                    Some(v.revision),
                    Cut::Takeover {
                        after: now,
                        missed_before: missed_before(&v.value, v.seen),
                    },
                    part.lost_at.unwrap_or(Now::ZERO),
                ),
                Some(o) if self.members.alive(o, now, lease) => return,
                Some(_) if now.saturating_sub(v.seen) < lease => return,
                Some(_) if v.value.handed_over() => (
                    Some(v.revision),
                    handover_cut(&v.value, v.seen, lease),
                    handed_since(v, lease),
                ),
                Some(_) => (
                    Some(v.revision),
                    Cut::Takeover {
                        after: now,
                        missed_before: missed_before(&v.value, v.seen),
                    },
                    taken_since(v, lease),
                ),
            },
        };
        let op = self.op();
        let me = self.me().clone();
        let part = &mut self.parts[p as usize];
        part.tried = Some(now);
        part.mode = Mode::Acquiring {
            op,
            sent: now,
            cut,
            need_since,
            unsure: false,
        };
        out.push(Action::WriteLease {
            p,
            op,
            value: LeaseValue::held(&me),
            expect,
        });
    }

    /// Writes the lease over to the next owner (or releases it), with the requests
    /// applied lately, once everything handled for the partition is out.
    fn write_handover(&mut self, p: u32, now: Now, out: &mut Vec<Action<M>>) {
        let me = self.me().clone();
        if matches!(
            self.parts[p as usize].mode,
            Mode::HandingOver { write: Some(_), .. } | Mode::HandingOver { unsure: true, .. }
        ) {
            // One write at a time (its result decides), and none while an earlier
            // one's result is unknown.
            return;
        }
        let Some(m) = &self.parts[p as usize].mine else {
            return;
        };
        if m.renewing.is_some() || m.deadline <= now {
            // A renewal in flight would change the revision: after it.
            return;
        }
        let expect = m.revision;
        let op = self.op();
        let applied = self.window.applied_ids(p);
        let horizon = self.parts[p as usize].horizon;
        let missed = self.parts[p as usize].missed;
        let Mode::HandingOver {
            to,
            since,
            write,
            value,
            ..
        } = &mut self.parts[p as usize].mode
        else {
            return;
        };
        let v = LeaseValue {
            owner: to.clone(),
            from: Some(me),
            applied,
            stopped_ms: now.saturating_sub(*since).as_millis() as u64,
            handled_ms: horizon
                .map(|h| now.saturating_sub(h).as_millis().max(1) as u64)
                .unwrap_or(0),
            missed_ms: missed_ms(missed, now),
        };
        *write = Some(op);
        *value = Some(v.clone());
        out.push(Action::WriteLease {
            p,
            op,
            value: v,
            expect: Some(expect),
        });
    }

    pub(super) fn lease_seen(
        &mut self,
        p: u32,
        revision: u64,
        value: Option<LeaseValue>,
        written: Now,
        now: Now,
        out: &mut Vec<Action<M>>,
    ) {
        let Some(part) = self.parts.get_mut(p as usize) else {
            return;
        };
        let Some(value) = value else {
            part.view = None;
            return;
        };
        if part.view.as_ref().is_some_and(|v| v.revision >= revision) {
            return;
        }
        let me = self.members.me().clone();
        let taken = part
            .mine
            .as_ref()
            .is_some_and(|m| revision > m.revision && !still_mine(&value, &me));
        // This instance's own handover write, which the watch can show before the
        // write's reply: the handover is done (as that reply would say), not taken.
        let handed = matches!(&part.mode, Mode::HandingOver { value: Some(v), .. } if *v == value);
        part.view = Some(View {
            revision,
            value,
            seen: now,
            written,
        });
        if taken && handed {
            tracing::debug!(
                partition = p,
                "handed the partition over (its lease write seen before its reply)"
            );
            part.mine = None;
            part.mode = Mode::Idle;
            out.push(Action::Forget { p });
        } else if taken {
            tracing::warn!(partition = p, "another instance took the partition over");
            self.lose(p, now, out);
        }
    }

    /// Takes a partition another instance handed to this one (the lease names this
    /// instance, and the one it came from): renew it, load it, then the cut.
    fn adopt(&mut self, p: u32, out: &mut Vec<Action<M>>) {
        let lease = self.lease();
        let me = self.me().clone();
        let part = &mut self.parts[p as usize];
        let Some(view) = &part.view else { return };
        if view.value.owner.as_ref() != Some(&me) || !view.value.handed_over() {
            return;
        }
        let cut = handover_cut(&view.value, view.seen, lease);
        let need_since = handed_since(view, lease);
        part.mine = Some(Mine {
            revision: view.revision,
            deadline: Now::ZERO,
            renewing: None,
            last_sent: Now::ZERO,
        });
        let load = self.op();
        let part = &mut self.parts[p as usize];
        part.mode = Mode::Loading {
            load,
            cut,
            need_since,
            logs: None,
            retry_at: None,
        };
        out.push(Action::Load { p, op: load });
    }

    pub(super) fn lease_written(
        &mut self,
        p: u32,
        op: u64,
        result: Result<u64, LeaseError>,
        now: Now,
        out: &mut Vec<Action<M>>,
    ) {
        let lease = self.lease();
        let me = self.me().clone();
        let part = &mut self.parts[p as usize];
        // A renewal.
        if let Some(m) = part.mine.as_mut() {
            if let Some((renewal, sent)) = m.renewing.filter(|(o, _)| *o == op) {
                let _ = renewal;
                m.renewing = None;
                match result {
                    Ok(revision) => {
                        m.revision = revision;
                        m.deadline = sent + lease.mul_f64(SERVE_SHARE);
                        part.view = Some(View {
                            revision,
                            value: LeaseValue::held(&me),
                            seen: now,
                            written: now,
                        });
                        if m.deadline <= now {
                            // Came back too late to serve on (the reply was slow).
                            return;
                        }
                        match part.mode {
                            Mode::Suspended { since } => self.resume(p, since, now, out),
                            Mode::Loading { logs: Some(_), .. } => self.finish_load(p, now, out),
                            _ => {}
                        }
                    }
                    Err(LeaseError::Conflict) => out.push(Action::ReadLease { p }),
                    Err(LeaseError::Other) => {}
                }
                return;
            }
        }
        match &part.mode {
            Mode::Acquiring { op: o, .. } if *o == op => match result {
                Ok(revision) => self.acquired(p, revision, now, out),
                Err(LeaseError::Conflict) => {
                    part.mode = Mode::Idle;
                    out.push(Action::ReadLease { p });
                }
                Err(LeaseError::Other) => {
                    // It may have landed: read it back before trying anything else.
                    if let Mode::Acquiring { unsure, .. } = &mut part.mode {
                        *unsure = true;
                    }
                    out.push(Action::ReadLease { p });
                }
            },
            Mode::HandingOver {
                write: Some(o),
                value,
                ..
            } if *o == op => match result {
                Ok(revision) => {
                    part.view = Some(View {
                        revision,
                        value: value.clone().unwrap_or_default(),
                        seen: now,
                        written: now,
                    });
                    part.mine = None;
                    part.mode = Mode::Idle;
                    out.push(Action::Forget { p });
                }
                Err(_) => {
                    // It may have landed (no reply), or an earlier one did (a conflict):
                    // serving again or writing again waits for the lease read back.
                    if let Mode::HandingOver { write, unsure, .. } = &mut part.mode {
                        *write = None;
                        *unsure = true;
                    }
                    out.push(Action::ReadLease { p });
                }
            },
            _ => {}
        }
    }

    /// The lease write taking the partition landed at `revision`: load it.
    fn acquired(&mut self, p: u32, revision: u64, now: Now, out: &mut Vec<Action<M>>) {
        let lease = self.lease();
        let me = self.me().clone();
        let part = &mut self.parts[p as usize];
        let Mode::Acquiring {
            sent,
            cut,
            need_since,
            ..
        } = std::mem::take(&mut part.mode)
        else {
            return;
        };
        part.mine = Some(Mine {
            revision,
            deadline: sent + lease.mul_f64(SERVE_SHARE),
            renewing: None,
            last_sent: sent,
        });
        let load = self.op();
        let part = &mut self.parts[p as usize];
        part.mode = Mode::Loading {
            load,
            cut,
            need_since,
            logs: None,
            retry_at: None,
        };
        part.view = Some(View {
            revision,
            value: LeaseValue::held(&me),
            seen: now,
            written: now,
        });
        out.push(Action::Load { p, op: load });
    }

    /// A lease read back after a conflict: still this instance's (a write that timed
    /// out had landed), or taken by another.
    pub(super) fn lease_read(
        &mut self,
        p: u32,
        entry: Result<Option<(u64, LeaseValue)>, String>,
        now: Now,
        out: &mut Vec<Action<M>>,
    ) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // Tried again: a renewal or a handover still waits on it.
                tracing::debug!(partition = p, error = %e, "cannot read a lease");
                self.parts[p as usize].reread_at = Some(now + self.lease() / (BEATS_PER_LEASE * 4));
                return;
            }
        };
        let me = self.me().clone();
        let part = &mut self.parts[p as usize];
        part.reread_at = None;
        if let Mode::Acquiring { unsure: true, .. } = part.mode {
            match &entry {
                Some((revision, value))
                    if value.owner.as_ref() == Some(&me) && !value.handed_over() =>
                {
                    // The write that seemed to fail had landed.
                    let revision = *revision;
                    self.acquired(p, revision, now, out);
                    return;
                }
                _ => part.mode = Mode::Idle,
            }
        }
        match &entry {
            Some((revision, value)) => {
                if part.view.as_ref().is_none_or(|v| v.revision < *revision) {
                    part.view = Some(View {
                        revision: *revision,
                        value: value.clone(),
                        seen: now,
                        written: now,
                    });
                }
            }
            None => part.view = None,
        }
        if part.mine.is_none() {
            return;
        }
        let current = part.mine.as_ref().map_or(0, |m| m.revision);
        match entry {
            Some((revision, value)) if revision <= current || still_mine(&value, &me) => {
                if let Some(m) = part.mine.as_mut() {
                    m.revision = m.revision.max(revision);
                }
                // Still this instance's: no handover write landed.
                if let Mode::HandingOver { unsure, .. } = &mut part.mode {
                    *unsure = false;
                }
            }
            _ => {
                tracing::warn!(
                    partition = p,
                    "the partition's lease is no longer this instance's"
                );
                self.lose(p, now, out);
            }
        }
    }

    /// The partition is no longer this instance's.
    fn lose(&mut self, p: u32, now: Now, out: &mut Vec<Action<M>>) {
        let lease = self.lease();
        let part = &mut self.parts[p as usize];
        // When it stopped applying the partition's messages, if it served it.
        let stopped = match (&part.mode, &part.mine) {
            (Mode::Suspended { since }, _) => Some(*since),
            (Mode::Serving, Some(m)) => Some(m.deadline.min(now)),
            _ => None,
        };
        part.lost_at = Some(now);
        part.mine = None;
        part.mode = Mode::Idle;
        if let Some(stopped) = stopped {
            // What it published within a lease before it stopped (a renewal had come
            // back by then, so a pause began after it).
            out.push(Action::Recall {
                p,
                since: stopped.saturating_sub(lease),
            });
        }
        out.push(Action::Forget { p });
    }

    pub(super) fn loaded(
        &mut self,
        p: u32,
        op: u64,
        logs: Result<HashMap<u64, Vec<u32>>, String>,
        now: Now,
        out: &mut Vec<Action<M>>,
    ) {
        let lease = self.lease();
        let Mode::Loading {
            load,
            logs: slot,
            retry_at,
            ..
        } = &mut self.parts[p as usize].mode
        else {
            return;
        };
        if *load != op {
            // An earlier load's: what it read may predate another owner's writes.
            tracing::debug!(partition = p, op, current = *load, "a stale load ignored");
            return;
        }
        match logs {
            Ok(logs) => *slot = Some(logs),
            Err(e) => {
                // The lease stays held (and renewed): the load is tried again, and a
                // takeover still owes its reset.
                tracing::error!(partition = p, error = %e, "cannot read a partition; trying again");
                *retry_at = Some(now + lease / BEATS_PER_LEASE);
                return;
            }
        }
        if self.parts[p as usize]
            .mine
            .as_ref()
            .is_some_and(|m| m.deadline > now)
        {
            self.finish_load(p, now, out);
        }
    }

    /// Loaded and renewed: the cut, then serving.
    fn finish_load(&mut self, p: u32, now: Now, out: &mut Vec<Action<M>>) {
        let part = &mut self.parts[p as usize];
        let Mode::Loading {
            cut,
            need_since,
            logs: Some(logs),
            ..
        } = std::mem::take(&mut part.mode)
        else {
            return;
        };
        let complete = cut != Cut::Fresh && self.window.complete_since(p, need_since);
        let replay = self.window.cut(p, &cut, &logs, need_since);
        tracing::debug!(
            partition = p,
            ?cut,
            complete,
            ?need_since,
            missing_until = ?self.window.missing_until(p),
            ?now,
            apply = replay.apply.len(),
            skipped = replay.skipped.len(),
            superseded = replay.superseded.len(),
            known = replay.known.len(),
            doubtful = replay.doubtful.len(),
            "cut"
        );
        out.push(Action::Install {
            p,
            confirmed: complete,
        });
        if matches!(cut, Cut::Takeover { .. } | Cut::Resume)
            || !complete
            || !replay.doubtful.is_empty()
        {
            out.push(Action::Reset { p });
        }
        // What the previous owner counted as handled stays handled for the next:
        // another instance's window may still hold it.
        let stamp = now;
        let part = &mut self.parts[p as usize];
        part.horizon = match &cut {
            Cut::Takeover { .. } => {
                tracing::warn!(
                    partition = p,
                    "took over a partition whose owner stopped renewing"
                );
                Some(stamp)
            }
            Cut::Handover { handled_before, .. } => *handled_before,
            Cut::Fresh => None,
            Cut::Resume => part.horizon,
        };
        part.missed = match &cut {
            Cut::Handover { missed_before, .. } | Cut::Takeover { missed_before, .. } => {
                *missed_before
            }
            Cut::Resume => part.missed,
            Cut::Fresh => None,
        };
        if let Cut::Handover { applied, .. } = &cut {
            for id in applied {
                self.window.applied(p, *id, stamp);
            }
        }
        if !complete {
            self.missed(p);
        }
        let (known, doubtful) = (replay.known.clone(), replay.doubtful.clone());
        self.start_serving(p, replay, now, out);
        trust(p, complete, known, doubtful, out);
    }

    /// Serves a suspended partition again: everything kept since is applied.
    fn resume(&mut self, p: u32, since: Now, now: Now, out: &mut Vec<Action<M>>) {
        let complete = self.window.complete_since(p, since);
        let lease = self.lease();
        // A handover from `since` must be done within half a lease of it (what the
        // next owner keeps meanwhile; see the draining check): after a longer
        // suspension it would be too late as soon as it began, served again, handed
        // over again, round and round (chaos seed 15). Then this one serves it again,
        // with a reset.
        let in_time = now.saturating_sub(since) <= lease / 2;
        if !complete && !self.leaving && in_time {
            // Messages were missed meanwhile. Another instance that got them all takes
            // the partition (a handover from when this one stopped), rather than this
            // one guessing at tokens.
            let others: Vec<Instance> = self
                .members
                .peers(now, lease)
                .into_iter()
                .filter(|id| id != self.me())
                .collect();
            if let Some(to) = rendezvous(&others, p).cloned() {
                tracing::warn!(partition = p, to = %to, "messages were missed while the partition was suspended; handing it to an instance that has them");
                self.parts[p as usize].mode = Mode::HandingOver {
                    to: Some(to),
                    since,
                    drained: false,
                    write: None,
                    value: None,
                    unsure: false,
                };
                out.push(Action::Drain { p });
                return;
            }
        }
        let replay = self.window.cut(p, &Cut::Resume, &HashMap::new(), since);
        if !complete {
            self.missed(p);
            out.push(Action::Reset { p });
        }
        let (known, doubtful) = (replay.known.clone(), replay.doubtful.clone());
        self.start_serving(p, replay, now, out);
        trust(p, complete, known, doubtful, out);
    }

    /// Messages of the partition may have been missed before its window's gap: no later
    /// owner applies a request from before it (this one applied later ones, maybe
    /// from the same publisher).
    pub(super) fn missed(&mut self, p: u32) {
        let gap = self.window.missing_until(p);
        let h = &mut self.parts[p as usize].missed;
        *h = Some(h.map_or(gap, |h| h.max(gap)));
    }

    fn start_serving(
        &mut self,
        p: u32,
        replay: super::window::Replay<M>,
        now: Now,
        out: &mut Vec<Action<M>>,
    ) {
        self.parts[p as usize].mode = Mode::Serving;
        // A request skipped here was handled before (or may have been): the next owner
        // must skip it too.
        for (msg, id) in replay.skipped {
            if let Some(id) = id {
                self.window.applied(p, id, now);
            }
            out.push(Action::Drop {
                msg,
                why: Dropped::Applied,
            });
        }
        for msg in replay.superseded {
            out.push(Action::Drop {
                msg,
                why: Dropped::Superseded,
            });
        }
        for (msg, id) in replay.apply {
            if let Some(id) = id {
                self.window.applied(p, id, now);
            }
            out.push(Action::Apply { msg });
        }
    }

    pub(super) fn drained(&mut self, p: u32, now: Now, out: &mut Vec<Action<M>>) {
        if let Mode::HandingOver { drained, .. } = &mut self.parts[p as usize].mode {
            *drained = true;
            self.write_handover(p, now, out);
        }
    }
}

/// A horizon as milliseconds before now, for a lease value (0: none).
fn missed_ms(horizon: Option<Now>, now: Now) -> u64 {
    horizon
        .map(|h| now.saturating_sub(h).as_millis().max(1) as u64)
        .unwrap_or(0)
}

/// Whether a newer lease value than the one this instance holds continues its hold: it
/// names this instance and was not handed over (handed to this instance by another,
/// the other held it in between: taken as a handover, not as a renewal).
fn still_mine(value: &LeaseValue, me: &Instance) -> bool {
    value.owner.as_ref() == Some(me) && !value.handed_over()
}

/// After a cut's replays: which token records to trust. With messages missed, none but
/// those whose latest token event came after the gap (a replayed token event from
/// before it confirms a record it may not be current for); else all but the doubtful.
fn trust<M>(p: u32, complete: bool, known: Vec<u64>, doubtful: Vec<u64>, out: &mut Vec<Action<M>>) {
    if !complete {
        out.push(Action::Unconfirm { p });
        if !known.is_empty() {
            out.push(Action::Confirm { p, conns: known });
        }
    } else if !doubtful.is_empty() {
        out.push(Action::Doubt { p, conns: doubtful });
    }
}

/// Since when the window must be complete to take a lease over that expired: from
/// when its last owner sent its last renewal (it may have stopped applying right after,
/// paused; the renewal may have taken up to a lease to land), or from before it stopped
/// applying if it said so (a renewal sent while suspended). Dated by when the server
/// wrote the renewal, which a slow watch can deliver late.
fn taken_since(v: &View, lease: std::time::Duration) -> Now {
    v.written
        .saturating_sub(std::time::Duration::from_millis(v.value.stopped_ms) + lease)
}

/// Since when the window must be complete to take a lease handed over (or released):
/// from before its last owner stopped applying, as it said when it sent the handover,
/// dated by when the server wrote it (an instance that has just started can see it
/// late), less a lease for the write to have landed (as for a takeover: a slow bucket
/// can take that long) and a quarter for what was in flight when it stopped.
fn handed_since(v: &View, lease: std::time::Duration) -> Now {
    v.written
        .saturating_sub(std::time::Duration::from_millis(v.value.stopped_ms) + lease + lease / 4)
}

/// The cut of a lease that names the requests its last owner handled, seen at `seen`.
fn handover_cut(value: &LeaseValue, seen: Now, lease: std::time::Duration) -> Cut {
    Cut::Handover {
        applied: value.applied.iter().copied().collect::<HashSet<u64>>(),
        // A little later than it says: a request at the edge goes unanswered rather
        // than applied twice.
        handled_before: (value.handled_ms > 0).then(|| {
            seen.saturating_sub(std::time::Duration::from_millis(value.handled_ms)) + lease / 8
        }),
        missed_before: missed_before(value, seen),
    }
}

/// Before when the lease's last owner may have missed messages (and applied later
/// ones), as it said in the lease seen at `seen`.
fn missed_before(value: &LeaseValue, seen: Now) -> Option<Now> {
    (value.missed_ms > 0)
        .then(|| seen.saturating_sub(std::time::Duration::from_millis(value.missed_ms)))
}
