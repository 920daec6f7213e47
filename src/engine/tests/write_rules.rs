//! Who may write which field: `writable` rules, and call rules over what a call writes
//! (`values`, `fields`). Each test has a set the rule allows and one it denies.

use super::*;

const SHOP: &str = r#"
version: 1
resources:
  shop.cart.{cid}:
    fields:
      items:  { type: integer, default: 0, writable: token != null }
      coupon: { type: string, writable: true }
      gift:   { type: string, writable: "values.gift == null || values.gift.startsWith('G')" }
      level:  { type: integer, writable: token.level > 1 }
      count:  { type: integer, default: 0, writable: model.count < 2 }
      total:  { type: number, default: 0 }
    access:
      get: cid == params.cid
      call: cid == params.cid
  shop.checkout.{cid}:
    fields:
      address: { type: string, writable: true }
      express: { type: boolean, default: false, writable: true }
      note:    { type: string, default: none, writable: true }
      shipped: { type: boolean, default: false }
    access:
      get: cid == params.cid
      call:
        set: cid == params.cid && (token != null || fields.all(f, f == 'address'))
        reset: cid == params.cid && values.note == 'none' && fields == ['address', 'express', 'note', 'shipped']
"#;

fn shop() -> T {
    let clock = Clock::manual();
    T {
        config: Config::parse("t.yaml", SHOP).unwrap_or_else(|e| panic!("{e}")),
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    }
}

fn set(cid: &str, token: Value, params: Value) -> String {
    json!({"cid": cid, "token": token, "params": params}).to_string()
}

#[test]
fn a_writable_rule_decides_each_set_of_its_field() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    // Logged out: the coupon, not the items; nothing of a refused set is applied.
    let out = t.call(
        rid,
        "set",
        &set("c1", json!(null), json!({"items": 2, "coupon": "A"})),
    );
    assert_eq!(error_code(&out), "system.invalidParams");
    assert_eq!(
        error_message(&out),
        "field `items` is not writable for this call: its `writable` rule denies"
    );
    assert!(out.events.is_empty());
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"coupon": "A"})));
    assert_eq!(reply(&out), json!({"result": null}));
    // Logged in (the token event is what the rule sees): the items too.
    t.token("c1", r#"{"token":{"userId":1}}"#);
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"items": 2})));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get(rid)["items"], json!(2));
    assert_eq!(t.get(rid)["coupon"], json!("A"));
}

#[test]
fn a_writable_rule_sees_the_confirmed_token_not_the_request_s() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    t.token("c1", LOGOUT);
    // A stale request still carrying a token: the confirmed record says logged out.
    let out = t.call(
        rid,
        "set",
        &set("c1", json!({"userId": 1}), json!({"items": 2})),
    );
    assert_eq!(error_code(&out), "system.invalidParams");
    assert_eq!(t.get(rid)["items"], json!(0));
}

#[test]
fn a_writable_rule_that_fails_denies() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    // `token.level` on a token without `level` fails: denied, as false would.
    t.token("c1", r#"{"token":{"userId":1}}"#);
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"level": 3})));
    assert_eq!(
        error_message(&out),
        "field `level` is not writable for this call: its `writable` rule denies"
    );
    t.token("c1", r#"{"token":{"userId":1,"level":2}}"#);
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"level": 3})));
    assert_eq!(reply(&out), json!({"result": null}));
}

#[test]
fn a_writable_rule_reads_the_values_and_the_model_before_the_set() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"gift": "X1"})));
    assert_eq!(error_code(&out), "system.invalidParams");
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"gift": "G1"})));
    assert_eq!(reply(&out), json!({"result": null}));
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"gift": null})));
    assert_eq!(reply(&out), json!({"result": null}), "null clears");
    // `model.count < 2` holds before each of two sets, not before a third.
    for n in [1, 2] {
        let out = t.call(rid, "set", &set("c1", json!(null), json!({"count": n})));
        assert_eq!(reply(&out), json!({"result": null}), "set {n}");
    }
    let out = t.call(rid, "set", &set("c1", json!(null), json!({"count": 3})));
    assert_eq!(error_code(&out), "system.invalidParams");
    assert_eq!(t.get(rid)["count"], json!(2));
}

#[test]
fn backend_writes_are_not_subject_to_writable_rules() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    let out = t.handle(Request::ApiSet {
        rid,
        payload: br#"{"values":{"items":5,"gift":"X","total":9.5}}"#,
    });
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get(rid)["items"], json!(5));
}

#[test]
fn a_call_rule_reads_the_fields_and_values_a_call_writes() {
    let mut t = shop();
    let rid = "shop.checkout.c1";
    // The access answer is for a call that writes nothing: `fields` is empty, so set is
    // granted; each call is then decided on what it writes.
    let out = t.access(rid, r#"{"cid":"c1"}"#);
    assert_eq!(reply(&out), json!({"result": {"get": true, "call": "set"}}));
    let out = t.call(
        rid,
        "set",
        &set("c1", json!(null), json!({"address": "Main St"})),
    );
    assert_eq!(reply(&out), json!({"result": null}));
    let both = json!({"address": "Main St", "express": true});
    let out = t.call(rid, "set", &set("c1", json!(null), both.clone()));
    assert_eq!(error_code(&out), "system.accessDenied");
    t.token("c1", r#"{"token":{"userId":1}}"#);
    let out = t.call(rid, "set", &set("c1", json!(null), both));
    assert_eq!(reply(&out), json!({"result": null}));
    // A reset writes every field without `from`, each with its default.
    let out = t.call(rid, "reset", &set("c1", json!(null), json!(null)));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get(rid)["express"], json!(false));
}

#[test]
fn a_reset_is_decided_by_its_call_rule_alone() {
    let mut t = shop();
    let rid = "shop.cart.c1";
    t.handle(Request::ApiSet {
        rid,
        payload: br#"{"values":{"items":5}}"#,
    });
    // Logged out, `items` is not writable, but a reset returns it to its default.
    let out = t.call(rid, "reset", &set("c1", json!(null), json!(null)));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get(rid)["items"], json!(0));
}

/// A key named twice in a payload's object is read with its last value (as serde_json
/// and Resgate's Go decoder read it), and what is applied is exactly that.
#[test]
fn a_key_named_twice_in_a_set_is_read_with_its_last_value() {
    let mut t = T::new();
    let payload = r#"{"cid":"c1","token":{"userId":1},"params":{"theme":"dark","theme":"light","fontSize":20}}"#;
    let out = t.call("session.prefs.c1", "set", payload);
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(
        t.get("session.prefs.c1"),
        json!({"theme": "light", "fontSize": 20})
    );
}
