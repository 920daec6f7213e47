//! Bytes of state: `state.max_value_bytes` refuses a value too large to keep, and
//! `state.max_bytes` bounds what is kept, as `max_entries` does, by the bytes the store
//! accounts.

use super::*;

const BYTES: &str = r#"version: 1
resources:
  session.profile.{cid}:
    fields:
      bio:  { type: string, writable: true }
      blob: { type: data, writable: true }
      name: { type: string, from: "{{token.name}}" }
    access:
      get: cid == params.cid
      call: cid == params.cid
  session.list.{cid}:
    collection:
      item: { type: string }
      max_items: 1000
      writable: true
    access:
      get: cid == params.cid
      call: cid == params.cid
  board.{id}:
    fields:
      title: { type: string }
    access:
      get: "true"
  board.{id}.pins:
    collection:
      item: { type: string }
    access:
      get: "true"
"#;

/// An engine on [`BYTES`] with a `state:` block, on a manual clock.
fn t(state: &str) -> T {
    let clock = Clock::manual();
    T {
        config: Config::parse("b.yaml", &format!("{state}{BYTES}"))
            .unwrap_or_else(|e| panic!("{e}")),
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    }
}

fn api(t: &mut T, method: &str, rid: &str, payload: Value) -> Outcome {
    let payload = payload.to_string();
    let payload = payload.as_bytes();
    t.handle(match method {
        "add" => Request::ApiAdd { rid, payload },
        "remove" => Request::ApiRemove { rid, payload },
        "set" => Request::ApiSet { rid, payload },
        _ => Request::ApiReset { rid, payload },
    })
}

/// A JSON string of exactly `len` bytes of JSON (its quotes counted).
fn text(len: usize) -> Value {
    json!("x".repeat(len - 2))
}

#[test]
fn a_value_over_max_value_bytes_is_refused_naming_the_field_and_both_sizes() {
    let mut t = t("state: { max_value_bytes: 100 }\n");
    // Exactly the limit is kept.
    let out = t.call(
        "session.profile.c1",
        "set",
        &json!({"cid": "c1", "params": {"bio": text(100)}}).to_string(),
    );
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get("session.profile.c1")["bio"], text(100));
    // One byte more: refused, whatever else the call sets, and nothing changes.
    let out = t.call(
        "session.profile.c1",
        "set",
        &json!({"cid": "c1", "params": {"bio": text(101), "blob": {"a": 1}}}).to_string(),
    );
    assert_eq!(error_code(&out), "system.invalidParams");
    assert_eq!(
        error_message(&out),
        "the value of `bio` is 101 bytes of JSON, over state.max_value_bytes (100)"
    );
    assert!(out.events.is_empty());
    assert_eq!(t.get("session.profile.c1")["bio"], text(100));
    assert_eq!(t.get("session.profile.c1")["blob"], Value::Null);
    // A data field is measured as stored: its value, not the `{"data": ...}` around it.
    let big = json!({"list": vec![1234567; 20]});
    assert!(protocol::json_len(&big) > 100);
    let out = t.call(
        "session.profile.c1",
        "set",
        &json!({"cid": "c1", "params": {"blob": {"data": big}}}).to_string(),
    );
    assert!(
        error_message(&out).starts_with("the value of `blob` is 170 bytes of JSON"),
        "{}",
        error_message(&out)
    );
    // The backend's set is refused the same way.
    let out = api(
        &mut t,
        "set",
        "board.b1",
        json!({"values": {"title": text(500)}}),
    );
    assert_eq!(
        error_message(&out),
        "the value of `title` is 500 bytes of JSON, over state.max_value_bytes (100)"
    );
    assert!(out.events.is_empty());
    assert!(t.engine.store().shared("board.b1").is_none());
    assert_eq!(t.engine.store().entries(), 1);
}

#[test]
fn an_item_over_max_value_bytes_is_refused_by_add_from_a_client_or_the_backend() {
    let mut t = t("state: { max_value_bytes: 100 }\n");
    let list = "session.list.c1";
    let add = |value: Value| json!({"cid": "c1", "params": {"value": value}}).to_string();
    let out = t.call(list, "add", &add(text(100)));
    assert_eq!(reply(&out), json!({"result": null}));
    let out = t.call(list, "add", &add(text(101)));
    assert_eq!(error_code(&out), "system.invalidParams");
    assert_eq!(
        error_message(&out),
        "the item is 101 bytes of JSON, over state.max_value_bytes (100)"
    );
    assert!(out.events.is_empty());
    let out = api(&mut t, "add", "board.b1.pins", json!({"value": text(2000)}));
    assert_eq!(
        error_message(&out),
        "the item is 2000 bytes of JSON, over state.max_value_bytes (100)"
    );
    assert!(t.engine.store().shared("board.b1.pins").is_none());
    let items = reply(&t.handle(Request::Get { rid: list }))["result"]["collection"].clone();
    assert_eq!(items, json!([text(100)]));
    // Removing by a value that large is no write: answered as any other remove.
    let out = t.call(
        list,
        "remove",
        &json!({"cid": "c1", "params": {"value": text(101)}}).to_string(),
    );
    assert_eq!(reply(&out), json!({"result": null}));
}

mod accounting {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Through the engine (logins with tokens of any size, logouts that reset, sets
        /// that overwrite, a collection's adds and removes, the backend's writes and
        /// resets, gets that cache replies, idle expiry), the bytes the store keeps
        /// equal those counted afresh after every step.
        #[test]
        fn the_store_s_bytes_stay_exact_through_any_requests(
            steps in proptest::collection::vec((0u8..10, 0u8..3, 1usize..3000), 1..60),
        ) {
            let mut t = t("state: { idle_ttl: 1h }\n");
            for (op, c, size) in steps {
                let cid = format!("c{c}");
                let profile = format!("session.profile.{cid}");
                let list = format!("session.list.{cid}");
                let call = |params: Value| json!({"cid": cid, "params": params}).to_string();
                match op {
                    0 => {
                        let token = json!({"token": {"name": cid, "blob": text(size + 2)}});
                        t.token(&cid, &token.to_string());
                    }
                    1 => {
                        t.token(&cid, LOGOUT);
                    }
                    2 => {
                        t.call(&profile, "set", &call(json!({"bio": text(size + 2)})));
                    }
                    3 => {
                        t.call(&list, "add", &call(json!({"value": text(size % 200 + 2), "idx": 0})));
                    }
                    4 => {
                        t.call(&list, "remove", &call(json!({"idx": 0})));
                    }
                    5 => {
                        api(&mut t, "set", &format!("board.{c}"), json!({"values": {"title": text(size + 2)}}));
                    }
                    6 => {
                        api(&mut t, "reset", &profile, json!({}));
                    }
                    7 => {
                        t.handle(Request::Get { rid: &profile });
                    }
                    8 => {
                        t.clock.advance(std::time::Duration::from_secs(size as u64 * 3));
                        t.engine.sweep(&t.config);
                    }
                    _ => {
                        api(&mut t, "add", &format!("board.{c}.pins"), json!({"value": text(size % 100 + 2)}));
                    }
                }
                prop_assert_eq!(t.engine.store().bytes(), t.engine.store().recount_bytes());
            }
        }
    }
}
