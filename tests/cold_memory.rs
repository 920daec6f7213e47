//! What a cold unit costs (the shared store: a unit evicted past `state.max_entries`
//! leaves memory and stays in the bucket; its owner remembers its key, when it was last
//! touched, and, in the pipeline, its revision), measured with a counting allocator
//! against the same unit in memory. `cargo test --test cold_memory -- --nocapture`
//! prints the figures (docs/scaling.md quotes them).

use std::collections::HashMap;

use connres::store::cold::ColdSet;
use connres::store::{MemoryStore, Store, UnitKey};
use serde_json::json;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

use counting::live;

const UNITS: usize = 100_000;

/// A cid as Resgate makes them: 20 characters.
fn cid(i: usize) -> String {
    format!("bv0n7a2hb9lc{i:08}")
}

/// Per unit: bytes requested and allocations live after `fill`, less before.
fn measure(fill: impl FnOnce() -> Box<dyn std::any::Any>) -> (f64, f64) {
    let before = live();
    let kept = fill();
    let after = live();
    drop(kept);
    (
        (after.0 - before.0) as f64 / UNITS as f64,
        (after.1 - before.1) as f64 / UNITS as f64,
    )
}

#[test]
fn a_cold_unit_costs_a_fraction_of_the_unit_in_memory() {
    let keys: Vec<UnitKey> = (0..UNITS)
        .map(|i| UnitKey::Connection(cid(i).into()))
        .collect();
    // The cold set and the pipeline's revision of each (`HashMap<UnitKey, (u64, u64)>`).
    let (cold_bytes, cold_allocs) = measure(|| {
        let mut set: ColdSet<()> = ColdSet::new(64);
        let mut revisions: HashMap<UnitKey, (u64, u64)> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            set.evict(k.clone(), 7, usize::MAX);
            revisions.insert(k.clone(), (i as u64, 0));
        }
        Box::new((set, revisions))
    });
    // The same connections in memory, each with its written preferences (the seed's
    // `session.prefs.{cid}`, two values): one entry each, as after a backend write.
    let (memory_bytes, memory_allocs) = measure(|| {
        let mut store = MemoryStore::default();
        for i in 0..UNITS {
            let cid = cid(i);
            let rid = format!("session.prefs.{cid}");
            store.update_connection(&cid, 7, |c| {
                let w = c.model_mut(&cid, &rid).written_mut();
                w.insert("theme", json!("dark"));
                w.insert("fontSize", json!(16));
            });
        }
        Box::new(store)
    });
    println!(
        "per unit: cold {cold_bytes:.0} bytes in {cold_allocs:.1} allocations; \
         in memory {memory_bytes:.0} bytes in {memory_allocs:.1} allocations \
         (bytes requested from the allocator, its own overhead not counted)"
    );
    assert!(cold_bytes < 200.0, "a cold unit costs {cold_bytes} bytes");
    assert!(
        cold_bytes * 2.0 < memory_bytes,
        "cold {cold_bytes}, in memory {memory_bytes}"
    );
}
