//! The backend write API: `<prefix>.set.<rid>` with `{"values": {...}}` and
//! `<prefix>.reset.<rid>` over NATS request/reply.

mod common;

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const API: &str = r#"
version: 1
resources:
  session.user.{cid}:
    fields:
      id:   { type: integer, from: "{{token.userId}}" }
      name: { type: string,  from: "{{token.name}}" }
    access:
      get: cid == params.cid
  session.status.{cid}:
    fields:
      cartItems: { type: integer, default: 0, min: 0 }
      notice:    { type: string, max_length: 200 }
    access:
      get: cid == params.cid
  session.mixed.{cid}:
    fields:
      locked: { type: integer }
      open:   { type: string, writable: true }
      link:   { type: ref }
      blob:   { type: data }
    access:
      get: cid == params.cid
      call: cid == params.cid
  room.{room}:
    fields:
      topic: { type: string, default: none }
      title: { type: string, from: "Room {{params.room}}" }
    access:
      get: "true"
"#;

fn assert_ok(reply: &Value) {
    assert_eq!(reply, &json!({"result": null}), "expected success");
}

fn assert_error(reply: &Value, code: &str, needles: &[&str]) {
    assert_eq!(reply["error"]["code"], code, "expected {code}, got {reply}");
    let message = reply["error"]["message"].as_str().expect("a message");
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} should mention {needle:?}"
        );
    }
}

/// The change events delivered so far must be exactly `expected` (values per event).
fn assert_changes(gw: &mut Gateway, rid: &str, expected: &[Value]) {
    let want: Vec<(String, Value)> = expected
        .iter()
        .map(|v| (format!("event.{rid}.change"), json!({ "values": v })))
        .collect();
    assert_eq!(gw.pending_events(), want);
}

async fn api_set(gw: &Gateway, rid: &str, values: Value) -> Value {
    gw.request(&format!("connres.set.{rid}"), json!({ "values": values }))
        .await
}

async fn api_reset(gw: &Gateway, rid: &str) -> Value {
    gw.request(&format!("connres.reset.{rid}"), Value::Null)
        .await
}

#[tokio::test]
async fn backend_set_writes_any_plain_field_and_announces_the_change() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let rid = "session.status.c1";
    assert_eq!(gw.get(rid).await, json!({"cartItems": 0, "notice": null}));

    // Neither field is writable by clients; the backend writes both.
    let r = api_set(&gw, rid, json!({"cartItems": 3, "notice": "hi"})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 3, "notice": "hi"})]);
    assert_eq!(gw.get(rid).await, json!({"cartItems": 3, "notice": "hi"}));

    // Only changed fields are announced; no change, no event.
    let r = api_set(&gw, rid, json!({"cartItems": 4, "notice": "hi"})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 4})]);
    let r = api_set(&gw, rid, json!({"cartItems": 4.0})).await;
    assert_ok(&r);
    let r = api_set(&gw, rid, json!({})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[]);
    let r = api_set(&gw, rid, json!({"notice": null})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"notice": null})]);

    // A field clients may not write: the client is refused, the backend is not.
    let mixed = "session.mixed.c1";
    let r = gw
        .call(mixed, "set", "c1", json!(null), json!({"locked": 1}))
        .await;
    assert_error(&r, "system.invalidParams", &["`locked`", "read-only"]);
    assert_changes(&mut gw, mixed, &[]);
    let r = api_set(
        &gw,
        mixed,
        json!({"locked": 1, "open": "yes", "link": "users.user.1", "blob": {"a": [1]}}),
    )
    .await;
    assert_ok(&r);
    assert_changes(
        &mut gw,
        mixed,
        &[
            json!({"locked": 1, "open": "yes", "link": {"rid": "users.user.1"},
                 "blob": {"data": {"a": [1]}}}),
        ],
    );
    assert_eq!(
        gw.get(mixed).await,
        json!({"locked": 1, "open": "yes", "link": {"rid": "users.user.1"},
               "blob": {"data": {"a": [1]}}})
    );
    connres.stop().await;
}

