//! `get` requests: readiness, and models answered from defaults, captures and tokens.

mod common;

use common::*;
use serde_json::{json, Value};

/// The seed plus a pattern with another capture, data and ref fields, and a pattern
/// without `{cid}`.
fn config() -> String {
    format!(
        "{SEED}{}",
        r#"
  chat.{room}.typing.{cid}:
    fields:
      room:    { type: string,  from: "{{params.room}}" }
      channel: { type: ref,     from: "chat.room.{{params.room}}" }
      typing:  { type: boolean, default: false, writable: true }
      tags:    { type: data,    default: [new, "2"] }
      limits:  { type: data,    default: { max: 3 } }
      ratio:   { type: number,  default: 0.5 }
    access:
      get: "true"
      call: cid == params.cid
  site.banner:
    fields:
      text: { type: string, default: "Welcome & enjoy <b>" }
    access:
      get: "true"
"#
    )
}

#[tokio::test]
async fn readiness_reset_names_every_pattern_in_gateway_syntax() {
    let server = NatsServer::start();
    let (connres, mut gw, reset) = start_with_reset(&server, &config()).await;
    let mut expected = vec![
        "session.user.*",
        "session.prefs.*",
        "chat.*.typing.*",
        "site.banner",
    ];
    expected.sort_unstable();
    for key in ["resources", "access"] {
        let mut got: Vec<&str> = reset[key]
            .as_array()
            .unwrap_or_else(|| panic!("`{key}` is a list in {reset}"))
            .iter()
            .map(|p| p.as_str().expect("a pattern string"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, expected, "`{key}` in {reset}");
    }
    assert_eq!(reset.as_object().map(|o| o.len()), Some(2), "{reset}");
    // Ready means subscribed: the first request after the reset is answered.
    assert_eq!(
        gw.get("site.banner").await["text"],
        json!("Welcome & enjoy <b>")
    );
    assert!(gw.pending_system().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn get_of_an_unseen_name_answers_the_defaults() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    let reply = gw.request("get.session.user.c1", Value::Null).await;
    assert_eq!(
        reply,
        json!({"result": {"model": {"id": null, "name": null, "role": null, "user": null}}})
    );
    assert_eq!(
        gw.get("session.prefs.c1").await,
        json!({"theme": "light", "fontSize": 14})
    );
    assert!(gw.pending_events().is_empty(), "a get publishes nothing");
    connres.stop().await;
}

#[tokio::test]
async fn values_go_on_the_wire_as_res_values() {
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &config()).await;
    assert_eq!(
        gw.get("chat.lobby.typing.c1").await,
        json!({
            "room": "lobby",
            "channel": {"rid": "chat.room.lobby"},
            "typing": false,
            "tags": {"data": ["new", "2"]},
            "limits": {"data": {"max": 3}},
            "ratio": 0.5
        })
    );
    assert_eq!(
        gw.get("chat.kitchen.typing.c2").await["channel"],
        json!({"rid": "chat.room.kitchen"})
    );
    connres.stop().await;
}

#[tokio::test]
async fn a_get_answers_the_connection_token_it_holds() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config()).await;
    // A token event for a connection with no known model publishes nothing, but the
    // token is kept for the first get.
    gw.token("c1", json!({"userId": 42, "name": "Ann", "role": "user"}))
        .await;
    assert!(gw.token_barrier().await.is_empty());
    assert_eq!(
        gw.get("session.user.c1").await,
        json!({"id": 42, "name": "Ann", "role": "user", "user": {"rid": "users.user.42"}})
    );
    // Another connection does not see it.
    assert_eq!(gw.get("session.user.c2").await["id"], Value::Null);
    connres.stop().await;
}

#[tokio::test]
async fn a_get_with_a_payload_is_still_answered() {
    // Resgate sends `{}` or a query object; connres has no query resources yet.
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &config()).await;
    let reply = gw.request("get.session.prefs.c1", json!({})).await;
    assert_eq!(
        reply["result"]["model"],
        json!({"theme": "light", "fontSize": 14})
    );
    connres.stop().await;
}
