//! The shared store (`state.store: nats`) seen from outside: several in-process
//! instances on one nats-server with JetStream, messages published back to back on one
//! client connection, as a gateway or a backend sends them. What one publisher sends
//! must be applied in the order it was sent, whichever instance the queue group hands
//! each message to; nothing may be applied without its event and reply; a request is
//! never dropped without an answer; a restart checks stored values against the config
//! it starts with; an instance joining live owners does not make gateways re-fetch
//! everything.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use bytes::Bytes;
use common::*;
use connres::service::ClusterMetrics;
use futures::StreamExt;
use serde_json::{json, Value};

/// A resource with a writable string field, for gateway and backend writes alike.
const NOTE: &str = "
  session.note.{cid}:
    fields:
      text: { type: string, default: none, writable: true, max_length: 64 }
    access:
      get: 'true'
      call: 'true'
";

/// The seed config on the shared store in `bucket`, plus [`NOTE`].
fn with_note(bucket: &str) -> String {
    format!("{}{NOTE}", shared_seed(bucket))
}

/// Waits until the instances together serve every partition, each at least one when
/// `every_one`, and the counts have not moved for a second (handovers come one after
/// another). Nothing announces that, so it looks every 40 ms (up to `WAIT`).
async fn settle(instances: &[&Arc<ClusterMetrics>], every_one: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Vec::new();
    let mut same = 0;
    loop {
        let served: Vec<i64> = instances.iter().map(|m| m.served()).collect();
        let spread = !every_one || served.iter().all(|&n| n > 0);
        let all = served.iter().sum::<i64>() == i64::from(PARTITIONS);
        same = if served == last { same + 1 } else { 0 };
        if spread && all && same >= 25 {
            return;
        }
        last = served;
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions never settled: {last:?} of {PARTITIONS}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Three instances on `yaml`, once they serve a share of the partitions each.
async fn three(server: &NatsServer, yaml: &str) -> Vec<Connres> {
    let (a, ma) = start_member(server, yaml).await;
    let (b, mb) = start_member(server, yaml).await;
    let (c, mc) = start_member(server, yaml).await;
    settle(&[&ma, &mb, &mc], true).await;
    vec![a, b, c]
}

async fn stop_all(instances: Vec<Connres>) {
    for instance in instances {
        instance.stop().await;
    }
}

/// Publishes `body` on `subject`, with a reply subject when given; no waiting.
async fn send(gw: &Gateway, subject: String, reply: Option<String>, body: Value) {
    let body = Bytes::from(body.to_string());
    match reply {
        Some(reply) => gw.client.publish_with_reply(subject, reply, body).await,
        None => gw.client.publish(subject, body).await,
    }
    .unwrap();
}

/// Replies on `sub` by subject, until `expected` different subjects have one or none
/// comes for `WAIT` (the failure guard: what is missing is then reported by the test).
async fn collect(sub: &mut Subscriber, expected: usize) -> BTreeMap<String, Vec<Value>> {
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    while got.len() < expected {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(m)) => got
                .entry(m.subject.to_string())
                .or_default()
                .push(parse(&m.payload)),
            _ => break,
        }
    }
    got
}

/// Adds what `sub` has received so far to `got`, without waiting.
fn drain_into(sub: &mut Subscriber, got: &mut BTreeMap<String, Vec<Value>>) {
    use futures::FutureExt;
    while let Some(Some(m)) = tokio::task::coop::unconstrained(sub.next()).now_or_never() {
        got.entry(m.subject.to_string())
            .or_default()
            .push(parse(&m.payload));
    }
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or_else(|_| json!(String::from_utf8_lossy(payload)))
}

/// Once every instance has stopped (each flushed on the way out), a round trip on the
/// gateway's own connection brings in everything they sent it.
async fn everything_delivered(gw: &Gateway) {
    gw.client.flush().await.unwrap();
}

