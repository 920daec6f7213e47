//! Presence lists: `join`, `leave` and `ping` calls, leaving on logout or a token that
//! gives another member, and the sweep of connections not seen for `ttl`. Each member
//! added or removed is one `add` or `remove` event. The engine keeps which lists each
//! connection joined (`PresenceIndex`), so a token event finds them at once.
//!
//! With the shared store a list and its members' connections live in different
//! partitions, often on different instances: a token event then changes no list as it
//! is applied ([`Engine::presence_apart`]); the owner of each list applies it to the
//! lists it serves as a step of the list's partition
//! ([`Engine::presence_token_event`]), and sweeps them list by list
//! ([`Engine::presence_due`], [`Engine::presence_expire`]).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::Value;

use super::{check_cid, Engine, Events};
use crate::clock::ticks;
use crate::config::{Config, Resource};
use crate::pattern::{self, Params};
use crate::presence::{Change, PresenceDef, Refused};
use crate::protocol::{self, ResError, TokenEvent};
use crate::rule::RuleInput;
use crate::store::{Store, Token, Written};
use crate::template::{TemplateInput, TokenIn};

/// Which presence lists each connection joined, and the lists with members.
#[derive(Debug, Default)]
pub(super) struct PresenceIndex {
    joined: HashMap<Box<str>, Vec<Box<str>>>,
    lists: BTreeSet<Box<str>>,
}

impl PresenceIndex {
    fn add(&mut self, cid: &str, rid: &str) {
        let lists = self.joined.entry(cid.into()).or_default();
        if !lists.iter().any(|r| &**r == rid) {
            lists.push(rid.into());
        }
        self.lists.insert(rid.into());
    }

    fn remove(&mut self, cid: &str, rid: &str) {
        if let Some(lists) = self.joined.get_mut(cid) {
            lists.retain(|r| &**r != rid);
            if lists.is_empty() {
                self.joined.remove(cid);
            }
        }
    }

    /// Keeps the lists `keep` says yes to, forgetting the others.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.lists.retain(|rid| keep(rid));
        self.joined.retain(|_, lists| {
            lists.retain(|rid| keep(rid));
            !lists.is_empty()
        });
    }
}

