//! When tokens end: a token event may say when its token ends (`expires`, seconds since
//! 1970; connres's own logins set it to the JWT's `exp`). At that time the connection is
//! logged out as if its auth service had said so: the service publishes
//! `conn.<cid>.token` with a null token, which gateways apply and which comes back to
//! connres like any token event, so connres and the gateways apply it in the same order
//! as any login that crosses it.
//!
//! A heap of (time, cid) in ending order, checked against the connection's record when
//! due (a record whose token changed since is skipped), so nothing is removed from it
//! early. Bounded: past twice the entries held (and some), it is rebuilt from the
//! store.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Engine;
use crate::store::Store;

/// A due token whose logout was published is checked again this many seconds later,
/// and published again if it is still there (the first was lost in an outage).
const RETRY_SECS: u32 = 5;

/// The most logouts one sweep publishes; the next sweep goes on.
pub const ENDS_PER_SWEEP: usize = 1_000;

#[derive(Debug, Default)]
pub(super) struct TokenEnds {
    /// (when to look, when the token ends, cid).
    heap: BinaryHeap<Reverse<(u32, u32, Box<str>)>>,
}

impl<S: Store> Engine<S> {
    /// Remembers that the token of `cid` ends at `at` (seconds since 1970).
    pub fn track_token_end(&mut self, cid: &str, at: u32) {
        if at == 0 {
            return;
        }
        self.ends.heap.push(Reverse((at, at, cid.into())));
        let bound = 2 * self.store.entries() + 1024;
        if self.ends.heap.len() > bound {
            self.rebuild_token_ends();
        }
    }

    fn rebuild_token_ends(&mut self) {
        let mut heap = BinaryHeap::new();
        self.store.for_each_connection(|cid, c| {
            if c.expires != 0 && c.token.is_some() {
                heap.push(Reverse((c.expires, c.expires, cid.into())));
            }
        });
        self.ends.heap = heap;
    }

    /// The engine clock's wall time, in seconds since 1970.
    pub fn wall_secs(&self) -> u32 {
        let since = self.clock.wall().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    }

    /// The connections whose token has ended by `now` (seconds since 1970), at most
    /// `max`: the caller publishes a logout for each.
    pub fn ended_tokens(&mut self, now: u32, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(Reverse((look, _, _))) = self.ends.heap.peek() else {
                break;
            };
            if *look > now {
                break;
            }
            let Reverse((_, at, cid)) = self.ends.heap.pop().expect("peeked");
            let current = self
                .store
                .connection(&cid)
                .is_some_and(|c| c.token.is_some() && c.expires == at);
            if current {
                self.ends
                    .heap
                    .push(Reverse((now + RETRY_SECS, at, cid.clone())));
                out.push(cid.into());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use crate::engine::Engine;
    use crate::store::{MemoryStore, Store};

    fn engine_with(cids: &[(&str, u32)]) -> Engine {
        let mut e = Engine::default();
        for (cid, at) in cids {
            e.store.update_connection(cid, 0, |c| {
                c.replace_token(Some(crate::store::Token::new(&json!({"a": 1}))));
                c.set_expires(*at);
            });
            e.track_token_end(cid, *at);
        }
        e
    }

    #[test]
    fn due_tokens_come_in_ending_order_and_again_until_they_are_gone() {
        let mut e = engine_with(&[("late", 300), ("early", 100), ("mid", 200)]);
        assert!(e.ended_tokens(99, 10).is_empty());
        assert_eq!(e.ended_tokens(250, 10), vec!["early", "mid"]);
        // Still logged in five seconds later (the logout was lost): again.
        assert_eq!(e.ended_tokens(255, 10), vec!["early", "mid"]);
        // Logged out (the logout came back), or logged in again with another end.
        e.store
            .update_existing("early", 0, |c| c.replace_token(None));
        e.store.update_existing("mid", 0, |c| {
            c.replace_token(Some(crate::store::Token::new(&json!({"a": 2}))));
            c.set_expires(900);
        });
        e.track_token_end("mid", 900);
        assert!(e.ended_tokens(260, 10).is_empty());
        assert_eq!(e.ended_tokens(300, 1), vec!["late"]);
        e.store
            .update_existing("late", 0, |c| c.replace_token(None));
        assert_eq!(e.ended_tokens(900, 10), vec!["mid"]);
    }

    #[test]
    fn the_heap_stays_bounded_by_the_connections_held() {
        let mut e: Engine<MemoryStore> = engine_with(&[("c1", 100)]);
        for at in 0..5_000 {
            e.store
                .update_existing("c1", 0, |c| c.set_expires(1_000 + at));
            e.track_token_end("c1", 1_000 + at);
        }
        assert!(e.ends.heap.len() <= 2 * e.store.entries() + 1024);
        assert_eq!(e.ended_tokens(u32::MAX - RETRY, 10), vec!["c1"]);
    }

    const RETRY: u32 = super::RETRY_SECS;
}
