//! Data of a declared shape through NATS (`tests/config/valid/data-shapes.yaml`): adds
//! and sets of clients and the backend, good and bad, published back to back without
//! waiting, each answered, only the good ones stored (on one instance, and on three
//! sharing the store); a reload that tightens a shape
//! drops what no longer fits and names the resources in its `system.reset`; units read
//! back from the shared store under a tightened shape lose what it refuses.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const SHAPES: &str = include_str!("config/valid/data-shapes.yaml");

/// `qty` at most 10, `note` no longer declared, `width` at most 4000.
fn tightened(text: &str) -> String {
    text.replace("min: 1, max: 99", "min: 1, max: 10")
        .replace("          note: { type: string, optional: true }\n", "")
        .replace(
            "width: { type: integer, min: 100, max: 10000 }",
            "width: { type: integer, min: 100, max: 4000 }",
        )
}

/// The resources of `text` on the shared store in `bucket`.
fn shared(text: &str, bucket: &str) -> String {
    let (_, body) = text.split_once("resources:").unwrap();
    format!(
        "version: 1\nstate:\n  store: nats\n  bucket: {bucket}\n  partitions: {PARTITIONS}\n  lease: 2s\nresources:{body}"
    )
}

fn items(reply: &Value) -> Vec<Value> {
    reply["result"]["collection"]
        .as_array()
        .unwrap_or_else(|| panic!("not a collection: {reply}"))
        .clone()
}

/// What a request of the burst must be answered: success, or `system.invalidParams`
/// with this message.
type Expected = Option<&'static str>;

/// The burst on each connection, nothing awaited: per round a client add that fits and
/// one that does not, a backend add that fits (at the head) and one that does not, a
/// client set of the layout that fits and one that does not, and a backend set that
/// does not. Returns what each request (by its number under `inbox`) must be answered.
async fn burst(gw: &Gateway, inbox: &str, cids: &[String], rounds: usize) -> Vec<Expected> {
    let mut expected = Vec::new();
    for i in 0..rounds {
        for cid in cids {
            let cart = format!("session.cart.{cid}");
            let layout = format!("session.layout.{cid}");
            let call = |params: Value| json!({"cid": cid, "params": params});
            let width = 100 + i;
            for (subject, body, answer) in [
                (
                    format!("call.{cart}.add"),
                    call(json!({"value": {"sku": format!("c{i}"), "qty": 1 + i % 99}})),
                    None,
                ),
                (
                    format!("call.{cart}.add"),
                    call(json!({"value": {"sku": format!("x{i}"), "qty": 0}})),
                    Some("value: key `qty`: 0 is below min 1"),
                ),
                (
                    format!("connres.add.{cart}"),
                    json!({"value": {"data": {"sku": format!("b{i}"), "qty": 2, "note": "n"}}, "idx": 0}),
                    None,
                ),
                (
                    format!("connres.add.{cart}"),
                    json!({"value": {"sku": format!("y{i}"), "qty": 2, "colour": "red"}}),
                    Some("value: key `colour`: is not declared (the keys are sku, qty, note)"),
                ),
                (
                    format!("call.{layout}.set"),
                    call(json!({"window": {"width": width, "height": 600}})),
                    None,
                ),
                (
                    format!("call.{layout}.set"),
                    call(json!({"window": {"width": width}, "extra": [i]})),
                    Some("field `window`: key `height`: is missing (it is not optional)"),
                ),
                (
                    format!("connres.set.{layout}"),
                    json!({"values": {"window": {"width": width, "height": 600, "panel": {"side": "up", "open": true}}}}),
                    Some("field `window`: key `panel.side`: \"up\" is not one of [\"left\", \"right\"] (enum)"),
                ),
            ] {
                let reply = format!("{inbox}.{}", expected.len());
                gw.client
                    .publish_with_reply(subject, reply, Bytes::from(body.to_string()))
                    .await
                    .unwrap();
                expected.push(answer);
            }
        }
    }
    gw.client.flush().await.unwrap();
    expected
}

/// Applies `event.<rid>.add|remove|change` to the copies a gateway keeps.
fn fold(copies: &mut BTreeMap<String, Value>, subject: &str, payload: &Value) {
    let rest = subject.strip_prefix("event.").unwrap();
    let (rid, kind) = rest.rsplit_once('.').unwrap();
    let Some(copy) = copies.get_mut(rid) else {
        return;
    };
    match kind {
        "add" => {
            let list = copy.as_array_mut().unwrap();
            let idx = payload["idx"].as_u64().unwrap() as usize;
            assert!(idx <= list.len(), "{subject} {payload}");
            list.insert(idx, payload["value"].clone());
        }
        "change" => {
            for (k, v) in payload["values"].as_object().unwrap() {
                copy[k] = v.clone();
            }
        }
        _ => panic!("unexpected {subject} {payload}"),
    }
}

