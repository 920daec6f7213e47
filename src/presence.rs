//! Presence: a collection whose members connres keeps from what it knows of each
//! connection. A connection joins with a `join` call and becomes a connection of its
//! member (the value the `member` template gives for its token); a member is listed
//! once, however many connections it has, in the order members first joined. A
//! connection leaves with `leave`, by logging out, by a token that gives another
//! member, when its state is dropped, or when it was last seen longer than `ttl` ago.
//! Each member added or removed is one `add` or `remove` event. Pure: the engine
//! calls it and publishes the edits.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::clock::Tick;
use crate::rule::Rule;
use crate::store::size::{value_bytes, ALLOCATION, SLOT};
use crate::template::Template;

/// A declared presence list (`presence:`).
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceDef {
    /// What a connection is a member as, rendered from its token, cid and the name's
    /// captures.
    pub member: Template,
    /// Whether members are references (`member: { ref: ... }`) or strings.
    pub is_ref: bool,
    /// Who may join, beside the resource's `access.call` rule; none: the call rule
    /// alone decides.
    pub join: Option<Rule>,
    /// How long a connection stays without a `join` or `ping`.
    pub ttl: Duration,
    /// The most members: a join of a new member past it is refused.
    pub max_members: usize,
    /// What makes its members ([`made_by`]), worked out at load.
    pub made_by: Box<str>,
}

/// What makes a list's members: the `member` template, after `ref:` for references.
/// Kept with a stored list, so that a list read back under another `member` (a restart
/// with an edited file) is not served as if this one had made it.
pub fn made_by(member: &Template, is_ref: bool) -> Box<str> {
    let kind = if is_ref { "ref:" } else { "" };
    format!("{kind}{}", member.source()).into()
}

/// What a presence list serves: a collection of its members (strings or references),
/// written by no client.
pub fn as_collection(p: &PresenceDef) -> crate::collection::CollectionDef {
    use crate::field::{Constraints, FieldDef, FieldType, Writable};
    crate::collection::CollectionDef {
        item: FieldDef {
            name: "member".into(),
            description: None,
            ty: if p.is_ref {
                FieldType::Ref
            } else {
                FieldType::String
            },
            default: Value::Null,
            source: None,
            constraints: Constraints::default(),
            writable: Writable::Never,
        },
        max_items: p.max_members,
        writable: Writable::Never,
    }
}

/// `ttl` when the file does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// `max_members` when the file does not say.
pub const DEFAULT_MAX_MEMBERS: usize = 1_000;
/// The most members `max_members` may allow.
pub const MAX_MEMBERS_LIMIT: usize = 100_000;
/// The methods of a presence list.
pub const METHODS: &[&str] = &["join", "leave", "ping"];

/// What a presence list holds: its members in join order (what gateways hold) and
/// each connection's member and when it was last seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members {
    members: Vec<Value>,
    /// The hash of each member's key, beside it: a leave finds its member by scanning
    /// these (contiguous) instead of every member's text.
    hashes: Vec<u64>,
    /// By cid: the index key of its member ([`key`]) and when it was last seen.
    conns: HashMap<Box<str>, (Box<str>, Tick)>,
    /// By member key: how many connections it has.
    counts: HashMap<Box<str>, u32>,
    /// The bytes it holds, kept as it changes ([`Members::bytes`]).
    bytes: usize,
    /// What made its members ([`made_by`]), when known: a list read back
    /// under a config whose `member` says otherwise is not kept.
    made_by: Option<Box<str>>,
}

/// A change to the list, as RES announces it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A member added at the end (its index).
    Added(usize),
    /// The member at this index removed.
    Removed(usize),
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Full(usize),
}

/// What a member takes beside its value and key: its slot and hash in the list, and
/// its count by key (a map entry and a copy of the key).
const MEMBER: usize = SLOT + 8 + ALLOCATION + 32;
/// What a joined connection takes beside its ID and its member's key: their two
/// allocations and its map entry.
const CONNECTION: usize = 2 * ALLOCATION + 48;

