//! `state.max_entries` and `state.max_bytes` with the shared store (`state.store:
//! nats`): memory bounds, not a retention policy. A unit evicted past them leaves
//! memory and stays in the bucket;
//! the next message that needs it waits (with every later message of its partition)
//! until it is read back. Idle expiry (`state.idle_ttl`) is what deletes. In-process
//! instances against a real nats-server with JetStream; messages published back to
//! back where their order matters.

mod common;

use std::collections::BTreeMap;

use async_nats::Subscriber;
use bytes::Bytes;
use common::*;
use connres::clock::Clock;
use futures::StreamExt;
use serde_json::{json, Value};

/// The seed resources on the shared store in `bucket`, with `state` lines added.
fn bounded(bucket: &str, state: &str) -> String {
    shared_seed(bucket).replacen("state:\n", &format!("state:\n{state}"), 1)
}

fn prefs(theme: &str, font: i64) -> Value {
    json!({"theme": theme, "fontSize": font})
}

/// The stored value of connection `cid` in the bucket, if it holds one.
async fn stored(server: &NatsServer, bucket: &str, cid: &str) -> Option<Value> {
    use connres::store::record::{key, partition_of_cid};
    use connres::store::UnitKey;
    let client = async_nats::connect(&server.url).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(bucket)
        .await
        .unwrap();
    let p = partition_of_cid(cid, PARTITIONS);
    let value = kv
        .get(key(p, &UnitKey::Connection(cid.into())))
        .await
        .unwrap()?;
    Some(serde_json::from_slice(&value).unwrap())
}

/// The written prefs of a stored connection.
fn stored_prefs(unit: &Value, cid: &str) -> Value {
    let rid = format!("session.prefs.{cid}");
    let models = unit["models"].as_array().expect("models");
    let model = models.iter().find(|m| m["rid"] == json!(rid));
    model.map_or(Value::Null, |m| m["written"].clone())
}

/// Requests published back to back on one connection, each with a reply subject of its
/// own; the replies in the order sent.
struct Burst {
    inbox: String,
    replies: Subscriber,
    sent: usize,
}

impl Burst {
    async fn new(gw: &Gateway) -> Burst {
        let inbox = gw.client.new_inbox();
        let replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
        gw.client.flush().await.unwrap();
        Burst {
            inbox,
            replies,
            sent: 0,
        }
    }

    async fn send(&mut self, gw: &Gateway, subject: String, body: Value) {
        let reply = format!("{}.{}", self.inbox, self.sent);
        let body = match body {
            Value::Null => Bytes::new(),
            body => Bytes::from(body.to_string()),
        };
        gw.client
            .publish_with_reply(subject, reply, body)
            .await
            .unwrap();
        self.sent += 1;
    }

    async fn set(&mut self, gw: &Gateway, cid: &str, values: Value) {
        let subject = format!("connres.set.session.prefs.{cid}");
        self.send(gw, subject, json!({ "values": values })).await;
    }

    async fn get(&mut self, gw: &Gateway, cid: &str) {
        self.send(gw, format!("get.session.prefs.{cid}"), Value::Null)
            .await;
    }

    /// Every reply, in the order the requests were sent (`WAIT` for each at most).
    async fn replies(mut self, gw: &Gateway) -> Vec<Value> {
        gw.client.flush().await.unwrap();
        let mut got: BTreeMap<usize, Value> = BTreeMap::new();
        while got.len() < self.sent {
            let m = tokio::time::timeout(WAIT, self.replies.next())
                .await
                .unwrap_or_else(|_| panic!("replies missing: got {got:?}"))
                .unwrap();
            let i: usize = m.subject.rsplit('.').next().unwrap().parse().unwrap();
            let reply = serde_json::from_slice(&m.payload).unwrap();
            assert!(got.insert(i, reply).is_none(), "request {i} answered twice");
        }
        got.into_values().collect()
    }
}

/// Sets `prefs("dark", 10 + i)` on the `i`th connection, back to back, and checks that
/// every write was answered with a result.
async fn set_all(gw: &Gateway, cids: &[String]) {
    let mut burst = Burst::new(gw).await;
    for (i, cid) in cids.iter().enumerate() {
        burst.set(gw, cid, prefs("dark", 10 + i as i64)).await;
    }
    for reply in burst.replies(gw).await {
        assert_eq!(reply, json!({"result": null}));
    }
}

fn model(reply: &Value) -> Value {
    reply["result"]["model"].clone()
}

