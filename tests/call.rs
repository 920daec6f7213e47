//! `call` requests: malformed payloads and method errors, checked in the documented
//! order (payload, method, access, fields), and call rules over what a call writes.
//! Writes are tested elsewhere.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_call_payload_that_is_not_a_json_object_is_invalid_params() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    for payload in ["", "not json", "[1]", "null", "\"x\"", "42", "{\"cid\":"] {
        for method in ["set", "nope"] {
            let subject = format!("call.session.prefs.c1.{method}");
            let reply = gw.request_raw(&subject, Bytes::from(payload)).await;
            Gateway::expect_error(&reply, "system.invalidParams");
        }
    }
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn an_unknown_method_is_method_not_found() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    // Before access: the requester may not call anything on c1's prefs.
    for cid in ["c1", "c2"] {
        let reply = gw
            .call(
                "session.prefs.c1",
                "delete",
                cid,
                json!({"userId": 1}),
                json!({"theme": "dark"}),
            )
            .await;
        let message = Gateway::expect_error(&reply, "system.methodNotFound");
        assert!(message.contains("delete"), "{message}");
    }
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn access_is_checked_before_the_fields() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    // Another connection, and `set` without a token: denied, whatever the params.
    let reply = gw
        .call(
            "session.prefs.c1",
            "set",
            "c2",
            json!({"userId": 1}),
            json!({"nope": 1}),
        )
        .await;
    Gateway::expect_error(&reply, "system.accessDenied");
    let reply = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            json!(null),
            json!({"fontSize": "huge"}),
        )
        .await;
    Gateway::expect_error(&reply, "system.accessDenied");
    let reply = gw
        .call("session.user.c1", "reset", "c1", json!(null), json!(null))
        .await;
    Gateway::expect_error(&reply, "system.accessDenied");
    assert!(gw.pending_events().is_empty());
    assert_eq!(
        gw.get("session.prefs.c1").await,
        json!({"theme": "light", "fontSize": 14})
    );
    connres.stop().await;
}

/// A call rule over what a call writes: logged out, only `address`; a reset writes
/// every field.
const CHECKOUT: &str = r#"
version: 1
resources:
  t.checkout.{cid}:
    fields:
      address: { type: string, writable: true }
      express: { type: boolean, default: false, writable: true }
    access:
      get: cid == params.cid
      call:
        set: cid == params.cid && (token != null || fields.all(f, f == 'address'))
        reset: cid == params.cid && (token != null || !('express' in fields))
"#;

#[tokio::test]
async fn a_call_rule_reads_the_fields_and_values_the_call_writes() {
    let server = NatsServer::start();
    let (connres, gw) = start(&server, CHECKOUT).await;
    let rid = "t.checkout.c1";
    // The access answer is for a call that writes nothing: set and reset are granted,
    // and connres decides each call on what it writes. A reset writes `express` too.
    let r = gw.access(rid, "c1", json!(null)).await;
    assert_eq!(r, json!({"result": {"get": true, "call": "set,reset"}}));
    let r = gw
        .call(rid, "set", "c1", json!(null), json!({"address": "Main St"}))
        .await;
    assert_eq!(r, json!({"result": null}));
    let r = gw
        .call(
            rid,
            "set",
            "c1",
            json!(null),
            json!({"address": "Main St", "express": true}),
        )
        .await;
    Gateway::expect_error(&r, "system.accessDenied");
    let r = gw.call(rid, "reset", "c1", json!(null), json!(null)).await;
    Gateway::expect_error(&r, "system.accessDenied");
    assert_eq!(
        gw.get(rid).await,
        json!({"address": "Main St", "express": false})
    );
    connres.stop().await;
}