/// The bytes a member counts ([`Members::bytes`]).
fn member_bytes(member: &Value, key: &str) -> usize {
    value_bytes(member) + key.len() + MEMBER
}

/// A member's key: its JSON text (members are strings or names, so their text is
/// canonical).
fn key(member: &Value) -> Box<str> {
    match member {
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

/// The hash of a member's key (the same on every instance: nothing depends on it but
/// this process's scans).
fn hash_of(k: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7072_6573).hash_one(k)
}

/// Whether `member` has key `k`, without making its key.
fn is_key(member: &Value, k: &str) -> bool {
    match member {
        Value::String(s) => s == k,
        other => *key(other) == *k,
    }
}

impl Members {
    /// The members, in join order.
    pub fn values(&self) -> &[Value] {
        &self.members
    }

    /// What the list holds in memory: each member (its value, key and bookkeeping)
    /// and each joined connection (its ID and its member's key), estimated as
    /// [`crate::store::size`] does. Kept as the list changes, so reading it costs
    /// nothing (`state.max_bytes` counts it after every join, ping and leave).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many connections are joined.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The connections joined, with their member and when each was last seen.
    pub fn each_connection(&self) -> impl Iterator<Item = (&str, &str, Tick)> {
        self.conns
            .iter()
            .map(|(cid, (member, seen))| (&**cid, &**member, *seen))
    }

    /// The member a connection is joined as, if it is.
    pub fn member_of(&self, cid: &str) -> Option<&str> {
        self.conns.get(cid).map(|(m, _)| &**m)
    }

    /// Connection `cid` joins as `member` at `now`: a new member is added at the end;
    /// a member already listed only gains the connection. A connection joined as
    /// another member leaves it first.
    pub fn join(
        &mut self,
        cid: &str,
        member: Value,
        now: Tick,
        max: usize,
    ) -> Result<Vec<Change>, Refused> {
        let k = key(&member);
        if self.member_of(cid) == Some(&*k) {
            self.seen(cid, now);
            return Ok(Vec::new());
        }
        let new = !self.counts.contains_key(&k);
        let h = hash_of(&k);
        let leaving = self.member_of(cid).is_some();
        if new && self.members.len() - usize::from(leaving && self.alone(cid)) >= max {
            return Err(Refused::Full(max));
        }
        let mut changes = self.leave(cid);
        *self.counts.entry(k.clone()).or_default() += 1;
        self.bytes += cid.len() + k.len() + CONNECTION;
        if new {
            self.bytes += member_bytes(&member, &k);
        }
        self.conns.insert(cid.into(), (k, now));
        if new {
            self.hashes.push(h);
            self.members.push(member);
            changes.push(Change::Added(self.members.len() - 1));
        }
        Ok(changes)
    }

    /// Whether `cid` is its member's only connection.
    fn alone(&self, cid: &str) -> bool {
        self.member_of(cid)
            .and_then(|m| self.counts.get(m))
            .is_some_and(|&n| n == 1)
    }

    /// Marks a joined connection as seen at `now`; says whether it is joined.
    pub fn seen(&mut self, cid: &str, now: Tick) -> bool {
        match self.conns.get_mut(cid) {
            Some((_, seen)) => {
                *seen = now;
                true
            }
            None => false,
        }
    }

    /// Connection `cid` leaves: its member goes when it was the last connection.
    pub fn leave(&mut self, cid: &str) -> Vec<Change> {
        let Some((k, _)) = self.conns.remove(cid) else {
            return Vec::new();
        };
        self.bytes -= cid.len() + k.len() + CONNECTION;
        let Some(n) = self.counts.get_mut(&k) else {
            return Vec::new();
        };
        *n -= 1;
        if *n > 0 {
            return Vec::new();
        }
        self.counts.remove(&k);
        let h = hash_of(&k);
        let found = self
            .hashes
            .iter()
            .enumerate()
            .position(|(i, &mh)| mh == h && is_key(&self.members[i], &k));
        match found {
            Some(idx) => {
                let gone = self.members.remove(idx);
                self.bytes -= member_bytes(&gone, &k);
                self.hashes.remove(idx);
                vec![Change::Removed(idx)]
            }
            None => Vec::new(),
        }
    }

    /// Every connection last seen `ttl` or longer before `now` leaves; returns the cids
    /// that left and the changes.
    pub fn expire(&mut self, now: Tick, ttl: Tick) -> (Vec<Box<str>>, Vec<Change>) {
        let due: Vec<Box<str>> = self
            .conns
            .iter()
            .filter(|(_, (_, seen))| now.saturating_sub(*seen) >= ttl)
            .map(|(cid, _)| cid.clone())
            .collect();
        let changes = due.iter().flat_map(|cid| self.leave(cid)).collect();
        (due, changes)
    }

    /// When the connection seen longest ago was seen.
    pub fn oldest(&self) -> Option<Tick> {
        self.conns.values().map(|(_, seen)| *seen).min()
    }

    /// Everything goes: one removal per member, from the last.
    pub fn clear(&mut self) -> Vec<Change> {
        let changes = (0..self.members.len()).rev().map(Change::Removed).collect();
        *self = Members::default();
        changes
    }

    /// Every joined connection counts as seen at `now`: a list loaded from the shared
    /// store (which keeps no times) gives each connection a whole `ttl` from its load,
    /// to ping or join again.
    pub fn seen_all(&mut self, now: Tick) {
        for (_, seen) in self.conns.values_mut() {
            *seen = now;
        }
    }

    /// What made its members ([`made_by`]), when known.
    pub fn made_by(&self) -> Option<&str> {
        self.made_by.as_deref()
    }

    /// Says what made its members (kept with it in the shared store).
    pub fn set_made_by(&mut self, by: &str) {
        if self.made_by.as_deref() != Some(by) {
            self.made_by = Some(by.into());
        }
    }

    /// The members in join order, each with its connections (sorted, so that equal
    /// lists give equal groups): what the shared store keeps of a list
    /// (`store::record`).
    pub fn groups(&self) -> Vec<(&Value, Vec<&str>)> {
        let mut by_key: HashMap<&str, Vec<&str>> = HashMap::with_capacity(self.counts.len());
        for (cid, (k, _)) in &self.conns {
            by_key.entry(&**k).or_default().push(&**cid);
        }
        self.members
            .iter()
            .map(|m| {
                let mut cids = by_key.remove(&*key(m)).unwrap_or_default();
                cids.sort_unstable();
                (m, cids)
            })
            .collect()
    }

    /// A list from stored groups ([`Members::groups`]): members in join order, each
    /// with its connections, every connection seen at `seen`. A member listed again
    /// keeps its first place (its connections count for it); a connection listed again,
    /// under the same member or another, counts once, where it is first listed; a
    /// member left without connections is dropped (it would never leave). So a list
    /// read back never lists a member twice, nor counts a connection twice.
    pub fn from_groups(groups: Vec<(Value, Vec<Box<str>>)>, seen: Tick) -> Members {
        let mut out = Members::default();
        let mut order: Vec<(Box<str>, Value)> = Vec::with_capacity(groups.len());
        let mut listed: std::collections::HashSet<Box<str>> = std::collections::HashSet::new();
        for (member, cids) in groups {
            let k = key(&member);
            for cid in cids {
                if out.conns.contains_key(&cid) {
                    continue;
                }
                *out.counts.entry(k.clone()).or_default() += 1;
                out.conns.insert(cid, (k.clone(), seen));
            }
            if listed.insert(k.clone()) {
                order.push((k, member));
            }
        }
        for (k, member) in order {
            if out.counts.contains_key(&k) {
                out.hashes.push(hash_of(&k));
                out.members.push(member);
            }
        }
        let members: usize = out.members.iter().map(|m| member_bytes(m, &key(m))).sum();
        let conns: usize = out
            .conns
            .iter()
            .map(|(c, (k, _))| c.len() + k.len() + CONNECTION)
            .sum();
        out.bytes = members + conns;
        out
    }
}

/// Whether a connection listed as `listed` (none: not listed) stays listed when its
/// token renders `rendered` (none: it renders nothing, as when logged out): only as the
/// same member. Decides a token event's leaves and a ping's.
pub fn same_member(listed: Option<&str>, rendered: Option<&Value>) -> bool {
    match (listed, rendered) {
        (Some(l), Some(Value::String(r))) => l == r,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_member_is_listed_once_whatever_its_connections() {
        let mut m = Members::default();
        assert_eq!(
            m.join("c1", json!("ann"), 0, 10),
            Ok(vec![Change::Added(0)])
        );
        assert_eq!(
            m.join("c2", json!("bob"), 0, 10),
            Ok(vec![Change::Added(1)])
        );
        // A second tab adds nothing; closing one of two removes nothing.
        assert_eq!(m.join("c3", json!("ann"), 0, 10), Ok(vec![]));
        assert_eq!(m.leave("c1"), vec![]);
        assert_eq!(m.values(), &[json!("ann"), json!("bob")]);
        assert_eq!(m.leave("c3"), vec![Change::Removed(0)]);
        assert_eq!(m.values(), &[json!("bob")]);
        assert_eq!(m.leave("c3"), vec![], "a connection leaves once");
    }

    #[test]
    fn only_the_same_member_stays() {
        assert!(same_member(Some("ann"), Some(&json!("ann"))));
        assert!(!same_member(Some("ann"), Some(&json!("bob"))));
        assert!(!same_member(Some("ann"), None), "logged out");
        assert!(!same_member(None, Some(&json!("ann"))), "not listed");
        assert!(
            !same_member(Some("5"), Some(&json!(5))),
            "members are strings"
        );
    }

    #[test]
    fn a_token_for_another_member_moves_the_connection() {
        let mut m = Members::default();
        m.join("c1", json!("ann"), 0, 10).unwrap();
        m.join("c2", json!("bob"), 0, 10).unwrap();
        assert_eq!(
            m.join("c1", json!("cat"), 0, 10),
            Ok(vec![Change::Removed(0), Change::Added(1)])
        );
        assert_eq!(m.values(), &[json!("bob"), json!("cat")]);
    }

    #[test]
    fn a_full_list_refuses_a_new_member_but_not_another_connection() {
        let mut m = Members::default();
        m.join("c1", json!("ann"), 0, 1).unwrap();
        assert_eq!(m.join("c2", json!("bob"), 0, 1), Err(Refused::Full(1)));
        assert_eq!(m.join("c2", json!("ann"), 0, 1), Ok(vec![]));
        // The only connection of the only member may become another member.
        let mut m = Members::default();
        m.join("c1", json!("ann"), 0, 1).unwrap();
        assert_eq!(
            m.join("c1", json!("bob"), 0, 1),
            Ok(vec![Change::Removed(0), Change::Added(0)])
        );
    }

    #[test]
    fn connections_not_seen_for_ttl_leave() {
        let mut m = Members::default();
        m.join("c1", json!("ann"), 0, 10).unwrap();
        m.join("c2", json!("bob"), 5, 10).unwrap();
        m.join("c3", json!("ann"), 8, 10).unwrap();
        assert_eq!(m.oldest(), Some(0));
        let (left, changes) = m.expire(10, 10);
        assert_eq!(left, vec![Box::<str>::from("c1")]);
        assert_eq!(changes, vec![], "ann keeps c3");
        assert!(m.seen("c2", 12));
        let (_, changes) = m.expire(18, 10);
        assert_eq!(changes, vec![Change::Removed(0)], "c3 seen at 8");
        assert_eq!(m.values(), &[json!("bob")]);
    }

    #[test]
    fn stored_groups_rebuild_the_list_once_per_member_and_connection() {
        let groups = |v: Vec<(Value, Vec<&str>)>| -> Vec<(Value, Vec<Box<str>>)> {
            v.into_iter()
                .map(|(m, cids)| (m, cids.into_iter().map(Box::from).collect()))
                .collect()
        };
        let m = Members::from_groups(
            groups(vec![
                (json!("ann"), vec!["c1", "c2"]),
                (json!("bob"), vec![]),
                (json!("cat"), vec!["c3", "c1"]),
                (json!("ann"), vec!["c4"]),
            ]),
            7,
        );
        // bob has no connection; c1 counts for ann only; ann's repeat adds c4 to her.
        assert_eq!(m.values(), &[json!("ann"), json!("cat")]);
        assert_eq!(m.connections(), 4);
        assert_eq!(m.member_of("c1"), Some("ann"));
        assert_eq!(m.member_of("c4"), Some("ann"));
        assert_eq!(m.oldest(), Some(7));
        assert_eq!(
            m.groups(),
            vec![
                (&json!("ann"), vec!["c1", "c2", "c4"]),
                (&json!("cat"), vec!["c3"]),
            ]
        );
        // Each connection leaves once: ann goes with her last one.
        let mut m = m;
        assert_eq!(m.leave("c1"), vec![]);
        assert_eq!(m.leave("c2"), vec![]);
        assert_eq!(m.leave("c4"), vec![Change::Removed(0)]);
        assert_eq!(m.values(), &[json!("cat")]);
    }

    #[test]
    fn a_list_rebuilt_from_its_groups_is_the_list() {
        let mut m = Members::default();
        m.join("c1", json!("ann"), 1, 10).unwrap();
        m.join("c2", json!("bob"), 2, 10).unwrap();
        m.join("c3", json!("ann"), 3, 10).unwrap();
        m.leave("c1");
        let groups = m
            .groups()
            .into_iter()
            .map(|(v, cids)| (v.clone(), cids.into_iter().map(Box::from).collect()))
            .collect();
        let mut back = Members::from_groups(groups, 0);
        back.seen_all(3);
        m.seen_all(3);
        assert_eq!(back, m);
    }

    proptest! {
        /// A shadow list kept from the changes alone equals the members after every
        /// join, leave and expiry, in any order; members are unique, and every member
        /// has a connection.
        #[test]
        fn a_copy_from_the_changes_equals_the_members(
            steps in proptest::collection::vec((0u8..3, 0u8..6, 0u8..4, 0u32..4), 1..60),
        ) {
            let mut m = Members::default();
            let mut shadow: Vec<Value> = Vec::new();
            let mut now = 0;
            for (op, cid, member, dt) in steps {
                now += dt;
                let cid = format!("c{cid}");
                let changes = match op {
                    0 => m.join(&cid, json!(format!("m{member}")), now, 3).unwrap_or_default(),
                    1 => m.leave(&cid),
                    _ => m.expire(now, 6).1,
                };
                for change in changes {
                    match change {
                        Change::Added(idx) => {
                            prop_assert_eq!(idx, shadow.len());
                            shadow.push(m.values()[idx].clone());
                        }
                        Change::Removed(idx) => {
                            prop_assert!(idx < shadow.len());
                            shadow.remove(idx);
                        }
                    }
                }
                prop_assert_eq!(&shadow[..], m.values());
                prop_assert!(m.values().len() <= 3);
                let mut keys: Vec<Box<str>> = m.values().iter().map(key).collect();
                keys.sort();
                keys.dedup();
                prop_assert_eq!(keys.len(), m.values().len());
                for k in &keys {
                    prop_assert!(m.each_connection().any(|(_, member, _)| member == &**k));
                }
                // What the shared store keeps of it reads back as the same list.
                let groups = m
                    .groups()
                    .into_iter()
                    .map(|(v, cids)| (v.clone(), cids.into_iter().map(Box::from).collect()))
                    .collect();
                let mut back = Members::from_groups(groups, 0);
                let mut seen = m.clone();
                back.seen_all(now);
                seen.seen_all(now);
                prop_assert_eq!(back, seen);
                // The bytes kept as it changed are those counted afresh.
                let members: usize = m.values().iter().map(|v| member_bytes(v, &key(v))).sum();
                let conns: usize = m
                    .each_connection()
                    .map(|(c, k, _)| c.len() + k.len() + CONNECTION)
                    .sum();
                prop_assert_eq!(m.bytes(), members + conns);
            }
            m.clear();
            prop_assert_eq!(m.bytes(), 0);
        }
    }
}
