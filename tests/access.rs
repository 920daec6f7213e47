//! `access` requests: own versus other connections, tokens learned from the payload,
//! and malformed payloads.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

fn ann() -> Value {
    json!({"userId": 42, "name": "Ann", "role": "admin"})
}

fn ann_values() -> Value {
    json!({"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}})
}

#[tokio::test]
async fn access_is_granted_on_the_own_connection_only() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    assert_eq!(
        gw.access("session.user.c1", "c1", Value::Null).await,
        json!({"result": {"get": true}})
    );
    assert_eq!(
        gw.access("session.user.c1", "c2", Value::Null).await,
        json!({"result": {"get": false}})
    );
    // Call rules per method: `set` needs a token, `reset` does not.
    assert_eq!(
        gw.access("session.prefs.c1", "c1", Value::Null).await,
        json!({"result": {"get": true, "call": "reset"}})
    );
    assert_eq!(
        gw.access("session.prefs.c3", "c3", json!({"userId": 1}))
            .await,
        json!({"result": {"get": true, "call": "set,reset"}})
    );
    assert_eq!(
        gw.access("session.prefs.c1", "c2", json!({"userId": 1}))
            .await,
        json!({"result": {"get": false}})
    );
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn a_token_in_an_access_request_is_learned_before_the_reply() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    gw.get("session.user.c1").await;
    let reply = gw.access("session.user.c1", "c1", ann()).await;
    assert_eq!(reply, json!({"result": {"get": true}}));
    // The change event was published before the reply, so it is here already.
    assert_eq!(
        gw.pending_events(),
        vec![(
            "event.session.user.c1.change".to_string(),
            json!({ "values": ann_values() })
        )]
    );
    assert_eq!(gw.get("session.user.c1").await, ann_values());
    connres.stop().await;
}

#[tokio::test]
async fn a_stale_access_request_cannot_log_in_or_out() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    gw.get("session.user.c1").await;
    // Confirmed by a token event: the login.
    gw.token("c1", ann()).await;
    assert_eq!(gw.next_event().await.0, "event.session.user.c1.change");
    // A request without a token (sent before the login) does not log out, one with
    // another token does not log in as someone else.
    gw.access("session.user.c1", "c1", Value::Null).await;
    gw.access("session.user.c1", "c1", json!({"userId": 7, "name": "Old"}))
        .await;
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get("session.user.c1").await, ann_values());

    // Logged out by a token event: the old token in a late request changes nothing.
    gw.token("c1", Value::Null).await;
    let (_, payload) = gw.next_event().await;
    assert_eq!(
        payload,
        json!({"values": {"id": null, "name": null, "role": null, "user": null}})
    );
    gw.access("session.user.c1", "c1", ann()).await;
    assert!(gw.pending_events().is_empty());
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);
    connres.stop().await;
}

#[tokio::test]
async fn malformed_access_payloads_are_answered_with_errors() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;
    for payload in [
        "",
        "not json",
        "{\"cid\":",
        "[\"c1\"]",
        "{}",
        "{\"cid\":42}",
        "null",
    ] {
        let reply = gw
            .request_raw("access.session.user.c1", Bytes::from(payload))
            .await;
        let message = Gateway::expect_error(&reply, "system.invalidParams");
        assert!(message.contains("access request"), "{payload:?}: {message}");
    }
    assert!(gw.pending_events().is_empty());
    // connres is still serving.
    assert_eq!(
        gw.access("session.user.c1", "c1", Value::Null).await,
        json!({"result": {"get": true}})
    );
    connres.stop().await;
}

#[tokio::test]
async fn a_rule_failing_at_run_time_denies() {
    let yaml = format!(
        "{SEED}{}",
        r#"
  admin.panel.{cid}:
    fields:
      open: { type: boolean, default: false }
    access:
      get: token.role == 'admin' && cid == params.cid
"#
    );
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &yaml).await;
    // No token: `token.role` fails; denied, and connres keeps serving.
    assert_eq!(
        gw.access("admin.panel.c1", "c1", Value::Null).await,
        json!({"result": {"get": false}})
    );
    assert_eq!(
        gw.access("admin.panel.c2", "c2", json!({"role": "admin"}))
            .await,
        json!({"result": {"get": true}})
    );
    connres.stop().await;
}
