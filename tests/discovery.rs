//! Service discovery (the NATS micro protocol): two instances with different configs on
//! one server answer `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` with their ids, version,
//! config hash and generation, endpoints and request counts, current after a reload.

mod common;

use async_nats::Client;
use bytes::Bytes;
use common::*;
use connres::clock::Clock;
use connres::config::Config;
use futures::StreamExt;
use serde_json::{json, Value};

/// A second config, sharing nothing with the seed's: its own patterns, queue group and
/// API prefix, so the two instances never split each other's requests.
const CHAT: &str = r#"version: 1
nats:
  queue_group: chat
api:
  prefix: chatapi
resources:
  chat.room.{room}:
    fields:
      topic: { type: string, default: general }
    access:
      get: "true"
"#;

const LOBBY: &str = r#"
  chat.lobby.{cid}:
    fields:
      seen: { type: boolean, default: false }
    access:
      get: cid == params.cid
"#;

fn hash(yaml: &str) -> String {
    Config::parse("any.yaml", yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .content_hash()
        .to_string()
}

/// Publishes a discovery request with an inbox to answer on, and gathers `n` replies.
async fn gather(client: &Client, subject: &str, n: usize) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, Bytes::new())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(WAIT, replies.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} replies to {subject}: {out:?}", out.len()))
            .expect("inbox open");
        out.push(serde_json::from_slice(&msg.payload).expect("a JSON reply"));
    }
    out
}

/// The reply of the instance serving the config with `hash`.
fn serving<'a>(replies: &'a [Value], hash: &str) -> &'a Value {
    let found: Vec<&Value> = replies
        .iter()
        .filter(|r| r["metadata"]["config_hash"] == hash)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one reply with config {hash} in {replies:?}"
    );
    found[0]
}

/// The endpoint named `name` of an INFO or STATS reply.
fn endpoint<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {reply}"))
}

fn subjects(info: &Value) -> Vec<&str> {
    info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["subject"].as_str().expect("a subject"))
        .collect()
}

