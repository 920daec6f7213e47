//! The cached get reply: every change a model can see clears or outdates it. Each test
//! first makes sure a reply is cached, so it fails if that point does not invalidate it.

use super::*;
use crate::store::Store;

const BOB: &str = r#"{"token":{"userId":7,"name":"Bob","role":"user"}}"#;

fn bob_user() -> Value {
    json!({"id": 7, "name": "Bob", "role": "user", "user": {"rid": "users.user.7"}})
}

/// True when the model's get reply is cached.
fn cached(t: &T, rid: &str) -> bool {
    let cid = rid.rsplit('.').next().unwrap();
    t.engine
        .store()
        .connection(cid)
        .and_then(|c| c.model(cid, rid))
        .is_some_and(|m| m.has_reply())
}

/// Gets three times: the reply is kept at the second, and the third answer comes from
/// the cache, the same bytes.
fn get_cached(t: &mut T, rid: &str) -> Value {
    let first = t.handle(Request::Get { rid }).reply.unwrap();
    let second = t.handle(Request::Get { rid }).reply.unwrap();
    assert!(cached(t, rid), "{rid} is cached after a second get");
    let third = t.handle(Request::Get { rid }).reply.unwrap();
    assert_eq!(first, second);
    assert_eq!(second, third);
    serde_json::from_slice::<Value>(&third).unwrap()["result"]["model"].clone()
}

fn api_set(t: &mut T, rid: &str, values: Value) {
    let payload = json!({ "values": values }).to_string();
    let out = t.handle(Request::ApiSet {
        rid,
        payload: payload.as_bytes(),
    });
    assert_eq!(reply(&out), json!({"result": null}));
}

fn set(t: &mut T, rid: &str, cid: &str, params: Value) {
    let payload = json!({"cid": cid, "params": params}).to_string();
    let out = t.call(rid, "set", &payload);
    assert_eq!(reply(&out), json!({"result": null}));
}

#[test]
fn a_reply_is_kept_from_the_second_get_on() {
    let mut t = T::new();
    t.token("c1", ANN);
    let rid = "session.prefs.c1";
    set(&mut t, rid, "c1", json!({"theme": "dark"}));
    // A gateway gets a model once, then follows its events: nothing kept.
    assert_eq!(t.get(rid)["theme"], "dark");
    assert!(!cached(&t, rid), "kept at the first get");
    assert_eq!(t.get(rid)["theme"], "dark");
    assert!(cached(&t, rid), "not kept at the second get");
    // A write starts over: the next get is a first one again.
    set(&mut t, rid, "c1", json!({"theme": "light"}));
    assert_eq!(t.get(rid)["theme"], "light");
    assert!(!cached(&t, rid), "kept at the first get after a write");
    // So does a new stamp (a reconnect): a get under the old one does not count.
    assert_eq!(t.get(rid)["theme"], "light");
    assert!(cached(&t, rid));
    t.engine.invalidate_replies();
    assert_eq!(t.get(rid)["theme"], "light");
    assert!(!cached_under_current_stamp(&mut t, rid));
    assert_eq!(t.get(rid)["theme"], "light");
    assert!(
        cached_under_current_stamp(&mut t, rid),
        "kept again at the second get under the new stamp"
    );
}

#[test]
fn a_token_event_clears_the_cached_reply() {
    let mut t = T::new();
    assert_eq!(get_cached(&mut t, "session.user.c1"), null_user());
    t.token("c1", ANN);
    assert_eq!(t.get("session.user.c1"), ann_user());
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    t.token("c1", BOB);
    assert_eq!(t.get("session.user.c1"), bob_user());
}

#[test]
fn logout_clears_the_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    t.token("c1", LOGOUT);
    assert_eq!(t.get("session.user.c1"), null_user());
}

#[test]
fn writes_clear_the_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    set(&mut t, "session.prefs.c1", "c1", json!({"theme": "dark"}));
    assert_eq!(get_cached(&mut t, "session.prefs.c1")["theme"], "dark");
    // A client set.
    set(&mut t, "session.prefs.c1", "c1", json!({"fontSize": 20}));
    assert_eq!(
        get_cached(&mut t, "session.prefs.c1"),
        json!({"theme": "dark", "fontSize": 20})
    );
    // A backend set.
    let out = t.handle(Request::ApiSet {
        rid: "session.prefs.c1",
        payload: br#"{"values":{"theme":"light"}}"#,
    });
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get("session.prefs.c1")["theme"], "light");
}

