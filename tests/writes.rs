//! The client write path: `call.<rid>.set` and `call.<rid>.reset`. Validation
//! of RES values per field, atomic rejection, change events before replies, ordering
//! under concurrent callers, access, `writable` rules, and `reset.on_logout`.

mod common;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use common::*;
use futures::future::join_all;
use futures::StreamExt;
use serde_json::{json, Map, Value};

/// The seed's prefs plus a resource with one field of every type and constraint, and a
/// cart whose written fields reset on logout (the default).
const WRITES: &str = r#"
version: 1
resources:
  session.prefs.{cid}:
    fields:
      theme:    { type: string,  default: light, enum: [light, dark], writable: true }
      fontSize: { type: integer, default: 14, min: 8, max: 32, writable: true }
    reset: { on_logout: false }
    access:
      get: cid == params.cid
      call:
        set: cid == params.cid && token != null
        reset: cid == params.cid
  t.form.{cid}:
    fields:
      count: { type: integer, writable: true, min: 0, max: 1000 }
      ratio: { type: number,  writable: true, min: 0, max: 1.5 }
      label: { type: string,  writable: true, max_length: 5 }
      code:  { type: string,  writable: true, pattern: "^[A-Z]{3}$" }
      level: { type: integer, writable: true, enum: [1, 2, 3] }
      flag:  { type: boolean, writable: true, default: false }
      link:  { type: ref,     writable: true }
      blob:  { type: data,    writable: true }
      owner: { type: integer, from: "{{token.userId}}" }
      note:  { type: string,  default: fixed }
    access:
      get: cid == params.cid
      call: cid == params.cid
  t.cart.{cid}:
    fields:
      owner: { type: integer, from: "{{token.userId}}" }
      item:  { type: string,  writable: true }
      qty:   { type: integer, writable: true, default: 1, min: 1 }
    access:
      get: cid == params.cid
      call: cid == params.cid && token != null
"#;

fn token() -> Value {
    json!({"userId": 7})
}

fn assert_ok(reply: &Value) {
    assert_eq!(reply, &json!({"result": null}), "expected success");
}

/// A `system.invalidParams` reply whose message contains every needle.
fn assert_invalid(reply: &Value, needles: &[&str]) {
    assert_eq!(
        reply["error"]["code"], "system.invalidParams",
        "expected invalidParams, got {reply}"
    );
    let message = reply["error"]["message"].as_str().expect("a message");
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} should mention {needle:?}"
        );
    }
}

fn assert_code(reply: &Value, code: &str) {
    assert_eq!(reply["error"]["code"], code, "expected {code}, got {reply}");
}

/// The change events delivered so far must be exactly `expected` (values per event).
fn assert_changes(gw: &mut Gateway, rid: &str, expected: &[Value]) {
    let events = gw.pending_events();
    let subject = format!("event.{rid}.change");
    let want: Vec<(String, Value)> = expected
        .iter()
        .map(|v| (subject.clone(), json!({ "values": v })))
        .collect();
    assert_eq!(events, want);
}

/// A second connection subscribed to every subject: it sees what connres publishes in
/// the order connres published it (one publisher connection, one subscription).
async fn wire(server: &NatsServer) -> (Client, Subscriber) {
    let client = async_nats::connect(&server.url).await.expect("connects");
    let sub = client.subscribe(">").await.expect("subscribes");
    client.flush().await.expect("flushes");
    (client, sub)
}

async fn next_msg(sub: &mut Subscriber) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message arrives")
        .expect("subscription open")
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("JSON payload")
}

