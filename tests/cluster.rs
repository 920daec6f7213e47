//! The shared store (`state.store: nats`): state in JetStream key-value, partitions with
//! one owner each. In-process instances against a real nats-server with JetStream.

mod common;

use std::sync::Arc;

use common::{start, start_shared, Gateway, NatsServer};
use connres::service::ClusterMetrics;
use serde_json::json;

const PARTITIONS: i64 = common::PARTITIONS as i64;

fn shared(bucket: &str) -> String {
    common::shared_seed(bucket)
}

#[tokio::test]
async fn written_values_survive_a_restart() {
    let server = NatsServer::start_jetstream();
    let yaml = shared("restart");
    let (connres, gateway) = start(&server, &yaml).await;
    let token = json!({"userId": 1, "name": "ann", "role": "user"});
    gateway.token("c1", token.clone()).await;
    let reply = gateway
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            token.clone(),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(reply, json!({"result": null}));
    connres.stop().await;

    let (connres, gateway): (_, Gateway) = start(&server, &yaml).await;
    let model = gateway.get("session.prefs.c1").await;
    assert_eq!(model, json!({"theme": "dark", "fontSize": 14}));
    connres.stop().await;
}

/// Waits until every instance serves some of the partitions and together they serve
/// each once. Nothing announces that, so it looks every 20 ms (up to `WAIT`).
async fn settle(instances: &[&Arc<ClusterMetrics>]) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let served: Vec<i64> = instances.iter().map(|m| m.served()).collect();
        if served.iter().all(|&n| n > 0) && served.iter().sum::<i64>() == PARTITIONS {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions never settled: {served:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A token event sent as a request: answered once its events are out.
async fn login(gateway: &Gateway, cid: &str, token: serde_json::Value) {
    let reply = gateway
        .request(&format!("conn.{cid}.token"), json!({ "token": token }))
        .await;
    assert_eq!(reply, json!({"result": null}), "token event for {cid}");
}

/// Counts what a subscription has received so far without waiting.
fn drain(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    use futures::FutureExt;
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(Some(m)) = tokio::task::coop::unconstrained(sub.next()).now_or_never() {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn three_instances_answer_each_request_once_and_publish_each_change_once() {
    use futures::StreamExt;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = NatsServer::start_jetstream();
    let yaml = shared("three");
    let (a, mut gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    let (c, _, mc) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb, &mc]).await;
    let replies_to = gateway.client.new_inbox();
    let mut replies = gateway.client.subscribe(replies_to.clone()).await.unwrap();
    let cids: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for cid in &cids {
        // Remembered by a get, then logged in: one change event each.
        assert_eq!(
            gateway.get(&format!("session.user.{cid}")).await["id"],
            json!(null)
        );
        login(
            &gateway,
            cid,
            json!({"userId": 7, "name": cid, "role": "user"}),
        )
        .await;
    }
    for cid in &cids {
        // The token the gateway holds: the one the token event set.
        let token = json!({"userId": 7, "name": cid, "role": "user"});
        let payload = json!({"cid": cid, "params": {"fontSize": 20}, "token": token});
        gateway
            .client
            .publish_with_reply(
                format!("call.session.prefs.{cid}.set"),
                replies_to.clone(),
                payload.to_string().into(),
            )
            .await
            .unwrap();
    }
    let mut answered = 0;
    while answered < cids.len() {
        let m = tokio::time::timeout(common::WAIT, replies.next())
            .await
            .expect("every set is answered")
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(reply, json!({"result": null}));
        answered += 1;
    }
    for instance in [a, b, c] {
        instance.stop().await;
    }
    // Every instance has flushed: a second reply or event would be here by now.
    assert_eq!(drain(&mut replies).len(), 0, "a set answered twice");
    let events = drain(&mut gateway.events);
    for cid in &cids {
        let user = format!("event.session.user.{cid}.change");
        let prefs = format!("event.session.prefs.{cid}.change");
        let count = |s: &str| events.iter().filter(|m| m.subject.as_str() == s).count();
        assert_eq!((count(&user), count(&prefs)), (1, 1), "events of {cid}");
    }
}

/// A change event's values folded onto a model.
fn fold(model: &mut serde_json::Value, event: &serde_json::Value) {
    for (field, value) in event["values"].as_object().expect("change values") {
        model[field] = value.clone();
    }
}

/// The stored value of connection `cid` in the bucket.
async fn stored(server: &NatsServer, bucket: &str, cid: &str) -> serde_json::Value {
    use connres::store::record::{key, partition_of_cid};
    use connres::store::UnitKey;
    let client = async_nats::connect(&server.url).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(bucket)
        .await
        .unwrap();
    let p = partition_of_cid(cid, PARTITIONS as u32);
    let value = kv
        .get(key(p, &UnitKey::Connection(cid.into())))
        .await
        .unwrap()
        .expect("the connection is stored");
    serde_json::from_slice(&value).unwrap()
}

#[tokio::test]
async fn concurrent_writes_on_one_connection_stay_in_order_across_instances() {
    use std::sync::Mutex;
    let server = NatsServer::start_jetstream();
    let yaml = shared("order").replace(
        "resources:",
        "resources:\n  session.status.{cid}:\n    fields:\n      cartItems: { type: integer, default: 0, min: 0 }\n    access:\n      get: cid == params.cid\n",
    );
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    let (c, _, mc) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb, &mc]).await;
    let rids = ["session.user.k0", "session.prefs.k0", "session.status.k0"];
    let mut first = Vec::new();
    for rid in rids {
        first.push(gateway.get(rid).await);
    }
    let gateway = Arc::new(gateway);
    let log: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let events = Arc::new(tokio::sync::Mutex::new(
        async_nats::Client::subscribe(&gateway.client, "event.>")
            .await
            .unwrap(),
    ));
    gateway.client.flush().await.unwrap();
    // After a reply, its event is already in the subscription: connres publishes the
    // event first, on one connection, and the client dispatches in arrival order.
    let seen = |rid: &'static str, field: &'static str, value: serde_json::Value| {
        let (log, events) = (log.clone(), events.clone());
        async move {
            let mut events = events.lock().await;
            let mut log = log.lock().unwrap();
            for m in drain(&mut events) {
                log.push((
                    m.subject.to_string(),
                    serde_json::from_slice(&m.payload).unwrap(),
                ));
            }
            let subject = format!("event.{rid}.change");
            assert!(
                log.iter()
                    .any(|(s, e)| *s == subject && e["values"][field] == value),
                "no {rid} event with {field} = {value} before its reply"
            );
        }
    };
    let token = |i: i64| json!({"userId": 100 + i, "name": "k0", "role": "user"});
    let clients = async {
        for i in 0..20 {
            let reply = gateway
                .call(
                    "session.prefs.k0",
                    "set",
                    "k0",
                    token(0),
                    json!({"fontSize": 8 + i}),
                )
                .await;
            assert_eq!(reply, json!({"result": null}));
            seen("session.prefs.k0", "fontSize", json!(8 + i)).await;
        }
    };
    let backend = async {
        for i in 1..=20 {
            let reply = gateway
                .request(
                    "connres.set.session.status.k0",
                    json!({"values": {"cartItems": i}}),
                )
                .await;
            assert_eq!(reply, json!({"result": null}), "backend set");
            seen("session.status.k0", "cartItems", json!(i)).await;
        }
    };
    let tokens = async {
        for i in 0..20 {
            login(&gateway, "k0", token(i)).await;
            seen("session.user.k0", "id", json!(100 + i)).await;
        }
    };
    futures::join!(clients, backend, tokens);
    let mut last = Vec::new();
    for rid in rids {
        last.push(gateway.get(rid).await);
    }
    for instance in [a, b, c] {
        instance.stop().await;
    }
    let mut events = events.lock().await;
    let mut log = std::mem::take(&mut *log.lock().unwrap());
    for m in drain(&mut events) {
        log.push((
            m.subject.to_string(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    for ((rid, mut model), last) in rids.iter().zip(first).zip(last) {
        let subject = format!("event.{rid}.change");
        for (_, e) in log.iter().filter(|(s, _)| *s == subject) {
            fold(&mut model, e);
        }
        assert_eq!(model, last, "{rid}: events folded onto the first get");
    }
    let kv = stored(&server, "order", "k0").await;
    assert_eq!(kv["token"], token(19));
    let written = |rid: &str| {
        kv["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["rid"] == json!(rid))
            .map(|m| m["written"].clone())
    };
    assert_eq!(written("session.prefs.k0"), Some(json!({"fontSize": 27})));
    assert_eq!(written("session.status.k0"), Some(json!({"cartItems": 20})));
}

#[tokio::test]
async fn instances_joining_and_leaving_lose_no_request() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = NatsServer::start_jetstream();
    let yaml = shared("churn");
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    let token = json!({"userId": 1, "name": "n", "role": "user"});
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    // Requests for 40 connections, one after another, until told to stop: each must be
    // answered (request() fails the test after WAIT).
    let load = async {
        let mut answered = 0;
        let mut i = 0;
        while !*done.borrow_and_update() {
            let cid = format!("j{}", i % 40);
            let size = 8 + (i % 20);
            let reply = gateway
                .call(
                    &format!("session.prefs.{cid}"),
                    "set",
                    &cid,
                    token.clone(),
                    json!({"fontSize": size}),
                )
                .await;
            assert_eq!(reply, json!({"result": null}), "set {i}");
            let model = gateway.get(&format!("session.prefs.{cid}")).await;
            assert_eq!(model["fontSize"], json!(size), "get {i}");
            answered += 2;
            i += 1;
        }
        answered
    };
    let churn = async {
        let (c, _, mc) = start_shared(&server, &yaml).await;
        settle(&[&ma, &mb, &mc]).await;
        a.stop().await;
        settle(&[&mb, &mc]).await;
        let _ = done_tx.send(true);
        (b, c)
    };
    let (answered, (b, c)) = futures::join!(load, churn);
    assert!(answered > 0);
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn a_full_restart_of_every_instance_keeps_written_values() {
    let server = NatsServer::start_jetstream();
    let yaml = shared("full");
    let token = json!({"userId": 5, "name": "e", "role": "user"});
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    for i in 0..30 {
        let cid = format!("r{i}");
        login(&gateway, &cid, token.clone()).await;
        let reply = gateway
            .call(
                &format!("session.prefs.{cid}"),
                "set",
                &cid,
                token.clone(),
                json!({"fontSize": 8 + i % 24}),
            )
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    a.stop().await;
    b.stop().await;
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    for i in 0..30 {
        let cid = format!("r{i}");
        let prefs = gateway.get(&format!("session.prefs.{cid}")).await;
        assert_eq!(prefs["fontSize"], json!(8 + i % 24), "{cid}");
        // The token record came back too (unconfirmed, until a token event).
        let user = gateway.get(&format!("session.user.{cid}")).await;
        assert_eq!(user["id"], json!(5), "{cid}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn discovery_shows_each_instances_partitions() {
    let server = NatsServer::start_jetstream();
    let yaml = shared("discovery");
    let (a, gateway, ma) = start_shared(&server, &yaml).await;
    let (b, _, mb) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    let mut served = Vec::new();
    let inbox = gateway.client.new_inbox();
    let mut replies = gateway.client.subscribe(inbox.clone()).await.unwrap();
    gateway
        .client
        .publish_with_reply("$SRV.INFO.connres", inbox, "".into())
        .await
        .unwrap();
    for _ in 0..2 {
        let m = tokio::time::timeout(common::WAIT, futures::StreamExt::next(&mut replies))
            .await
            .expect("both instances answer")
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(info["metadata"]["store"], json!("nats"));
        served.push(
            info["metadata"]["partitions_served"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        );
    }
    // The Prometheus text shows the same figures (docs/scaling.md, "Watching it").
    let text = common::last_shared_metrics().encode();
    for name in [
        "connres_cluster_partitions_held",
        "connres_cluster_partitions_served",
        "connres_cluster_instances",
        "connres_cluster_lease_renewals_total",
        "connres_cluster_takeovers_total",
        "connres_cluster_leases_lost_total",
        "connres_cluster_forwarded_total",
        "connres_cluster_reads_mapped",
        "connres_cluster_dropped_total",
        "connres_cluster_stale_total",
        "connres_cluster_kv_write_seconds_count",
        "connres_cluster_kv_load_seconds_count",
        "connres_cluster_kv_unit_read_seconds_count",
        "connres_cluster_cold_units",
        "connres_cluster_evicted_total",
    ] {
        assert!(
            text.contains(&format!("\n{name}")),
            "{name} missing from:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "\nconnres_cluster_partitions_served {}\n",
            mb.served()
        )),
        "{text}"
    );
    served.sort();
    let mut expected = vec![ma.served(), mb.served()];
    expected.sort();
    assert_eq!(served, expected);
    assert_eq!(served.iter().sum::<i64>(), PARTITIONS);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn writes_in_flight_together_publish_each_event_before_its_reply() {
    use futures::StreamExt;
    let server = NatsServer::start_jetstream();
    let (connres, gateway, _) = start_shared(&server, &shared("pipeline")).await;
    let token = json!({"userId": 9, "name": "p", "role": "user"});
    let cids: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
    for cid in &cids {
        login(&gateway, cid, token.clone()).await;
    }
    // Everything this client receives, in the order the server sends it.
    let mut all = gateway.client.subscribe(">").await.unwrap();
    gateway.client.flush().await.unwrap();
    // 200 sets at once: 10 per connection, each a different value.
    let inbox = gateway.client.new_inbox();
    for round in 0..10 {
        for cid in &cids {
            let body = json!({"cid": cid, "token": token, "params": {"fontSize": 10 + round}});
            gateway
                .client
                .publish_with_reply(
                    format!("call.session.prefs.{cid}.set"),
                    format!("{inbox}.{cid}.{round}"),
                    body.to_string().into(),
                )
                .await
                .unwrap();
        }
    }
    let mut seen_events = std::collections::HashSet::new();
    let mut replies = 0;
    while replies < 200 {
        let m = tokio::time::timeout(common::WAIT, all.next())
            .await
            .expect("every set is answered")
            .unwrap();
        let subject = m.subject.to_string();
        if let Some(rest) = subject.strip_prefix("event.session.prefs.") {
            let cid = rest.strip_suffix(".change").unwrap().to_string();
            let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            seen_events.insert((cid, event["values"]["fontSize"].as_i64().unwrap()));
        } else if let Some(rest) = subject.strip_prefix(&format!("{inbox}.")) {
            let (cid, round) = rest.split_once('.').unwrap();
            let size = 10 + round.parse::<i64>().unwrap();
            assert_eq!(
                m.payload.as_ref(),
                br#"{"result":null}"#,
                "set {cid} {size}"
            );
            assert!(
                seen_events.contains(&(cid.to_string(), size)),
                "the reply to {cid}'s set of {size} came before its event"
            );
            replies += 1;
        }
    }
    for cid in &cids {
        assert_eq!(
            gateway.get(&format!("session.prefs.{cid}")).await["fontSize"],
            json!(19)
        );
        let kv = stored(&server, "pipeline", cid).await;
        let written = kv["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["rid"] == json!(format!("session.prefs.{cid}")))
            .map(|m| m["written"].clone());
        assert_eq!(
            written,
            Some(json!({"fontSize": 19})),
            "{cid} in the bucket"
        );
    }
    connres.stop().await;
}

#[tokio::test]
async fn expiry_on_the_owner_deletes_from_the_bucket() {
    use connres::clock::Clock;
    use connres::store::record::{key, partition_of_cid};
    use connres::store::UnitKey;
    let server = NatsServer::start_jetstream();
    let clock = Clock::manual();
    let yaml = shared("expiry").replace("state:\n", "state:\n  idle_ttl: 1h\n");
    let (connres, mut gateway, _) = common::start_clocked(&server, &yaml, clock.clone()).await;
    let token = json!({"userId": 4, "name": "x", "role": "user"});
    login(&gateway, "x1", token.clone()).await;
    let reply = gateway
        .call(
            "session.prefs.x1",
            "set",
            "x1",
            token,
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(
        stored(&server, "expiry", "x1").await["models"][0]["written"],
        json!({"theme": "dark"})
    );

    clock.advance(std::time::Duration::from_secs(3600));
    // The sweep drops x1 and writes that out before the reset for its written model.
    loop {
        let (subject, reset) = gateway.next_system().await;
        assert_eq!(subject, "system.reset");
        if reset["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("session.prefs.x1"))
        {
            break;
        }
    }
    let client = async_nats::connect(&server.url).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("expiry")
        .await
        .unwrap();
    let p = partition_of_cid("x1", PARTITIONS as u32);
    let k = key(p, &UnitKey::Connection("x1".into()));
    assert_eq!(
        kv.get(k).await.unwrap(),
        None,
        "the expired connection left the bucket"
    );
    assert_eq!(
        gateway.get("session.prefs.x1").await["theme"],
        json!("light")
    );
    connres.stop().await;
}

#[tokio::test]
async fn a_bucket_keeps_its_partition_count() {
    let server = NatsServer::start_jetstream();
    let (connres, _) = start(&server, &shared("fixed")).await;
    connres.stop().await;
    let other = shared("fixed").replace(&format!("partitions: {PARTITIONS}"), "partitions: 16");
    let config = connres::config::Config::parse("test.yaml", &other).unwrap();
    let Err(e) = connres::service::Service::start(config, &server.url).await else {
        panic!("a different partition count was accepted");
    };
    assert_eq!(
        e.to_string(),
        format!("key-value bucket `fixed` holds state in {PARTITIONS} partitions, but `state.partitions` is 16: use the bucket's count, or another bucket")
    );
}

/// A unit the bucket holds but connres cannot read (written by hand, or by a future
/// version) counts as empty, and the next write replaces it. Its partition used to flap:
/// the next change was a `create` of a key that existed, which failed, which dropped
/// the partition, again at every change.
#[tokio::test]
async fn an_unreadable_unit_is_replaced_by_the_next_write_and_its_partition_stays() {
    use connres::store::record::{key, partition_of_cid};
    use connres::store::UnitKey;
    let server = NatsServer::start_jetstream();
    let yaml = shared("unreadable");
    // A first start creates the bucket; the unreadable unit goes in while none runs.
    let (connres, _gateway, _) = start_shared(&server, &yaml).await;
    connres.stop().await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("unreadable")
        .await
        .unwrap();
    let unit_key = key(
        partition_of_cid("c1", PARTITIONS as u32),
        &UnitKey::Connection("c1".into()),
    );
    kv.put(&unit_key, "not a unit {".into()).await.unwrap();

    let (connres, gateway, metrics) = start_shared(&server, &yaml).await;
    settle(&[&metrics]).await;
    let taken = metrics.takeovers();
    assert_eq!(
        gateway.get("session.prefs.c1").await,
        json!({"theme": "light", "fontSize": 14})
    );
    let token = json!({"userId": 1, "name": "ann", "role": "user"});
    gateway.token("c1", token.clone()).await;
    for theme in ["dark", "light", "dark"] {
        let reply = gateway
            .call(
                "session.prefs.c1",
                "set",
                "c1",
                token.clone(),
                json!({ "theme": theme }),
            )
            .await;
        assert_eq!(reply, json!({"result": null}), "set {theme}");
    }
    // What the bucket holds now reads back: the last write replaced the unit.
    let unit = stored(&server, "unreadable", "c1").await;
    let written = unit["models"]
        .as_array()
        .expect("the unit reads back, with its models")
        .iter()
        .find(|m| m["rid"] == json!("session.prefs.c1"))
        .map(|m| m["written"].clone());
    assert_eq!(written, Some(json!({"theme": "dark"})));
    assert_eq!(
        metrics.served(),
        PARTITIONS,
        "the partition was never let go"
    );
    assert_eq!(metrics.takeovers(), taken, "no partition was taken again");
    connres.stop().await;
}
