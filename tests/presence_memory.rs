//! What a presence list member costs at 100,000 members, measured with a counting
//! allocator: the list (members, each connection's member and when it was seen) and
//! the engine's index of which lists each connection joined, without and with the
//! connections' own records (each logged in by a token event). Also how long a join
//! and a leave take at that size (printed, not asserted: speed is for benchmarks).
//! `cargo test --release --test presence_memory -- --nocapture` prints the figures
//! (docs/configuration.md quotes them).

use std::time::Instant;

use connres::clock::Clock;
use connres::config::Config;
use connres::engine::{Engine, Request};
use connres::store::{MemoryStore, Store};
use serde_json::json;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const MEMBERS: usize = 100_000;
const ROOM: &str = "chat.room.r1.members";

const CONFIG: &str = r#"version: 1
resources:
  chat.room.{room}.members:
    presence:
      member: "{{token.name}}"
      max_members: 100000
    access:
      get: "true"
      call: token != null
"#;

/// A cid as Resgate makes them: 20 characters.
fn cid(i: usize) -> String {
    format!("bv0n7a2hb9lc{i:08}")
}

fn live() -> isize {
    counting::live().0
}

#[test]
fn a_member_costs_a_few_hundred_bytes_at_100000_members() {
    let config = Config::parse("p.yaml", CONFIG).unwrap();
    let mut engine = Engine::new(MemoryStore::default(), Clock::manual());
    let cids: Vec<String> = (0..MEMBERS).map(cid).collect();
    // Logged in first: the connections' records are there before anyone joins.
    let before_records = live();
    for (i, c) in cids.iter().enumerate() {
        let payload = json!({"token": {"userId": i, "name": format!("user-{i:06}")}}).to_string();
        let out = engine.handle(
            &config,
            Request::Token {
                cid: c,
                payload: payload.as_bytes(),
            },
        );
        assert!(out.reply.is_none());
    }
    let records = live() - before_records;
    let before = live();
    let accounted_before = engine.store().bytes();
    let started = Instant::now();
    for c in &cids {
        let payload = json!({ "cid": c }).to_string();
        let out = engine.handle(
            &config,
            Request::Call {
                rid: ROOM,
                method: "join",
                payload: payload.as_bytes(),
            },
        );
        assert_eq!(out.events.len(), 1, "one add per new member");
    }
    let joins = started.elapsed();
    let list = live() - before;
    let accounted = (engine.store().bytes() - accounted_before) as f64 / MEMBERS as f64;
    // A join and a leave at the end of a full list, and at its head (the leave that
    // moves every index after it).
    let time = |engine: &mut Engine, c: &str, method: &str| {
        let payload = json!({ "cid": c }).to_string();
        let started = Instant::now();
        let out = engine.handle(
            &config,
            Request::Call {
                rid: ROOM,
                method,
                payload: payload.as_bytes(),
            },
        );
        let took = started.elapsed();
        assert_eq!(out.events.len(), 1, "{method}: one event");
        took
    };
    let leave_last = time(&mut engine, &cids[MEMBERS - 1], "leave");
    let join_last = time(&mut engine, &cids[MEMBERS - 1], "join");
    let leave_first = time(&mut engine, &cids[0], "leave");
    let per_member = list as f64 / MEMBERS as f64;
    let per_record = records as f64 / MEMBERS as f64;
    println!(
        "presence at {MEMBERS} members: the list and the index {per_member:.0} bytes per member \
         (state.max_bytes counts {accounted:.0} for the list) \
         (each connection's record, logged in with two claims, {per_record:.0} more); \
         {MEMBERS} joins in {:.2?} ({:.2?} each on average); at the end: a leave of the \
         last member {leave_last:.2?}, its join {join_last:.2?}; a leave of the first {leave_first:.2?} \
         (bytes requested from the allocator, its own overhead not counted)",
        joins,
        joins / MEMBERS as u32,
    );
    assert!(per_member < 600.0, "a member costs {per_member} bytes");
}