#[tokio::test]
async fn set_announces_only_changed_fields_and_reset_restores_defaults() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "session.prefs.c1";
    // As a gateway would: access with the token first (it fills in the unknown
    // connection), then get.
    let r = gw.access(rid, "c1", token()).await;
    assert_eq!(r, json!({"result": {"get": true, "call": "set,reset"}}));
    assert_eq!(gw.get(rid).await, json!({"theme": "light", "fontSize": 14}));

    // fontSize is already 14: only theme changed.
    let r = gw
        .call(
            rid,
            "set",
            "c1",
            token(),
            json!({"theme": "dark", "fontSize": 14}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"theme": "dark"})]);
    assert_eq!(gw.get(rid).await, json!({"theme": "dark", "fontSize": 14}));

    // Nothing changes: success, no event.
    let r = gw
        .call(rid, "set", "c1", token(), json!({"theme": "dark"}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[]);
    let r = gw.call(rid, "set", "c1", token(), json!({})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[]);

    // 20.0 is the integer 20.
    let r = gw
        .call(rid, "set", "c1", token(), json!({"fontSize": 20.0}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"fontSize": 20})]);
    assert_eq!(gw.get(rid).await, json!({"theme": "dark", "fontSize": 20}));

    // reset: every written field back to its default, in one event.
    let r = gw.call(rid, "reset", "c1", token(), json!(null)).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"theme": "light", "fontSize": 14})]);
    assert_eq!(gw.get(rid).await, json!({"theme": "light", "fontSize": 14}));

    // A reset with nothing written changes nothing.
    let r = gw.call(rid, "reset", "c1", token(), json!(null)).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[]);

    // Writing the default value, then resetting: no visible change either time.
    let r = gw
        .call(rid, "set", "c1", token(), json!({"theme": "light"}))
        .await;
    assert_ok(&r);
    let r = gw.call(rid, "reset", "c1", token(), json!(null)).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[]);
    connres.stop().await;
}

#[tokio::test]
async fn every_type_accepts_its_res_values() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "t.form.c1";
    let mut model = gw.get(rid).await;
    assert_eq!(
        model,
        json!({"count": null, "ratio": null, "label": null, "code": null, "level": null,
               "flag": false, "link": null, "blob": null, "owner": null, "note": "fixed"})
    );

    // (params, the change event's values or null for no event)
    let steps = [
        (json!({"count": 7}), json!({"count": 7})),
        (json!({"count": 7.0}), json!(null)),
        (json!({"count": 0}), json!({"count": 0})),
        (json!({"count": 1000}), json!({"count": 1000})),
        (json!({"count": null}), json!({"count": null})),
        (json!({"ratio": 1}), json!({"ratio": 1})),
        (json!({"ratio": 0.25}), json!({"ratio": 0.25})),
        (json!({"ratio": 1.5}), json!({"ratio": 1.5})),
        (json!({"label": "hello"}), json!({"label": "hello"})),
        (json!({"label": "héllö"}), json!({"label": "héllö"})),
        (json!({"label": ""}), json!({"label": ""})),
        (json!({"code": "ABC"}), json!({"code": "ABC"})),
        (json!({"level": 2}), json!({"level": 2})),
        (json!({"level": null}), json!({"level": null})),
        (json!({"level": 3}), json!({"level": 3})),
        (json!({"code": null}), json!({"code": null})),
        (json!({"flag": true}), json!({"flag": true})),
        (json!({"flag": null}), json!({"flag": null})),
        (
            json!({"link": {"rid": "users.user.1"}}),
            json!({"link": {"rid": "users.user.1"}}),
        ),
        (
            json!({"link": "users.user.2"}),
            json!({"link": {"rid": "users.user.2"}}),
        ),
        (json!({"link": {"rid": "users.user.2"}}), json!(null)),
        (
            json!({"blob": {"data": {"a": [1]}}}),
            json!({"blob": {"data": {"a": [1]}}}),
        ),
        (json!({"blob": [1, 2]}), json!({"blob": {"data": [1, 2]}})),
        (json!({"blob": {"data": [1, 2]}}), json!(null)),
        (
            json!({"blob": {"x": 1}}),
            json!({"blob": {"data": {"x": 1}}}),
        ),
        (json!({"blob": {"data": 5}}), json!({"blob": {"data": 5}})),
        (
            json!({"blob": {"data": {"action": "delete"}}}),
            json!({"blob": {"data": {"action": "delete"}}}),
        ),
        (
            json!({"blob": {"data": 1, "more": 2}}),
            json!({"blob": {"data": {"data": 1, "more": 2}}}),
        ),
        (
            json!({"count": 8, "flag": false, "level": 3}),
            json!({"count": 8, "flag": false}),
        ),
    ];
    for (params, change) in steps {
        let r = gw.call(rid, "set", "c1", json!(null), params.clone()).await;
        assert_eq!(r, json!({"result": null}), "set {params}");
        let expected: Vec<Value> = if change.is_null() {
            vec![]
        } else {
            vec![change.clone()]
        };
        let events = gw.pending_events();
        let want: Vec<(String, Value)> = expected
            .iter()
            .map(|v| (format!("event.{rid}.change"), json!({ "values": v })))
            .collect();
        assert_eq!(events, want, "events of set {params}");
        if let Value::Object(values) = change {
            for (k, v) in values {
                model[&k] = v;
            }
        }
        assert_eq!(gw.get(rid).await, model, "model after set {params}");
    }
    connres.stop().await;
}

