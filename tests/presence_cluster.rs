//! Presence lists on the shared store: three instances on one bucket (a real
//! nats-server with JetStream), one list whose members' connections belong to
//! partitions that other instances own. Logouts, token changes, joins and leaves back
//! to back; what a join, a second tab, a ping and a leave cost in writes and events;
//! the list's owner killed while members come and go, or stopped (a handover); a list
//! kept in memory past `max_entries`.
//!
//! A gateway's copy is followed on one subscription that receives the list's events
//! and the replies to its gets (their reply subjects are under `event.<list>.`), so it
//! sees them in the order the list's owner published them, as Resgate does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use common::leases::*;
use common::*;
use connres::config::Config;
use connres::service::{Service, ServiceError};
use connres::store::record::{key, partition_of_cid, partition_of_name};
use connres::store::UnitKey;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ROOM: &str = "chat.room.r1.members";

/// The room on the shared store in `bucket`, with `ttl`.
fn yaml(bucket: &str, ttl: &str) -> String {
    format!(
        r#"version: 1
state:
  store: nats
  bucket: {bucket}
  partitions: {PARTITIONS}
  lease: 2s
resources:
  chat.room.{{room}}.members:
    presence:
      member: "{{{{token.name}}}}"
      join: token != null
      ttl: {ttl}
      max_members: 100
    access:
      get: "true"
      call: token != null
"#
    )
}

fn token(name: &str) -> Value {
    json!({ "name": name })
}

/// An instance in-process, with its ID; killed (its task aborted, so it renews nothing
/// more) or stopped.
struct Instance {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl Instance {
    async fn start(server: &NatsServer, yaml: &str) -> Instance {
        let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let service = Service::start(config, &server.url)
            .await
            .expect("connres starts");
        Instance::run(service)
    }

    /// One instance alone, on `clock`; returns once it serves, with its figures.
    async fn alone(
        server: &NatsServer,
        yaml: &str,
        clock: connres::clock::Clock,
    ) -> (Instance, Arc<connres::service::ClusterMetrics>) {
        let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let service = Service::start(config, &server.url)
            .await
            .expect("connres starts")
            .with_clock(clock);
        let cluster = service.cluster_metrics().expect("a shared store");
        let mut serving = service.serving();
        let instance = Instance::run(service);
        tokio::time::timeout(WAIT, serving.wait_for(|s| *s))
            .await
            .expect("the instance serves in time")
            .expect("the instance runs");
        (instance, cluster)
    }

    fn run(service: Service) -> Instance {
        let id = service.instance_id().expect("a shared store").to_string();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(service.run(async {
            let _ = stopped.await;
        }));
        Instance {
            id,
            stop: Some(stop),
            task,
        }
    }

    fn kill(self) {
        self.task.abort();
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

/// `n` connection IDs (`<prefix><i>`) whose partition `owner` holds.
fn cids_of(owners: &[String], owner: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|cid| owners[partition_of_cid(cid, PARTITIONS) as usize] == owner)
        .take(n)
        .collect()
}

/// A gateway's copy of the room: its events and the replies to its gets on one
/// subscription, in the order the list's owner published them.
struct Follower {
    client: Client,
    stream: Subscriber,
    /// The copy: the last get's members and the events since (none once an event did
    /// not fit it, until the next get).
    copy: Option<Vec<Value>>,
    gets: u64,
    /// Events seen, by kind (`add`, `remove`).
    seen: BTreeMap<String, usize>,
}

impl Follower {
    async fn new(server: &NatsServer) -> Follower {
        let client = async_nats::connect(&server.url).await.unwrap();
        let stream = client.subscribe(format!("event.{ROOM}.>")).await.unwrap();
        client.flush().await.unwrap();
        Follower {
            client,
            stream,
            copy: None,
            gets: 0,
            seen: BTreeMap::new(),
        }
    }

    /// Asks for the room; its reply comes on the stream after the events published
    /// before it.
    async fn ask(&mut self) -> u64 {
        self.gets += 1;
        let reply = format!("event.{ROOM}.reply.{}", self.gets);
        self.client
            .publish_with_reply(format!("get.{ROOM}"), reply, Bytes::new())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.gets
    }

