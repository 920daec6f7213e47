//! `conn.<cid>.token` events: login, token changes and logout publish exactly the
//! change events they cause, and re-access where access may have changed.
//!
//! connres serves one connection's messages in the order the server delivered them, but
//! the test's token events and requests go out on one client and its events come back
//! on another subscription; so each step awaits the events of the token event before the
//! next request, and "no event" is proven with [`Gateway::token_barrier`].

mod common;

use common::*;
use serde_json::{json, Value};

fn ann() -> Value {
    json!({"userId": 42, "name": "Ann", "role": "admin"})
}

fn change(rid: &str, values: Value) -> (String, Value) {
    (format!("event.{rid}.change"), json!({ "values": values }))
}

fn null_user() -> Value {
    json!({"id": null, "name": null, "role": null, "user": null})
}

/// The seed plus a model whose written fields reset on logout.
fn config() -> String {
    format!(
        "{SEED}{}",
        r#"
  session.draft.{cid}:
    fields:
      text: { type: string, default: "", writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
"#
    )
}

#[tokio::test]
async fn login_publishes_exactly_one_typed_change_event() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    gw.get("session.user.c1").await;
    gw.token("c1", ann()).await;
    let event = gw.next_event().await;
    assert_eq!(
        event,
        change(
            "session.user.c1",
            json!({"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}})
        )
    );
    assert!(event.1["values"]["id"].is_i64(), "42 stays an integer");
    assert!(gw.token_barrier().await.is_empty(), "only one event");
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));
    connres.stop().await;
}

#[tokio::test]
async fn the_same_token_again_publishes_nothing() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    gw.get("session.user.c1").await;
    gw.token("c1", ann()).await;
    gw.next_event().await;
    gw.token("c1", ann()).await;
    // The same claims in another order, with a `tid`, are the same token.
    let body = r#"{"token":{"role":"admin","name":"Ann","userId":42},"tid":"t1"}"#;
    gw.client
        .publish("conn.c1.token", body.into())
        .await
        .unwrap();
    assert!(gw.token_barrier().await.is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn one_changed_claim_changes_only_its_field() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    gw.get("session.user.c1").await;
    gw.token("c1", ann()).await;
    gw.next_event().await;
    gw.token("c1", json!({"userId": 42, "name": "Bea", "role": "admin"}))
        .await;
    assert_eq!(
        gw.next_event().await,
        change("session.user.c1", json!({"name": "Bea"}))
    );
    // userId feeds `id` and the ref `user`: one event with both.
    gw.token("c1", json!({"userId": 7, "name": "Bea", "role": "admin"}))
        .await;
    assert_eq!(
        gw.next_event().await,
        change(
            "session.user.c1",
            json!({"id": 7, "user": {"rid": "users.user.7"}})
        )
    );
    assert!(gw.token_barrier().await.is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn logout_returns_to_defaults_and_resets_written_fields_per_resource() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    for rid in ["session.user.c1", "session.prefs.c1", "session.draft.c1"] {
        gw.subscribe(rid, "c1", Value::Null).await;
    }
    gw.token("c1", ann()).await;
    assert_eq!(gw.next_event().await.0, "event.session.user.c1.change");
    // The login may ask re-access for prefs (its `set` rule reads the token).
    assert_eq!(gw.next_event().await.0, "event.session.prefs.c1.reaccess");
    let ok = json!({"result": null});
    assert_eq!(
        gw.call(
            "session.prefs.c1",
            "set",
            "c1",
            ann(),
            json!({"theme": "dark"})
        )
        .await,
        ok
    );
    assert_eq!(
        gw.call(
            "session.draft.c1",
            "set",
            "c1",
            ann(),
            json!({"text": "hello"})
        )
        .await,
        ok
    );
    assert_eq!(gw.pending_events().len(), 2, "one change per write");

    gw.token("c1", Value::Null).await;
    let mut events = vec![gw.next_event().await, gw.next_event().await];
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events,
        vec![
            change("session.draft.c1", json!({"text": ""})),
            change("session.user.c1", null_user()),
        ]
    );
    // prefs keep what was written (reset.on_logout: false): no event for them.
    assert!(gw.token_barrier().await.is_empty());
    assert_eq!(gw.get("session.user.c1").await, null_user());
    assert_eq!(
        gw.get("session.prefs.c1").await,
        json!({"theme": "dark", "fontSize": 14})
    );
    assert_eq!(gw.get("session.draft.c1").await, json!({"text": ""}));
    connres.stop().await;
}

#[tokio::test]
async fn login_asks_reaccess_only_where_access_reads_the_token() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    // user's and draft's rules do not read `token`; prefs' `set` rule does.
    for rid in ["session.user.c1", "session.prefs.c1", "session.draft.c1"] {
        gw.subscribe(rid, "c1", Value::Null).await;
    }
    gw.token("c1", ann()).await;
    let mut events = [gw.next_event().await, gw.next_event().await];
    assert!(gw.token_barrier().await.is_empty());
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events[0],
        ("event.session.prefs.c1.reaccess".into(), Value::Null)
    );
    assert_eq!(events[1].0, "event.session.user.c1.change");

    // A token change (not from null) needs no reaccess: the gateway re-asks itself.
    gw.token("c1", json!({"userId": 42, "name": "Bea", "role": "admin"}))
        .await;
    assert_eq!(
        gw.next_event().await,
        change("session.user.c1", json!({"name": "Bea"}))
    );
    assert!(gw.token_barrier().await.is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn a_malformed_token_event_is_ignored() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    gw.get("session.user.c1").await;
    gw.token("c1", ann()).await;
    gw.next_event().await;
    // Not JSON, not an object, and an object without a `token` key (which is not a
    // logout: a logout sends `"token": null`).
    for body in ["", "nope", "[{\"userId\": 1}]", "{\"tid\":\"t1\"}"] {
        gw.client
            .publish("conn.c1.token", body.into())
            .await
            .unwrap();
    }
    assert!(gw.token_barrier().await.is_empty());
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));
    connres.stop().await;
}

/// Found through the real Resgate: an auth service answers the client's login right
/// after publishing the token, and the gateway passes that answer on before connres's
/// reaccess event reaches it; a client that wrote at once was refused with the access
/// the gateway had cached without a token. A token event published as a request is
/// answered once connres has published what it causes, so an auth service can wait for
/// that before it answers the login (the gateway receives them in that order).
#[tokio::test]
async fn a_token_event_sent_as_a_request_is_answered_after_its_events() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    // Known to connres as the gateway knows them: the user model, and prefs granted
    // without a token (its call rule reads `token`).
    gw.get("session.user.c1").await;
    gw.subscribe("session.prefs.c1", "c1", Value::Null).await;

    let reply = gw.request("conn.c1.token", json!({ "token": ann() })).await;
    assert_eq!(reply, json!({"result": null}));
    // Published before the answer, on the same connection: already here.
    let mut events = gw.pending_events();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events,
        vec![
            ("event.session.prefs.c1.reaccess".to_string(), Value::Null),
            change(
                "session.user.c1",
                json!({"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}})
            ),
        ]
    );

    // The logout too; a malformed one is refused and changes nothing.
    let reply = gw.request("conn.c1.token", json!({ "tid": "t1" })).await;
    Gateway::expect_error(&reply, "system.invalidParams");
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));
    let reply = gw.request("conn.c1.token", json!({ "token": null })).await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(
        gw.pending_events(),
        vec![change("session.user.c1", null_user())]
    );
    connres.stop().await;
}