#[tokio::test]
async fn each_refusal_names_the_field_and_the_rule_and_changes_nothing() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "t.form.c1";
    let r = gw
        .call(
            rid,
            "set",
            "c1",
            json!(null),
            json!({"count": 5, "label": "abc", "blob": [1], "link": "a.b"}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(gw.pending_events().len(), 1);
    let before = gw.get(rid).await;

    let refusals: Vec<(Value, &[&str])> = vec![
        (json!({"count": 2.5}), &["`count`", "not an integer"]),
        (json!({"count": "7"}), &["`count`", "not an integer"]),
        (json!({"count": true}), &["`count`", "not an integer"]),
        (json!({"count": -1}), &["`count`", "below min 0"]),
        (json!({"count": 1001}), &["`count`", "above max 1000"]),
        (json!({"ratio": "0.5"}), &["`ratio`", "not a number"]),
        (json!({"ratio": -0.5}), &["`ratio`", "below min 0"]),
        (json!({"ratio": 2}), &["`ratio`", "above max 1.5"]),
        (json!({"label": 5}), &["`label`", "not a string"]),
        (json!({"label": "toolong"}), &["`label`", "max_length 5"]),
        (json!({"code": "abc"}), &["`code`", "pattern"]),
        (json!({"code": "ABCD"}), &["`code`", "pattern"]),
        (json!({"level": 4}), &["`level`", "enum"]),
        (json!({"level": "2"}), &["`level`", "not an integer"]),
        (json!({"flag": "true"}), &["`flag`", "not a boolean"]),
        (json!({"flag": 1}), &["`flag`", "not a boolean"]),
        (json!({"link": "not a name"}), &["`link`", "resource name"]),
        (json!({"link": "users..1"}), &["`link`", "resource name"]),
        (json!({"link": 5}), &["`link`", "resource name"]),
        (
            json!({"link": {"rid": 5}}),
            &["`link`", "resource reference"],
        ),
        (
            json!({"link": {"rid": "a.b", "x": 1}}),
            &["`link`", "resource reference"],
        ),
        (
            json!({"link": {"rid": "a b"}}),
            &["`link`", "resource name"],
        ),
        (json!({"blob": 5}), &["`blob`", "not data"]),
        (json!({"blob": "text"}), &["`blob`", "not data"]),
        (json!({"blob": true}), &["`blob`", "not data"]),
        (
            json!({"label": {"a": 1}}),
            &["`label`", "only allowed in data"],
        ),
        (
            json!({"label": ["a"]}),
            &["`label`", "only allowed in data"],
        ),
        (json!({"count": [1]}), &["`count`", "only allowed in data"]),
        (
            json!({"count": {"data": 1}}),
            &["`count`", "only allowed in data"],
        ),
        (
            json!({"label": {"action": "delete"}}),
            &["`label`", "deleted"],
        ),
        (
            json!({"blob": {"action": "delete"}}),
            &["`blob`", "deleted"],
        ),
        (
            json!({"link": {"action": "delete"}}),
            &["`link`", "deleted"],
        ),
        (json!({"nope": 1}), &["`nope`", "not declared"]),
        (json!({"note": "x"}), &["`note`", "read-only"]),
        (json!({"owner": 5}), &["`owner`", "from"]),
        (json!({"owner": null}), &["`owner`", "from"]),
    ];
    for (params, needles) in refusals {
        let r = gw.call(rid, "set", "c1", json!(null), params.clone()).await;
        assert_invalid(&r, needles);
        assert!(gw.pending_events().is_empty(), "no event for {params}");
    }

    // Params that are not an object of fields.
    let set = format!("call.{rid}.set");
    for params in [json!(5), json!("x"), json!([1]), json!(true), json!(null)] {
        let r = gw
            .request(&set, json!({"cid": "c1", "params": params}))
            .await;
        assert_invalid(&r, &["params"]);
    }
    let r = gw.request(&set, json!({"cid": "c1"})).await;
    assert_invalid(&r, &["params"]);
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await, before);
    connres.stop().await;
}

