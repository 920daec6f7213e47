//! Collections through NATS: clients' `add`/`remove` calls and the backend's
//! `<prefix>.add.<rid>`/`<prefix>.remove.<rid>`, published back to back without waiting
//! for replies, on one instance and on three sharing the store. A gateway's copy, built
//! only from the get and the `add`/`remove` events, must equal the final get; a logout
//! empties a collection that resets on logout; a restart serves the stored items.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::auth::settle;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const COLLECTIONS: &str = "
  session.recent.{cid}:
    collection:
      item: { type: string, max_length: 40 }
      max_items: 1000
      writable: true
    access:
      get: cid == params.cid
      call: cid == params.cid
";

/// The seed config with [`COLLECTIONS`], on the memory store.
fn memory() -> String {
    format!("{SEED}{COLLECTIONS}")
}

/// The same on the shared store in `bucket`.
fn shared(bucket: &str) -> String {
    format!("{}{COLLECTIONS}", shared_seed(bucket))
}

fn items(reply: &Value) -> Vec<Value> {
    reply["result"]["collection"]
        .as_array()
        .unwrap_or_else(|| panic!("not a collection: {reply}"))
        .clone()
}

/// A burst on each connection's collection, back to back, nothing awaited: the client
/// appends `c<i>`, the backend puts `b<i>` first, and every third round the client
/// removes `c<i-1>` and the backend `b<i-1>` by value (present or not: never an error).
/// Returns how many requests went out with a reply subject under `inbox`.
async fn burst(gw: &Gateway, inbox: &str, cids: &[String], rounds: usize) -> usize {
    let mut sent = 0;
    let mut send = |subject: String, body: Value| {
        sent += 1;
        let reply = format!("{inbox}.{sent}");
        let client = gw.client.clone();
        async move {
            client
                .publish_with_reply(subject, reply, Bytes::from(body.to_string()))
                .await
                .unwrap()
        }
    };
    for i in 0..rounds {
        for cid in cids {
            let rid = format!("session.recent.{cid}");
            let call = |params: Value| json!({"cid": cid, "params": params});
            send(
                format!("call.{rid}.add"),
                call(json!({ "value": format!("c{i}") })),
            )
            .await;
            send(
                format!("connres.add.{rid}"),
                json!({"value": format!("b{i}"), "idx": 0}),
            )
            .await;
            if i % 3 == 2 {
                let c = json!({ "value": format!("c{}", i - 1) });
                send(format!("call.{rid}.remove"), call(c)).await;
                send(
                    format!("connres.remove.{rid}"),
                    json!({ "value": format!("b{}", i - 1) }),
                )
                .await;
            }
        }
    }
    gw.client.flush().await.unwrap();
    sent
}

/// Applies `event.<rid>.add|remove` to the copies a gateway keeps, checking each index.
fn fold(copies: &mut BTreeMap<String, Vec<Value>>, subject: &str, payload: &Value) {
    let rest = subject.strip_prefix("event.").unwrap();
    let (rid, kind) = rest.rsplit_once('.').unwrap();
    let Some(list) = copies.get_mut(rid) else {
        return;
    };
    let idx = payload["idx"].as_u64().unwrap() as usize;
    match kind {
        "add" => {
            assert!(idx <= list.len(), "{subject} {payload} on {list:?}");
            list.insert(idx, payload["value"].clone());
        }
        "remove" => {
            assert!(idx < list.len(), "{subject} {payload} on {list:?}");
            list.remove(idx);
        }
        _ => panic!("a collection got {subject}"),
    }
}

/// Sends the burst, waits for every reply (each must be a success), folds the events
/// in, and compares each copy with the final get.
async fn burst_then_compare(gw: &mut Gateway, cids: &[String], rounds: usize) {
    let mut copies = BTreeMap::new();
    for cid in cids {
        let rid = format!("session.recent.{cid}");
        let reply = gw.request(&format!("get.{rid}"), Value::Null).await;
        copies.insert(rid, items(&reply));
    }
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    let sent = burst(gw, &inbox, cids, rounds).await;
    for _ in 0..sent {
        let reply = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("every request is answered")
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply, json!({"result": null}));
    }
    // Every event went out before its reply, on connres's one connection (one per
    // instance: each instance's events precede its replies).
    for (subject, payload) in gw.pending_events() {
        fold(&mut copies, &subject, &payload);
    }
    for (rid, copy) in &copies {
        let reply = gw.request(&format!("get.{rid}"), Value::Null).await;
        assert_eq!(
            &items(&reply),
            copy,
            "{rid}: the gateway's copy and the get differ"
        );
        assert!(!copy.is_empty());
    }
}

