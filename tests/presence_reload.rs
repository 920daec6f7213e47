//! A presence list on the shared store through a live reload of every instance: three
//! instances watching one config file, members whose connections other instances own.
//! A reload that lowers `max_members`, then one that changes `member`, empties the list
//! (in memory and in the bucket) and names it in a `system.reset`; a ping of a
//! connection that was listed asks it to join again, joins follow the new declaration,
//! and a new owner's load after a handover serves what was joined since
//! (docs/configuration.md#presence-lists, docs/scaling.md#presence-lists).

mod common;

use async_nats::jetstream::kv;
use common::leases::*;
use common::*;
use connres::config::Config;
use connres::reload::ReloadReport;
use connres::service::{Service, ServiceError};
use connres::store::record::{key, partition_of_cid, partition_of_name};
use connres::store::UnitKey;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

const ROOM: &str = "chat.room.r1.members";
const BUCKET: &str = "presence_reload";

fn yaml(max_members: u32, member: &str) -> String {
    format!(
        r#"version: 1
state:
  store: nats
  bucket: {BUCKET}
  partitions: {PARTITIONS}
  lease: 2s
resources:
  chat.room.{{room}}.members:
    presence:
      member: "{member}"
      join: token != null
      ttl: 60s
      max_members: {max_members}
    access:
      get: "true"
      call: token != null
"#
    )
}

/// An instance in-process watching the config file, with its reload reports.
struct Instance {
    id: String,
    reports: broadcast::Receiver<ReloadReport>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl Instance {
    async fn start(server: &NatsServer, path: &std::path::Path) -> Instance {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let service = Service::start(config, &server.url)
            .await
            .expect("connres starts")
            .watch(path)
            .expect("watch starts");
        let id = service.instance_id().expect("a shared store").to_string();
        let reports = service.reload_reports();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(service.run(async {
            let _ = stopped.await;
        }));
        Instance {
            id,
            reports,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT * 2, self.task)
            .await
            .expect("connres stops")
            .expect("task joins")
            .expect("clean exit");
    }
}

/// Rewrites the config and waits until every instance has applied it.
async fn reload_all(dir: &ConfigDir, instances: &mut [Instance], text: &str) {
    write_by_rename(&dir.path(), text);
    for i in instances.iter_mut() {
        match next_reload(&mut i.reports).await {
            ReloadReport::Applied { .. } => {}
            other => panic!("{}: expected an applied reload, got {other:?}", i.id),
        }
    }
}

/// Waits for a `system.reset` that names the room's pattern (each instance publishes
/// its own).
async fn reset_naming_the_room(gw: &mut Gateway) {
    loop {
        let (subject, payload) = gw.next_system().await;
        if subject == "system.reset"
            && payload["resources"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("chat.room.*.members")))
        {
            return;
        }
    }
}

fn members(gw_reply: &Value) -> Vec<Value> {
    gw_reply["result"]["collection"]
        .as_array()
        .unwrap_or_else(|| panic!("not a collection: {gw_reply}"))
        .clone()
}