#[tokio::test]
async fn a_logout_is_never_undone_by_the_login_before_it() {
    let server = NatsServer::start_jetstream();
    let instances = three(&server, &shared_seed("logout")).await;
    let gw = Gateway::connect(&server).await;
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    let cids: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    let login =
        |round: i64| json!({"userId": 100 + round, "name": format!("n{round}"), "role": "user"});

    // 15 logins each followed by a logout, per connection, then one more logout that
    // asks for an acknowledgement: all back to back.
    for round in 0..15 {
        for cid in &cids {
            let subject = format!("conn.{cid}.token");
            send(&gw, subject.clone(), None, json!({ "token": login(round) })).await;
            send(&gw, subject, None, json!({ "token": null })).await;
        }
    }
    for cid in &cids {
        let reply = Some(format!("{inbox}.{cid}"));
        send(
            &gw,
            format!("conn.{cid}.token"),
            reply,
            json!({ "token": null }),
        )
        .await;
    }
    gw.client.flush().await.unwrap();

    let got = collect(&mut replies, cids.len()).await;
    let mut wrong = Vec::new();
    for cid in &cids {
        match got.get(&format!("{inbox}.{cid}")).map(Vec::as_slice) {
            Some([reply]) if *reply == json!({"result": null}) => {}
            other => wrong.push(format!("{cid}: final logout answered {other:?}")),
        }
        let model = gw.get(&format!("session.user.{cid}")).await;
        let logged_out = model
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.values().all(Value::is_null));
        if !logged_out {
            let round = model["id"].as_i64().map(|id| id - 100);
            wrong.push(format!(
                "{cid}: expected every field null after the last logout, got {model} (the login of round {round:?} of 0..15 came back)"
            ));
        }
    }
    stop_all(instances).await;
    assert!(
        wrong.is_empty(),
        "{} of {} connections not logged out:\n{}",
        wrong.len(),
        cids.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_later_write_is_never_lost_to_an_earlier_one() {
    let server = NatsServer::start_jetstream();
    let instances = three(&server, &with_note("later")).await;
    let mut gw = Gateway::connect(&server).await;
    let cid = "w0";
    let note = format!("session.note.{cid}");
    let user = format!("session.user.{cid}");
    let token = |id: i64| json!({"userId": id, "name": "w", "role": "user"});
    let first = gw
        .request(&format!("conn.{cid}.token"), json!({ "token": token(1) }))
        .await;
    assert_eq!(first, json!({"result": null}), "the first login");
    // Known to the gateway, so each change is announced.
    assert_eq!(gw.get(&note).await["text"], json!("none"));
    assert_eq!(gw.get(&user).await["id"], json!(1));
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    assert!(gw.pending_events().is_empty());

    // Per round: a client's set, a backend's set, a login; all back to back.
    const ROUNDS: i64 = 25;
    let mut expected_replies = Vec::new();
    for i in 0..ROUNDS {
        let held = if i == 0 { token(1) } else { token(100 + i - 1) };
        let call = json!({"cid": cid, "token": held, "params": {"text": format!("c{i}")}});
        let api = json!({"values": {"text": format!("b{i}")}});
        let login = json!({ "token": token(100 + i) });
        for (kind, subject, body) in [
            ("call", format!("call.{note}.set"), call),
            ("api", format!("connres.set.{note}"), api),
            ("token", format!("conn.{cid}.token"), login),
        ] {
            let reply = format!("{inbox}.{kind}.{i}");
            send(&gw, subject, Some(reply.clone()), body).await;
            expected_replies.push(reply);
        }
    }
    gw.client.flush().await.unwrap();

    let mut got = collect(&mut replies, expected_replies.len()).await;
    let last_note = gw.get(&note).await;
    let last_user = gw.get(&user).await;
    stop_all(instances).await;
    everything_delivered(&gw).await;
    drain_into(&mut replies, &mut got);
    let events = gw.pending_events();

    assert_eq!(
        last_note["text"],
        json!(format!("b{}", ROUNDS - 1)),
        "{note} after the burst: the backend's last set came after every client set; model {last_note}"
    );
    assert_eq!(
        last_user["id"],
        json!(100 + ROUNDS - 1),
        "{user} after the burst: the last token event was userId {}; model {last_user}",
        100 + ROUNDS - 1
    );
    let wrong: Vec<String> = expected_replies
        .iter()
        .filter_map(|r| match got.get(r).map(Vec::as_slice) {
            Some([reply]) if *reply == json!({"result": null}) => None,
            other => Some(format!("{}: {other:?}", r.trim_start_matches(&inbox))),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "replies not received exactly once as {{\"result\":null}}:\n{}",
        wrong.join("\n")
    );
    // Each write changed the value, so the change events tell the order they were
    // applied in: the order they were sent.
    let texts: Vec<String> = events
        .iter()
        .filter(|(s, _)| *s == format!("event.{note}.change"))
        .map(|(_, e)| e["values"]["text"].as_str().unwrap_or("?").to_string())
        .collect();
    let sent: Vec<String> = (0..ROUNDS)
        .flat_map(|i| [format!("c{i}"), format!("b{i}")])
        .collect();
    assert_eq!(texts, sent, "{note}: change events in the order applied");
    let ids: Vec<Value> = events
        .iter()
        .filter(|(s, e)| *s == format!("event.{user}.change") && e["values"].get("id").is_some())
        .map(|(_, e)| e["values"]["id"].clone())
        .collect();
    let logins: Vec<Value> = (0..ROUNDS).map(|i| json!(100 + i)).collect();
    assert_eq!(ids, logins, "{user}: ids in the change events");
}

#[tokio::test]
async fn values_stored_under_an_old_config_are_checked_against_the_new_one() {
    let server = NatsServer::start_jetstream();
    let wide = with_note("oldconfig");
    let narrow = wide.replace("max_length: 64", "max_length: 4");
    assert_ne!(wide, narrow);
    let rid = "session.note.k0";

    let (connres, metrics) = start_member(&server, &wide).await;
    settle(&[&metrics], true).await;
    let gw = Gateway::connect(&server).await;
    let reply = gw
        .request(
            &format!("connres.set.{rid}"),
            json!({"values": {"text": "keep-r0"}}),
        )
        .await;
    assert_eq!(reply, json!({"result": null}), "the backend set");
    assert_eq!(gw.get(rid).await["text"], json!("keep-r0"));
    connres.stop().await;

    // Every instance stopped; the next one starts on a config the value breaks.
    let (connres, metrics) = start_member(&server, &narrow).await;
    settle(&[&metrics], true).await;
    let model = gw.get(rid).await;
    connres.stop().await;
    assert_eq!(
        model["text"],
        json!("none"),
        "{rid} after a restart with max_length 4: expected the default, got {model} (stored under max_length 64)"
    );
}

#[tokio::test]
async fn instances_on_different_configs_never_drop_a_request_silently() {
    let server = NatsServer::start_jetstream();
    let lacking = shared_seed("mixed");
    let full = format!(
        "{lacking}
  shop.cart.{{cid}}:
    fields:
      items: {{ type: integer, default: 0 }}
    access:
      get: 'true'
"
    );
    let (a, ma) = start_member(&server, &full).await;
    let (b, mb) = start_member(&server, &full).await;
    let (c, mc) = start_member(&server, &lacking).await;
    // Whether the instance without the resource serves partitions is the design's
    // business: every request must be answered either way.
    settle(&[&ma, &mb, &mc], false).await;
    let served = [ma.served(), mb.served(), mc.served()];
    let gw = Gateway::connect(&server).await;

    // 256 connections: every one of the 32 partitions has some (all but surely).
    let cids: Vec<String> = (0..256).map(|i| format!("s{i}")).collect();
    let outcomes = futures::future::join_all(cids.iter().map(|cid| {
        let request = gw
            .client
            .request(format!("get.shop.cart.{cid}"), Bytes::new());
        async move {
            match tokio::time::timeout(Duration::from_secs(3), request).await {
                Ok(Ok(m)) => Ok(parse(&m.payload)),
                Ok(Err(e)) => Err(format!("{cid}: {e}")),
                Err(_) => Err(format!("{cid}: no reply in 3 s")),
            }
        }
    }))
    .await;
    stop_all(vec![a, b, c]).await;
    let unanswered: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let odd: Vec<&Value> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .filter(|r| r.get("result").is_none() && r.get("error").is_none())
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} of {} gets of shop.cart.<cid> were not answered (partitions served: {served:?}, the last instance lacks shop.cart):\n{}",
        unanswered.len(),
        cids.len(),
        unanswered
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(odd.is_empty(), "replies neither result nor error: {odd:?}");
}

/// A resource with one field per set of the burst below: each set's change stays
/// visible in the final state, whatever order the sets were applied in.
fn burst_config(bucket: &str, fields: usize) -> String {
    let mut yaml = shared_seed(bucket);
    yaml.push_str("\n  session.burst.{cid}:\n    fields:\n");
    for k in 0..fields {
        yaml.push_str(&format!("      f{k}: {{ type: integer, default: 0 }}\n"));
    }
    yaml.push_str("    access:\n      get: 'true'\n");
    yaml
}

#[tokio::test]
async fn a_shutdown_mid_burst_applies_nothing_without_its_event_and_reply() {
    const CIDS: usize = 16;
    const FIELDS: usize = 32;
    let server = NatsServer::start_jetstream();
    let yaml = burst_config("shutdown", FIELDS);
    let mut instances = three(&server, &yaml).await;
    let mut gw = Gateway::connect(&server).await;
    let cids: Vec<String> = (0..CIDS).map(|i| format!("d{i}")).collect();
    for cid in &cids {
        // Known to the gateway, so each change is announced.
        assert_eq!(
            gw.get(&format!("session.burst.{cid}")).await["f0"],
            json!(0)
        );
    }
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    assert!(gw.pending_events().is_empty());

    // Set k of each connection writes field f<k> to k + 1.
    for k in 0..FIELDS {
        for cid in &cids {
            let values = json!({ format!("f{k}"): k + 1 });
            send(
                &gw,
                format!("connres.set.session.burst.{cid}"),
                Some(format!("{inbox}.{cid}.{k}")),
                json!({ "values": values }),
            )
            .await;
        }
    }
    gw.client.flush().await.unwrap();
    // Mid-burst: once an eighth of the sets are answered, one instance stops.
    let mut got = collect(&mut replies, CIDS * FIELDS / 8).await;
    let answered_before_stop = got.len();
    instances.remove(0).stop().await;
    stop_all(instances).await;
    everything_delivered(&gw).await;
    drain_into(&mut replies, &mut got);
    let events = gw.pending_events();

    // What the bucket holds, as the next instance serves it.
    let (next, metrics) = start_member(&server, &yaml).await;
    settle(&[&metrics], true).await;
    let mut wrong = Vec::new();
    let mut applied = 0;
    for cid in &cids {
        let rid = format!("session.burst.{cid}");
        let model = gw.get(&rid).await;
        for k in 0..FIELDS {
            let field = format!("f{k}");
            let value = json!(k + 1);
            let is_applied = model[&field] == value;
            let replies = got
                .get(&format!("{inbox}.{cid}.{k}"))
                .cloned()
                .unwrap_or_default();
            let acknowledged = replies == [json!({"result": null})];
            let evented = events
                .iter()
                .any(|(s, e)| *s == format!("event.{rid}.change") && e["values"][&field] == value);
            applied += usize::from(is_applied);
            let fine = (is_applied && acknowledged && evented)
                || (!is_applied && !evented && !acknowledged && replies.len() <= 1);
            if !fine {
                wrong.push(format!(
                    "{rid} {field}={value}: in the bucket {is_applied}, change event {evented}, replies {replies:?}"
                ));
            }
        }
    }
    next.stop().await;
    eprintln!(
        "{answered_before_stop} sets answered when the shutdown began; {} answered and {applied} applied of {}",
        got.len(),
        CIDS * FIELDS
    );
    assert!(
        wrong.is_empty(),
        "sets applied without their event and acknowledgement, or acknowledged and lost ({} of {}):\n{}",
        wrong.len(),
        CIDS * FIELDS,
        wrong.join("\n")
    );
}

/// Whether a `system.reset` names every pattern of the seed config (a full reset).
fn full_reset(payload: &Value) -> bool {
    let named = |pattern: &str| {
        payload["resources"]
            .as_array()
            .is_some_and(|r| r.contains(&json!(pattern)))
    };
    named("session.user.*") && named("session.prefs.*")
}

#[tokio::test]
async fn a_rolling_restart_resets_gateways_at_most_once() {
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("rolling");
    let watcher = async_nats::connect(&server.url).await.unwrap();
    let mut resets = watcher.subscribe("system.reset").await.unwrap();
    watcher.flush().await.unwrap();

    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(start_member(&server, &yaml).await);
        let metrics: Vec<&Arc<ClusterMetrics>> = running.iter().map(|(_, m)| m).collect();
        settle(&metrics, true).await;
    }
    // One by one: stop the oldest, start a new one, wait until it serves.
    for _ in 0..3 {
        let (oldest, _) = running.remove(0);
        oldest.stop().await;
        running.push(start_member(&server, &yaml).await);
        let metrics: Vec<&Arc<ClusterMetrics>> = running.iter().map(|(_, m)| m).collect();
        settle(&metrics, true).await;
    }
    for (instance, _) in running {
        instance.stop().await;
    }
    watcher.flush().await.unwrap();
    let mut got = BTreeMap::new();
    drain_into(&mut resets, &mut got);
    let all: Vec<Value> = got.into_values().flatten().collect();
    let full = all.iter().filter(|r| full_reset(r)).count();
    assert!(
        full <= 1,
        "{full} full system.resets over six starts (the first alone found no live owner); every reset: {all:?}"
    );
}

