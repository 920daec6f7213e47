//! `call` requests: malformed payloads and method errors, checked in the documented
//! order (payload, method, access, fields). Writes are tested elsewhere.

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
