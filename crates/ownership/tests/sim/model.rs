//! The simulated parts that are not the protocol: messages, a connection's state as
//! the engine would keep it, and the gateway's cache.

use std::collections::{HashMap, HashSet};

/// Who sent a message.
pub type Publisher = usize;

/// A message on the wire.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Unique over the run (the checker's handle; the protocol never sees it).
    pub id: u64,
    pub from: Publisher,
    /// Per publisher, from 1.
    pub seq: u64,
    pub cid: usize,
    pub body: Body,
    /// Whether the publisher waits for a reply.
    pub reply: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A token event: a user, or none (a logout).
    Token(Option<u32>),
    /// A client call or backend write setting the connection's value.
    Write,
    Get,
    /// An access request with the gateway's token for the connection.
    Access(Option<u32>),
}

impl Msg {
    pub fn is_change(&self) -> bool {
        matches!(self.body, Body::Token(_) | Body::Write)
    }

    /// The payload bytes a token event would carry (equal tokens, equal bytes).
    pub fn token_payload(token: Option<u32>) -> Vec<u8> {
        match token {
            Some(u) => format!("{{\"token\":{{\"userId\":{u}}}}}").into_bytes(),
            None => b"{\"token\":null}".to_vec(),
        }
    }
}

/// A connection's state, as the engine keeps it and the bucket stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    pub token: Option<u32>,
    pub confirmed: bool,
    /// The token came from a request (an access), not a token event: the gateway's
    /// view when it sent it, which may be older than the last token event.
    pub filled: bool,
    /// The written value: the id of the write that set it.
    pub value: Option<u64>,
    /// Every message applied to it, in order (message ids).
    pub log: Vec<u64>,
    /// The token log (the digests connres's `store::TokenLog` keeps).
    pub tokens: Vec<u32>,
}

/// What a gateway sees of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub token: Option<u32>,
    pub value: Option<u64>,
}

impl Unit {
    pub fn view(&self) -> View {
        View {
            token: self.token,
            value: self.value,
        }
    }

    /// A token event superseded at a cut (as the engine takes one): in the log, not
    /// applied, the record to be filled in again; whether anything changed.
    pub fn supersede(&mut self, m: &Msg) -> bool {
        let Body::Token(t) = m.body else {
            return false;
        };
        let before = self.clone();
        let d = ownership::hash::superseded(ownership::hash::token_digest(&Msg::token_payload(t)));
        if let Some(next) = ownership::hash::logged(&self.tokens, d) {
            self.tokens = next;
        }
        self.confirmed = false;
        *self != before
    }

    /// Applies a message; the change event (the new view) if anything changed, and
    /// whether it is acknowledged with a reply.
    pub fn apply(&mut self, m: &Msg, waited: bool) -> Option<View> {
        let before = self.view();
        match m.body {
            Body::Token(t) => {
                if self.token.is_some() && t.is_none() {
                    // reset.on_logout
                    self.value = None;
                }
                self.token = t;
                self.confirmed = true;
                self.filled = false;
                let d = ownership::hash::token_digest(&Msg::token_payload(t));
                if let Some(next) = ownership::hash::logged(&self.tokens, d) {
                    self.tokens = next;
                }
                self.log.push(m.id);
            }
            Body::Write => {
                self.value = Some(m.id);
                self.log.push(m.id);
            }
            Body::Access(t) => {
                if !self.confirmed && !waited {
                    self.token = t;
                    self.confirmed = true;
                    self.filled = true;
                }
            }
            Body::Get => {}
        }
        (self.view() != before).then(|| self.view())
    }
}

/// The gateway: its token for each connection (from token events), and its cache of
/// each connection's model, kept as Resgate keeps it.
#[derive(Debug, Default)]
pub struct Gateway {
    pub tokens: HashMap<usize, Option<u32>>,
    pub cache: HashMap<usize, View>,
    /// Gets in flight per connection, by request id (events are dropped while one is).
    pub pending: HashMap<usize, HashSet<u64>>,
    /// Replies seen per request id.
    pub replies: HashMap<u64, usize>,
}

impl Gateway {
    pub fn event(&mut self, cid: usize, view: View) {
        if self.pending.get(&cid).is_none_or(|p| p.is_empty()) {
            if let Some(c) = self.cache.get_mut(&cid) {
                *c = view;
            }
        }
    }

    /// A get's reply; ignored when the get timed out already (as Resgate does).
    pub fn got(&mut self, cid: usize, id: u64, view: View) {
        if self.pending.get_mut(&cid).is_some_and(|p| p.remove(&id)) {
            self.cache.insert(cid, view);
        }
    }

    /// A get timed out: what is cached is unknown (a client would subscribe again).
    pub fn timed_out(&mut self, cid: usize, id: u64) -> bool {
        if self.pending.get_mut(&cid).is_some_and(|p| p.remove(&id)) {
            self.cache.remove(&cid);
            return true;
        }
        false
    }
}