#[tokio::test]
async fn one_bad_field_rejects_the_whole_call() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "t.form.c1";
    let before = gw.get(rid).await;

    let r = gw
        .call(
            rid,
            "set",
            "c1",
            json!(null),
            json!({"count": 9, "label": "toolong", "level": 2, "flag": true}),
        )
        .await;
    assert_invalid(&r, &["`label`", "max_length 5"]);
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await, before);

    // Every bad field is named, good ones are not applied.
    let r = gw
        .call(
            rid,
            "set",
            "c1",
            json!(null),
            json!({"count": -1, "level": 9, "code": "ABC", "ghost": 1}),
        )
        .await;
    assert_invalid(
        &r,
        &[
            "`count`",
            "below min",
            "`level`",
            "enum",
            "`ghost`",
            "not declared",
        ],
    );
    assert!(!r["error"]["message"].as_str().unwrap().contains("`code`"));
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await, before);

    // On the seed prefs too, and a later good call still works.
    let prefs = "session.prefs.c2";
    let r = gw
        .call(
            prefs,
            "set",
            "c2",
            token(),
            json!({"theme": "dark", "fontSize": 33}),
        )
        .await;
    assert_invalid(&r, &["`fontSize`", "above max 32"]);
    assert!(gw.pending_events().is_empty());
    assert_eq!(
        gw.get(prefs).await,
        json!({"theme": "light", "fontSize": 14})
    );
    let r = gw
        .call(
            prefs,
            "set",
            "c2",
            token(),
            json!({"theme": "dark", "fontSize": 32}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, prefs, &[json!({"theme": "dark", "fontSize": 32})]);
    connres.stop().await;
}

#[tokio::test]
async fn calls_are_checked_payload_method_access_fields_in_that_order() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let set = "call.session.prefs.c1.set";

    // Payload not a JSON object: invalidParams, even for an unknown method.
    for body in ["", "[1]", "not json", "\"x\"", "{\"cid\": "] {
        let r = gw.request_raw(set, Bytes::from(body)).await;
        assert_code(&r, "system.invalidParams");
        let r = gw
            .request_raw("call.session.prefs.c1.frob", Bytes::from(body))
            .await;
        assert_code(&r, "system.invalidParams");
    }
    // Unknown method: methodNotFound, even for a requester access would deny.
    let r = gw
        .call("session.prefs.c1", "frob", "c2", json!(null), json!({}))
        .await;
    assert_code(&r, "system.methodNotFound");
    // Access before fields: another connection with bad fields is denied.
    let r = gw
        .call(
            "session.prefs.c1",
            "set",
            "c2",
            token(),
            json!({"ghost": 1, "fontSize": 99}),
        )
        .await;
    assert_code(&r, "system.accessDenied");
    // The owner with the same bad fields: invalidParams.
    let r = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            token(),
            json!({"ghost": 1, "fontSize": 99}),
        )
        .await;
    assert_invalid(&r, &["`ghost`", "`fontSize`"]);
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn access_is_checked_on_every_call() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "session.prefs.c1";
    let r = gw
        .call(rid, "set", "c1", token(), json!({"theme": "dark"}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"theme": "dark"})]);

    // Another connection may neither set nor reset c1's prefs.
    let r = gw
        .call(rid, "set", "c2", token(), json!({"theme": "light"}))
        .await;
    assert_code(&r, "system.accessDenied");
    let r = gw.call(rid, "reset", "c2", token(), json!(null)).await;
    assert_code(&r, "system.accessDenied");
    // `set` needs a token, `reset` does not.
    let r = gw
        .call(
            "session.prefs.c3",
            "set",
            "c3",
            json!(null),
            json!({"theme": "light"}),
        )
        .await;
    assert_code(&r, "system.accessDenied");
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await, json!({"theme": "dark", "fontSize": 14}));
    let r = gw.call(rid, "reset", "c1", json!(null), json!(null)).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"theme": "light"})]);

    // A connection without a token may not call t.cart (`token != null`).
    let r = gw
        .call("t.cart.c3", "set", "c3", json!(null), json!({"item": "x"}))
        .await;
    assert_code(&r, "system.accessDenied");
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn a_call_in_flight_across_a_logout_is_judged_by_the_logout() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "t.cart.c1";
    gw.subscribe(rid, "c1", Value::Null).await;
    gw.token("c1", token()).await;
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{rid}.change"),
            json!({"values": {"owner": 7}})
        )
    );
    assert_eq!(gw.next_event().await.0, format!("event.{rid}.reaccess"));
    let r = gw
        .call(rid, "set", "c1", token(), json!({"item": "book"}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"item": "book"})]);
    gw.token("c1", Value::Null).await;
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{rid}.change"),
            json!({"values": {"owner": null, "item": null}})
        )
    );
    // Sent before the gateway saw the logout: it still carries the old token.
    let r = gw
        .call(rid, "set", "c1", token(), json!({"item": "pen"}))
        .await;
    assert_code(&r, "system.accessDenied");
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await["item"], json!(null));
    connres.stop().await;
}