/// Backend writes for `rids`, each with a reply subject of its own under `inbox`; the
/// replies each got once every instance stopped.
async fn api_sets(
    server: &NatsServer,
    instances: Vec<Connres>,
    rids: &[String],
) -> BTreeMap<String, Vec<Value>> {
    let gw = Gateway::connect(server).await;
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    for (i, rid) in rids.iter().enumerate() {
        send(
            &gw,
            format!("connres.set.{rid}"),
            Some(format!("{inbox}.{i}")),
            json!({"values": {"text": format!("v{i}")}}),
        )
        .await;
    }
    gw.client.flush().await.unwrap();
    let mut got = collect(&mut replies, rids.len()).await;
    // Every instance has handled what it received: a second reply would be here now.
    stop_all(instances).await;
    everything_delivered(&gw).await;
    drain_into(&mut replies, &mut got);
    got
}

#[tokio::test]
async fn a_backend_write_for_an_undeclared_name_gets_one_error() {
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("undeclared");
    let instances = three(&server, &yaml).await;
    let rids: Vec<String> = (0..20).map(|i| format!("session.note.u{i}")).collect();
    let got = api_sets(&server, instances, &rids).await;
    assert_eq!(got.len(), rids.len(), "a write got no answer: {got:?}");
    for (subject, replies) in &got {
        assert_eq!(replies.len(), 1, "{subject}: {replies:?}");
        assert_eq!(
            replies[0]["error"]["code"],
            json!("system.notFound"),
            "{subject}"
        );
    }
}

#[tokio::test]
async fn while_configs_differ_an_instance_not_declaring_a_name_leaves_its_writes_alone() {
    let server = NatsServer::start_jetstream();
    // One instance declares session.note, the other does not (a rolling change).
    let (a, ma) = start_member(&server, &with_note("rolling-note")).await;
    let (b, mb) = start_member(&server, &shared_seed("rolling-note")).await;
    settle(&[&ma, &mb], true).await;
    let rids: Vec<String> = (0..40).map(|i| format!("session.note.r{i}")).collect();
    let got = api_sets(&server, vec![a, b], &rids).await;
    // The declaring instance answers the writes of its partitions; the other answers
    // none (those it owns time out): never an error for a write that took effect.
    assert!(!got.is_empty(), "no write answered");
    for (subject, replies) in &got {
        assert_eq!(replies, &[json!({"result": null})], "{subject}");
    }
}