impl<S: Store> Engine<S> {
    /// A call on a presence list, once the resource's call rule allowed it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn presence_call(
        &mut self,
        res: &Resource,
        p: &PresenceDef,
        rid: &str,
        params: &Params,
        method: &str,
        cid: &str,
        token: Option<&Value>,
        query: Option<&str>,
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let now = self.now;
        match method {
            "join" => {
                let input = RuleInput {
                    cid,
                    token,
                    params,
                    query,
                    model: None,
                    values: None,
                };
                if let Some(rule) = &p.join {
                    if !self.allows(rule, res, "presence.join", &input) {
                        return Err(ResError::AccessDenied(format!(
                            "access denied: join on {rid}: the `presence.join` rule denies"
                        )));
                    }
                }
                let member = member_of(p, res, params, cid, token.into())?;
                let max = p.max_members;
                let changes = self
                    .store
                    .update_shared(rid, now, |w| {
                        let m = w.members_mut();
                        m.set_made_by(&p.made_by);
                        m.join(cid, member, now, max)
                    })
                    .map_err(|Refused::Full(n)| {
                        ResError::InvalidParams(format!(
                            "the presence list is full: it has max_members {n} members"
                        ))
                    })?;
                self.presence.add(cid, rid);
                self.push_members(res, rid, &changes, events);
            }
            "leave" => self.leave(res, rid, cid, events),
            _ => {
                // A ping whose token gives another member than the one listed (or
                // none) leaves: a token event the list's owner missed (with the shared
                // store, one that arrived while nobody served the list) is caught up
                // with here.
                let listed = match self.store.shared(rid) {
                    Some(Written::Presence(m)) => m.member_of(cid).map(str::to_string),
                    _ => None,
                };
                let rendered = member_of(p, res, params, cid, token.into()).ok();
                if listed.is_some()
                    && !crate::presence::same_member(listed.as_deref(), rendered.as_ref())
                {
                    self.leave(res, rid, cid, events);
                    return Err(ResError::InvalidParams(format!(
                        "connection {cid} was listed in {rid} as another member than its token gives now: it left; call join"
                    )));
                }
                let joined = listed.is_some()
                    && self
                        .store
                        .update_shared(rid, now, |w| w.members_mut().seen(cid, now));
                if !joined {
                    return Err(ResError::InvalidParams(format!(
                        "connection {cid} has not joined {rid} (or was not seen for ttl {}): call join",
                        humantime::format_duration(p.ttl)
                    )));
                }
            }
        }
        Ok(protocol::null_reply())
    }

    /// Connection `cid` leaves list `rid`, if it joined it.
    fn leave(&mut self, res: &Resource, rid: &str, cid: &str, events: &mut Events) {
        self.presence.remove(cid, rid);
        if self.store.shared(rid).is_none() {
            return;
        }
        let changes = self
            .store
            .update_shared(rid, self.now, |w| w.members_mut().leave(cid));
        self.push_members(res, rid, &changes, events);
    }

    /// After a token event: the connection leaves every list where its new token gives
    /// another member, or none (a logout). With the shared store the service does this
    /// per list partition instead ([`Engine::presence_token_event`]).
    pub(super) fn presence_token(
        &mut self,
        config: &Config,
        cid: &str,
        token: Option<&Token>,
        events: &mut Events,
    ) {
        if !self.presence_apart {
            self.presence_token_in(config, cid, token.into(), |_| true, events);
        }
    }

    /// [`Engine::presence_token`] on the lists `which` says yes to.
    fn presence_token_in(
        &mut self,
        config: &Config,
        cid: &str,
        token: TokenIn,
        which: impl Fn(&str) -> bool,
        events: &mut Events,
    ) {
        let Some(lists) = self.presence.joined.get(cid) else {
            return;
        };
        let lists: Vec<Box<str>> = lists.iter().filter(|r| which(r)).cloned().collect();
        for rid in lists {
            let Some((res, params)) = config.resolve(&rid) else {
                self.presence.remove(cid, &rid);
                continue;
            };
            let Some(p) = &res.presence else {
                self.presence.remove(cid, &rid);
                continue;
            };
            let now = member_of(p, res, &params, cid, token).ok();
            let was = self.store.shared(&rid).and_then(|w| match w {
                Written::Presence(m) => m.member_of(cid).map(str::to_string),
                _ => None,
            });
            if !crate::presence::same_member(was.as_deref(), now.as_ref()) {
                self.leave(res, &rid, cid, events);
            }
        }
    }

    /// With the shared store ([`Engine::presence_apart`]): a token event for `cid`
    /// (its payload, as `conn.<cid>.token` carries it) applied to the presence lists
    /// `which` says yes to (those of one partition served here), as a step of their
    /// own: the connection leaves those where its new token gives another member, or
    /// none. A malformed event (or one the token event itself would ignore) changes
    /// nothing. Returns the events.
    pub fn presence_token_event(
        &mut self,
        config: &Config,
        cid: &str,
        payload: &[u8],
        which: impl Fn(&str) -> bool,
    ) -> Events {
        let mut events = Events::new();
        if check_cid(cid).is_err() || !self.presence.joined.contains_key(cid) {
            return events;
        }
        let token = match protocol::parse::<TokenEvent>(payload, "token event") {
            Ok(TokenEvent { token: Some(t), .. }) => t,
            _ => return events,
        };
        if protocol::json_len(&token) > config.state.max_token_bytes {
            return events;
        }
        self.now = self.clock.now();
        let token = Some(token).filter(|t| !t.is_null());
        self.presence_token_in(config, cid, token.as_ref().into(), which, &mut events);
        events
    }

    /// The lists served where a token event for `cid` may change something: those
    /// it joined.
    pub fn presence_joined(&self, cid: &str) -> &[Box<str>] {
        self.presence.joined.get(cid).map_or(&[], Vec::as_slice)
    }

    /// Connections not seen for their list's `ttl` leave; returns the events.
    pub fn presence_sweep(&mut self, config: &Config) -> Events {
        let mut events = Events::new();
        for rid in self.presence_due(config) {
            events.extend(self.presence_expire(config, &rid));
        }
        events
    }

    /// The lists with a connection not seen for the list's `ttl` (forgetting those
    /// that went).
    pub fn presence_due(&mut self, config: &Config) -> Vec<Box<str>> {
        let now = self.clock.now();
        let mut due = Vec::new();
        let lists: Vec<Box<str>> = self.presence.lists.iter().cloned().collect();
        for rid in lists {
            let ttl = config
                .resolve(&rid)
                .and_then(|(res, _)| res.presence.as_ref().map(|p| ticks(p.ttl)));
            let oldest = match self.store.shared(&rid) {
                Some(Written::Presence(m)) => m.oldest(),
                _ => None,
            };
            let (Some(ttl), Some(oldest)) = (ttl, oldest) else {
                self.presence.lists.remove(&rid);
                continue;
            };
            if now.saturating_sub(oldest) >= ttl {
                due.push(rid);
            }
        }
        due
    }

    /// The connections of list `rid` not seen for its `ttl` leave; returns the events.
    pub fn presence_expire(&mut self, config: &Config, rid: &str) -> Events {
        let mut events = Events::new();
        let now = self.clock.now();
        self.now = now;
        let Some((res, ttl)) = config
            .resolve(rid)
            .and_then(|(res, _)| res.presence.as_ref().map(|p| (res, ticks(p.ttl))))
        else {
            return events;
        };
        if !matches!(self.store.shared(rid), Some(Written::Presence(_))) {
            return events;
        }
        let (left, changes) = self
            .store
            .update_shared(rid, now, |w| w.members_mut().expire(now, ttl));
        for cid in &left {
            self.presence.remove(cid, rid);
        }
        self.push_members(res, rid, &changes, &mut events);
        events
    }

    /// The backend's reset of a presence list: every member goes, from the last.
    pub(super) fn presence_reset(&mut self, res: &Resource, rid: &str, events: &mut Events) {
        let Some(w) = self.store.shared(rid) else {
            return;
        };
        forget_list(&mut self.presence, rid, w);
        let changes = self
            .store
            .update_shared(rid, self.now, |w| w.members_mut().clear());
        self.push_members(res, rid, &changes, events);
    }

    /// Forgets what the index says of a list that went (dropped, reset, reloaded).
    pub(super) fn presence_gone(&mut self, rid: &str, written: &Written) {
        forget_list(&mut self.presence, rid, written);
    }

    /// A presence list put in the store from elsewhere (the shared store's bucket,
    /// which keeps no times): every connection of it counts as seen now, so one that
    /// went while nobody served the list leaves within a `ttl` unless it pings, and
    /// its connections go into the index (a token event finds them).
    pub fn presence_loaded(&mut self, rid: &str) {
        if !matches!(self.store.shared(rid), Some(Written::Presence(_))) {
            return;
        }
        let now = self.clock.now();
        // The list as loaded: its write compares equal, and none starts.
        self.store
            .update_shared(rid, now, |w| w.members_mut().seen_all(now));
        if let Some(Written::Presence(m)) = self.store.shared(rid) {
            for (cid, ..) in m.each_connection() {
                self.presence.add(cid, rid);
            }
        }
    }

    /// Forgets what the index says of the lists `keep` says no to (their partition
    /// went to another instance of the shared store).
    pub fn presence_forget(&mut self, keep: impl Fn(&str) -> bool) {
        self.presence.retain(keep);
    }

    /// Makes the index again from the lists in the store (after a reload).
    pub(super) fn rebuild_presence_index(&mut self) {
        let mut index = PresenceIndex::default();
        self.store.for_each_shared(|rid, w| {
            if let Written::Presence(m) = w {
                for (cid, ..) in m.each_connection() {
                    index.add(cid, rid);
                }
            }
        });
        self.presence = index;
    }

    /// The `add` and `remove` events of a list's changes.
    fn push_members(&self, res: &Resource, rid: &str, changes: &[Change], events: &mut Events) {
        let Some(c) = &res.collection else {
            return;
        };
        let members = self.store.shared(rid).map_or(&[][..], |w| w.items());
        for change in changes {
            events.push(match *change {
                Change::Added(idx) => protocol::add_event(rid, &c.item, &members[idx], idx),
                Change::Removed(idx) => protocol::remove_event(rid, idx),
            });
        }
    }
}

/// Takes a list's connections out of the index (the list went).
fn forget_list(index: &mut PresenceIndex, rid: &str, written: &Written) {
    if let Written::Presence(m) = written {
        for (cid, ..) in m.each_connection() {
            index.remove(cid, rid);
        }
    }
}

/// What connection `cid` is a member as: the `member` template over its token, cid and
/// the name's captures, as a string or a resource name.
fn member_of(
    p: &PresenceDef,
    res: &Resource,
    params: &Params,
    cid: &str,
    token: TokenIn,
) -> Result<Value, ResError> {
    let input = TemplateInput {
        cid: Some(cid),
        token,
        params,
        claims: None,
        value: None,
    };
    let rendered = p.member.render(&input);
    let text = match rendered {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => {
            return Err(ResError::InvalidParams(format!(
            "join: `presence.member` ({}) gives nothing for connection {cid} (is it logged in?)",
            p.member.source()
        )))
        }
    };
    if p.is_ref && !pattern::is_valid_ref(&text) {
        return Err(ResError::InvalidParams(format!(
            "join: `presence.member` of {} gives a value that is not a valid resource name",
            res.pattern
        )));
    }
    Ok(Value::String(text))
}
