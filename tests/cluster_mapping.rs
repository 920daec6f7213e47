//! Requests routed to their partitions by nats-server (`connres mapping`): the server's
//! `{{partition}}` agrees with where connres places connections; with the block in
//! force each read reaches its partition's owner without being forwarded, and each
//! call reaches its owner and the instance ranked next, in the order sent, through
//! handovers. In-process instances against a real nats-server with JetStream and the
//! printed block.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{start_member, start_shared, Gateway, NatsServer};
use connres::config::Config;
use connres::mapping::Mapping;
use connres::service::ClusterMetrics;
use connres::store::record::partition_of_cid;
use futures::StreamExt;
use serde_json::{json, Value};

/// A server running the block `connres mapping` prints for `yaml`, and the block.
fn server_with_mapping(yaml: &str) -> (NatsServer, tempfile::TempDir) {
    let config = Config::parse("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let store = config.state.store.shared().expect("a shared store");
    let block = Mapping::of(&config, store).block();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, block).unwrap();
    (NatsServer::start_jetstream_with_config(&path), dir)
}

#[tokio::test]
async fn nats_server_places_each_cid_in_the_partition_connres_computes() {
    let yaml = common::shared_seed("agree");
    let (server, _dir) = server_with_mapping(&yaml);
    let client = async_nats::connect(&server.url).await.unwrap();
    let mut mapped = client
        .subscribe("_CONNRES.agree.p.*.get.session.user.*")
        .await
        .unwrap();
    // Cids as Resgate makes them, and odd ones.
    let cids: Vec<String> = (0..300)
        .map(|i| format!("c{i}x{:x}", i * 7919))
        .chain(["a", "A-b_c", "0", "bm4n3k8q2s9x"].map(String::from))
        .collect();
    for cid in &cids {
        client
            .publish(format!("get.session.user.{cid}"), "".into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    for cid in &cids {
        let m = tokio::time::timeout(common::WAIT, mapped.next())
            .await
            .expect("each get arrives mapped")
            .unwrap();
        let want = format!(
            "_CONNRES.agree.p.{}.get.session.user.{cid}",
            partition_of_cid(cid, common::PARTITIONS)
        );
        assert_eq!(m.subject.as_str(), want);
    }
}

/// Waits until `ready` holds, looking every 20 ms (up to `WAIT`): nothing announces
/// subscriptions made or a check finished.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The subscriptions to mapped reads the server holds, across its connections.
fn mapped_subscriptions(server: &NatsServer, bucket: &str) -> Vec<String> {
    subscriptions(server, &format!("_CONNRES.{bucket}.p."))
}

/// The subscriptions to mapped calls the server holds, across its connections.
fn write_subscriptions(server: &NatsServer, bucket: &str) -> Vec<String> {
    subscriptions(server, &format!("_CONNRES.{bucket}.w."))
}

/// The subscriptions the server holds whose subjects start with `prefix`.
fn subscriptions(server: &NatsServer, prefix: &str) -> Vec<String> {
    let connz = server.monitor_get("/connz?subs=1");
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["subscriptions_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s.as_str().map(str::to_string))
        .filter(|s| s.starts_with(prefix))
        .collect()
}

/// How many subscriptions each partition's mapped calls have.
fn write_subscribers(server: &NatsServer, bucket: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in write_subscriptions(server, bucket) {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// A resource with a writable field that calls and backend writes set.
const NOTE: &str = "
  session.note.{cid}:
    fields:
      text: { type: string, default: none, writable: true }
      n: { type: integer, default: 0, writable: true }
    access:
      get: 'true'
      call: 'true'
";

/// Publishes `body` on `subject` with a reply subject; no waiting.
async fn send(gw: &Gateway, subject: String, reply: String, body: Value) {
    gw.client
        .publish_with_reply(subject, reply, body.to_string().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn with_the_mapping_each_call_reaches_its_owner_and_the_instance_ranked_next() {
    let yaml = format!("{}{NOTE}", common::shared_seed("wmapped"));
    let (server, _dir) = server_with_mapping(&yaml);
    let (a, mut gw, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    let (c, _, mc) = start_shared(&server, &yaml).await;
    let all: [&Arc<ClusterMetrics>; 3] = [&ma, &mb, &mc];
    let n = common::PARTITIONS as usize;
    // Two subscribers per partition (not three): the owner and the next in line, once
    // the handovers are done and the instances that let partitions go ended theirs.
    until("each partition's mapped calls subscribed twice", || {
        let counts = write_subscribers(&server, "wmapped");
        all.iter().all(|m| m.served() > 0) && counts.len() == n && counts.values().all(|&k| k == 2)
    })
    .await;
    until("every instance found the mapping in force", || {
        all.iter().all(|m| m.reads_mapped() == 1)
    })
    .await;

    // Per connection and round: a client's set (mapped) and a backend's set (not),
    // all back to back: the owner applies them in the order sent.
    const ROUNDS: usize = 20;
    let cids: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    for cid in &cids {
        assert_eq!(
            gw.get(&format!("session.note.{cid}")).await["text"],
            json!("none")
        );
    }
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    for i in 0..ROUNDS {
        for cid in &cids {
            let rid = format!("session.note.{cid}");
            let call = json!({"cid": cid, "params": {"text": format!("c{i}")}});
            send(
                &gw,
                format!("call.{rid}.set"),
                format!("{inbox}.c.{cid}.{i}"),
                call,
            )
            .await;
            let api = json!({"values": {"text": format!("b{i}")}});
            send(
                &gw,
                format!("connres.set.{rid}"),
                format!("{inbox}.b.{cid}.{i}"),
                api,
            )
            .await;
        }
    }
    gw.client.flush().await.unwrap();
    let mut answered = 0;
    while answered < 2 * ROUNDS * cids.len() {
        let m = tokio::time::timeout(common::WAIT, replies.next())
            .await
            .unwrap_or_else(|_| panic!("{answered} of {} answered", 2 * ROUNDS * cids.len()))
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&m.payload).unwrap(),
            json!({"result": null}),
            "{}",
            m.subject
        );
        answered += 1;
    }
    for instance in [a, b, c] {
        instance.stop().await;
    }
    gw.client.flush().await.unwrap();
    let events = gw.pending_events();
    let sent: Vec<String> = (0..ROUNDS)
        .flat_map(|i| [format!("c{i}"), format!("b{i}")])
        .collect();
    for cid in &cids {
        let subject = format!("event.session.note.{cid}.change");
        let texts: Vec<&str> = events
            .iter()
            .filter(|(s, _)| *s == subject)
            .filter_map(|(_, e)| e["values"]["text"].as_str())
            .collect();
        assert_eq!(texts, sent, "{cid}: change events in the order applied");
    }
}

#[tokio::test]
async fn with_the_mapping_calls_and_backend_writes_keep_their_order_while_partitions_move() {
    let yaml = format!("{}{NOTE}", common::shared_seed("wmoving"));
    let (server, _dir) = server_with_mapping(&yaml);
    let (a, mut gw, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    const CIDS: usize = 24;
    let cids: Vec<String> = (0..CIDS).map(|i| format!("m{i}")).collect();
    for cid in &cids {
        assert_eq!(gw.get(&format!("session.note.{cid}")).await["n"], json!(0));
    }
    let client = gw.client.clone();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.>")).await.unwrap();
    client.flush().await.unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Sets of `n` to 1, 2, 3, ... per connection, back to back, a wave of two per
    // connection at a time until told to stop: a client's call (mapped to the
    // partition) sets an odd `n`, then a backend write (received by every instance)
    // the next even one.
    let load = async {
        let mut round = 0u64;
        while !*stop.borrow() {
            round += 1;
            let (odd, even) = (2 * round - 1, 2 * round);
            for cid in &cids {
                let rid = format!("session.note.{cid}");
                let call = json!({"cid": cid, "params": {"n": odd}});
                let reply = format!("{inbox}.{cid}.{odd}");
                send(&gw, format!("call.{rid}.set"), reply, call).await;
                let api = json!({"values": {"n": even}});
                let reply = format!("{inbox}.{cid}.{even}");
                send(&gw, format!("connres.set.{rid}"), reply, api).await;
            }
            client.flush().await.unwrap();
        }
        round
    };
    // A third instance joins (partitions move to it), then the first leaves (its
    // partitions move to the other two).
    let churn = async {
        let (c, mc) = start_member(&server, &yaml).await;
        until("the third instance serves", || mc.served() > 0).await;
        let left = [&mb, &mc];
        a.stop().await;
        until("the two left serve every partition", || {
            ma.served() == 0
                && left.iter().map(|m| m.served()).sum::<i64>() == i64::from(common::PARTITIONS)
        })
        .await;
        let _ = stop_tx.send(true);
        c
    };
    let (rounds, c) = futures::join!(load, churn);
    for instance in [b, c] {
        instance.stop().await;
    }
    // Each instance flushed on its way out: one round trip brings in what they sent.
    client.flush().await.unwrap();
    let mut acknowledged: HashMap<String, Vec<u64>> = HashMap::new();
    {
        use futures::FutureExt;
        while let Some(Some(m)) = tokio::task::coop::unconstrained(replies.next()).now_or_never() {
            let reply: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(reply, json!({"result": null}), "{}", m.subject);
            let (cid, round) = m.subject.as_str()[inbox.len() + 1..]
                .rsplit_once('.')
                .unwrap();
            acknowledged
                .entry(cid.to_string())
                .or_default()
                .push(round.parse().unwrap());
        }
    }
    let events = gw.pending_events();
    let (next, metrics) = start_member(&server, &yaml).await;
    until("the next instance serves every partition", || {
        metrics.served() == i64::from(common::PARTITIONS)
    })
    .await;
    let mut wrong = Vec::new();
    let mut total = 0;
    for cid in &cids {
        let acked = acknowledged.remove(cid).unwrap_or_default();
        total += acked.len();
        let subject = format!("event.session.note.{cid}.change");
        let applied: Vec<u64> = events
            .iter()
            .filter(|(s, _)| *s == subject)
            .filter_map(|(_, e)| e["values"]["n"].as_u64())
            .collect();
        if applied.windows(2).any(|w| w[0] >= w[1]) {
            wrong.push(format!("{cid}: applied out of the order sent: {applied:?}"));
        }
        let mut acked_sorted = acked.clone();
        acked_sorted.sort_unstable();
        if acked_sorted != applied {
            wrong.push(format!(
                "{cid}: acknowledged {acked_sorted:?}, change events {applied:?}"
            ));
        }
        let stored = gw.get(&format!("session.note.{cid}")).await["n"].clone();
        if stored != json!(applied.last().copied().unwrap_or(0)) {
            wrong.push(format!(
                "{cid}: the bucket holds {stored}, the last change event {applied:?}"
            ));
        }
    }
    next.stop().await;
    eprintln!("{rounds} rounds of {CIDS} calls and {CIDS} backend writes, {total} acknowledged");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(total > 0);
}

#[tokio::test]
async fn with_the_mapping_each_read_reaches_its_owner_unforwarded() {
    let yaml = common::shared_seed("mapped");
    let (server, _dir) = server_with_mapping(&yaml);
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    let (c, _, mc) = start_shared(&server, &yaml).await;
    let all: [&Arc<ClusterMetrics>; 3] = [&ma, &mb, &mc];
    let n = common::PARTITIONS as usize;
    // Each partition subscribed once: handed over, and the previous owners' lease of
    // grace over.
    until("each partition's mapped reads subscribed once", || {
        let subs = mapped_subscriptions(&server, "mapped");
        let distinct: std::collections::HashSet<_> = subs.iter().collect();
        all.iter().all(|m| m.served() > 0) && subs.len() == n && distinct.len() == n
    })
    .await;
    until("every instance found the mapping in force", || {
        all.iter().all(|m| m.reads_mapped() == 1)
    })
    .await;
    let forwarded = |ms: &[&Arc<ClusterMetrics>]| ms.iter().map(|m| m.forwarded()).sum::<u64>();
    let before = forwarded(&all);
    let token = json!({"userId": 3, "name": "m", "role": "user"});
    for i in 0..60 {
        let cid = format!("m{i}");
        let rid = format!("session.user.{cid}");
        let access = gateway.access(&rid, &cid, token.clone()).await;
        assert_eq!(
            access["result"]["get"],
            json!(true),
            "access {rid}: {access}"
        );
        // The access reached the owner directly, so its token filled the record in
        // (a forwarded one would not).
        let model = gateway.get(&rid).await;
        assert_eq!(model["id"], json!(3), "get {rid}: {model}");
    }
    assert_eq!(forwarded(&all), before, "reads were forwarded");
    for instance in [a, b, c] {
        instance.stop().await;
    }
}

#[tokio::test]
async fn without_the_mapping_an_instance_says_its_reads_are_forwarded() {
    let mut logs = common::logs::Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let yaml = common::shared_seed("unmapped");
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    logs.wait_for(&["nats-server does not map this config's reads"])
        .await;
    assert_eq!(ma.reads_mapped(), 0);
    // Served all the same.
    assert_eq!(gateway.get("session.user.u1").await["id"], json!(null));
    a.stop().await;
}

#[tokio::test]
async fn with_the_mapping_no_read_is_lost_while_partitions_move() {
    let yaml = common::shared_seed("moving");
    let (server, _dir) = server_with_mapping(&yaml);
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let client = gateway.client.clone();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.>")).await.unwrap();
    client.flush().await.unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Gets back to back, 200 at a time, until told to stop; each must be answered.
    let load = async {
        let mut sent = 0usize;
        let mut answered = 0usize;
        while !*stop.borrow() {
            for _ in 0..200 {
                let cid = format!("v{}", sent % 500);
                client
                    .publish_with_reply(
                        format!("get.session.user.{cid}"),
                        format!("{inbox}.{sent}"),
                        "{}".into(),
                    )
                    .await
                    .unwrap();
                sent += 1;
            }
            client.flush().await.unwrap();
            while answered < sent {
                tokio::time::timeout(common::WAIT, replies.next())
                    .await
                    .unwrap_or_else(|_| panic!("{} of {sent} gets answered", answered))
                    .unwrap();
                answered += 1;
            }
        }
        answered
    };
    // Two instances join: partitions move to them, and a lease later the first
    // instance ends its mapped subscriptions of the partitions it let go.
    let churn = async {
        let (b, _, mb) = start_shared(&server, &yaml).await;
        let (c, _, mc) = start_shared(&server, &yaml).await;
        let all = [&ma, &mb, &mc];
        until("each partition's mapped reads subscribed once", || {
            let subs = mapped_subscriptions(&server, "moving");
            let distinct: std::collections::HashSet<_> = subs.iter().collect();
            all.iter().all(|m| m.served() > 0)
                && subs.len() == common::PARTITIONS as usize
                && distinct.len() == subs.len()
        })
        .await;
        let _ = stop_tx.send(true);
        (b, c)
    };
    let (answered, (b, c)) = futures::join!(load, churn);
    assert!(answered > 0);
    for instance in [a, b, c] {
        instance.stop().await;
    }
}