#[tokio::test]
async fn backend_set_refuses_from_fields() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let r = gw
        .access(
            "session.user.c1",
            "c1",
            json!({"userId": 42, "name": "Ann"}),
        )
        .await;
    assert_eq!(r["result"]["get"], json!(true));
    let before = gw.get("session.user.c1").await;
    assert_eq!(before, json!({"id": 42, "name": "Ann"}));

    let r = api_set(&gw, "session.user.c1", json!({"id": 5})).await;
    assert_error(&r, "system.invalidParams", &["`id`", "from"]);
    let r = api_set(&gw, "session.user.c1", json!({"name": null})).await;
    assert_error(&r, "system.invalidParams", &["`name`", "from"]);
    let r = api_set(&gw, "room.lobby", json!({"title": "x", "topic": "y"})).await;
    assert_error(&r, "system.invalidParams", &["`title`", "from"]);
    assert_eq!(
        gw.get("room.lobby").await,
        json!({"topic": "none", "title": "Room lobby"})
    );
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get("session.user.c1").await, before);
    connres.stop().await;
}

#[tokio::test]
async fn backend_set_validates_like_a_client_set_and_is_atomic() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let rid = "session.status.c1";
    let r = api_set(&gw, rid, json!({"cartItems": 2, "notice": "kept"})).await;
    assert_ok(&r);
    assert_eq!(gw.pending_events().len(), 1);
    let before = gw.get(rid).await;

    let long = "x".repeat(201);
    let refusals: Vec<(Value, &[&str])> = vec![
        (json!({"cartItems": -1}), &["`cartItems`", "below min 0"]),
        (
            json!({"cartItems": 2.5}),
            &["`cartItems`", "not an integer"],
        ),
        (
            json!({"cartItems": "3"}),
            &["`cartItems`", "not an integer"],
        ),
        (
            json!({"cartItems": {"a": 1}}),
            &["`cartItems`", "only allowed in data"],
        ),
        (
            json!({"cartItems": [3]}),
            &["`cartItems`", "only allowed in data"],
        ),
        (
            json!({"cartItems": {"action": "delete"}}),
            &["`cartItems`", "deleted"],
        ),
        (json!({"notice": long}), &["`notice`", "max_length 200"]),
        (json!({"notice": 5}), &["`notice`", "not a string"]),
        (json!({"ghost": 1}), &["`ghost`", "not declared"]),
        // One bad field rejects the whole write.
        (
            json!({"cartItems": 9, "notice": long}),
            &["`notice`", "max_length 200"],
        ),
        (
            json!({"cartItems": -5, "notice": "fine", "ghost": true}),
            &["`cartItems`", "`ghost`"],
        ),
    ];
    for (values, needles) in refusals {
        let r = api_set(&gw, rid, values.clone()).await;
        assert_error(&r, "system.invalidParams", needles);
        assert!(gw.pending_events().is_empty(), "no event for {values}");
    }
    let mixed = "session.mixed.c1";
    for (values, needles) in [
        (json!({"link": "not a name"}), ["`link`", "resource name"]),
        (json!({"blob": 5}), ["`blob`", "not data"]),
        (json!({"blob": {"action": "delete"}}), ["`blob`", "deleted"]),
    ] {
        let r = api_set(&gw, mixed, values).await;
        assert_error(&r, "system.invalidParams", &needles);
    }
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await, before);
    connres.stop().await;
}

#[tokio::test]
async fn backend_payload_must_be_an_object_of_values() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let subject = "connres.set.session.status.c1";
    for body in [
        "",
        "junk",
        "[1]",
        "\"x\"",
        "{}",
        "{\"cartItems\": 3}",
        "{\"values\": 5}",
        "{\"values\": [1]}",
        "{\"values\": null}",
        "{\"values\": {\"cartItems\": 3}, \"extra\": 1}",
    ] {
        let r = gw.request_raw(subject, Bytes::from(body)).await;
        assert_error(&r, "system.invalidParams", &[]);
    }
    assert!(gw.pending_events().is_empty());
    assert_eq!(
        gw.get("session.status.c1").await,
        json!({"cartItems": 0, "notice": null})
    );
    connres.stop().await;
}

