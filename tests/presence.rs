//! Presence lists through NATS: joins, leaves, logins and logouts sent back to back
//! without waiting, a gateway's copy from the events equal to the final get, and a
//! connection that stops pinging leaving after `ttl` (on a clock the test moves).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

const PRESENCE: &str = include_str!("config/valid/presence.yaml");
const ROOM: &str = "chat.room.r1.members";

fn members(reply: &Value) -> Vec<Value> {
    reply["result"]["collection"]
        .as_array()
        .unwrap_or_else(|| panic!("not a collection: {reply}"))
        .clone()
}

fn token(name: &str) -> Value {
    json!({"userId": name.len(), "name": name})
}

/// Applies a list's `add` and `remove` events to a copy, checking each index.
fn fold(copy: &mut Vec<Value>, events: &[(String, Value)]) {
    for (subject, payload) in events {
        let Some(kind) = subject.strip_prefix(&format!("event.{ROOM}.")) else {
            continue;
        };
        let idx = payload["idx"].as_u64().unwrap() as usize;
        match kind {
            "add" => {
                assert!(idx <= copy.len(), "{subject} {payload} on {copy:?}");
                copy.insert(idx, payload["value"].clone());
            }
            "remove" => {
                assert!(idx < copy.len(), "{subject} {payload} on {copy:?}");
                copy.remove(idx);
            }
            _ => panic!("{subject}"),
        }
    }
}

#[tokio::test]
async fn joins_leaves_and_logouts_back_to_back_leave_the_copy_equal_to_the_get() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, PRESENCE).await;
    let mut copy = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    let names = ["ann", "bob", "cat"];
    let mut asked = 0;
    // Rounds of: a login per connection (two tabs per name), a join each, then a
    // logout of one tab, a leave of another, all published without waiting.
    for round in 0..5 {
        for c in 0..6 {
            let cid = format!("p{c}");
            let name = names[(c + round) % 3];
            let body = json!({ "token": token(name) }).to_string();
            gw.client
                .publish(format!("conn.{cid}.token"), Bytes::from(body))
                .await
                .unwrap();
            asked += 1;
            let join = json!({ "cid": cid }).to_string();
            gw.client
                .publish_with_reply(
                    format!("call.{ROOM}.join"),
                    format!("{inbox}.{asked}"),
                    Bytes::from(join),
                )
                .await
                .unwrap();
        }
        let logout = json!({ "token": null }).to_string();
        gw.client
            .publish(format!("conn.p{}.token", round % 6), Bytes::from(logout))
            .await
            .unwrap();
        asked += 1;
        let leave = json!({ "cid": format!("p{}", (round + 3) % 6) }).to_string();
        gw.client
            .publish_with_reply(
                format!("call.{ROOM}.leave"),
                format!("{inbox}.{asked}"),
                Bytes::from(leave),
            )
            .await
            .unwrap();
    }
    gw.client.flush().await.unwrap();
    for _ in 0..asked {
        let reply = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("every call is answered")
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply, json!({"result": null}));
    }
    fold(&mut copy, &gw.pending_events());
    let get = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(copy, get);
    assert!(!get.is_empty());
    // Every name at most once.
    let mut names: Vec<String> = get.iter().map(|v| v.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), get.len(), "{get:?}");
    connres.stop().await;
}

#[tokio::test]
async fn a_connection_that_stops_pinging_leaves_after_ttl_for_everyone() {
    let server = NatsServer::start();
    let clock = connres::clock::Clock::manual();
    let (connres, mut gw, _) = start_clocked(&server, PRESENCE, clock.clone()).await;
    for (cid, name) in [("a1", "ann"), ("b1", "bob")] {
        gw.token(cid, token(name)).await;
        let reply = gw.call(ROOM, "join", cid, token(name), Value::Null).await;
        assert_eq!(reply, json!({"result": null}));
    }
    assert_eq!(
        members(&gw.request(&format!("get.{ROOM}"), Value::Null).await),
        vec![json!("ann"), json!("bob")]
    );
    while gw.events.next().now_or_never().flatten().is_some() {}
    clock.advance(Duration::from_secs(45));
    let reply = gw.call(ROOM, "ping", "b1", token("bob"), Value::Null).await;
    assert_eq!(reply, json!({"result": null}));
    clock.advance(Duration::from_secs(15));
    // The next sweep (each second) removes ann, not seen for 60s.
    let (subject, payload) = gw.next_event().await;
    assert_eq!(subject, format!("event.{ROOM}.remove"));
    assert_eq!(payload, json!({"idx": 0}));
    assert_eq!(
        members(&gw.request(&format!("get.{ROOM}"), Value::Null).await),
        vec![json!("bob")]
    );
    let reply = gw.call(ROOM, "ping", "a1", token("ann"), Value::Null).await;
    Gateway::expect_error(&reply, "system.invalidParams");
    connres.stop().await;
}
