//! The pipeline's bookkeeping: which writes start, when, and again after a failure.

use super::*;
use serde_json::json;

const N: u32 = 4;

fn store_with(cids: &[&str]) -> MemoryStore {
    let mut store = MemoryStore::default();
    for cid in cids {
        store.update_connection(cid, 0, |c| c.token = Some(json!({"n": cid}).into()));
    }
    store
}

fn key(cid: &str) -> UnitKey {
    UnitKey::Connection(cid.into())
}

fn p(cid: &str) -> u32 {
    record::partition(&key(cid), N)
}

fn started(pipeline: &mut Pipeline, store: &MemoryStore) -> Vec<UnitKey> {
    let mut keys: Vec<UnitKey> = pipeline
        .starts(store, |_| true)
        .into_iter()
        .map(|s| s.key)
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_changed_unit_starts_once_and_again_only_after_a_newer_change() {
    let mut store = store_with(&["a", "b"]);
    let mut pipeline = Pipeline::new(N);
    pipeline.submit(p("a"), None, vec![key("a")]);
    pipeline.submit(p("b"), None, vec![key("b")]);
    assert_eq!(started(&mut pipeline, &store), vec![key("a"), key("b")]);
    assert_eq!(
        started(&mut pipeline, &store),
        vec![],
        "in flight: nothing new"
    );
    // Changed while its write is in flight: started once that write is done.
    store.update_connection("a", 1, |c| c.token = Some(json!({"n": "a2"}).into()));
    pipeline.submit(p("a"), None, vec![key("a")]);
    assert_eq!(started(&mut pipeline, &store), vec![]);
    let (read_back, _) = pipeline.written(p("a"), 0, key("a"), 1, Ok(Some(5)));
    assert!(!read_back);
    assert_eq!(started(&mut pipeline, &store), vec![key("a")]);
    // b's write is done and nothing changed since: nothing to start.
    pipeline.written(p("b"), 0, key("b"), 1, Ok(Some(6)));
    assert_eq!(started(&mut pipeline, &store), vec![]);
}

#[test]
fn a_failed_write_is_started_again_after_its_read_back() {
    let store = store_with(&["a"]);
    let mut pipeline = Pipeline::new(N);
    pipeline.submit(p("a"), None, vec![key("a")]);
    let start = pipeline.starts(&store, |_| true).pop().expect("a start");
    let (read_back, _) = pipeline.written(
        p("a"),
        0,
        key("a"),
        start.fingerprint,
        Err("timeout".into()),
    );
    assert!(read_back);
    assert_eq!(started(&mut pipeline, &store), vec![], "read back first");
    // The bucket could not be read either: tried again at the next start.
    pipeline.read_back(p("a"), 0, key("a"), Err("down".into()));
    assert!(pipeline.unwritten(&key("a")));
    assert_eq!(started(&mut pipeline, &store), vec![key("a")]);
}

#[test]
fn a_write_that_landed_though_its_reply_was_lost_is_not_started_again() {
    let store = store_with(&["a"]);
    let mut pipeline = Pipeline::new(N);
    pipeline.submit(p("a"), None, vec![key("a")]);
    let start = pipeline.starts(&store, |_| true).pop().expect("a start");
    pipeline.written(
        p("a"),
        0,
        key("a"),
        start.fingerprint,
        Err("timeout".into()),
    );
    pipeline.read_back(p("a"), 0, key("a"), Ok(Some((9, start.fingerprint))));
    assert!(!pipeline.unwritten(&key("a")));
    assert_eq!(started(&mut pipeline, &store), vec![]);
    pipeline.ready(p("a"));
    assert!(pipeline.is_empty(p("a")), "its outcome left the queue");
}

#[test]
fn a_unit_of_a_partition_not_held_waits_until_it_is_held_or_forgotten() {
    let store = store_with(&["a"]);
    let mut pipeline = Pipeline::new(N);
    pipeline.submit(p("a"), None, vec![key("a")]);
    assert!(pipeline.starts(&store, |_| false).is_empty());
    assert!(pipeline.starts(&store, |_| false).is_empty());
    assert_eq!(started(&mut pipeline, &store), vec![key("a")]);
    // Forgotten with its partition: never started.
    pipeline.submit(p("a"), None, vec![key("a")]);
    pipeline.forget(p("a"));
    assert_eq!(started(&mut pipeline, &store), vec![]);
}