/// The next write of the room's key in the bucket: its value, null for a delete.
async fn next_write(watch: &mut kv::Watch) -> Value {
    let entry = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a write of the room")
        .expect("the watch is open")
        .unwrap();
    match entry.operation {
        kv::Operation::Put => serde_json::from_slice(&entry.value).unwrap(),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn a_live_reload_that_lowers_max_members_or_changes_member_empties_the_list() {
    let server = NatsServer::start_jetstream();
    let dir = ConfigDir::new(&yaml(10, "{{token.name}}"));
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(&server, &dir.path()).await);
    }
    let kv = bucket(&server, BUCKET).await;
    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    let owners = settled(&kv, &ids).await;
    let p = partition_of_name(ROOM, PARTITIONS);
    // Two connections whose partition each instance owns.
    let mut cids = Vec::new();
    for (k, i) in instances.iter().enumerate() {
        cids.extend(
            (0..)
                .map(|n| format!("i{k}c{n}"))
                .filter(|cid| owners[partition_of_cid(cid, PARTITIONS) as usize] == i.id)
                .take(2),
        );
    }
    let names = ["ann", "bob", "cat", "dan", "eve", "fay"];
    let mut gw = Gateway::connect(&server).await;
    for (cid, name) in cids.iter().zip(names) {
        let login = json!({"token": {"name": name}});
        let reply = gw.request(&format!("conn.{cid}.token"), login).await;
        assert_eq!(reply, json!({"result": null}));
        let reply = gw
            .call(ROOM, "join", cid, json!({"name": name}), Value::Null)
            .await;
        assert_eq!(reply, json!({"result": null}), "{name} joins");
    }
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, names.map(|n| json!(n)));
    let mut watch = kv
        .watch(key(p, &UnitKey::Shared(ROOM.into())))
        .await
        .unwrap();
    gw.pending_system();

    // `max_members` 10 -> 3: the list is emptied, in the bucket too, and named in a
    // `system.reset`.
    reload_all(&dir, &mut instances, &yaml(3, "{{token.name}}")).await;
    reset_naming_the_room(&mut gw).await;
    assert_eq!(
        next_write(&mut watch).await,
        Value::Null,
        "the list deleted"
    );
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, Vec::<Value>::new());
    // A connection that was listed is asked to join again.
    let reply = gw
        .call(ROOM, "ping", &cids[0], json!({"name": "ann"}), Value::Null)
        .await;
    let message = Gateway::expect_error(&reply, "system.invalidParams");
    assert!(message.ends_with("call join"), "{message}");
    // Joins follow the new `max_members`.
    for (cid, name) in cids.iter().zip(names).take(3) {
        let reply = gw
            .call(ROOM, "join", cid, json!({"name": name}), Value::Null)
            .await;
        assert_eq!(reply, json!({"result": null}), "{name} joins again");
        let written = next_write(&mut watch).await;
        assert_eq!(
            written["members"].as_array().map(Vec::len),
            Some(1 + names.iter().position(|n| *n == name).unwrap())
        );
    }
    let reply = gw
        .call(ROOM, "join", &cids[3], json!({"name": "dan"}), Value::Null)
        .await;
    let message = Gateway::expect_error(&reply, "system.invalidParams");
    assert!(message.contains("max_members"), "{message}");

    // The list's owner hands it over: the new owner loads what was joined since.
    let at = instances
        .iter()
        .position(|i| i.id == owners[p as usize])
        .unwrap();
    instances.remove(at).stop().await;
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, vec![json!("ann"), json!("bob"), json!("cat")]);

    // `member` changed on the two left: emptied again; joins list the new members.
    gw.pending_system();
    reload_all(&dir, &mut instances, &yaml(3, "{{token.name}}!")).await;
    reset_naming_the_room(&mut gw).await;
    assert_eq!(
        next_write(&mut watch).await,
        Value::Null,
        "the list deleted"
    );
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, Vec::<Value>::new());
    let reply = gw
        .call(ROOM, "ping", &cids[1], json!({"name": "bob"}), Value::Null)
        .await;
    let message = Gateway::expect_error(&reply, "system.invalidParams");
    assert!(message.ends_with("call join"), "{message}");
    let reply = gw
        .call(ROOM, "join", &cids[1], json!({"name": "bob"}), Value::Null)
        .await;
    assert_eq!(reply, json!({"result": null}));
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, vec![json!("bob!")]);
    for i in instances {
        i.stop().await;
    }
}

/// What a restart reads back (docs/scaling.md#presence-lists): a list written under
/// another `max_members` is kept as written, past a lowered one new members are
/// refused; one written under another `member` starts empty and its connections join
/// again.
#[tokio::test]
async fn a_restart_keeps_a_list_past_a_lowered_max_members_and_empties_one_of_another_member() {
    let server = NatsServer::start_jetstream();
    let names = ["ann", "bob", "cat"];
    let (first, gw, _) = start_shared(&server, &yaml(10, "{{token.name}}")).await;
    for (i, name) in names.iter().enumerate() {
        let cid = format!("r{i}");
        let login = json!({"token": {"name": name}});
        let reply = gw.request(&format!("conn.{cid}.token"), login).await;
        assert_eq!(reply, json!({"result": null}));
        let reply = gw
            .call(ROOM, "join", &cid, json!({"name": name}), Value::Null)
            .await;
        assert_eq!(reply, json!({"result": null}), "{name} joins");
    }
    first.stop().await;

    let (second, gw, _) = start_shared(&server, &yaml(2, "{{token.name}}")).await;
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, names.map(|n| json!(n)), "kept past max_members 2");
    let reply = gw
        .call(ROOM, "join", "r3", json!({"name": "dan"}), Value::Null)
        .await;
    let message = Gateway::expect_error(&reply, "system.invalidParams");
    assert!(message.contains("max_members"), "{message}");
    second.stop().await;

    let (third, gw, _) = start_shared(&server, &yaml(2, "{{token.name}}!")).await;
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, Vec::<Value>::new(), "made by another member");
    let reply = gw
        .call(ROOM, "ping", "r0", json!({"name": "ann"}), Value::Null)
        .await;
    let message = Gateway::expect_error(&reply, "system.invalidParams");
    assert!(message.ends_with("call join"), "{message}");
    let reply = gw
        .call(ROOM, "join", "r0", json!({"name": "ann"}), Value::Null)
        .await;
    assert_eq!(reply, json!({"result": null}));
    let listed = members(&gw.request(&format!("get.{ROOM}"), Value::Null).await);
    assert_eq!(listed, vec![json!("ann!")]);
    third.stop().await;
}