#[tokio::test]
async fn a_unit_evicted_past_max_entries_stays_in_the_bucket_and_is_read_back() {
    let server = NatsServer::start_jetstream();
    let bucket = "bound";
    let yaml = bounded(bucket, "  max_entries: 4\n");
    let (connres, gw, cluster) = start_shared(&server, &yaml).await;
    let cids: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    // Eight connections with written prefs, one entry each: four go past the bound, and
    // the instance remembers as many as `max_entries`.
    set_all(&gw, &cids).await;
    // Each reply left after its write, and the writes' steps evicted what they could.
    assert_eq!((cluster.evicted(), cluster.cold()), (4, 4));
    // The first connection's written value is served (read back from the bucket).
    assert_eq!(gw.get("session.prefs.c0").await, prefs("dark", 10));
    // Back to back, round robin: each get reads its unit back and evicts others, and
    // each publisher's order holds (a get after a set sees it).
    get_set_get_back_to_back(&gw, &cids).await;
    print_read_latency();
    for (i, cid) in cids.iter().enumerate() {
        let unit = stored(&server, bucket, cid)
            .await
            .unwrap_or_else(|| panic!("the bucket lost {cid}"));
        assert_eq!(
            stored_prefs(&unit, cid),
            prefs("light", 10 + i as i64),
            "{cid}"
        );
    }
    connres.stop().await;
}

#[tokio::test]
async fn a_unit_evicted_past_max_bytes_stays_in_the_bucket_and_is_read_back() {
    let server = NatsServer::start_jetstream();
    let bucket = "bound-bytes";
    // Each connection holds its written prefs: the record and two values, under 840
    // bytes as counted, over 800; four fit, five do not.
    let unit = connres::store::UNIT_OVERHEAD + 200;
    let yaml = bounded(bucket, &format!("  max_bytes: {}\n", 4 * unit));
    let (connres, gw, cluster) = start_shared(&server, &yaml).await;
    let cids: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    set_all(&gw, &cids).await;
    // As past max_entries: the four least recently touched left memory, remembered.
    assert_eq!((cluster.evicted(), cluster.cold()), (4, 4));
    // Read back from the bucket, in order, however the bound moves units out meanwhile.
    get_set_get_back_to_back(&gw, &cids).await;
    for (i, cid) in cids.iter().enumerate() {
        let unit = stored(&server, bucket, cid)
            .await
            .unwrap_or_else(|| panic!("the bucket lost {cid}"));
        assert_eq!(
            stored_prefs(&unit, cid),
            prefs("light", 10 + i as i64),
            "{cid}"
        );
    }
    let state = last_shared_metrics();
    assert!(
        state.state_bytes() <= 4 * unit,
        "{} bytes held",
        state.state_bytes()
    );
    connres.stop().await;
}

