//! A reply or an event over the NATS server's `max_payload` cannot be sent: the
//! request is answered with an error that says so (not left to time out), and an event
//! that could not go out is followed by a `system.reset` of its resource, so gateways
//! fetch it again instead of keeping a copy that missed a change.

mod common;

use common::*;
use serde_json::{json, Value};

const YAML: &str = r#"version: 1
resources:
  session.notes.{cid}:
    fields:
      a: { type: string, writable: true }
      b: { type: string, writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
  session.echo.{cid}:
    fields:
      loud: { type: string, from: "{{token.word}}{{token.word}}{{token.word}}" }
    access:
      get: cid == params.cid
"#;

#[tokio::test]
async fn replies_and_events_over_max_payload_are_not_lost_silently() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let server = NatsServer::start_with_config(&conf);
    let (_connres, mut gw) = start(&server, YAML).await;
    let rid = "session.notes.c1";

    // Each set fits; together the model does not.
    let text = "x".repeat(3000);
    for field in ["a", "b"] {
        let r = gw
            .call(rid, "set", "c1", Value::Null, json!({ field: text }))
            .await;
        assert_eq!(r, json!({"result": null}), "{field}");
    }
    let r = gw.request(&format!("get.{rid}"), Value::Null).await;
    let message = Gateway::expect_error(&r, "system.internalError");
    assert!(
        message.contains("over the NATS server's max_payload (4096)"),
        "{message}"
    );

    // A token that a template triples: the change event is too big to publish, and a
    // system.reset of the model follows it.
    let echo = "session.echo.c2";
    let access = gw.access(echo, "c2", json!({"word": "hi"})).await;
    assert_eq!(access["result"]["get"], json!(true), "{access}");
    assert_eq!(gw.get(echo).await["loud"], json!("hihihi"));
    gw.token("c2", json!({"word": "y".repeat(1500)})).await;
    loop {
        let (subject, payload) = gw.next_system().await;
        if subject == "system.reset" && payload["resources"] == json!([echo]) {
            break;
        }
    }
}