#[tokio::test]
async fn backend_reset_restores_the_defaults() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let rid = "session.status.c1";
    // Nothing written: nothing to announce.
    let r = api_reset(&gw, rid).await;
    assert_ok(&r);
    assert!(gw.pending_events().is_empty());

    let r = api_set(&gw, rid, json!({"cartItems": 3, "notice": "hi"})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 3, "notice": "hi"})]);
    let r = api_reset(&gw, rid).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 0, "notice": null})]);
    assert_eq!(gw.get(rid).await, json!({"cartItems": 0, "notice": null}));
    let r = api_reset(&gw, rid).await;
    assert_ok(&r);
    assert!(gw.pending_events().is_empty());

    // An empty object is allowed as the payload; anything else is refused, unchanged.
    let r = api_set(&gw, rid, json!({"cartItems": 1})).await;
    assert_ok(&r);
    for junk in [&b"junk"[..], b"[1]", b"\"x\""] {
        let r = gw
            .request_raw(
                &format!("connres.reset.{rid}"),
                bytes::Bytes::copy_from_slice(junk),
            )
            .await;
        Gateway::expect_error(&r, "system.invalidParams");
    }
    let r = gw.request(&format!("connres.reset.{rid}"), json!({})).await;
    assert_ok(&r);
    assert_changes(
        &mut gw,
        rid,
        &[json!({"cartItems": 1}), json!({"cartItems": 0})],
    );

    // The backend resets what a client wrote, too; `from` fields are untouched.
    let mixed = "session.mixed.c1";
    let r = gw
        .call(mixed, "set", "c1", json!(null), json!({"open": "x"}))
        .await;
    assert_ok(&r);
    let r = api_reset(&gw, mixed).await;
    assert_ok(&r);
    assert_changes(
        &mut gw,
        mixed,
        &[json!({"open": "x"}), json!({"open": null})],
    );
    connres.stop().await;
}

#[tokio::test]
async fn names_no_pattern_matches_answer_not_found() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    for rid in [
        "nothing.here",
        "session.status",
        "session.status.c1.extra",
        "session.other.c1",
    ] {
        let r = api_set(&gw, rid, json!({"cartItems": 1})).await;
        assert_error(&r, "system.notFound", &[rid]);
        let r = api_reset(&gw, rid).await;
        assert_error(&r, "system.notFound", &[rid]);
    }
    // notFound comes before the payload is read.
    let r = gw
        .request_raw("connres.set.nothing.here", Bytes::from("junk"))
        .await;
    assert_error(&r, "system.notFound", &[]);
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn names_with_wildcards_are_invalid_params_and_change_nothing() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    // NATS delivers a publish to `*` like any other token; `>` likewise.
    for rid in ["session.status.*", "session.status.>", "room.*"] {
        let r = api_set(&gw, rid, json!({"cartItems": 1})).await;
        assert_error(&r, "system.invalidParams", &["not a valid resource name"]);
        let r = api_reset(&gw, rid).await;
        assert_error(&r, "system.invalidParams", &["not a valid resource name"]);
    }
    // Nothing was stored under `*` and nothing was announced.
    assert_eq!(gw.get("session.status.c1").await["cartItems"], json!(0));
    assert!(gw.pending_events().is_empty());
    let r = gw.request("get.session.status.*", Value::Null).await;
    assert_error(&r, "system.invalidParams", &[]);
    connres.stop().await;
}

#[tokio::test]
async fn backend_writes_to_resources_without_a_connection() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let r = api_set(&gw, "room.lobby", json!({"topic": "news"})).await;
    assert_ok(&r);
    assert_changes(&mut gw, "room.lobby", &[json!({"topic": "news"})]);
    assert_eq!(
        gw.get("room.lobby").await,
        json!({"topic": "news", "title": "Room lobby"})
    );
    assert_eq!(
        gw.get("room.hall").await,
        json!({"topic": "none", "title": "Room hall"})
    );
    let r = api_reset(&gw, "room.lobby").await;
    assert_ok(&r);
    assert_changes(&mut gw, "room.lobby", &[json!({"topic": "none"})]);
    connres.stop().await;
}

