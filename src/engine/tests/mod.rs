//! Unit tests of [`Engine::handle`]: a parsed config, the in-memory store, no NATS.

use super::*;
use crate::clock::Clock;
use crate::store::{token_digest, MemoryStore};
use serde_json::json;

/// The seed config plus a resource whose written fields reset on logout, one whose
/// access rule fails at run time without a token, and one with another capture and a
/// single call rule.
const YAML: &str = concat!(
    include_str!("../../../tests/config/valid/seed.yaml"),
    r#"
  session.draft.{cid}:
    fields:
      text: { type: string, default: "", writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
  admin.panel.{cid}:
    fields:
      open: { type: boolean, default: false }
    access:
      get: token.role == 'admin'
  chat.{room}.typing.{cid}:
    fields:
      room:   { type: string, from: "{{params.room}}" }
      typing: { type: boolean, default: false, writable: true }
    access:
      get: "true"
      call: cid == params.cid
  notes.{cid}:
    fields:
      text: { type: string }
    access:
      get: "true"
      call: token != null
  public.board.{name}:
    fields:
      title: { type: string }
    access:
      get: "true"
"#
);

const ANN: &str = r#"{"token":{"userId":42,"name":"Ann","role":"admin"}}"#;
const LOGOUT: &str = r#"{"token":null}"#;

struct T {
    config: Config,
    engine: Engine,
    clock: Clock,
}

impl T {
    fn new() -> T {
        T::with_state("")
    }

    /// The test config with a `state:` block (e.g. "state: { idle_ttl: 1h }\n") and a
    /// manual clock.
    fn with_state(state: &str) -> T {
        let yaml = format!("{state}{YAML}");
        let clock = Clock::manual();
        T {
            config: Config::parse("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}")),
            engine: Engine::new(MemoryStore::default(), clock.clone()),
            clock,
        }
    }

    fn handle(&mut self, request: Request) -> Outcome {
        self.engine.handle(&self.config, request)
    }

    /// The model a get answers; asserts the get produced no events.
    fn get(&mut self, rid: &str) -> Value {
        let out = self.handle(Request::Get { rid });
        assert!(out.events.is_empty(), "get published {:?}", events(&out));
        let reply = reply(&out);
        assert_eq!(reply.as_object().map(|o| o.len()), Some(1), "{reply}");
        reply["result"]["model"].clone()
    }

    fn access(&mut self, rid: &str, payload: &str) -> Outcome {
        self.handle(Request::Access {
            rid,
            payload: payload.as_bytes(),
        })
    }

    fn call(&mut self, rid: &str, method: &str, payload: &str) -> Outcome {
        self.handle(Request::Call {
            rid,
            method,
            payload: payload.as_bytes(),
        })
    }

    /// A token event; asserts it got no reply and returns its events.
    fn token(&mut self, cid: &str, payload: &str) -> Vec<(String, Value)> {
        let out = self.handle(Request::Token {
            cid,
            payload: payload.as_bytes(),
        });
        assert!(out.reply.is_none(), "a token event is not answered");
        events(&out)
    }
}

fn reply(out: &Outcome) -> Value {
    let bytes = out.reply.as_ref().expect("a reply");
    serde_json::from_slice(bytes).expect("the reply is JSON")
}

/// The events as subject and parsed payload (null for an empty payload).
fn events(out: &Outcome) -> Vec<(String, Value)> {
    out.events
        .iter()
        .map(|(s, p)| {
            let v = if p.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(p).expect("event payload is JSON")
            };
            (s.clone(), v)
        })
        .collect()
}

/// Applies a list's `add` and `remove` events (those of `rid`) to a gateway's copy, as
/// a gateway does; an index out of range is an error.
fn fold_list(copy: &mut Vec<Value>, rid: &str, events: &[(String, Value)]) -> Result<(), String> {
    for (subject, payload) in events {
        let Some(kind) = subject.strip_prefix(&format!("event.{rid}.")) else {
            continue;
        };
        let idx = payload["idx"].as_u64().ok_or("an event without idx")? as usize;
        match kind {
            "add" if idx <= copy.len() => copy.insert(idx, payload["value"].clone()),
            "remove" if idx < copy.len() => {
                copy.remove(idx);
            }
            _ => return Err(format!("{subject} {payload} does not apply to {copy:?}")),
        }
    }
    Ok(())
}