/// Sends the burst, checks every reply, folds the events into a gateway's copies and
/// compares each with the final get, and checks that only what fits was stored.
async fn burst_then_compare(gw: &mut Gateway, cids: &[String], rounds: usize) {
    let mut copies = BTreeMap::new();
    for cid in cids {
        let cart = format!("session.cart.{cid}");
        let reply = gw.request(&format!("get.{cart}"), Value::Null).await;
        copies.insert(cart, Value::from(items(&reply)));
        let layout = format!("session.layout.{cid}");
        copies.insert(layout.clone(), gw.get(&layout).await);
    }
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(format!("{inbox}.>")).await.unwrap();
    gw.client.flush().await.unwrap();
    let expected = burst(gw, &inbox, cids, rounds).await;
    let mut answered = vec![false; expected.len()];
    for _ in 0..expected.len() {
        let msg = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("every request is answered")
            .unwrap();
        let n: usize = msg.subject.rsplit('.').next().unwrap().parse().unwrap();
        assert!(!answered[n], "request {n} answered twice");
        answered[n] = true;
        let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
        match expected[n] {
            None => assert_eq!(reply, json!({"result": null}), "request {n}"),
            Some(message) => assert_eq!(
                reply,
                json!({"error": {"code": "system.invalidParams", "message": message}}),
                "request {n}"
            ),
        }
    }
    for (subject, payload) in gw.pending_events() {
        fold(&mut copies, &subject, &payload);
    }
    for cid in cids {
        let cart = format!("session.cart.{cid}");
        let got = items(&gw.request(&format!("get.{cart}"), Value::Null).await);
        assert_eq!(Value::from(got.clone()), copies[&cart], "{cart}");
        // Only what fits: a client's line at the end and a backend's at the head per
        // round, nothing of the refused ones.
        assert_eq!(got.len(), 2 * rounds, "{cart}");
        assert_eq!(
            got[0]["data"],
            json!({"sku": format!("b{}", rounds - 1), "qty": 2, "note": "n"})
        );
        assert_eq!(
            got[2 * rounds - 1]["data"],
            json!({"sku": format!("c{}", rounds - 1), "qty": rounds})
        );
        let layout = format!("session.layout.{cid}");
        let model = gw.get(&layout).await;
        assert_eq!(model, copies[&layout], "{layout}");
        assert_eq!(
            model,
            json!({"window": {"data": {"width": 100 + rounds - 1, "height": 600}}, "extra": null})
        );
    }
}

#[tokio::test]
async fn a_burst_of_good_and_bad_data_stores_only_what_fits() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SHAPES).await;
    let cids: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    burst_then_compare(&mut gw, &cids, 20).await;
    connres.stop().await;
}

#[tokio::test]
async fn three_instances_sharing_the_store_store_only_what_fits() {
    let server = NatsServer::start_jetstream();
    let yaml = shared(SHAPES, "shapes3");
    let (a, mut gw, ma) = start_shared(&server, &yaml).await;
    let (b, mb) = start_member(&server, &yaml).await;
    let (c, mc) = start_member(&server, &yaml).await;
    common::auth::settle(&[&ma, &mb, &mc]).await;
    let cids: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    burst_then_compare(&mut gw, &cids, 8).await;
    for instance in [a, b, c] {
        instance.stop().await;
    }
}

#[tokio::test]
async fn a_reload_that_tightens_a_shape_drops_what_no_longer_fits_and_resets_the_resources() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(SHAPES);
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;
    for line in [
        json!({"sku": "A1", "qty": 2}),
        json!({"sku": "A2", "qty": 20}),
        json!({"sku": "A3", "qty": 3, "note": "gift"}),
    ] {
        let reply = gw
            .call(
                "session.cart.c1",
                "add",
                "c1",
                Value::Null,
                json!({ "value": line }),
            )
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    let window = json!({"width": 5000, "height": 600});
    let reply = gw
        .call(
            "session.layout.c1",
            "set",
            "c1",
            Value::Null,
            json!({ "window": window }),
        )
        .await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(gw.pending_events().len(), 4);

    write_by_rename(&dir.path(), &tightened(SHAPES));
    match next_reload(&mut reports).await {
        connres::reload::ReloadReport::Applied { .. } => {}
        other => panic!("expected an applied reload, got {other:?}"),
    }
    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.reset");
    assert_eq!(
        reset,
        json!({"resources": ["session.cart.*", "session.layout.*"], "access": []})
    );
    let got = items(&gw.request("get.session.cart.c1", Value::Null).await);
    assert_eq!(got, vec![json!({"data": {"sku": "A1", "qty": 2}})]);
    assert_eq!(
        gw.get("session.layout.c1").await["window"],
        json!({"data": {"width": 800, "height": 600}}),
        "back to its default"
    );
    // The reset tells gateways to fetch again; no add or remove event is owed.
    assert_eq!(gw.pending_events(), vec![]);
    // What the new shape refuses is refused from now on.
    let reply = gw
        .call(
            "session.cart.c1",
            "add",
            "c1",
            Value::Null,
            json!({"value": {"sku": "A4", "qty": 1, "note": "gift"}}),
        )
        .await;
    assert_eq!(
        Gateway::expect_error(&reply, "system.invalidParams"),
        "value: key `note`: is not declared (the keys are sku, qty)"
    );
    connres.stop().await;
}

#[tokio::test]
async fn units_read_back_from_the_shared_store_lose_what_a_tightened_shape_refuses() {
    let server = NatsServer::start_jetstream();
    let loose = shared(SHAPES, "shapes");
    let (first, gw, _) = start_shared(&server, &loose).await;
    for (cid, qty) in [("s1", 2), ("s2", 20)] {
        let reply = gw
            .call(
                &format!("session.cart.{cid}"),
                "add",
                cid,
                Value::Null,
                json!({"value": {"sku": "A1", "qty": qty}}),
            )
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    first.stop().await;

    let (again, gw, _) = start_shared(&server, &tightened(&loose)).await;
    let kept = items(&gw.request("get.session.cart.s1", Value::Null).await);
    assert_eq!(kept, vec![json!({"data": {"sku": "A1", "qty": 2}})]);
    let dropped = items(&gw.request("get.session.cart.s2", Value::Null).await);
    assert_eq!(
        dropped,
        Vec::<Value>::new(),
        "qty 20 is above the new max 10"
    );
    again.stop().await;
}