/// Items need a login, a coupon does not: a `writable` rule per field.
const SHOP: &str = r#"
version: 1
resources:
  t.shop.{cid}:
    fields:
      items:  { type: integer, default: 0, writable: token != null }
      coupon: { type: string, writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
"#;

#[tokio::test]
async fn a_writable_rule_decides_each_set_that_writes_its_field() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SHOP).await;
    let rid = "t.shop.c1";
    // The call rule grants; which fields a set may write is the fields' business.
    let r = gw.access(rid, "c1", Value::Null).await;
    assert_eq!(r, json!({"result": {"get": true, "call": "*"}}));
    let r = gw
        .call(
            rid,
            "set",
            "c1",
            Value::Null,
            json!({"items": 2, "coupon": "A"}),
        )
        .await;
    assert_invalid(
        &r,
        &["field `items` is not writable for this call: its `writable` rule denies"],
    );
    let message = r["error"]["message"].as_str().unwrap();
    assert!(!message.contains("coupon"), "{message}");
    assert!(
        gw.pending_events().is_empty(),
        "nothing of the set is applied"
    );
    let r = gw
        .call(rid, "set", "c1", Value::Null, json!({"coupon": "A"}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"coupon": "A"})]);
    // After the login the rule grants.
    gw.token("c1", token()).await;
    let r = gw
        .call(rid, "set", "c1", token(), json!({"items": 2}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"items": 2})]);
    assert_eq!(gw.get(rid).await, json!({"items": 2, "coupon": "A"}));
    connres.stop().await;
}