    /// The next message on the stream within `wait`: events fold into the copy; a
    /// get's reply is returned (its number and members), the copy as it was before it
    /// beside it, and the copy becomes the reply.
    async fn next(&mut self, wait: Duration) -> Option<(u64, Option<Vec<Value>>, Vec<Value>)> {
        let msg = tokio::time::timeout(wait, self.stream.next())
            .await
            .ok()??;
        let rest = msg
            .subject
            .strip_prefix(&format!("event.{ROOM}."))
            .expect("the room's");
        if let Some(n) = rest.strip_prefix("reply.") {
            let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
            let members = reply["result"]["collection"]
                .as_array()
                .unwrap_or_else(|| panic!("not a collection: {reply}"))
                .clone();
            let before = self.copy.replace(members.clone());
            return Some((n.parse().unwrap(), before, members));
        }
        let event: Value = serde_json::from_slice(&msg.payload).unwrap();
        *self.seen.entry(rest.to_string()).or_default() += 1;
        let idx = event["idx"].as_u64().unwrap() as usize;
        let fits = match (&mut self.copy, rest) {
            (Some(copy), "add") if idx <= copy.len() => {
                copy.insert(idx, event["value"].clone());
                true
            }
            (Some(copy), "remove") if idx < copy.len() => {
                copy.remove(idx);
                true
            }
            _ => false,
        };
        if !fits {
            self.copy = None;
        }
        None
    }

    /// Follows the stream until the reply to get `n`: the copy just before it (none
    /// when an event did not fit), and the reply's members.
    async fn until(&mut self, n: u64) -> (Option<Vec<Value>>, Vec<Value>) {
        let deadline = Instant::now() + WAIT * 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no reply to get {n}");
            if let Some((k, before, members)) = self.next(left).await {
                if k == n {
                    return (before, members);
                }
            }
        }
    }
}

/// Each member's name once, sorted.
fn names(members: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = members
        .iter()
        .map(|v| v.as_str().expect("a string member").to_string())
        .collect();
    out.sort();
    let unique: BTreeSet<&String> = out.iter().collect();
    assert_eq!(
        unique.len(),
        out.len(),
        "a member listed twice: {members:?}"
    );
    out
}

/// What each connection is, as the test sent it: its token's name (none: logged out)
/// and whether it is in the room.
#[derive(Default)]
struct Expected {
    conns: BTreeMap<String, (Option<String>, bool)>,
}

impl Expected {
    fn login(&mut self, cid: &str, name: &str) {
        let c = self.conns.entry(cid.to_string()).or_default();
        if c.0.as_deref() != Some(name) {
            c.1 = false;
        }
        c.0 = Some(name.to_string());
    }

    fn logout(&mut self, cid: &str) {
        self.conns.insert(cid.to_string(), (None, false));
    }

    fn join(&mut self, cid: &str) {
        self.conns.get_mut(cid).expect("logged in").1 = true;
    }

    fn leave(&mut self, cid: &str) {
        if let Some(c) = self.conns.get_mut(cid) {
            c.1 = false;
        }
    }

    fn name(&self, cid: &str) -> Option<&str> {
        self.conns.get(cid).and_then(|c| c.0.as_deref())
    }

    fn joined(&self, cid: &str) -> bool {
        self.conns.get(cid).is_some_and(|c| c.1)
    }

