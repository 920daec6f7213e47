//! The shared store when an instance dies or stalls: `connres serve` processes on one
//! nats-server with JetStream, one killed (SIGKILL) or paused (SIGSTOP) while it owns
//! partitions. The leases last two seconds.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use common::leases::*;
use common::process::*;
use common::*;
use connres::store::record::partition_of_cid;
use serde_json::{json, Value};

/// Starts `n` instances and returns them with their instance IDs.
fn instances(server: &NatsServer, yaml: &str, n: usize) -> Vec<(tempfile::TempDir, Proc, String)> {
    (0..n)
        .map(|_| {
            let (dir, mut proc) = serve(&server.url, yaml);
            let line = proc.wait_for_log("connres is serving");
            let id = line
                .split("instance=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("the serving line names the instance")
                .to_string();
            (dir, proc, id)
        })
        .collect()
}

/// Connections whose partition `owner` holds.
fn cids_of(owners: &[String], owner: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("v{i}"))
        .filter(|cid| owners[partition_of_cid(cid, PARTITIONS) as usize] == owner)
        .take(n)
        .collect()
}

/// A client set with a short timeout: `None` when it was not acknowledged.
async fn try_set(gw: &Gateway, cid: &str, size: i64) -> Option<Value> {
    let body = json!({"cid": cid, "token": token(), "params": {"fontSize": size}});
    let request = gw.client.request(
        format!("call.session.prefs.{cid}.set"),
        body.to_string().into(),
    );
    match tokio::time::timeout(Duration::from_secs(3), request).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).ok(),
        _ => None,
    }
}

fn token() -> Value {
    json!({"userId": 3, "name": "v", "role": "user"})
}

#[tokio::test]
async fn killing_an_owner_mid_burst_loses_no_acknowledged_write() {
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("kill");
    let gw = Gateway::connect(&server).await;
    let mut procs = instances(&server, &yaml, 3);
    let kv = bucket(&server, "kill").await;
    let ids: Vec<String> = procs.iter().map(|(_, _, id)| id.clone()).collect();
    let owners = settled(&kv, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let victim = procs.remove(0);
    let cids = cids_of(&owners, &victim.2, 6);
    for cid in &cids {
        let reply = gw
            .request(&format!("conn.{cid}.token"), json!({"token": token()}))
            .await;
        assert_eq!(reply, json!({"result": null}));
    }
    let mut resets = gw.client.subscribe("system.reset").await.unwrap();
    gw.client.flush().await.unwrap();
    let mut acked: Vec<Option<i64>> = vec![None; cids.len()];
    let mut attempted = vec![vec![8]; cids.len()];
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(try_set(&gw, cid, 8).await, Some(json!({"result": null})));
        acked[i] = Some(8);
    }

    // The owner dies while sets for its connections keep coming, one after another per
    // connection; the ones it had taken go unanswered.
    let (_dir, mut proc, _) = victim;
    proc.kill();
    let killed = Instant::now();
    let burst = futures::future::join_all(cids.iter().enumerate().map(|(i, cid)| {
        let gw = &gw;
        async move {
            let (mut acked, mut attempted) = (None, Vec::new());
            for size in 9..=20 {
                attempted.push(size);
                if let Some(reply) = try_set(gw, cid, size).await {
                    assert_eq!(reply, json!({"result": null}), "set {cid}");
                    acked = Some(size);
                }
            }
            (i, acked, attempted)
        }
    }));
    // The new owners tell the gateways to re-fetch what they took over.
    let reset = async {
        let mut named = std::collections::HashSet::new();
        while named.len() < cids.len() {
            let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut resets))
                .await
                .expect("a system.reset names every model of the dead owner")
                .unwrap();
            let reset: Value = serde_json::from_slice(&m.payload).unwrap();
            for rid in reset["resources"].as_array().into_iter().flatten() {
                if let Some(cid) = rid.as_str().and_then(|r| r.strip_prefix("session.prefs.")) {
                    named.insert(cid.to_string());
                }
            }
        }
        killed.elapsed()
    };
    let (results, took) = futures::join!(burst, reset);
    eprintln!("takeover: every model named in a system.reset {took:?} after the kill (lease 2s)");
    for (i, last, tried) in results {
        acked[i] = last.or(acked[i]);
        attempted[i].extend(tried);
    }

    // Every acknowledged write survived (a write cut off by the kill may have too).
    for (i, cid) in cids.iter().enumerate() {
        let size = gw.get(&format!("session.prefs.{cid}")).await["fontSize"].clone();
        let last = acked[i].expect("acknowledged writes");
        let later: Vec<i64> = attempted[i]
            .iter()
            .copied()
            .filter(|s| *s >= last)
            .collect();
        assert!(
            later.iter().any(|s| json!(s) == size),
            "{cid}: fontSize {size}, last acknowledged {last}"
        );
    }
    for (_, proc, _) in procs {
        proc.terminate();
        assert!(proc.output().await.status.success());
    }
}