#[tokio::test]
async fn change_event_is_on_the_wire_before_the_reply() {
    let server = NatsServer::start();
    let (connres, _gw) = start(&server, WRITES).await;
    let (client, mut sub) = wire(&server).await;

    for (i, (method, params, values)) in [
        (
            "set",
            json!({"theme": "dark", "fontSize": 9}),
            json!({"theme": "dark", "fontSize": 9}),
        ),
        ("set", json!({"fontSize": 10}), json!({"fontSize": 10})),
        (
            "reset",
            json!(null),
            json!({"theme": "light", "fontSize": 14}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let inbox = format!("_TEST_REPLY.order.{i}");
        let payload = json!({"cid": "c1", "token": token(), "params": params});
        client
            .publish_with_reply(
                format!("call.session.prefs.c1.{method}"),
                inbox.clone(),
                Bytes::from(payload.to_string()),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
        // Everything on the one subscription up to the reply, in arrival order.
        let mut seen = Vec::new();
        loop {
            let msg = next_msg(&mut sub).await;
            let subject = msg.subject.to_string();
            let done = subject == inbox;
            seen.push((subject, msg.payload));
            if done {
                break;
            }
        }
        let published: Vec<(&str, Value)> = seen
            .iter()
            .filter(|(s, _)| !s.starts_with("call."))
            .map(|(s, p)| (s.as_str(), parse(p)))
            .collect();
        assert_eq!(
            published,
            vec![
                ("event.session.prefs.c1.change", json!({ "values": values })),
                (inbox.as_str(), json!({"result": null})),
            ],
            "{method}: the change event comes first, then the reply"
        );
    }
    connres.stop().await;
}

/// 200 sets of distinct values from four connections at once: each is applied and
/// announced on its own, in handling order, each event right before its reply.
#[tokio::test]
async fn concurrent_sets_are_applied_and_announced_one_at_a_time() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let (_watcher, mut sub) = wire(&server).await;
    let rid = "t.form.c1";
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(async_nats::connect(&server.url).await.unwrap());
    }
    const N: usize = 200;
    let calls = (0..N).map(|i| {
        let client = clients[i % clients.len()].clone();
        async move {
            let payload = json!({"cid": "c1", "params": {"count": i + 1}}).to_string();
            let reply = tokio::time::timeout(
                WAIT,
                client.request(format!("call.{rid}.set"), Bytes::from(payload)),
            )
            .await
            .expect("a reply in time")
            .expect("a reply");
            parse(&reply.payload)
        }
    });
    let replies = join_all(calls).await;
    assert_eq!(replies.len(), N);
    assert!(replies.iter().all(|r| r == &json!({"result": null})));

    // What the watcher saw: every request (with its reply inbox), then connres's
    // events and replies in the order connres published them.
    let mut requested = std::collections::HashMap::new();
    let mut published = Vec::new();
    let mut replies_seen = 0;
    while replies_seen < N {
        let msg = next_msg(&mut sub).await;
        let subject = msg.subject.to_string();
        if subject.starts_with("call.") {
            let body = parse(&msg.payload);
            requested.insert(
                msg.reply
                    .expect("requests have a reply subject")
                    .to_string(),
                body["params"]["count"].clone(),
            );
        } else if subject.starts_with("event.") {
            assert_eq!(subject, format!("event.{rid}.change"));
            published.push((None, parse(&msg.payload)));
        } else if subject.starts_with("_INBOX.") {
            replies_seen += 1;
            published.push((Some(subject), parse(&msg.payload)));
        }
    }
    assert_eq!(published.len(), 2 * N);
    let mut announced = Vec::new();
    for pair in published.chunks(2) {
        let (None, event) = &pair[0] else {
            panic!("expected an event before each reply, got {pair:?}")
        };
        let (Some(inbox), reply) = &pair[1] else {
            panic!("expected a reply after each event, got {pair:?}")
        };
        assert_eq!(reply, &json!({"result": null}));
        let value = &event["values"]["count"];
        assert_eq!(event, &json!({"values": {"count": value}}));
        assert_eq!(
            requested.get(inbox),
            Some(value),
            "the event right before a reply carries that request's value"
        );
        announced.push(value.clone());
    }
    let mut sorted: Vec<u64> = announced.iter().map(|v| v.as_u64().unwrap()).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=N as u64).collect::<Vec<_>>());

    // The gateway got the same events in the same order, and the final state is the
    // last one announced (its get reply comes after every event).
    let model = gw.get(rid).await;
    assert_eq!(&model["count"], announced.last().unwrap());
    let events: Vec<Value> = gw
        .pending_events()
        .into_iter()
        .map(|(subject, payload)| {
            assert_eq!(subject, format!("event.{rid}.change"));
            payload["values"]["count"].clone()
        })
        .collect();
    assert_eq!(events, announced);
    connres.stop().await;
}

/// 200 concurrent sets of two fields, many of them no-ops: replaying the change events
/// on the first state gives the final state, and each event lists only real changes.
#[tokio::test]
async fn concurrent_mixed_sets_replay_to_the_final_state() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "session.prefs.c1";
    let initial = gw.subscribe(rid, "c1", Value::Null).await;
    assert_eq!(initial, json!({"theme": "light", "fontSize": 14}));
    // Log in by event; the reaccess it causes is the barrier that it was handled.
    gw.token("c1", token()).await;
    assert_eq!(
        gw.next_event().await,
        (format!("event.{rid}.reaccess"), json!(null))
    );

    let mut clients = vec![gw.client.clone()];
    for _ in 0..3 {
        clients.push(async_nats::connect(&server.url).await.unwrap());
    }
    const N: usize = 200;
    let calls = (0..N).map(|i| {
        let client = clients[i % clients.len()].clone();
        let theme = if (i * 7) % 3 == 0 { "dark" } else { "light" };
        let size = 8 + (i * 13) % 25;
        let params = match i % 3 {
            0 => json!({"theme": theme, "fontSize": size}),
            1 => json!({"theme": theme}),
            _ => json!({"fontSize": size}),
        };
        async move {
            let payload = json!({"cid": "c1", "token": token(), "params": params});
            let reply = tokio::time::timeout(
                WAIT,
                client.request(format!("call.{rid}.set"), Bytes::from(payload.to_string())),
            )
            .await
            .expect("a reply in time")
            .expect("a reply");
            parse(&reply.payload)
        }
    });
    let replies = join_all(calls).await;
    assert!(replies.iter().all(|r| r == &json!({"result": null})));

    // The get reply follows every event of the 200 calls on the gateway's connection.
    let last = gw.get(rid).await;
    let events = gw.pending_events();
    assert!(!events.is_empty() && events.len() <= N);
    let mut state: Map<String, Value> = initial.as_object().unwrap().clone();
    for (subject, payload) in &events {
        assert_eq!(subject, &format!("event.{rid}.change"));
        let values = payload["values"].as_object().expect("values");
        assert!(!values.is_empty());
        for (k, v) in values {
            let old = state.get(k).expect("a declared field");
            assert_ne!(old, v, "an event lists only changed fields: {payload}");
            state.insert(k.clone(), v.clone());
        }
    }
    assert_eq!(Value::Object(state), last);
    connres.stop().await;
}