    /// The room's members: each joined connection's name, once.
    fn members(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .conns
            .values()
            .filter(|c| c.1)
            .filter_map(|c| c.0.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// Publishes without waiting: token events, and calls whose replies come to
/// `<inbox>.<n>`, each with the reply the test expects.
struct Burst {
    client: Client,
    inbox: String,
    expected: Vec<Value>,
}

impl Burst {
    async fn token(&mut self, cid: &str, token: Value) {
        let body = json!({ "token": token }).to_string();
        self.client
            .publish(format!("conn.{cid}.token"), Bytes::from(body))
            .await
            .unwrap();
    }

    async fn call(&mut self, method: &str, cid: &str, name: &str, expect: Value) {
        let body = json!({ "cid": cid, "token": token(name) }).to_string();
        let reply = format!("{}.{}", self.inbox, self.expected.len());
        self.expected.push(expect);
        self.client
            .publish_with_reply(format!("call.{ROOM}.{method}"), reply, Bytes::from(body))
            .await
            .unwrap();
    }

    /// Every reply, each as expected.
    async fn check(&mut self, replies: &mut Subscriber) {
        self.client.flush().await.unwrap();
        let mut got: BTreeMap<usize, Value> = BTreeMap::new();
        while got.len() < self.expected.len() {
            let msg = tokio::time::timeout(WAIT, replies.next())
                .await
                .unwrap_or_else(|_| panic!("{} of {} replies", got.len(), self.expected.len()))
                .unwrap();
            let n: usize = msg.subject.rsplit('.').next().unwrap().parse().unwrap();
            let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
            assert!(got.insert(n, reply).is_none(), "two replies to call {n}");
        }
        for (n, reply) in got {
            let expected = &self.expected[n];
            if expected.is_null() {
                assert_eq!(reply, json!({"result": null}), "call {n}");
            } else {
                Gateway::expect_error(&reply, expected.as_str().unwrap());
            }
        }
        self.expected.clear();
    }
}

async fn three(
    server: &NatsServer,
    yaml: &str,
    bucket_name: &str,
) -> (Vec<Instance>, kv::Store, Vec<String>) {
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(Instance::start(server, yaml).await);
    }
    let kv = bucket(server, bucket_name).await;
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let owners = settled(&kv, &ids).await;
    (all, kv, owners)
}

#[tokio::test]
async fn logouts_and_token_changes_of_connections_owned_elsewhere_leave_every_copy_equal_to_the_get(
) {
    let server = NatsServer::start_jetstream();
    let (instances, _kv, owners) = three(&server, &yaml("presence1", "60s"), "presence1").await;
    let list_owner = owners[partition_of_name(ROOM, PARTITIONS) as usize].clone();
    // Two connections whose partition each instance owns: four of the six are owned
    // by another instance than the room's.
    let mut cids = Vec::new();
    for i in &instances {
        cids.extend(cids_of(&owners, &i.id, "m", 2));
    }
    let elsewhere = cids
        .iter()
        .filter(|cid| owners[partition_of_cid(cid, PARTITIONS) as usize] != list_owner)
        .count();
    assert_eq!(elsewhere, 4, "{cids:?} {owners:?}");
    let mut follower = Follower::new(&server).await;
    let n = follower.ask().await;
    let (_, first) = follower.until(n).await;
    assert!(first.is_empty());
    let client = async_nats::connect(&server.url).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.>")).await.unwrap();
    client.flush().await.unwrap();
    let mut burst = Burst {
        client,
        inbox,
        expected: Vec::new(),
    };
    let mut model = Expected::default();
    let names_ = ["ann", "bob", "cat", "dan"];
    // A seeded sequence: each step one connection does what fits what it is. Logged
    // out, it logs in and joins; logged in, it logs out, or its token changes (to
    // another member's: out of the room until it joins again), or it leaves, joins or
    // pings. Names repeat across connections (second tabs: the member stays while
    // either is in). Everything is published without waiting.
    let mut seed: u64 = 42;
    let mut rnd = |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as usize
    };
    for _ in 0..80 {
        let cid = &cids[rnd(cids.len())];
        let Some(now) = model.name(cid).map(str::to_string) else {
            let name = names_[rnd(names_.len())];
            burst.token(cid, token(name)).await;
            model.login(cid, name);
            burst.call("join", cid, name, Value::Null).await;
            model.join(cid);
            continue;
        };
        match rnd(5) {
            0 => {
                burst.token(cid, Value::Null).await;
                model.logout(cid);
            }
            1 => {
                let other = names_[rnd(names_.len())];
                burst.token(cid, token(other)).await;
                model.login(cid, other);
            }
            2 if model.joined(cid) => {
                burst.call("leave", cid, &now, Value::Null).await;
                model.leave(cid);
            }
            4 => {
                let expect = match model.joined(cid) {
                    true => Value::Null,
                    false => json!("system.invalidParams"),
                };
                burst.call("ping", cid, &now, expect).await;
            }
            _ => {
                burst.call("join", cid, &now, Value::Null).await;
                model.join(cid);
            }
        }
    }
    // Last, every connection in the room logs out or becomes another member, and
    // nothing follows for it but a call on the room by another connection: its reply
    // comes after every token event's step before it.
    let mut ended = 0;
    for (i, cid) in cids.iter().enumerate() {
        let Some(now) = model.name(cid).map(str::to_string) else {
            continue;
        };
        if !model.joined(cid) {
            continue;
        }
        ended += 1;
        if i % 2 == 0 {
            burst.token(cid, Value::Null).await;
            model.logout(cid);
        } else {
            let other = names_.iter().find(|n| **n != now).unwrap();
            burst.token(cid, token(other)).await;
            model.login(cid, other);
        }
    }
    assert!(ended > 0);
    let last = cids_of(&owners, &list_owner, "z", 1).remove(0);
    burst.token(&last, token("zed")).await;
    burst.call("join", &last, "zed", Value::Null).await;
    model.login(&last, "zed");
    model.join(&last);
    burst.check(&mut replies).await;
    // The get answers after every step before it (the owner publishes in order): the
    // copy from the first get and every event equals it, and the members are those
    // the test expects.
    let n = follower.ask().await;
    let (copy, get) = follower.until(n).await;
    assert_eq!(copy.as_ref(), Some(&get), "the copy from the events");
    assert_eq!(names(&get), model.members());
    assert!(
        follower.seen.get("remove").copied().unwrap_or(0) > 4,
        "{:?}",
        follower.seen
    );
    // And a fresh owner's load gives the same list: the bucket holds it.
    for i in instances {
        i.stop().await;
    }
}

#[tokio::test]
async fn a_join_a_second_tab_a_ping_a_leave_and_a_logout_cost_these_writes_and_events() {
    let server = NatsServer::start_jetstream();
    let (instances, kv, owners) = three(&server, &yaml("presence2", "60s"), "presence2").await;
    let p = partition_of_name(ROOM, PARTITIONS);
    let list_owner = owners[p as usize].clone();
    let other = instances.iter().find(|i| i.id != list_owner).unwrap();
    let cids = cids_of(&owners, &other.id, "t", 2);
    let mut watch = kv
        .watch(key(p, &UnitKey::Shared(ROOM.into())))
        .await
        .unwrap();
    let mut follower = Follower::new(&server).await;
    let n = follower.ask().await;
    follower.until(n).await;
    let gw = Gateway::connect(&server).await;
    for cid in &cids {
        let reply = gw
            .request(&format!("conn.{cid}.token"), json!({"token": token("ann")}))
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    let write = |entry: Option<Result<kv::Entry, _>>| {
        let entry = entry.expect("a write").unwrap();
        match entry.operation {
            kv::Operation::Put => serde_json::from_slice::<Value>(&entry.value).unwrap(),
            _ => Value::Null,
        }
    };
    let mut step = async |method: &str, cid: &str| {
        let reply = gw.call(ROOM, method, cid, token("ann"), Value::Null).await;
        assert_eq!(reply, json!({"result": null}), "{method} {cid}");
        follower.seen.clear();
        let n = follower.ask().await;
        follower.until(n).await;
        std::mem::take(&mut follower.seen)
    };
    let one = |kind: &str| BTreeMap::from([(kind.to_string(), 1)]);
    // A join of a new member: one write, one `add`.
    assert_eq!(step("join", &cids[0]).await, one("add"));
    let first = write(tokio::time::timeout(WAIT, watch.next()).await.unwrap());
    assert_eq!(
        first,
        json!({
            "members": [{"member": "ann", "conns": [cids[0]]}],
            "made_by": "{{token.name}}",
        })
    );
    // A second tab: one write, no event. A ping: neither (the next write is the
    // leave's, which differs from the second tab's).
    assert_eq!(step("join", &cids[1]).await, BTreeMap::new());
    let second = write(tokio::time::timeout(WAIT, watch.next()).await.unwrap());
    assert_eq!(second["members"][0]["conns"].as_array().unwrap().len(), 2);
    assert_eq!(step("ping", &cids[0]).await, BTreeMap::new());
    assert_eq!(step("leave", &cids[1]).await, BTreeMap::new());
    let third = write(tokio::time::timeout(WAIT, watch.next()).await.unwrap());
    assert_eq!(third, first, "one write each, the ping none");
    // The logout of the last tab, a connection another instance owns: the room's
    // owner deletes the list (one write) and publishes one `remove`.
    gw.token(&cids[0], Value::Null).await;
    let gone = write(tokio::time::timeout(WAIT, watch.next()).await.unwrap());
    assert_eq!(gone, Value::Null, "deleted");
    let n = follower.ask().await;
    let (copy, get) = follower.until(n).await;
    assert_eq!(follower.seen, one("remove"));
    assert_eq!(copy, Some(get.clone()));
    assert!(get.is_empty());
    for i in instances {
        i.stop().await;
    }
}

/// Pings `cids` (with their names) every 300 ms, as open pages do, until stopped, and
/// then once more (a whole round after the stop); records every reply.
/// The connections a pinger pings, with their names; locked for a whole round, so
/// that a connection taken out has no ping on its way once the lock is taken.
type Pinged = Arc<tokio::sync::Mutex<Vec<(String, String)>>>;

/// Every ping answered: its connection and the reply.
type Replies = Arc<Mutex<Vec<(String, Value)>>>;

fn pinger(client: Client, cids: Pinged) -> (oneshot::Sender<()>, Replies, JoinHandle<()>) {
    let (stop, mut stopped) = oneshot::channel();
    let replies = Arc::new(Mutex::new(Vec::new()));
    let out = replies.clone();
    let task = tokio::spawn(async move {
        let mut last = false;
        loop {
            let now = cids.lock().await;
            for (cid, name) in now.iter() {
                let body = json!({ "cid": cid, "token": token(name) }).to_string();
                let request = client.request(format!("call.{ROOM}.ping"), Bytes::from(body));
                // A ping while nobody serves the room goes unanswered.
                if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(1), request).await {
                    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
                    out.lock().unwrap().push((cid.clone(), reply));
                }
            }
            drop(now);
            if last {
                return;
            }
            tokio::select! {
                _ = &mut stopped => last = true,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    (stop, replies, task)
}

#[tokio::test]
async fn the_lists_owner_killed_a_new_owner_keeps_who_pings_and_lets_ghosts_go_within_a_ttl() {
    let server = NatsServer::start_jetstream();
    // A ttl of 2s: ticks are whole seconds, so a connection pinging every 300 ms is
    // never two ticks behind.
    let (mut instances, _kv, owners) = three(&server, &yaml("presence3", "2s"), "presence3").await;
    let list_owner = owners[partition_of_name(ROOM, PARTITIONS) as usize].clone();
    let mut cids = Vec::new();
    for i in &instances {
        cids.extend(cids_of(&owners, &i.id, "k", 2));
    }
    // Ann has two tabs (one closes with the owner gone); bob logs out, dan leaves and
    // eve's tab closes while nobody serves the room; cat and ann's other tab keep
    // pinging, until cat logs out once the room is served again.
    let who = ["ann", "ann", "bob", "cat", "dan", "eve"];
    let gw = Gateway::connect(&server).await;
    let mut system = gw.client.subscribe("system.reset").await.unwrap();
    for (cid, name) in cids.iter().zip(who) {
        let reply = gw
            .request(&format!("conn.{cid}.token"), json!({"token": token(name)}))
            .await;
        assert_eq!(reply, json!({"result": null}));
        let reply = gw.call(ROOM, "join", cid, token(name), Value::Null).await;
        assert_eq!(reply, json!({"result": null}));
    }
    let mut follower = Follower::new(&server).await;
    let n = follower.ask().await;
    let (_, before) = follower.until(n).await;
    assert_eq!(names(&before), ["ann", "bob", "cat", "dan", "eve"]);
    let stayers: Pinged = Arc::new(tokio::sync::Mutex::new(vec![
        (cids[1].clone(), "ann".to_string()),
        (cids[3].clone(), "cat".to_string()),
    ]));
    let pinging = async_nats::connect(&server.url).await.unwrap();
    let (stop_pings, pings, pinger) = pinger(pinging, stayers.clone());
    // Killed: nobody serves the room until its lease expires and another instance
    // takes the partition over.
    let at = instances.iter().position(|i| i.id == list_owner).unwrap();
    instances.remove(at).kill();
    gw.token(&cids[2], Value::Null).await;
    let dan = json!({ "cid": cids[4], "token": token("dan") }).to_string();
    gw.client
        .publish(format!("call.{ROOM}.leave"), Bytes::from(dan))
        .await
        .unwrap();
    gw.client.flush().await.unwrap();
    // The new owner tells gateways to re-fetch the room.
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, system.next())
            .await
            .expect("a system.reset naming the room")
            .unwrap();
        let reset: Value = serde_json::from_slice(&msg.payload).unwrap();
        let named = reset["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == ROOM || n == "chat.room.*.members"));
        if named {
            break;
        }
    }
    let n = follower.ask().await;
    let (_, taken) = follower.until(n).await;
    // Loaded as the old owner wrote it: each member once.
    names(&taken);
    // A newcomer joins on the new owner.
    let fay = format!("{}-fay", cids[0]);
    gw.token(&fay, token("fay")).await;
    let reply = gw.call(ROOM, "join", &fay, token("fay"), Value::Null).await;
    assert_eq!(reply, json!({"result": null}));
    stayers.lock().await.push((fay.clone(), "fay".to_string()));
    // Cat logs out (its page stops pinging): the new owner found cat's connection in
    // the list it loaded, so the logout's step takes it out before the call after it
    // (a ping of fay's) is answered.
    stayers.lock().await.retain(|(cid, _)| *cid != cids[3]);
    gw.token(&cids[3], Value::Null).await;
    let reply = gw.call(ROOM, "ping", &fay, token("fay"), Value::Null).await;
    assert_eq!(reply, json!({"result": null}));
    let n = follower.ask().await;
    let (_, now) = follower.until(n).await;
    assert!(!names(&now).contains(&"cat".to_string()), "{now:?}");
    // Within a ttl of the load (and a sweep), the ghosts are gone: ann (her pinging
    // tab) and fay are left. Bounded: each round awaits a get's reply, then the next
    // event (a removal) or a second.
    let wanted = ["ann", "fay"];
    let deadline = Instant::now() + WAIT * 2;
    let (copy, get) = loop {
        let n = follower.ask().await;
        let (copy, get) = follower.until(n).await;
        if names(&get) == wanted {
            break (copy, get);
        }
        assert!(Instant::now() < deadline, "ghosts left: {get:?}");
        let _ = follower.next(Duration::from_secs(1)).await;
    };
    assert_eq!(
        copy,
        Some(get.clone()),
        "the copy from the re-fetch and the events"
    );
    // The ghosts' connections are not joined any more.
    for (cid, name) in [(&cids[0], "ann"), (&cids[4], "dan"), (&cids[5], "eve")] {
        let reply = gw.call(ROOM, "ping", cid, token(name), Value::Null).await;
        let message = Gateway::expect_error(&reply, "system.invalidParams");
        assert!(message.contains("call join"), "{message}");
    }
    let before_stop = pings.lock().unwrap().len();
    let _ = stop_pings.send(());
    pinger.await.unwrap();
    // Every ping of the stayers that was answered was answered as joined, and the
    // round after the stop (the room served, the ghosts gone) pinged each stayer.
    let pings = pings.lock().unwrap().clone();
    for (cid, _) in stayers.lock().await.iter() {
        assert!(
            pings[before_stop..].iter().any(|(c, _)| c == cid),
            "{cid} unanswered after the stop: {pings:?}"
        );
    }
    for (cid, reply) in &pings {
        assert_eq!(reply, &json!({"result": null}), "a ping of {cid}");
    }
    for i in instances {
        i.stop().await;
    }
}

#[tokio::test]
async fn a_graceful_stop_hands_the_list_over_whole_and_its_new_owner_applies_logouts() {
    let server = NatsServer::start_jetstream();
    let (mut instances, _kv, owners) = three(&server, &yaml("presence4", "60s"), "presence4").await;
    let list_owner = owners[partition_of_name(ROOM, PARTITIONS) as usize].clone();
    let mut cids = Vec::new();
    for i in &instances {
        cids.extend(cids_of(&owners, &i.id, "h", 2));
    }
    let who = ["ann", "ann", "bob", "cat", "dan", "eve"];
    let gw = Gateway::connect(&server).await;
    for (cid, name) in cids.iter().zip(who) {
        let reply = gw
            .request(&format!("conn.{cid}.token"), json!({"token": token(name)}))
            .await;
        assert_eq!(reply, json!({"result": null}));
        let reply = gw.call(ROOM, "join", cid, token(name), Value::Null).await;
        assert_eq!(reply, json!({"result": null}));
    }
    let mut follower = Follower::new(&server).await;
    let n = follower.ask().await;
    let (_, before) = follower.until(n).await;
    assert_eq!(names(&before), ["ann", "bob", "cat", "dan", "eve"]);
    // Stopped: it hands its partitions over, the room's among them.
    let at = instances.iter().position(|i| i.id == list_owner).unwrap();
    instances.remove(at).stop().await;
    let n = follower.ask().await;
    let (copy, after) = follower.until(n).await;
    assert_eq!(after, before, "the list as it was, each member once");
    assert_eq!(copy, Some(after));
    // The new owner knows who joined: one of ann's tabs logs out (ann stays), bob's
    // token changes to another member, dan leaves, all back to back; a ping of eve's
    // is answered after them.
    gw.token(&cids[0], Value::Null).await;
    gw.token(&cids[2], token("zed")).await;
    let dan = json!({ "cid": cids[4], "token": token("dan") }).to_string();
    gw.client
        .publish(format!("call.{ROOM}.leave"), Bytes::from(dan))
        .await
        .unwrap();
    let reply = gw
        .call(ROOM, "ping", &cids[5], token("eve"), Value::Null)
        .await;
    assert_eq!(reply, json!({"result": null}));
    let n = follower.ask().await;
    let (copy, get) = follower.until(n).await;
    assert_eq!(names(&get), ["ann", "cat", "eve"]);
    assert_eq!(copy, Some(get));
    assert_eq!(follower.seen.get("remove"), Some(&2));
    for i in instances {
        i.stop().await;
    }
}

#[tokio::test]
async fn a_list_stays_in_memory_past_max_entries_and_a_logout_still_finds_it() {
    let server = NatsServer::start_jetstream();
    let yaml = yaml("presence5", "60s").replace("  lease: 2s\n", "  lease: 2s\n  max_entries: 2\n");
    let clock = connres::clock::Clock::manual();
    let (connres, cluster) = Instance::alone(&server, &yaml, clock.clone()).await;
    let gw = Gateway::connect(&server).await;
    let mut follower = Follower::new(&server).await;
    let reply = gw
        .request("conn.a1.token", json!({"token": token("ann")}))
        .await;
    assert_eq!(reply, json!({"result": null}));
    let reply = gw.call(ROOM, "join", "a1", token("ann"), Value::Null).await;
    assert_eq!(reply, json!({"result": null}));
    let n = follower.ask().await;
    let (_, first) = follower.until(n).await;
    assert_eq!(first, vec![json!("ann")]);
    // Six more connections log in, each a unit touched after the list (seconds later
    // on the instance's clock): past `max_entries`, the least recently touched
    // units leave memory, the list not.
    clock.advance(Duration::from_secs(5));
    for i in 0..6 {
        let reply = gw
            .request(&format!("conn.o{i}.token"), json!({"token": token("olly")}))
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    assert!(cluster.evicted() > 0, "units went past max_entries");
    // Ann's logout finds her in the list.
    let reply = gw.request("conn.a1.token", json!({"token": null})).await;
    assert_eq!(reply, json!({"result": null}));
    let reply = gw
        .call(ROOM, "leave", "o0", token("olly"), Value::Null)
        .await;
    assert_eq!(reply, json!({"result": null}));
    let n = follower.ask().await;
    let (copy, get) = follower.until(n).await;
    assert_eq!(get, Vec::<Value>::new());
    assert_eq!(copy, Some(get));
    connres.stop().await;
}

/// A connection that asked for the list before logging in, owned by another instance
/// than the list's: the list's owner answered that access without a token. The login's
/// token event (which every instance receives) makes the list's owner ask the gateway
/// to check that access again (`reaccess`), as one instance with the memory store does.
/// Before, no instance did: through Resgate the client's join after its login was
/// refused by Resgate itself, from the access it had cached.
#[tokio::test]
async fn a_login_asks_again_for_access_to_a_list_granted_before_it_on_another_instance() {
    let server = NatsServer::start_jetstream();
    let (instances, _kv, owners) = three(&server, &yaml("presence6", "60s"), "presence6").await;
    let list_owner = owners[partition_of_name(ROOM, PARTITIONS) as usize].clone();
    let other = instances
        .iter()
        .find(|i| i.id != list_owner)
        .expect("three instances");
    let cid = cids_of(&owners, &other.id, "g", 1).remove(0);
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut reaccess = client
        .subscribe(format!("event.{ROOM}.reaccess"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let access = |token: Value| {
        let client = client.clone();
        let payload = json!({ "cid": cid, "token": token }).to_string();
        async move {
            let reply = client
                .request(format!("access.{ROOM}"), payload.into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let before = access(Value::Null).await;
    assert_eq!(before["result"]["get"], json!(true), "{before}");
    assert!(before["result"].get("call").is_none(), "{before}");
    client
        .publish(
            format!("conn.{cid}.token"),
            json!({ "token": token("ann") }).to_string().into(),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT, reaccess.next())
        .await
        .expect("the list's access asked again after the login")
        .expect("subscribed");
    assert_eq!(event.subject.as_str(), format!("event.{ROOM}.reaccess"));
    let after = access(token("ann")).await;
    assert_eq!(after["result"]["call"], json!("*"), "{after}");
    for i in instances {
        i.stop().await;
    }
}