#[tokio::test]
async fn a_burst_of_adds_and_removes_leaves_the_gateways_copy_equal_to_the_get() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &memory()).await;
    let cids: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    burst_then_compare(&mut gw, &cids, 30).await;
    // A logout empties it (reset on logout by default), one remove per item from the end.
    let rid = "session.recent.k0";
    let before = items(&gw.request(&format!("get.{rid}"), Value::Null).await);
    gw.token("k0", json!({"userId": 1})).await;
    gw.token_barrier().await;
    gw.token("k0", Value::Null).await;
    let events = gw.token_barrier().await;
    let removes: Vec<Value> = events
        .iter()
        .filter(|(s, _)| s == &format!("event.{rid}.remove"))
        .map(|(_, p)| p["idx"].clone())
        .collect();
    let expected: Vec<Value> = (0..before.len()).rev().map(|i| json!(i)).collect();
    assert_eq!(removes, expected);
    assert_eq!(
        items(&gw.request(&format!("get.{rid}"), Value::Null).await),
        Vec::<Value>::new()
    );
    connres.stop().await;
}

#[tokio::test]
async fn three_instances_keep_every_copy_equal_to_the_get_and_a_restart_serves_the_items() {
    let server = NatsServer::start_jetstream();
    let yaml = shared("collections");
    let (a, mut gw, ma) = start_shared(&server, &yaml).await;
    let (b, mb) = start_member(&server, &yaml).await;
    let (c, mc) = start_member(&server, &yaml).await;
    settle(&[&ma, &mb, &mc]).await;
    let cids: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    burst_then_compare(&mut gw, &cids, 12).await;
    let mut before = BTreeMap::new();
    for cid in &cids {
        let rid = format!("session.recent.{cid}");
        before.insert(
            rid.clone(),
            items(&gw.request(&format!("get.{rid}"), Value::Null).await),
        );
    }
    for instance in [a, b, c] {
        instance.stop().await;
    }
    let (again, gw2, _) = start_shared(&server, &yaml).await;
    for (rid, list) in &before {
        let reply = gw2.request(&format!("get.{rid}"), Value::Null).await;
        assert_eq!(&items(&reply), list, "{rid} after a restart");
    }
    again.stop().await;
}

/// A resume moves a per-connection collection to the new connection, items in order;
/// the old connection keeps none of them.
#[tokio::test]
async fn a_resume_moves_the_collection_to_the_new_connection() {
    use common::auth::{ann_jwt, auth, config_with};
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let yaml = config_with(&dir, "", "      resume: { resume: true }\n") + COLLECTIONS;
    let (connres, gw) = start(&server, &yaml).await;
    let reply = auth(
        &gw,
        "login",
        json!({"cid": "old", "params": {"token": ann_jwt()}}),
    )
    .await;
    let key = reply["result"]["resume"]
        .as_str()
        .expect("a resume key")
        .to_string();
    for (i, page) in ["home", "docs", "faq"].iter().enumerate() {
        let params = json!({"value": page, "idx": if i == 2 { 0 } else { i }});
        let reply = gw
            .call("session.recent.old", "add", "old", Value::Null, params)
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    let reply = auth(&gw, "resume", json!({"cid": "new", "params": {"key": key}})).await;
    assert!(reply["result"]["resume"].is_string(), "{reply}");
    let moved = gw.request("get.session.recent.new", Value::Null).await;
    assert_eq!(
        items(&moved),
        vec![json!("faq"), json!("home"), json!("docs")]
    );
    let old = gw.request("get.session.recent.old", Value::Null).await;
    assert_eq!(items(&old), Vec::<Value>::new());
    connres.stop().await;
}
