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

/// A token event for `cid` whose token holds a claim of `len` bytes.
fn big_token(t: &mut T, cid: &str, len: usize) {
    let token = json!({"token": {"name": cid, "blob": "x".repeat(len)}});
    t.token(cid, &token.to_string());
}

#[test]
fn past_max_bytes_the_least_recently_touched_connection_goes_first() {
    // Room for three connections with a 10 KB claim, not four.
    let unit = crate::store::UNIT_OVERHEAD + 10_100;
    let mut t = t(&format!(
        "state: {{ max_bytes: {} }}\n",
        3 * unit + unit / 2
    ));
    for cid in ["c1", "c2", "c3"] {
        big_token(&mut t, cid, 10_000);
        assert_eq!(t.get(&format!("session.profile.{cid}"))["name"], json!(cid));
    }
    assert!(t.engine.store().bytes() <= t.config.state.max_bytes);
    assert_eq!(t.engine.store().connections(), 3);
    // c1 is used again: c2 is the least recently touched when c4 comes.
    t.get("session.profile.c1");
    let out = t.handle(Request::Token {
        cid: "c4",
        payload: json!({"token": {"name": "c4", "blob": "x".repeat(10_000)}})
            .to_string()
            .as_bytes(),
    });
    assert_eq!(out.evicted, 1, "counted where max_entries evictions are");
    assert!(t.engine.store().bytes() <= t.config.state.max_bytes);
    assert!(t.engine.store().connection("c2").is_none());
    for cid in ["c1", "c3", "c4"] {
        assert!(t.engine.store().connection(cid).is_some(), "{cid} kept");
    }
    // Gateways are told, as for any dropped state: c2's model followed its token.
    let reset = t.engine.take_reset(crate::engine::RESET_BATCH).unwrap();
    assert_eq!(reset.access, ["session.profile.c2"]);
    // Dropped state reads as logged out.
    assert_eq!(t.get("session.profile.c2")["name"], Value::Null);
}

#[test]
fn a_unit_larger_than_max_bytes_is_not_kept_past_its_message() {
    let mut t = t("state: { max_bytes: 10000 }\n");
    big_token(&mut t, "small", 100);
    let out = t.handle(Request::Token {
        cid: "huge",
        payload: json!({"token": {"blob": "x".repeat(12_000)}})
            .to_string()
            .as_bytes(),
    });
    assert_eq!(out.evicted, 2, "the older one first, then itself");
    assert!(t.engine.store().connection("huge").is_none());
    assert_eq!(t.engine.store().bytes(), 0);
}

#[test]
fn written_values_count_too_and_the_bound_holds_after_every_message() {
    let max = 8 * crate::store::UNIT_OVERHEAD + 40_000;
    let mut t = t(&format!(
        "state: {{ max_bytes: {max}, max_value_bytes: 5000 }}\n"
    ));
    for i in 0..50 {
        let cid = format!("w{i}");
        let out = t.call(
            &format!("session.profile.{cid}"),
            "set",
            &json!({"cid": cid, "params": {"bio": text(4_000)}}).to_string(),
        );
        assert_eq!(reply(&out), json!({"result": null}));
        let out = api(
            &mut t,
            "add",
            &format!("board.{i}.pins"),
            json!({"value": text(3_000)}),
        );
        assert_eq!(reply(&out), json!({"result": null}));
        assert!(t.engine.store().bytes() <= max, "after write {i}");
        // Connections and models without a cid are ordered by the second they were
        // touched in.
        t.clock.advance(std::time::Duration::from_secs(1));
    }
    // The last writes are kept, the first went.
    assert_eq!(t.get("session.profile.w49")["bio"], text(4_000));
    assert!(t.engine.store().connection("w0").is_none());
    assert!(t.engine.store().shared("board.0.pins").is_none());
}

#[test]
fn a_lower_max_bytes_after_a_reload_is_reached_by_the_sweep() {
    let mut t = t("");
    for i in 0..10 {
        big_token(&mut t, &format!("c{i}"), 10_000);
    }
    let unit = t.engine.store().bytes() / 10;
    let smaller = Config::parse(
        "b.yaml",
        &format!("state: {{ max_bytes: {} }}\n{BYTES}", 4 * unit),
    )
    .unwrap();
    t.engine.reloaded(&t.config, &smaller);
    t.config = smaller;
    assert_eq!(t.engine.sweep(&t.config), 6);
    assert_eq!(t.engine.store().connections(), 4);
    assert!(t.engine.store().connection("c9").is_some());
    assert!(t.engine.store().connection("c5").is_none());
}

mod accounting {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Through the engine (logins with tokens of any size, logouts that reset, sets
        /// that overwrite, a collection's adds and removes, the backend's writes and
        /// resets, gets that cache replies, idle expiry, eviction past `max_bytes`), the
        /// bytes the store keeps equal those counted afresh after every step, and stay
        /// within `max_bytes`.
        #[test]
        fn the_store_s_bytes_stay_exact_through_any_requests(
            steps in proptest::collection::vec((0u8..10, 0u8..3, 1usize..3000), 1..60),
        ) {
            let mut t = t("state: { idle_ttl: 1h, max_bytes: 20000 }\n");
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
                prop_assert!(t.engine.store().bytes() <= 20_000);
            }
        }
    }
}