#[tokio::test]
async fn ping_lists_every_instance_with_its_version_and_config_hash() {
    let server = NatsServer::start();
    let (seed, gw) = start(&server, SEED).await;
    let (chat, _) = start(&server, CHAT).await;

    let replies = gather(&gw.client, "$SRV.PING", 2).await;
    for reply in &replies {
        assert_eq!(reply["type"], "io.nats.micro.v1.ping_response", "{reply}");
        assert_eq!(reply["name"], "connres");
        assert_eq!(reply["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(reply["metadata"]["config_generation"], "1");
        assert!(reply["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    assert_ne!(replies[0]["id"], replies[1]["id"]);
    let seed_ping = serving(&replies, &hash(SEED));
    let chat_ping = serving(&replies, &hash(CHAT));
    assert_eq!(seed_ping["metadata"]["queue_group"], "connres");
    assert_eq!(chat_ping["metadata"]["queue_group"], "chat");
    assert_eq!(chat_ping["metadata"]["api_prefix"], "chatapi");

    // By name, both again; by id, only that instance.
    let by_name = gather(&gw.client, "$SRV.PING.connres", 2).await;
    serving(&by_name, &hash(SEED));
    serving(&by_name, &hash(CHAT));
    let id = chat_ping["id"].as_str().unwrap();
    let one = gw
        .request(&format!("$SRV.PING.connres.{id}"), Value::Null)
        .await;
    assert_eq!(&one, chat_ping);
    seed.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn info_carries_each_config_hash_and_the_endpoints() {
    let server = NatsServer::start();
    let (seed, gw) = start(&server, SEED).await;
    let (chat, _) = start(&server, CHAT).await;

    let replies = gather(&gw.client, "$SRV.INFO.connres", 2).await;
    let info = serving(&replies, &hash(SEED));
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["name"], "connres");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["description"], env!("CARGO_PKG_DESCRIPTION"));
    assert_eq!(
        subjects(info),
        [
            "conn.*.token",
            "connres.set.>",
            "connres.reset.>",
            "connres.add.>",
            "connres.remove.>",
            "get.session.user.*",
            "access.session.user.*",
            "call.session.user.*.*",
            "get.session.prefs.*",
            "access.session.prefs.*",
            "call.session.prefs.*.*",
        ]
    );
    assert_eq!(
        endpoint(info, "token"),
        &json!({"name": "token", "subject": "conn.*.token", "queue_group": "", "metadata": {}})
    );
    assert_eq!(
        endpoint(info, "get-session-prefs-cid"),
        &json!({
            "name": "get-session-prefs-cid",
            "subject": "get.session.prefs.*",
            "queue_group": "connres",
            "metadata": {"pattern": "session.prefs.{cid}"},
        })
    );

    let info = serving(&replies, &hash(CHAT));
    assert_eq!(
        subjects(info),
        [
            "conn.*.token",
            "chatapi.set.>",
            "chatapi.reset.>",
            "chatapi.add.>",
            "chatapi.remove.>",
            "get.chat.room.*",
            "access.chat.room.*",
            "call.chat.room.*.*",
        ]
    );
    assert_eq!(endpoint(info, "api-set")["queue_group"], "chat");
    seed.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn a_reload_shows_at_once_with_its_hash_generation_and_endpoints() {
    let server = NatsServer::start();
    let (seed, gw) = start(&server, SEED).await;
    let file = ConfigDir::new(CHAT);
    let (chat, chat_gw, mut reports) = start_watched(&server, &file.path()).await;
    let replies = gather(&gw.client, "$SRV.PING.connres", 2).await;
    let id = serving(&replies, &hash(CHAT))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let info_subject = format!("$SRV.INFO.connres.{id}");
    assert_eq!(chat_gw.get("chat.room.r1").await["topic"], "general");

    // A pattern added: its three endpoints appear, the others keep their counts.
    let added = format!("{CHAT}{LOBBY}");
    write_by_rename(&file.path(), &added);
    assert!(matches!(
        next_reload(&mut reports).await,
        connres::reload::ReloadReport::Applied { .. }
    ));
    let info = gw.request(&info_subject, Value::Null).await;
    assert_eq!(info["metadata"]["config_hash"], hash(&added));
    assert_eq!(info["metadata"]["config_generation"], "2");
    for (name, subject) in [
        ("get-chat-lobby-cid", "get.chat.lobby.*"),
        ("access-chat-lobby-cid", "access.chat.lobby.*"),
        ("call-chat-lobby-cid", "call.chat.lobby.*.*"),
    ] {
        let e = endpoint(&info, name);
        assert_eq!(e["subject"], subject);
        assert_eq!(e["queue_group"], "chat");
        assert_eq!(e["metadata"], json!({"pattern": "chat.lobby.{cid}"}));
    }
    let stats = gw
        .request(&format!("$SRV.STATS.connres.{id}"), Value::Null)
        .await;
    assert_eq!(stats["metadata"]["config_generation"], "2");
    assert_eq!(endpoint(&stats, "get-chat-room-room")["num_requests"], 1);
    assert_eq!(endpoint(&stats, "get-chat-lobby-cid")["num_requests"], 0);

    // A pattern removed: its endpoints leave.
    let removed = format!(
        "{}resources:{LOBBY}",
        CHAT.split("resources:").next().unwrap()
    );
    write_by_rename(&file.path(), &removed);
    assert!(matches!(
        next_reload(&mut reports).await,
        connres::reload::ReloadReport::Applied { .. }
    ));
    let info = gw.request(&info_subject, Value::Null).await;
    assert_eq!(info["metadata"]["config_hash"], hash(&removed));
    assert_eq!(info["metadata"]["config_generation"], "3");
    assert_eq!(
        subjects(&info),
        [
            "conn.*.token",
            "chatapi.set.>",
            "chatapi.reset.>",
            "chatapi.add.>",
            "chatapi.remove.>",
            "get.chat.lobby.*",
            "access.chat.lobby.*",
            "call.chat.lobby.*.*",
        ]
    );

    // The other instance is as it was.
    let other = gather(&gw.client, "$SRV.INFO.connres", 2).await;
    let seed_info = serving(&other, &hash(SEED));
    assert_eq!(seed_info["metadata"]["config_generation"], "1");
    serving(&other, &hash(&removed));
    seed.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn stats_count_requests_and_errors_per_endpoint_as_the_metrics_do() {
    let server = NatsServer::start();
    let (seed, gw, metrics) = start_clocked(&server, SEED, Clock::system()).await;
    let (chat, _) = start(&server, CHAT).await;
    let replies = gather(&gw.client, "$SRV.PING", 2).await;
    let id = serving(&replies, &hash(SEED))["id"]
        .as_str()
        .unwrap()
        .to_string();

    for _ in 0..3 {
        gw.get("session.user.c1").await;
    }
    // No token: `set` is denied.
    let denied = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            Value::Null,
            json!({"theme": "dark"}),
        )
        .await;
    let message = Gateway::expect_error(&denied, "system.accessDenied");

    let stats = gw
        .request(&format!("$SRV.STATS.connres.{id}"), Value::Null)
        .await;
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    assert_eq!(stats["id"], id.as_str());
    assert_eq!(stats["metadata"]["config_hash"], hash(SEED));
    let started = stats["started"].as_str().expect("started");
    assert!(
        humantime::parse_rfc3339(started).is_ok(),
        "RFC 3339 UTC: {started}"
    );
    let get = endpoint(&stats, "get-session-user-cid");
    assert_eq!(get["num_requests"], 3);
    assert_eq!(get["num_errors"], 0);
    assert_eq!(get["last_error"], "");
    let call = endpoint(&stats, "call-session-prefs-cid");
    assert_eq!(call["num_requests"], 1);
    assert_eq!(call["num_errors"], 1);
    assert_eq!(
        call["last_error"], "system.accessDenied",
        "{message}: the code only"
    );
    let mut total = 0;
    for e in stats["endpoints"].as_array().unwrap() {
        let (requests, time) = (&e["num_requests"], &e["processing_time"]);
        let (requests, time) = (requests.as_u64().unwrap(), time.as_u64().unwrap());
        assert_eq!(
            e["average_processing_time"].as_u64(),
            Some(time.checked_div(requests).unwrap_or(0)),
            "{e}"
        );
        total += requests;
    }
    assert_eq!(total, 4, "{stats}");

    // The same numbers as the metrics.
    let text = metrics.encode();
    for line in [
        r#"connres_requests_total{kind="get",outcome="ok",resource="session.user.{cid}"} 3"#,
        r#"connres_requests_total{kind="call",outcome="access_denied",resource="session.prefs.{cid}"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    // The other instance saw none of it.
    let replies = gather(&gw.client, "$SRV.STATS.connres", 2).await;
    let other = serving(&replies, &hash(CHAT));
    for e in other["endpoints"].as_array().unwrap() {
        assert_eq!(e["num_requests"], 0, "{e}");
    }
    seed.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn any_payload_gets_an_answer() {
    let server = NatsServer::start();
    let (seed, gw) = start(&server, SEED).await;
    for payload in [&b"{}"[..], b"not json", &[0xff, 0xfe][..]] {
        let reply = gw
            .request_raw("$SRV.INFO.connres", Bytes::copy_from_slice(payload))
            .await;
        assert_eq!(reply["metadata"]["config_hash"], hash(SEED));
    }
    // Requests are still served.
    assert_eq!(gw.get("session.prefs.c1").await["theme"], "light");
    seed.stop().await;
}
