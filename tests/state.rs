//! Bounded state through NATS: idle expiry and the size bound drop state, name it in
//! batched `system.reset`s, and serve defaults after; what was touched stays; denied
//! requests store nothing.

mod common;

use std::time::Duration;

use common::*;
use connres::clock::Clock;
use futures::future::join_all;
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);

fn user(id: u64) -> Value {
    json!({"userId": id, "name": format!("u{id}"), "role": "user"})
}

fn null_user() -> Value {
    json!({"id": null, "name": null, "role": null, "user": null})
}

/// Logs `cid` in by a token event and subscribes its user model as Resgate would.
async fn log_in_and_subscribe(gw: &Gateway, cid: &str, id: u64) {
    gw.token(cid, user(id)).await;
    let model = gw
        .subscribe(&format!("session.user.{cid}"), cid, user(id))
        .await;
    assert_eq!(model["id"], json!(id));
}

#[tokio::test]
async fn idle_state_expires_in_one_batched_reset_and_reads_as_defaults() {
    let server = NatsServer::start();
    let clock = Clock::manual();
    let yaml = format!("state: {{ idle_ttl: 1h }}\n{SEED}");
    let (connres, mut gw, stats) = start_clocked(&server, &yaml, clock.clone()).await;
    for (i, cid) in ["c1", "c2", "c3"].into_iter().enumerate() {
        log_in_and_subscribe(&gw, cid, i as u64 + 1).await;
    }
    let r = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            user(1),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    gw.pending_events();

    clock.advance(HOUR / 2);
    // c3 is used again: it stays.
    assert_eq!(gw.get("session.user.c3").await["id"], json!(3));
    clock.advance(HOUR / 2);

    // The next sweep drops c2 and c1 (c1 wrote last), least recently touched first.
    // Their user models follow the token: named under `access` in one event (the
    // gateway re-asks access with the token, which fills the record in again); c1's
    // written prefs follow under `resources`.
    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.reset");
    assert_eq!(
        reset,
        json!({"resources": [], "access": ["session.user.c2", "session.user.c1"]})
    );
    let (_, reset) = gw.next_system().await;
    assert_eq!(
        reset,
        json!({"resources": ["session.prefs.c1"], "access": []})
    );
    assert_eq!(stats.expired_total(), 2);
    assert_eq!(stats.connections(), 1);

    assert_eq!(
        gw.get("session.prefs.c1").await,
        json!({"theme": "light", "fontSize": 14})
    );
    assert_eq!(gw.get("session.user.c2").await, null_user());
    assert_eq!(gw.get("session.user.c3").await["id"], json!(3));
    // The gateway re-asks access with c1's token: the record is back, logged in.
    gw.access("session.user.c1", "c1", user(1)).await;
    assert_eq!(gw.get("session.user.c1").await["id"], json!(1));
    connres.stop().await;
}

#[tokio::test]
async fn past_max_entries_the_least_recently_touched_connection_goes_first() {
    let server = NatsServer::start();
    let yaml = format!("state: {{ max_entries: 3 }}\n{SEED}");
    let (connres, mut gw, stats) = start_clocked(&server, &yaml, Clock::manual()).await;
    for (i, cid) in ["c1", "c2", "c3"].into_iter().enumerate() {
        log_in_and_subscribe(&gw, cid, i as u64 + 1).await;
    }
    assert_eq!(stats.entries(), 3);
    // c1 is touched again; then c4 makes a fourth entry.
    assert_eq!(gw.get("session.user.c1").await["id"], json!(1));
    log_in_and_subscribe(&gw, "c4", 4).await;
    let (_, reset) = gw.next_system().await;
    assert_eq!(
        reset,
        json!({"resources": [], "access": ["session.user.c2"]})
    );
    assert_eq!(stats.entries(), 3);
    for (cid, id) in [("c1", 1), ("c3", 3), ("c4", 4)] {
        assert_eq!(
            gw.get(&format!("session.user.{cid}")).await["id"],
            json!(id)
        );
    }
    // Dropped: read as logged out (a get carries no token) until the re-asked access
    // brings the token back.
    assert_eq!(gw.get("session.user.c2").await, null_user());
    connres.stop().await;
}

#[tokio::test]
async fn ten_thousand_denied_requests_store_nothing() {
    let server = NatsServer::start();
    let (connres, gw, stats) = start_clocked(&server, SEED, Clock::manual()).await;
    log_in_and_subscribe(&gw, "c1", 1).await;
    let baseline = stats.entries();
    assert_eq!(baseline, 1);
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(500) {
        let names: Vec<String> = chunk
            .iter()
            .map(|i| format!("session.user.other{i}"))
            .collect();
        let replies = join_all(names.iter().map(|n| gw.access(n, "c1", user(1)))).await;
        for r in replies {
            assert_eq!(r, json!({"result": {"get": false}}));
        }
        let rids: Vec<String> = chunk
            .iter()
            .map(|i| format!("session.prefs.other{i}"))
            .collect();
        let replies = join_all(
            rids.iter()
                .map(|rid| gw.call(rid, "set", "c1", user(1), json!({"theme": "dark"}))),
        )
        .await;
        for r in replies {
            assert_eq!(r["error"]["code"], json!("system.accessDenied"));
        }
    }
    assert_eq!(stats.entries(), baseline);
    assert_eq!(stats.connections(), 1);
    connres.stop().await;
}

/// Found through the real Resgate: a client subscribed to its user model while logged
/// out, the connection idled past `idle_ttl`, then it logged in and never saw it. The
/// gateway still cached the null model, but connres had dropped the connection without
/// naming the model, so the login published no change event. Now the model is named
/// under `access`; the gateway's re-asked access makes connres remember it again.
#[tokio::test]
async fn a_login_after_a_logged_out_connection_expired_reaches_the_gateway() {
    let server = NatsServer::start();
    let clock = Clock::manual();
    let yaml = format!("state: {{ idle_ttl: 1h }}\n{SEED}");
    let (connres, mut gw, _) = start_clocked(&server, &yaml, clock.clone()).await;
    assert_eq!(
        gw.subscribe("session.user.c1", "c1", Value::Null).await,
        null_user()
    );

    clock.advance(HOUR);
    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.reset");
    assert_eq!(
        reset,
        json!({"resources": [], "access": ["session.user.c1"]})
    );
    // As Resgate does on that reset: access again, with the token it has (none).
    let access = gw.access("session.user.c1", "c1", Value::Null).await;
    assert_eq!(access["result"]["get"], json!(true));

    gw.token("c1", user(1)).await;
    let (subject, payload) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(payload["values"]["name"], json!("u1"));
    connres.stop().await;
}