#[tokio::test]
async fn a_paused_owner_publishes_nothing_for_partitions_it_lost() {
    use futures::StreamExt;
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("pause");
    let gw = Gateway::connect(&server).await;
    let mut procs = instances(&server, &yaml, 2);
    let kv = bucket(&server, "pause").await;
    let ids: Vec<String> = procs.iter().map(|(_, _, id)| id.clone()).collect();
    let owners = settled(&kv, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (_dir, mut paused, paused_id) = procs.remove(0);
    let cid = cids_of(&owners, &paused_id, 1).remove(0);
    let rid = format!("session.prefs.{cid}");
    let p = partition_of_cid(&cid, PARTITIONS);
    assert_eq!(
        gw.request(&format!("conn.{cid}.token"), json!({"token": token()}))
            .await,
        json!({"result": null})
    );

    paused.stop();
    // A set sent while the owner is paused: every instance receives it; it waits in
    // the paused one's socket, and the other keeps it in its window.
    let stale_inbox = gw.client.new_inbox();
    let mut stale_replies = gw.client.subscribe(stale_inbox.clone()).await.unwrap();
    let stale = json!({"cid": cid, "token": token(), "params": {"fontSize": 9}});
    gw.client
        .publish_with_reply(
            format!("call.{rid}.set"),
            stale_inbox,
            stale.to_string().into(),
        )
        .await
        .unwrap();
    gw.client.flush().await.unwrap();

    // The other instance takes the partition over once the lease has run out.
    let deadline = Instant::now() + WAIT;
    while owners_of(&kv, p).await.as_deref() == Some(paused_id.as_str()) {
        assert!(Instant::now() < deadline, "the lease never passed on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new owner took the partition over from an owner that stopped renewing: it
    // does not apply the requests it kept (the old owner may have), so the stale set
    // is not applied; later sets are (the paused one gets them too, in its socket).
    set(&gw, &cid, 30).await;
    let mut events = gw.client.subscribe(format!("event.{rid}.>")).await.unwrap();
    gw.client.flush().await.unwrap();

    paused.resume();
    paused.wait_for_log("this instance did not run for a while");
    // The model is as the new owner left it; the stale set changed nothing.
    assert_eq!(gw.get(&rid).await["fontSize"], json!(30));
    set(&gw, &cid, 31).await;
    let (_, event) = {
        let m = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap();
        (
            m.subject.to_string(),
            serde_json::from_slice::<Value>(&m.payload).unwrap(),
        )
    };
    // The first event after the resume is the new set's, not the stale one's.
    assert_eq!(event["values"]["fontSize"], json!(31));
    assert!(
        futures::FutureExt::now_or_never(stale_replies.next()).is_none(),
        "the paused instance answered a request of a partition it lost"
    );
    paused.terminate();
    assert!(paused.output().await.status.success());
    for (_, proc, _) in procs {
        proc.terminate();
        assert!(proc.output().await.status.success());
    }
}

/// A client set, as the gateway sends it (every instance receives it).
async fn set(gw: &Gateway, cid: &str, size: i64) {
    let body = json!({"cid": cid, "token": token(), "params": {"fontSize": size}});
    let request = gw.client.request(
        format!("call.session.prefs.{cid}.set"),
        body.to_string().into(),
    );
    let reply = tokio::time::timeout(WAIT, request)
        .await
        .unwrap_or_else(|_| panic!("no answer to the set of {cid} to {size}"))
        .unwrap_or_else(|e| panic!("no answer to the set of {cid} to {size}: {e}"));
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"result": null}), "set {cid} to {size}");
}

async fn owners_of(kv: &kv::Store, p: u32) -> Option<String> {
    let lease = kv.get(format!("lease.{p}")).await.unwrap()?;
    serde_json::from_slice::<Value>(&lease).ok()?["owner"]
        .as_str()
        .map(str::to_string)
}