#[test]
fn resets_clear_the_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    // notes.{cid} follows the token (its call rule reads it): it stays remembered, and
    // cached, with nothing written.
    api_set(&mut t, "notes.c1", json!({"text": "x"}));
    assert_eq!(get_cached(&mut t, "notes.c1"), json!({"text": "x"}));
    let out = t.handle(Request::ApiReset {
        rid: "notes.c1",
        payload: b"",
    });
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(get_cached(&mut t, "notes.c1"), json!({"text": null}));
    api_set(&mut t, "notes.c1", json!({"text": "y"}));
    assert_eq!(get_cached(&mut t, "notes.c1"), json!({"text": "y"}));
    let out = t.call("notes.c1", "reset", r#"{"cid":"c1"}"#);
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.get("notes.c1"), json!({"text": null}));
}

#[test]
fn logout_resetting_written_fields_clears_the_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    api_set(&mut t, "notes.c1", json!({"text": "x"}));
    assert_eq!(get_cached(&mut t, "notes.c1"), json!({"text": "x"}));
    t.token("c1", LOGOUT);
    assert_eq!(t.get("notes.c1"), json!({"text": null}));
}

#[test]
fn expiry_takes_the_cached_reply_with_the_connection() {
    let mut t = T::with_state("state: { idle_ttl: 1h }\n");
    t.token("c1", ANN);
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    t.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(t.engine.sweep(&t.config), 1);
    // Expiry never shows an open connection as logged out to a gateway that caches
    // the model (it is reset under `access`); a get after it starts from nothing.
    assert_eq!(t.get("session.user.c1"), null_user());
}

#[test]
fn a_reload_outdates_every_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    set(&mut t, "session.prefs.c1", "c1", json!({"fontSize": 20}));
    assert_eq!(get_cached(&mut t, "session.prefs.c1")["theme"], "light");
    let new = Config::parse(
        "t.yaml",
        &YAML
            .replace("{{token.name}}", "{{token.role}}")
            .replace("default: light", "default: dark"),
    )
    .unwrap();
    t.engine.reloaded(&t.config, &new);
    let old = std::mem::replace(&mut t.config, new);
    assert_eq!(t.get("session.user.c1")["name"], "admin");
    assert_eq!(
        get_cached(&mut t, "session.prefs.c1"),
        json!({"theme": "dark", "fontSize": 20})
    );
    // Back to the old config (another compiled config, as a reload makes): nothing
    // cached under the new one is served.
    let back = Config::parse("t.yaml", YAML).unwrap();
    assert_ne!(back.id(), old.id());
    t.engine.reloaded(&t.config, &back);
    t.config = back;
    assert_eq!(t.get("session.user.c1"), ann_user());
    assert_eq!(t.get("session.prefs.c1")["theme"], "light");
}

#[test]
fn a_config_swapped_in_without_a_reload_call_outdates_cached_replies() {
    let mut t = T::new();
    t.token("c1", ANN);
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    t.config = Config::parse("t.yaml", &YAML.replace("{{token.name}}", "{{token.role}}")).unwrap();
    assert_eq!(t.get("session.user.c1")["name"], "admin");
}

#[test]
fn a_token_filled_in_after_a_reconnect_clears_the_cached_reply() {
    let mut t = T::new();
    t.token("c1", ANN);
    assert_eq!(get_cached(&mut t, "session.user.c1"), ann_user());
    t.engine.reconnected();
    assert!(!cached_under_current_stamp(&mut t, "session.user.c1"));
    // Bob logged in while we were away; the next access request says so.
    let bob = r#"{"cid":"c1","token":{"userId":7,"name":"Bob","role":"user"}}"#;
    let out = t.access("session.user.c1", bob);
    assert_eq!(
        events(&out),
        vec![change(
            "session.user.c1",
            json!({"id": 7, "name": "Bob", "role": "user", "user": {"rid": "users.user.7"}})
        )]
    );
    assert_eq!(get_cached(&mut t, "session.user.c1"), bob_user());
}

/// True when the model's cached reply would be served now.
fn cached_under_current_stamp(t: &mut T, rid: &str) -> bool {
    let cid = rid.rsplit('.').next().unwrap();
    let stamp = t.engine.stamp;
    t.engine
        .store()
        .connection(cid)
        .and_then(|c| c.model(cid, rid))
        .is_some_and(|m| m.reply(stamp).is_some())
}

#[test]
fn a_token_learned_from_a_call_clears_the_cached_reply() {
    let mut t = T::new();
    assert_eq!(get_cached(&mut t, "session.user.c1"), null_user());
    // c1 is unconfirmed: a call's token fills in its record.
    let payload = json!({"cid": "c1", "token": {"userId": 42, "name": "Ann", "role": "admin"}, "params": {"theme": "dark"}}).to_string();
    t.call("session.prefs.c1", "set", &payload);
    assert_eq!(t.get("session.user.c1"), ann_user());
}
