//! NATS outages, seen by the `connres` binary: what was received before an outage is
//! handled before token records are unconfirmed, and SIGTERM is seen while publishes
//! wait for a connection that is gone. The process is stopped (SIGSTOP) while the test
//! puts messages into its socket, so what it holds when the connection drops is exact.

mod common;

use common::process::*;
use common::*;
use futures::future::join_all;
use serde_json::{json, Value};

fn ann() -> Value {
    json!({"userId": 42, "name": "Ann", "role": "admin"})
}

/// Publishes a request to connres while it is stopped and returns once the server has
/// written it into connres's socket.
async fn deliver_while_stopped(server: &NatsServer, gw: &Gateway, subject: &str, body: Value) {
    let before = server.delivered_to("connres").await;
    gw.client
        .publish_with_reply(
            subject.to_string(),
            gw.client.new_inbox(),
            body.to_string().into(),
        )
        .await
        .unwrap();
    gw.client.flush().await.unwrap();
    while server.delivered_to("connres").await == before {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_request_received_before_an_outage_cannot_undo_a_logout() {
    let server = NatsServer::start_monitored();
    let port = server.port;
    let mut gw = Gateway::connect(&server).await;
    let (_dir, mut proc) = serve(&server.url, SEED);
    assert_eq!(gw.next_system().await.0, "system.reset");
    gw.subscribe("session.user.c1", "c1", Value::Null).await;
    gw.token("c1", ann()).await;
    assert_eq!(gw.next_event().await.1["values"]["name"], json!("Ann"));
    gw.token("c1", Value::Null).await;
    assert_eq!(gw.next_event().await.1["values"]["name"], json!(null));

    // An access sent before the gateway saw the logout reaches connres, then NATS goes.
    proc.stop();
    let stale = json!({"cid": "c1", "token": ann()});
    deliver_while_stopped(&server, &gw, "access.session.user.c1", stale).await;
    drop(server);
    proc.resume();
    proc.wait_for_log("lost the NATS connection");

    let _server = NatsServer::start_on(port);
    gw.wait_until_served("session.user.c9").await;
    // The stale access was handled against the confirmed logout: still logged out.
    assert_eq!(gw.get("session.user.c1").await["name"], json!(null));
    proc.terminate();
    assert_eq!(proc.output().await.status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_is_seen_while_publishes_wait_for_a_lost_connection() {
    let server = NatsServer::start_monitored();
    let mut gw = Gateway::connect(&server).await;
    let yaml = format!(
        "{SEED}  many.{{n}}.{{cid}}:\n    fields:\n      v: {{ type: integer, from: \"{{{{token.userId}}}}\" }}\n    access:\n      get: \"true\"\n"
    );
    let (_dir, mut proc) = serve(&server.url, &yaml);
    // Announced: the server has its subscriptions.
    assert_eq!(gw.next_system().await.0, "system.reset");
    // c1 has 3,000 models cached: its login publishes 3,000 change events, more than
    // the NATS client buffers while the connection is down (2,048).
    for chunk in (0..3000).collect::<Vec<_>>().chunks(250) {
        let rids: Vec<String> = chunk.iter().map(|n| format!("many.{n}.c1")).collect();
        join_all(rids.iter().map(|rid| gw.get(rid))).await;
    }
    proc.stop();
    let login = json!({"token": {"userId": 7}});
    let before = server.delivered_to("connres").await;
    gw.client
        .publish("conn.c1.token", login.to_string().into())
        .await
        .unwrap();
    gw.client.flush().await.unwrap();
    while server.delivered_to("connres").await == before {
        tokio::task::yield_now().await;
    }
    drop(server);
    proc.resume();
    proc.wait_for_log("lost the NATS connection");
    // connres is now publishing into a full buffer that nothing drains.
    proc.terminate();
    let out = proc.output().await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
}
