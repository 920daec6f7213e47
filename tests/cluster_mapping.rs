//! Reads routed to their owner by nats-server (`connres mapping`): the server's
//! `{{partition}}` agrees with where connres places connections, and with the block in
//! force each read reaches its partition's owner without being forwarded. In-process
//! instances against a real nats-server with JetStream and the printed block.

mod common;

use std::sync::Arc;

use common::{start_shared, NatsServer};
use connres::config::Config;
use connres::mapping::Mapping;
use connres::service::ClusterMetrics;
use connres::store::record::partition_of_cid;
use futures::StreamExt;
use serde_json::json;

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
    let connz = server.monitor_get("/connz?subs=1");
    let prefix = format!("_CONNRES.{bucket}.p.");
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
        .filter(|s| s.starts_with(&prefix))
        .collect()
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