#[tokio::test]
async fn reset_keeps_from_fields_following_the_token() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let rid = "t.cart.c1";
    // The call's token fills in the unknown connection before the call is handled.
    let r = gw
        .call(rid, "set", "c1", token(), json!({"item": "pear", "qty": 2}))
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"item": "pear", "qty": 2})]);
    assert_eq!(
        gw.get(rid).await,
        json!({"owner": 7, "item": "pear", "qty": 2})
    );
    let r = gw.call(rid, "reset", "c1", token(), json!(null)).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"item": null, "qty": 1})]);
    assert_eq!(
        gw.get(rid).await,
        json!({"owner": 7, "item": null, "qty": 1})
    );
    let r = gw
        .call(rid, "set", "c1", token(), json!({"owner": 8}))
        .await;
    assert_invalid(&r, &["`owner`", "from"]);
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn logout_resets_written_fields_unless_on_logout_is_false() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let cart = "t.cart.c1";
    let prefs = "session.prefs.c1";
    // The gateway asks access without a token: c1 is known and logged out.
    for rid in [cart, prefs] {
        let r = gw.access(rid, "c1", json!(null)).await;
        assert_eq!(r["result"]["get"], json!(true));
    }

    gw.token("c1", json!({"userId": 7})).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(gw.next_event().await);
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events,
        vec![
            (format!("event.{prefs}.reaccess"), json!(null)),
            (
                format!("event.{cart}.change"),
                json!({"values": {"owner": 7}})
            ),
            (format!("event.{cart}.reaccess"), json!(null)),
        ]
    );

    let r = gw
        .call(
            cart,
            "set",
            "c1",
            token(),
            json!({"item": "apple", "qty": 3}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, cart, &[json!({"item": "apple", "qty": 3})]);
    let r = gw
        .call(
            prefs,
            "set",
            "c1",
            token(),
            json!({"theme": "dark", "fontSize": 20}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, prefs, &[json!({"theme": "dark", "fontSize": 20})]);

    // Logout: the cart (on_logout default true) goes back to its defaults with its
    // `from` field in one event; the prefs (on_logout: false) keep their values.
    gw.token("c1", json!(null)).await;
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{cart}.change"),
            json!({"values": {"owner": null, "item": null, "qty": 1}})
        )
    );
    assert_eq!(
        gw.get(prefs).await,
        json!({"theme": "dark", "fontSize": 20})
    );
    assert_eq!(
        gw.get(cart).await,
        json!({"owner": null, "item": null, "qty": 1})
    );
    assert!(gw.pending_events().is_empty());

    // Logging in again brings the token back, not the written values.
    gw.token("c1", json!({"userId": 8})).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(gw.next_event().await);
    }
    assert!(events.contains(&(
        format!("event.{cart}.change"),
        json!({"values": {"owner": 8}})
    )));
    assert_eq!(
        gw.get(cart).await,
        json!({"owner": 8, "item": null, "qty": 1})
    );
    assert_eq!(
        gw.get(prefs).await,
        json!({"theme": "dark", "fontSize": 20})
    );
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

/// Writes by one connection never show up in another's model.
#[tokio::test]
async fn writes_stay_on_their_own_connection() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, WRITES).await;
    let r = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            token(),
            json!({"theme": "dark"}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, "session.prefs.c1", &[json!({"theme": "dark"})]);
    assert_eq!(
        gw.get("session.prefs.c2").await,
        json!({"theme": "light", "fontSize": 14})
    );
    let r = gw
        .call("session.prefs.c2", "reset", "c2", json!(null), json!(null))
        .await;
    assert_ok(&r);
    assert!(gw.pending_events().is_empty());
    assert_eq!(
        gw.get("session.prefs.c1").await,
        json!({"theme": "dark", "fontSize": 14})
    );
    connres.stop().await;
}