fn change(rid: &str, values: Value) -> (String, Value) {
    (format!("event.{rid}.change"), json!({ "values": values }))
}

fn reaccess(rid: &str) -> (String, Value) {
    (format!("event.{rid}.reaccess"), Value::Null)
}

fn error_code(out: &Outcome) -> String {
    let r = reply(out);
    assert!(r.get("result").is_none(), "expected an error, got {r}");
    r["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_string()
}

fn error_message(out: &Outcome) -> String {
    reply(out)["error"]["message"]
        .as_str()
        .expect("an error message")
        .to_string()
}

fn null_user() -> Value {
    json!({"id": null, "name": null, "role": null, "user": null})
}

fn ann_user() -> Value {
    json!({"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}})
}

mod bounded;
mod bytes;
mod cache;
mod collections;
mod presence;
mod recheck;
mod shapes;
mod write_rules;

/// How the log names a rule: its name in the resource, its place (the file first when
/// the config is a directory) and its text; or that there is none.
#[test]
fn rules_are_named_in_the_log_by_place_and_text() {
    let config = Config::parse("t.yaml", YAML).unwrap();
    let prefs = config.resource("session.prefs.{cid}").unwrap();
    let set = prefs.access.call.rule("set");
    assert_eq!(
        rule_said(prefs, "call.set", set),
        "call.set at line 21:14: cid == params.cid && token != null"
    );
    let user = config.resource("session.user.{cid}").unwrap();
    assert_eq!(
        rule_said(user, "call.set", user.access.call.rule("set")),
        "no `call.set` rule (denied by default)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.yaml"),
        "version: 1\nresources:\n  session.user.{cid}:\n    fields: {}\n    access:\n      get: cid == params.cid\n",
    )
    .unwrap();
    let config = Config::load(dir.path()).unwrap();
    let user = config.resource("session.user.{cid}").unwrap();
    assert_eq!(
        rule_said(user, "get", user.access.get.as_ref()),
        format!(
            "get at {}:6:12: cid == params.cid",
            dir.path().join("users.yaml").display()
        )
    );
}

#[test]
fn get_of_an_unseen_name_answers_the_defaults() {
    let mut t = T::new();
    assert_eq!(t.get("session.user.c1"), null_user());
    assert_eq!(
        t.get("session.prefs.c1"),
        json!({"theme": "light", "fontSize": 14})
    );
    assert_eq!(t.get("session.draft.c1"), json!({"text": ""}));
    assert_eq!(
        t.get("chat.lobby.typing.c1"),
        json!({"room": "lobby", "typing": false})
    );
}

#[test]
fn access_grants_the_own_connection_only() {
    let mut t = T::new();
    let own = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert!(own.events.is_empty());
    assert_eq!(reply(&own), json!({"result": {"get": true}}));
    let other = t.access("session.user.c1", r#"{"cid":"c2"}"#);
    assert_eq!(reply(&other), json!({"result": {"get": false}}));

    // Per-method call rules list the granted methods; `set` needs a token.
    let prefs = t.access("session.prefs.c1", r#"{"cid":"c1"}"#);
    assert_eq!(
        reply(&prefs),
        json!({"result": {"get": true, "call": "reset"}})
    );
    let prefs = t.access(
        "session.prefs.c3",
        r#"{"cid":"c3","token":{"userId":1},"query":null,"isHttp":false}"#,
    );
    assert_eq!(
        reply(&prefs),
        json!({"result": {"get": true, "call": "set,reset"}})
    );
    let prefs = t.access("session.prefs.c1", r#"{"cid":"c2"}"#);
    assert_eq!(reply(&prefs), json!({"result": {"get": false}}));

    // A single call rule grants every method as `*`.
    let chat = t.access("chat.lobby.typing.c1", r#"{"cid":"c1"}"#);
    assert_eq!(reply(&chat), json!({"result": {"get": true, "call": "*"}}));
    let chat = t.access("chat.lobby.typing.c1", r#"{"cid":"c2"}"#);
    assert_eq!(reply(&chat), json!({"result": {"get": true}}));
}

#[test]
fn login_by_token_event_publishes_one_typed_change() {
    let mut t = T::new();
    t.get("session.user.c1");
    let ev = t.token("c1", ANN);
    assert_eq!(ev, vec![change("session.user.c1", ann_user())]);
    // 42 stays an integer, the ref is a resource reference.
    assert!(ev[0].1["values"]["id"].is_i64());
    assert_eq!(t.get("session.user.c1"), ann_user());
}

#[test]
fn a_token_event_for_a_connection_without_known_models_publishes_nothing() {
    let mut t = T::new();
    assert!(t.token("c1", ANN).is_empty());
    // The token is kept: the first get reflects it.
    assert_eq!(t.get("session.user.c1"), ann_user());
    // Other connections are not affected.
    assert_eq!(t.get("session.user.c2"), null_user());
}

#[test]
fn the_same_token_again_publishes_nothing() {
    let mut t = T::new();
    t.get("session.user.c1");
    assert_eq!(t.token("c1", ANN).len(), 1);
    assert!(t.token("c1", ANN).is_empty());
    // Same token with an extra `tid` and other key order: still the same token.
    assert!(t
        .token(
            "c1",
            r#"{"tid":"t1","token":{"role":"admin","name":"Ann","userId":42}}"#
        )
        .is_empty());
    // A logout twice: one change, then nothing.
    assert_eq!(t.token("c1", LOGOUT).len(), 1);
    assert!(t.token("c1", LOGOUT).is_empty());
}

#[test]
fn one_changed_claim_changes_only_its_fields() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.token("c1", ANN);
    let ev = t.token(
        "c1",
        r#"{"token":{"userId":42,"name":"Bea","role":"admin"}}"#,
    );
    assert_eq!(ev, vec![change("session.user.c1", json!({"name": "Bea"}))]);
    // userId feeds two fields: both change, in declaration order.
    let ev = t.token(
        "c1",
        r#"{"token":{"userId":7,"name":"Bea","role":"admin"}}"#,
    );
    assert_eq!(
        ev,
        vec![change(
            "session.user.c1",
            json!({"id": 7, "user": {"rid": "users.user.7"}})
        )]
    );
    // A claim that breaks the field's enum gives the field its default.
    let ev = t.token("c1", r#"{"token":{"userId":7,"name":"Bea","role":"boss"}}"#);
    assert_eq!(ev, vec![change("session.user.c1", json!({"role": null}))]);
}

#[test]
fn logout_resets_derived_fields_and_written_fields_per_reset_on_logout() {
    let mut t = T::new();
    for rid in ["session.user.c1", "session.prefs.c1", "session.draft.c1"] {
        t.get(rid);
    }
    t.token("c1", ANN);
    let set = t.call(
        "session.prefs.c1",
        "set",
        r#"{"cid":"c1","token":{"userId":42},"params":{"theme":"dark"}}"#,
    );
    assert_eq!(reply(&set), json!({"result": null}));
    let set = t.call(
        "session.draft.c1",
        "set",
        r#"{"cid":"c1","params":{"text":"hello"}}"#,
    );
    assert_eq!(
        events(&set),
        vec![change("session.draft.c1", json!({"text": "hello"}))]
    );

    let ev = t.token("c1", LOGOUT);
    assert_eq!(
        ev,
        vec![
            change("session.user.c1", null_user()),
            change("session.draft.c1", json!({"text": ""})),
        ]
    );
    assert_eq!(t.get("session.user.c1"), null_user());
    assert_eq!(t.get("session.draft.c1"), json!({"text": ""}));
    // reset.on_logout false keeps what was written.
    assert_eq!(
        t.get("session.prefs.c1"),
        json!({"theme": "dark", "fontSize": 14})
    );
}

#[test]
fn a_token_change_without_logout_keeps_written_fields() {
    let mut t = T::new();
    t.get("session.draft.c1");
    t.token("c1", ANN);
    t.call(
        "session.draft.c1",
        "set",
        r#"{"cid":"c1","params":{"text":"x"}}"#,
    );
    assert!(t.token("c1", r#"{"token":{"userId":1}}"#).is_empty());
    assert_eq!(t.get("session.draft.c1"), json!({"text": "x"}));
}

#[test]
fn a_token_in_an_access_request_fills_in_an_unconfirmed_connection() {
    let mut t = T::new();
    t.get("session.user.c1");
    let token = r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"}}"#;
    let out = t.access("session.user.c1", token);
    // The change comes with (and so is published before) the reply.
    assert_eq!(events(&out), vec![change("session.user.c1", ann_user())]);
    assert_eq!(reply(&out), json!({"result": {"get": true}}));
    assert_eq!(t.get("session.user.c1"), ann_user());

    // Now confirmed: a request with another token or none changes nothing.
    let out = t.access(
        "session.user.c1",
        r#"{"cid":"c1","token":{"userId":1,"name":"Old"}}"#,
    );
    assert!(out.events.is_empty());
    let out = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert!(out.events.is_empty());
    assert_eq!(t.get("session.user.c1"), ann_user());
    // Token events still change it.
    assert_eq!(
        t.token("c1", LOGOUT),
        vec![change("session.user.c1", null_user())]
    );
}

#[test]
fn a_token_in_a_call_request_fills_in_an_unconfirmed_connection() {
    let mut t = T::new();
    t.get("session.user.c1");
    let out = t.call(
        "session.draft.c1",
        "set",
        r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"},"params":{"text":"x"}}"#,
    );
    assert_eq!(
        events(&out),
        vec![
            change("session.user.c1", ann_user()),
            change("session.draft.c1", json!({"text": "x"})),
        ]
    );
    assert_eq!(reply(&out), json!({"result": null}));
}

#[test]
fn a_request_without_a_token_confirms_a_logged_out_connection() {
    let mut t = T::new();
    t.get("session.user.c1");
    assert!(t
        .access("session.user.c1", r#"{"cid":"c1"}"#)
        .events
        .is_empty());
    // A later request carrying a token is stale: it cannot log the connection in.
    let out = t.access(
        "session.user.c1",
        r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"}}"#,
    );
    assert!(out.events.is_empty());
    assert_eq!(t.get("session.user.c1"), null_user());
}

#[test]
fn a_stale_request_never_overrides_a_token_event() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.token("c1", ANN);
    // A request sent before the logout still carries the old token; after the logout
    // another one carries a token the connection no longer has.
    t.token("c1", LOGOUT);
    for payload in [
        r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"}}"#,
        r#"{"cid":"c1","token":{"userId":9}}"#,
    ] {
        let out = t.access("session.user.c1", payload);
        assert!(out.events.is_empty(), "{:?}", events(&out));
        let out = t.call("session.draft.c1", "reset", payload);
        assert!(out.events.is_empty(), "{:?}", events(&out));
    }
    assert_eq!(t.get("session.user.c1"), null_user());

    // And a stale request without a token cannot log the user out.
    t.token("c1", ANN);
    let out = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert!(out.events.is_empty());
    assert_eq!(t.get("session.user.c1"), ann_user());
}

#[test]
fn a_superseded_token_event_is_logged_not_applied() {
    let mut t = T::new();
    t.engine.log_tokens();
    t.token("c1", ANN);
    let digests = |t: &T, cid| {
        t.engine
            .store()
            .connection(cid)
            .map(|c| (c.tokens().digests().to_vec(), c.confirmed))
    };
    assert_eq!(
        digests(&t, "c1"),
        Some((vec![token_digest(ANN.as_bytes())], true))
    );
    // A cut could not tell whether the logout was applied: logged as superseded, the token kept
    // until a request fills it in, the record no longer confirmed.
    t.engine.supersede_token("c1", LOGOUT.as_bytes());
    assert_eq!(
        digests(&t, "c1"),
        Some((
            vec![
                token_digest(ANN.as_bytes()),
                ownership::hash::superseded(token_digest(LOGOUT.as_bytes()))
            ],
            false
        ))
    );
    assert_eq!(t.get("session.user.c1"), ann_user());
    // A connection without a record gets one, to hold the log.
    t.engine.supersede_token("c2", ANN.as_bytes());
    assert_eq!(
        digests(&t, "c2"),
        Some((
            vec![ownership::hash::superseded(token_digest(ANN.as_bytes()))],
            false
        ))
    );
    // A malformed event was never applied: nothing changes.
    t.engine.supersede_token("c3", b"{\"tok\":1}");
    t.engine.supersede_token("c.3", ANN.as_bytes());
    assert_eq!(digests(&t, "c3"), None);
    assert_eq!(digests(&t, "c.3"), None);
}

#[test]
fn after_a_reconnect_requests_fill_in_tokens_again() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.get("session.user.c2");
    t.token("c1", ANN);
    t.token("c2", ANN);
    t.engine.reconnected();

    // c1 logged in as someone else while we were away; the next request says so.
    let out = t.access(
        "session.user.c1",
        r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"user"}}"#,
    );
    assert_eq!(
        events(&out),
        vec![change("session.user.c1", json!({"role": "user"}))]
    );
    // c2 logged out while we were away.
    let out = t.access("session.user.c2", r#"{"cid":"c2"}"#);
    assert_eq!(events(&out), vec![change("session.user.c2", null_user())]);
    // Both are confirmed again.
    let out = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert!(out.events.is_empty());
    let out = t.access(
        "session.user.c2",
        r#"{"cid":"c2","token":{"userId":42,"name":"Ann","role":"admin"}}"#,
    );
    assert!(out.events.is_empty());
}

/// Found by the chaos run: an access request held while its partition had no owner,
/// applied after the new owner's cut left the record unconfirmed, filled it in with a
/// token older than the logout applied since.
#[test]
fn a_request_that_waited_fills_in_no_token_record() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.token("c1", ANN);
    t.engine.reconnected();
    let old = r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"user"}}"#;
    let out = t.engine.handle_waited(
        &t.config,
        Request::Access {
            rid: "session.user.c1",
            payload: old.as_bytes(),
        },
    );
    // Decided with the token it carries; the record is left as it was.
    assert_eq!(
        out.reply.as_deref(),
        t.access(
            "session.user.c2",
            r#"{"cid":"c2","token":{"userId":7,"name":"Bo","role":"user"}}"#
        )
        .reply
        .as_deref()
    );
    assert!(out.events.is_empty());
    let c = t.engine.store().connection("c1").expect("kept");
    assert!(!c.confirmed);
    // The next request that did not wait fills it in.
    let out = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert_eq!(events(&out), vec![change("session.user.c1", null_user())]);
    assert!(t.engine.store().connection("c1").expect("kept").confirmed);
}

#[test]
fn login_asks_reaccess_only_for_models_whose_access_reads_the_token() {
    let mut t = T::new();
    // session.user's rule does not read token, session.prefs's call.set does. The
    // gateway asks access before it gets. admin.panel's get reads the token too, but
    // without one it denies everything, and Resgate keeps no denied subscription.
    for rid in ["session.user.c1", "session.prefs.c1", "admin.panel.c1"] {
        t.access(rid, r#"{"cid":"c1"}"#);
        t.get(rid);
    }
    let ev = t.token("c1", ANN);
    assert_eq!(
        ev,
        vec![
            change("session.user.c1", ann_user()),
            reaccess("session.prefs.c1"),
        ]
    );
    // token -> token: the gateway re-asks access by itself.
    let ev = t.token(
        "c1",
        r#"{"token":{"userId":42,"name":"Bea","role":"admin"}}"#,
    );
    assert_eq!(ev, vec![change("session.user.c1", json!({"name": "Bea"}))]);
    // Logout: no reaccess either.
    let ev = t.token("c1", LOGOUT);
    assert_eq!(ev, vec![change("session.user.c1", null_user())]);
    // null -> token again.
    let ev = t.token("c1", r#"{"token":{"userId":1}}"#);
    assert!(ev.contains(&reaccess("session.prefs.c1")), "{ev:?}");
    // Granted while logged in, admin.panel is known from then on.
    t.access("admin.panel.c1", r#"{"cid":"c1","token":{"role":"admin"}}"#);
    t.token("c1", LOGOUT);
    let ev = t.token("c1", r#"{"token":{"userId":1}}"#);
    assert!(ev.contains(&reaccess("admin.panel.c1")), "{ev:?}");
}

#[test]
fn resources_a_connection_was_granted_are_known_for_reaccess() {
    let mut t = T::new();
    // c2 may read c1's notes but not call them without a token: the gateway caches that.
    let out = t.access("notes.c1", r#"{"cid":"c2"}"#);
    assert_eq!(reply(&out), json!({"result": {"get": true}}));
    let ev = t.token("c2", ANN);
    assert_eq!(ev, vec![reaccess("notes.c1")]);
}

#[test]
fn a_denied_access_leaves_nothing_behind() {
    let mut t = T::new();
    for i in 0..100 {
        let out = t.access(&format!("session.prefs.x{i}"), r#"{"cid":"c2"}"#);
        assert_eq!(reply(&out), json!({"result": {"get": false}}));
    }
    assert_eq!(t.engine.store().entries(), 0);
    assert!(t.engine.store().connection("c2").is_none());
    // Resgate drops a subscription whose access is denied: a login owes it nothing.
    assert!(t.token("c2", ANN).is_empty());
}

#[test]
fn a_rule_that_fails_at_run_time_denies() {
    let mut t = T::new();
    // `token.role` on a null token is a CEL error: denied, not a crash.
    let out = t.access("admin.panel.c1", r#"{"cid":"c1"}"#);
    assert_eq!(reply(&out), json!({"result": {"get": false}}));
    // A token without the claim errors too.
    let out = t.access("admin.panel.c2", r#"{"cid":"c2","token":{"userId":1}}"#);
    assert_eq!(reply(&out), json!({"result": {"get": false}}));
    let out = t.access("admin.panel.c3", r#"{"cid":"c3","token":{"role":"admin"}}"#);
    assert_eq!(reply(&out), json!({"result": {"get": true}}));
}

#[test]
fn a_malformed_access_payload_is_an_invalid_params_error() {
    let mut t = T::new();
    for payload in ["", "not json", "[1]", "{}", r#"{"cid":5}"#, "{\"cid\":"] {
        let out = t.access("session.user.c1", payload);
        assert!(out.events.is_empty());
        assert_eq!(
            error_code(&out),
            "system.invalidParams",
            "payload {payload:?}"
        );
        assert!(error_message(&out).contains("access request"));
    }
}

#[test]
fn call_errors_come_in_the_designed_order() {
    let mut t = T::new();
    let rid = "session.prefs.c1";
    // 1. payload not a JSON object, even with an unknown method and no access.
    for payload in ["", "null", "[1]", "\"x\"", "42", "{bad"] {
        let out = t.call(rid, "nope", payload);
        assert_eq!(
            error_code(&out),
            "system.invalidParams",
            "payload {payload:?}"
        );
        assert!(out.events.is_empty());
    }
    // 2. unknown method, even when access would deny.
    let out = t.call(rid, "nope", r#"{"cid":"c2","params":{"bad":1}}"#);
    assert_eq!(error_code(&out), "system.methodNotFound");
    assert!(
        error_message(&out).contains("nope"),
        "{}",
        error_message(&out)
    );
    // 3. access denied, even when the fields are wrong: another connection, and `set`
    // without a token.
    let out = t.call(rid, "set", r#"{"cid":"c2","params":{"bad":1}}"#);
    assert_eq!(error_code(&out), "system.accessDenied");
    let out = t.call(rid, "set", r#"{"cid":"c1","params":{"theme":"dark"}}"#);
    assert_eq!(error_code(&out), "system.accessDenied");
    // 4. fields: unknown, wrong type, broken constraint, each named.
    let ok = r#"{"cid":"c3","token":{"userId":1},"params":"#;
    let rid = "session.prefs.c3";
    for (params, words) in [
        (r#"{"bad":1}"#, &["`bad`", "not declared"][..]),
        (r#"{"fontSize":"big"}"#, &["`fontSize`", "integer"][..]),
        (r#"{"fontSize":40}"#, &["`fontSize`", "max 32"][..]),
        (r#"{"theme":"blue"}"#, &["`theme`", "enum"][..]),
    ] {
        let out = t.call(rid, "set", &format!("{ok}{params}}}"));
        assert_eq!(error_code(&out), "system.invalidParams", "{params}");
        let message = error_message(&out);
        for w in words {
            assert!(message.contains(w), "{params}: {message}");
        }
        assert!(out.events.is_empty());
    }
    assert_eq!(
        t.get(rid),
        json!({"theme": "light", "fontSize": 14}),
        "nothing was written"
    );
}

#[test]
fn a_call_on_a_derived_field_is_refused() {
    let mut t = T::new();
    let out = t.call(
        "chat.lobby.typing.c1",
        "set",
        r#"{"cid":"c1","params":{"room":"other"}}"#,
    );
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(error_message(&out).contains("`room`"));
}

#[test]
fn a_name_no_pattern_matches_gets_no_reply() {
    let mut t = T::new();
    for out in [
        t.handle(Request::Get {
            rid: "session.other.c1",
        }),
        t.handle(Request::Get {
            rid: "session.user.c1.x",
        }),
        t.access("session.other.c1", r#"{"cid":"c1"}"#),
        t.access("session.other.c1", ""),
        t.call("session.other.c1", "set", r#"{"cid":"c1"}"#),
        t.call("session.other.c1", "nope", "[1]"),
    ] {
        assert!(out.reply.is_none());
        assert!(out.events.is_empty());
    }
}

#[test]
fn a_malformed_token_event_is_ignored() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.token("c1", ANN);
    for payload in ["", "nope", "[1]"] {
        assert!(t.token("c1", payload).is_empty());
    }
    assert_eq!(t.get("session.user.c1"), ann_user());
}

/// The valid config fixtures serve what they declare.
#[test]
fn the_valid_fixtures_serve_their_declarations() {
    let load = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/config/valid")
            .join(name);
        Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    let chat = load("chat.yaml");
    let mut engine = Engine::default();
    let out = engine.handle(
        &chat,
        Request::Get {
            rid: "chat.lobby.settings",
        },
    );
    assert_eq!(
        reply(&out)["result"]["model"],
        json!({
            "title": "Room lobby",
            "colors": {"data": {"fg": "black", "bg": "white"}},
            "tags": {"data": ["general", "1"]},
            "slow": 0
        })
    );
    engine.handle(
        &chat,
        Request::Token {
            cid: "c1",
            payload: br#"{"token":{"userId":5}}"#,
        },
    );
    let out = engine.handle(
        &chat,
        Request::Get {
            rid: "chat.lobby.typing.c1",
        },
    );
    assert_eq!(
        reply(&out)["result"]["model"],
        json!({
            "room": "lobby",
            "channel": {"rid": "chat.room.lobby"},
            "user": {"rid": "users.user.5"},
            "typing": false,
            "draft": null
        })
    );

    let profile = load("profile.yaml");
    let mut engine = Engine::default();
    let rid = "session.profile.c1";
    let out = engine.handle(&profile, Request::Get { rid });
    assert_eq!(
        reply(&out)["result"]["model"],
        json!({
            "greeting": "Hello!",
            "admin": false,
            "score": 0.5,
            "nick": null,
            "level": 1,
            "badges": null,
            "home": {"rid": "site.home"}
        })
    );
    let out = engine.handle(
        &profile,
        Request::Token {
            cid: "c1",
            payload: br#"{"token":{"name":"Ann","admin":true}}"#,
        },
    );
    assert_eq!(
        events(&out),
        vec![
            change(rid, json!({"greeting": "Hello, Ann!", "admin": true})),
            reaccess(rid),
        ],
        "its get rule reads `token`"
    );
    // The `set` rule reads `model.level` and `query`.
    let out = engine.handle(
        &profile,
        Request::Access {
            rid,
            payload: br#"{"cid":"c1","query":""}"#,
        },
    );
    assert_eq!(
        reply(&out),
        json!({"result": {"get": true, "call": "set,reset"}})
    );
}

/// Rules that read `model`: the gateway's cached access was computed from the model, so
/// every change of the model asks for re-access, once.
#[test]
fn model_changes_ask_reaccess_when_rules_read_the_model() {
    let yaml = r#"
version: 1
resources:
  doc.owned.{cid}:
    fields:
      owner: { type: string }
      role:  { type: string, from: "{{token.role}}" }
    access:
      get: model.owner == cid || model.role == 'admin' || token != null
"#;
    let mut t = T::new();
    t.config = Config::parse("t.yaml", yaml).unwrap();
    let rid = "doc.owned.c1";
    assert_eq!(t.get(rid), json!({"owner": null, "role": null}));

    // A backend write changes the model: change, then reaccess.
    let payload = json!({"values": {"owner": "c1"}}).to_string();
    let out = t.handle(Request::ApiSet {
        rid,
        payload: payload.as_bytes(),
    });
    assert_eq!(
        events(&out),
        vec![change(rid, json!({"owner": "c1"})), reaccess(rid)]
    );
    // Writing the same value changes nothing and asks nothing.
    let out = t.handle(Request::ApiSet {
        rid,
        payload: payload.as_bytes(),
    });
    assert!(events(&out).is_empty());

    // Login changes a derived field; the rule reads both model and token: one reaccess.
    let evs = t.token("c1", r#"{"token":{"role":"admin"}}"#);
    assert_eq!(
        evs,
        vec![change(rid, json!({"role": "admin"})), reaccess(rid)]
    );
}

#[test]
fn names_resolve_to_the_one_pattern_that_matches_them() {
    // The config finds a `literal.….{capture}` pattern by one lookup of the name's
    // prefix; the result must be a plain scan's, for matching and non-matching names.
    let t = T::new();
    let names = [
        "session.user.c1",
        "session.user.",
        "session.user",
        "session.user.c1.x",
        "session.prefs.c1",
        "session.draft.c1",
        "admin.panel.c1",
        "chat.lobby.typing.c1",
        "chat.lobby.typing.",
        "chat.lobby.c1",
        "notes.c1",
        "notes.",
        "notes",
        "public.board.news",
        "public.board",
        ".c1",
        "x.c1",
        "session..c1",
        "",
    ];
    for name in names {
        let scan = t.config.resources.iter().find(|r| r.pattern.is_match(name));
        let found = t.config.resource_of(name);
        assert_eq!(
            found.map(|r| r.pattern.as_str()),
            scan.map(|r| r.pattern.as_str()),
            "{name}"
        );
        let resolved = t.config.resolve(name);
        assert_eq!(
            resolved
                .as_ref()
                .map(|(r, p)| (r.pattern.as_str(), p.clone())),
            scan.map(|r| (r.pattern.as_str(), r.pattern.matches(name).unwrap())),
            "{name}"
        );
    }
}

/// Found by the chaos run (seed 9): after a NATS outage a gateway that missed token
/// events keeps sending the token it had; an owner whose record is not confirmed (it
/// took the partition with a gap in what it received) must not fill the record in with
/// a token that an applied token event has since replaced. Only the shared store keeps
/// the log that tells (its records move between instances through the bucket).
#[test]
fn a_request_token_older_than_the_last_token_event_fills_nothing_in() {
    const BOB: &str = r#"{"token":{"userId":7,"name":"Bob","role":"user"}}"#;
    let mut t = T::new();
    t.engine.log_tokens();
    t.get("session.user.c1");
    t.token("c1", ANN);
    t.token("c1", BOB);
    t.engine.reconnected();

    // The gateway still holds Ann's token: the record keeps Bob's, unconfirmed.
    let stale = r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"}}"#;
    let out = t.access("session.user.c1", stale);
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    assert_eq!(t.get("session.user.c1")["name"], json!("Bob"));
    // Nor does a logout that a later login replaced.
    t.token("c1", LOGOUT);
    t.token("c1", ANN);
    t.engine.reconnected();
    let out = t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    assert_eq!(t.get("session.user.c1"), ann_user());

    // The token of the last event confirms the record; a token never seen fills it in.
    let out = t.access(
        "session.user.c1",
        r#"{"cid":"c1","token":{"name":"Ann","role":"admin","userId":42}}"#,
    );
    assert!(events(&out).is_empty());
    assert!(t.engine.store().connection("c1").unwrap().confirmed);
    t.engine.reconnected();
    let out = t.access(
        "session.user.c1",
        r#"{"cid":"c1","token":{"userId":9,"name":"Cy","role":"user"}}"#,
    );
    assert_eq!(events(&out).len(), 1, "{:?}", events(&out));
}
