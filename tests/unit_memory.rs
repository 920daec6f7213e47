//! What a unit costs in memory against what `state.max_bytes` accounts it: RSS growth
//! (`/proc/self/statm`) per unit after 100,000 units of the seed's shape (a token
//! event, the user model's access and get, a preference set: `bench fill`'s `seed`),
//! and of a logged-out connection; and per unit whose token is a megabyte of one claim,
//! or 14 KB of 1,800 small objects (whose parsed form is 88 times its JSON; a token is
//! kept as its text, parsed only while a request reads it).
//! The engine runs in-process, no NATS, on a manual clock. `cargo test --release --test
//! unit_memory -- --nocapture` prints the figures (docs/performance.md quotes them);
//! `store::UNIT_OVERHEAD` is the seed shape's RSS per unit less what its token, values
//! and reply are counted, rounded up.

use connres::clock::Clock;
use connres::config::Config;
use connres::engine::{Engine, Request};
use connres::store::{MemoryStore, Store, UNIT_OVERHEAD};
use serde_json::json;

const SEED: &str = include_str!("config/valid/seed.yaml");

/// Resident bytes of this process.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux: /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

fn handle(engine: &mut Engine, config: &Config, request: Request) {
    let out = engine.handle(config, request);
    if let Some(reply) = out.reply {
        assert!(reply.starts_with(br#"{"result""#), "{reply:?}");
    }
}

/// One connection of `bench fill`'s shapes: `seed` (logged in, user model subscribed,
/// a preference set) or `anon` (logged out, user model subscribed).
fn connect(engine: &mut Engine, config: &Config, i: usize, shape: &str) {
    let cid = format!("bv0n7a2hb9lc{i:08}");
    let token = match shape {
        "seed" => json!({"userId": i, "name": format!("User {i}"), "role": "user"}),
        _ => json!(null),
    };
    let event = json!({ "token": token }).to_string();
    handle(
        engine,
        config,
        Request::Token {
            cid: &cid,
            payload: event.as_bytes(),
        },
    );
    let user = format!("session.user.{cid}");
    let access = json!({"cid": cid, "token": token, "isHttp": false}).to_string();
    handle(
        engine,
        config,
        Request::Access {
            rid: &user,
            payload: access.as_bytes(),
        },
    );
    handle(engine, config, Request::Get { rid: &user });
    if shape == "seed" {
        let prefs = format!("session.prefs.{cid}");
        let set = json!({"cid": cid, "token": token, "params": {"theme": "dark"}}).to_string();
        handle(
            engine,
            config,
            Request::Call {
                rid: &prefs,
                method: "set",
                payload: set.as_bytes(),
            },
        );
    }
}

/// Fills an engine with `units` units made by `fill`; returns it (kept, so the next
/// measure does not reuse its memory), the RSS growth and the bytes accounted.
fn measure(units: usize, fill: impl Fn(&mut Engine, usize)) -> (Engine, f64, f64) {
    // One unit first, on an engine of its own: what handling a request takes while it
    // runs (a token parsed from its event) stays resident once, and is not a unit's.
    fill(
        &mut Engine::new(MemoryStore::default(), Clock::manual()),
        units,
    );
    let mut engine = Engine::new(MemoryStore::default(), Clock::manual());
    let before = rss();
    for i in 0..units {
        fill(&mut engine, i);
    }
    let grown = rss().saturating_sub(before) as f64 / units as f64;
    let accounted = engine.store().bytes() as f64 / units as f64;
    (engine, grown, accounted)
}

#[test]
fn a_unit_s_rss_is_what_max_bytes_accounts_it() {
    // As `connres serve` sets glibc's allocator: blocks of 128 KiB or more are pages of
    // their own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` sets a parameter of glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    const UNITS: usize = 100_000;
    let seed = Config::parse("seed.yaml", SEED).unwrap();
    let overhead = UNIT_OVERHEAD as f64;
    let (_seed_units, seed_rss, seed_accounted) =
        measure(UNITS, |e, i| connect(e, &seed, i, "seed"));
    let (_anon_units, anon_rss, anon_accounted) =
        measure(UNITS, |e, i| connect(e, &seed, i, "anon"));
    println!(
        "per unit at {UNITS} units: seed shape {seed_rss:.0} bytes RSS, accounted \
         {seed_accounted:.0} ({:.0} for its token, values and reply + {overhead:.0}); logged out \
         {anon_rss:.0} bytes RSS, accounted {anon_accounted:.0}",
        seed_accounted - overhead
    );

    // Tokens of a megabyte: one claim, as the max_bytes test sends them.
    const BIG: usize = 100;
    let big = Config::parse(
        "big.yaml",
        &format!("state: {{ max_token_bytes: 1048576 }}\n{SEED}"),
    )
    .unwrap();
    let claim = "x".repeat(1_000_000);
    let (_big_units, big_rss, big_accounted) = measure(BIG, |e, i| {
        let event = json!({"token": {"userId": i, "blob": claim}}).to_string();
        let cid = format!("big{i}");
        handle(
            e,
            &big,
            Request::Token {
                cid: &cid,
                payload: event.as_bytes(),
            },
        );
    });
    println!(
        "per unit of a 1 MB one-claim token, {BIG} units: {big_rss:.0} bytes RSS, accounted {big_accounted:.0}"
    );

    // A token of many small objects: its parsed form is many times its JSON.
    const MANY: usize = 1_000;
    let objects: Vec<_> = (0..1_800).map(|i| json!({ "a": i % 10 })).collect();
    let (_many_units, many_rss, many_accounted) = measure(MANY, |e, i| {
        let event = json!({"token": {"userId": i, "list": objects}}).to_string();
        let cid = format!("many{i}");
        handle(
            e,
            &seed,
            Request::Token {
                cid: &cid,
                payload: event.as_bytes(),
            },
        );
    });
    println!(
        "per unit of a token of 1,800 objects ({} bytes of JSON), {MANY} units: \
         {many_rss:.0} bytes RSS, accounted {many_accounted:.0}",
        json!({"userId": 1, "list": objects}).to_string().len()
    );

    // What max_bytes counts covers what each shape takes.
    assert!(seed_accounted >= seed_rss, "{seed_accounted} < {seed_rss}");
    assert!(anon_accounted >= anon_rss, "{anon_accounted} < {anon_rss}");
    assert!(many_accounted >= many_rss, "{many_accounted} < {many_rss}");
    assert!(big_accounted >= big_rss, "{big_accounted} < {big_rss}");
    // And not far over: no more than twice what the usual unit takes.
    assert!(
        seed_accounted < 2.0 * seed_rss,
        "{seed_accounted} >= 2 x {seed_rss}"
    );
}