#[tokio::test]
async fn backend_writes_follow_reset_on_logout() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, API).await;
    let rid = "session.status.c1";
    // The access request's token logs c1 in (no event: nothing known yet).
    let r = gw.access(rid, "c1", json!({"userId": 1})).await;
    assert_eq!(r["result"]["get"], json!(true));
    let r = api_set(&gw, rid, json!({"cartItems": 5})).await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 5})]);
    gw.token("c1", json!(null)).await;
    assert_eq!(
        gw.next_event().await,
        (
            format!("event.{rid}.change"),
            json!({"values": {"cartItems": 0}})
        )
    );
    assert_eq!(gw.get(rid).await, json!({"cartItems": 0, "notice": null}));
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

/// A second connection subscribed to every subject sees connres's messages in the
/// order connres published them.
async fn wire(server: &NatsServer) -> (Client, Subscriber) {
    let client = async_nats::connect(&server.url).await.expect("connects");
    let sub = client.subscribe(">").await.expect("subscribes");
    client.flush().await.expect("flushes");
    (client, sub)
}

#[tokio::test]
async fn backend_change_event_is_on_the_wire_before_the_reply() {
    let server = NatsServer::start();
    let (connres, _gw) = start(&server, API).await;
    let (client, mut sub) = wire(&server).await;
    for (i, (subject, body, values)) in [
        (
            "connres.set.session.status.c1",
            json!({"values": {"cartItems": 2}}),
            json!({"cartItems": 2}),
        ),
        (
            "connres.reset.session.status.c1",
            json!(null),
            json!({"cartItems": 0}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let inbox = format!("_TEST_REPLY.api.{i}");
        let payload = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        client
            .publish_with_reply(subject, inbox.clone(), payload)
            .await
            .unwrap();
        client.flush().await.unwrap();
        let mut published = Vec::new();
        loop {
            let msg = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("a message arrives")
                .expect("subscription open");
            let s = msg.subject.to_string();
            if s == subject {
                continue; // our own request
            }
            let v: Value = serde_json::from_slice(&msg.payload).unwrap();
            let done = s == inbox;
            published.push((s, v));
            if done {
                break;
            }
        }
        assert_eq!(
            published,
            vec![
                (
                    "event.session.status.c1.change".to_string(),
                    json!({ "values": values })
                ),
                (inbox.clone(), json!({"result": null})),
            ]
        );
    }
    connres.stop().await;
}

#[tokio::test]
async fn custom_api_prefix() {
    let server = NatsServer::start();
    let yaml = API.replacen(
        "version: 1\n",
        "version: 1\napi: { prefix: backend.state }\n",
        1,
    );
    let (connres, mut gw) = start(&server, &yaml).await;
    let rid = "session.status.c1";
    let r = gw
        .request(
            &format!("backend.state.set.{rid}"),
            json!({"values": {"cartItems": 7}}),
        )
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 7})]);
    let r = gw
        .request(&format!("backend.state.reset.{rid}"), Value::Null)
        .await;
    assert_ok(&r);
    assert_changes(&mut gw, rid, &[json!({"cartItems": 0})]);
    let r = gw
        .request("backend.state.set.nothing.here", json!({"values": {}}))
        .await;
    assert_error(&r, "system.notFound", &[]);

    // The default prefix is not served any more: nobody answers.
    for subject in [format!("connres.set.{rid}"), format!("connres.reset.{rid}")] {
        let body = Bytes::from(json!({"values": {"cartItems": 1}}).to_string());
        let result = tokio::time::timeout(WAIT, gw.client.request(subject.clone(), body))
            .await
            .expect("no responders is reported in time");
        let err = result.expect_err("nothing serves the default prefix");
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "{subject}"
        );
    }
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get(rid).await["cartItems"], json!(0));
    connres.stop().await;
}
