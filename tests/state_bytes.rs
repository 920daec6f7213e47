//! Bytes of state through NATS: `state.max_value_bytes` refuses a value too large to
//! keep, from clients and the backend alike.

mod common;

use common::*;
use serde_json::{json, Value};

/// Profiles (a free-text field clients write), a per-connection list, and the seed's
/// user model (its values follow the token).
const PROFILES: &str = r#"version: 1
resources:
  session.user.{cid}:
    fields:
      id:   { type: integer, from: "{{token.userId}}" }
      blob: { type: string,  from: "{{token.blob}}" }
    access:
      get: cid == params.cid
  session.profile.{cid}:
    fields:
      bio: { type: string, writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
  session.recent.{cid}:
    collection:
      item: { type: string }
      writable: true
    access:
      get: cid == params.cid
      call: cid == params.cid
"#;

/// A JSON string of exactly `len` bytes of JSON (its quotes counted).
fn text(len: usize) -> Value {
    json!("x".repeat(len - 2))
}

#[tokio::test]
async fn a_value_over_max_value_bytes_is_refused_from_clients_and_the_backend_and_nothing_is_stored(
) {
    let server = NatsServer::start();
    let yaml = format!("state: {{ max_value_bytes: 1000 }}\n{PROFILES}");
    let (_connres, mut gw) = start(&server, &yaml).await;
    let profile = "session.profile.c1";
    let recent = "session.recent.c1";

    // The client's set and the backend's set of a field.
    let r = gw
        .call(
            profile,
            "set",
            "c1",
            Value::Null,
            json!({"bio": text(1001)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the value of `bio` is 1001 bytes of JSON, over state.max_value_bytes (1000)"
    );
    let r = gw
        .request(
            &format!("connres.set.{profile}"),
            json!({"values": {"bio": text(70_000)}}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the value of `bio` is 70000 bytes of JSON, over state.max_value_bytes (1000)"
    );
    // The client's add and the backend's add of an item.
    let r = gw
        .call(
            recent,
            "add",
            "c1",
            Value::Null,
            json!({"value": text(1001)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the item is 1001 bytes of JSON, over state.max_value_bytes (1000)"
    );
    let r = gw
        .request(
            &format!("connres.add.{recent}"),
            json!({"value": text(5000)}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&r, "system.invalidParams"),
        "the item is 5000 bytes of JSON, over state.max_value_bytes (1000)"
    );

    // Nothing stored, nothing announced.
    assert_eq!(gw.get(profile).await, json!({"bio": null}));
    let items = gw.request(&format!("get.{recent}"), Value::Null).await;
    assert_eq!(items["result"]["collection"], json!([]));
    assert_eq!(gw.pending_events(), Vec::new());

    // At the limit, both are kept and announced.
    let r = gw
        .call(
            profile,
            "set",
            "c1",
            Value::Null,
            json!({"bio": text(1000)}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    let r = gw
        .request(
            &format!("connres.add.{recent}"),
            json!({"value": text(1000)}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    let subjects: Vec<String> = gw.pending_events().into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        subjects,
        [
            format!("event.{profile}.change"),
            format!("event.{recent}.add")
        ]
    );
    assert_eq!(gw.get(profile).await, json!({"bio": text(1000)}));
}