#[tokio::test]
async fn a_failover_that_overfills_the_survivor_loses_no_written_value() {
    let server = NatsServer::start_jetstream();
    let bucket = "bound-failover";
    let yaml = bounded(bucket, "  max_entries: 6\n");
    let (a, ma) = start_member(&server, &yaml).await;
    let (b, mb) = start_member(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    let gw = Gateway::connect(&server).await;
    let cids: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
    set_all(&gw, &cids).await;
    // One instance stops: the survivor loads its partitions, twice its bound.
    a.stop().await;
    let mut burst = Burst::new(&gw).await;
    for cid in &cids {
        burst.get(&gw, cid).await;
    }
    let replies = burst.replies(&gw).await;
    for (i, (cid, r)) in cids.iter().zip(&replies).enumerate() {
        assert_eq!(model(r), prefs("dark", 10 + i as i64), "{cid}");
    }
    assert!(mb.evicted() >= 6, "evicted {}", mb.evicted());
    for cid in &cids {
        assert!(
            stored(&server, bucket, cid).await.is_some(),
            "the bucket lost {cid}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn past_the_cold_bound_units_not_in_memory_are_looked_up_in_the_bucket() {
    let server = NatsServer::start_jetstream();
    let bucket = "bound-overflow";
    // As many cold units remembered as `max_entries`: 2 of the 6 evicted are not.
    let yaml = bounded(bucket, "  max_entries: 2\n");
    let (connres, gw, cluster) = start_shared(&server, &yaml).await;
    let cids: Vec<String> = (0..8).map(|i| format!("o{i}")).collect();
    set_all(&gw, &cids).await;
    // Six evicted, two remembered.
    assert_eq!((cluster.evicted(), cluster.cold()), (6, 2));
    let mut burst = Burst::new(&gw).await;
    for cid in &cids {
        burst.get(&gw, cid).await;
    }
    // A connection never stored reads as defaults.
    burst.get(&gw, "never").await;
    let replies = burst.replies(&gw).await;
    for (i, (cid, r)) in cids.iter().zip(&replies).enumerate() {
        assert_eq!(model(r), prefs("dark", 10 + i as i64), "{cid}");
    }
    assert_eq!(model(&replies[8]), prefs("light", 14));
    connres.stop().await;
}

#[tokio::test]
async fn a_burst_over_many_evicted_units_reads_each_back_in_order() {
    let server = NatsServer::start_jetstream();
    let yaml = bounded("bound-burst", "  max_entries: 50\n");
    let (connres, gw, cluster) = start_shared(&server, &yaml).await;
    let cids: Vec<String> = (0..500).map(|i| format!("b{i}")).collect();
    let font = |i: usize| 8 + (i % 20) as i64;
    let mut burst = Burst::new(&gw).await;
    for (i, cid) in cids.iter().enumerate() {
        burst.set(&gw, cid, prefs("dark", font(i))).await;
    }
    for reply in burst.replies(&gw).await {
        assert_eq!(reply, json!({"result": null}));
    }
    // 450 out of memory, 50 of them remembered: every get reads its unit back.
    assert_eq!((cluster.evicted(), cluster.cold()), (450, 50));
    let mut burst = Burst::new(&gw).await;
    for cid in &cids {
        burst.get(&gw, cid).await;
        burst.set(&gw, cid, json!({"theme": "light"})).await;
        burst.get(&gw, cid).await;
    }
    let replies = burst.replies(&gw).await;
    for (i, (cid, r)) in cids.iter().zip(replies.chunks(3)).enumerate() {
        assert_eq!(model(&r[0]), prefs("dark", font(i)), "{cid} before");
        assert_eq!(r[1], json!({"result": null}), "{cid} set");
        assert_eq!(model(&r[2]), prefs("light", font(i)), "{cid} after");
    }
    print_read_latency();
    connres.stop().await;
}

#[tokio::test]
async fn a_cold_unit_idle_past_the_ttl_is_deleted_and_named_in_a_reset() {
    let server = NatsServer::start_jetstream();
    let bucket = "bound-expiry";
    let clock = Clock::manual();
    let yaml = bounded(bucket, "  max_entries: 2\n  idle_ttl: 1h\n");
    let (connres, mut gw, stats) = start_clocked(&server, &yaml, clock.clone()).await;
    // c1 goes past the bound: no reset (its state still exists and is served).
    for cid in ["c1", "c2", "c3"] {
        let reply = gw
            .request(
                &format!("connres.set.session.prefs.{cid}"),
                json!({"values": {"theme": "dark"}}),
            )
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    gw.pending_events();
    clock.advance(std::time::Duration::from_secs(3600));
    // The sweep drops c2 and c3 from memory and reads c1 back to name its models
    // (written values under `resources`; logged out, and `call` reads the token, under
    // `access`): the resets name them in that order (in one batch or more).
    let (mut access, mut resources) = (Vec::new(), Vec::new());
    while access.len() < 3 || resources.len() < 3 {
        let (subject, reset) = gw.next_system().await;
        assert_eq!(subject, "system.reset");
        if reset["resources"] == json!(["session.user.*", "session.prefs.*"]) {
            // The first instance's announcement, whenever it went out.
            continue;
        }
        for (list, names) in [(&mut access, "access"), (&mut resources, "resources")] {
            for rid in reset[names].as_array().unwrap() {
                list.push(rid.as_str().unwrap().to_string());
            }
        }
    }
    let order: Vec<String> = ["c2", "c3", "c1"]
        .map(|cid| format!("session.prefs.{cid}"))
        .to_vec();
    assert_eq!((access, resources), (order.clone(), order));
    assert_eq!(stats.expired_total(), 3);
    // The get waits for c1's delete (same partition, in order).
    assert_eq!(gw.get("session.prefs.c1").await, prefs("light", 14));
    assert_eq!(stored(&server, bucket, "c1").await, None);
    connres.stop().await;
}

/// Waits until the instances together serve every partition, each some. Nothing
/// announces that, so it looks every 20 ms (up to `WAIT`).
async fn settle(instances: &[&std::sync::Arc<connres::service::ClusterMetrics>]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let served: Vec<i64> = instances.iter().map(|m| m.served()).collect();
        if served.iter().all(|&n| n > 0) && served.iter().sum::<i64>() == i64::from(PARTITIONS) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions never settled: {served:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The mean time a cold unit's read took, from the instance's metrics (for the
/// record: `--nocapture` shows it; nothing depends on it).
fn print_read_latency() {
    let text = last_shared_metrics().encode();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let sum = value("connres_cluster_kv_unit_read_seconds_sum");
    let count = value("connres_cluster_kv_unit_read_seconds_count");
    assert!(count > 0.0, "no cold unit was read");
    println!(
        "cold reads: {count} reads, mean {:.2} ms",
        sum / count * 1000.0
    );
}

/// For each of `cids` (whose prefs `set_all` wrote), back to back without waiting: a
/// get, a set of the theme, a get. Each get sees what was written before it, whether
/// its unit was in memory or read back from the bucket.
async fn get_set_get_back_to_back(gw: &Gateway, cids: &[String]) {
    let mut burst = Burst::new(gw).await;
    for cid in cids {
        burst.get(gw, cid).await;
        burst.set(gw, cid, json!({"theme": "light"})).await;
        burst.get(gw, cid).await;
    }
    let replies = burst.replies(gw).await;
    for (i, (cid, r)) in cids.iter().zip(replies.chunks(3)).enumerate() {
        let font = 10 + i as i64;
        assert_eq!(model(&r[0]), prefs("dark", font), "{cid} before");
        assert_eq!(r[1], json!({"result": null}), "{cid} set");
        assert_eq!(model(&r[2]), prefs("light", font), "{cid} after");
    }
}
