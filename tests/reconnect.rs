//! NATS outages: connres reconnects by itself and, since token events may have been
//! missed meanwhile, fills token records in again from the next request.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn after_a_reconnect_tokens_are_learned_again() {
    let server = NatsServer::start();
    let port = server.port;
    let (connres, mut gw) = start(&server, SEED).await;
    assert_eq!(gw.get("session.user.c1").await["id"], json!(null));
    gw.token("c1", json!({"userId": 1})).await;
    assert_eq!(
        gw.next_event().await.1,
        json!({"values": {"id": 1, "user": {"rid": "users.user.1"}}})
    );

    // Confirmed: a request with another token changes nothing.
    gw.access("session.user.c1", "c1", json!({"userId": 2}))
        .await;
    assert!(gw.pending_events().is_empty());

    // The server goes away and comes back on the same port; events meanwhile are lost.
    drop(server);
    let _server = NatsServer::start_on(port);

    gw.wait_until_served("session.user.c9").await;

    // Now unconfirmed: the next request's token fills the record in, events first.
    let reply = gw
        .access("session.user.c1", "c1", json!({"userId": 2}))
        .await;
    assert_eq!(reply["result"]["get"], json!(true));
    let events: Vec<_> = gw
        .pending_events()
        .into_iter()
        .filter(|(s, _)| s.starts_with("event.session.user.c1"))
        .collect();
    assert_eq!(
        events,
        vec![(
            "event.session.user.c1.change".to_string(),
            json!({"values": {"id": 2, "user": {"rid": "users.user.2"}}})
        )]
    );
    connres.stop().await;
}

/// A request does not overtake the token events that came before it on the wire. After
/// a reconnect the record is unconfirmed, so an access request's token fills it in: had
/// the request been served before the token events the gateway heard first (the old
/// code took reads from subscriptions of their own, merged in turns with the channel
/// the token events queue in), its token would be applied, and then the older events
/// after it: the model would go back in time (login 5, then 1, 2, 3, 4, 5).
#[tokio::test]
async fn after_a_reconnect_a_request_does_not_overtake_earlier_token_events() {
    let server = NatsServer::start();
    let port = server.port;
    let (connres, mut gw) = start(&server, SEED).await;
    assert_eq!(gw.get("session.user.c1").await["id"], json!(null));
    gw.token("c1", json!({"userId": 0})).await;
    assert_eq!(gw.next_event().await.1["values"]["id"], json!(0));
    drop(server);
    let server = NatsServer::start_on(port);
    gw.wait_until_served("session.user.c9").await;
    let mut heard = gw.client.subscribe("conn.c1.token").await.unwrap();
    // A round trip: the server has the subscription before the burst below.
    gw.get("session.user.c9").await;
    gw.pending_events();

    // A backlog of other connections' token events, then five logins of c1, back to
    // back; the gateway asks access with the token of the last event it heard.
    let auth = Gateway::connect(&server).await;
    for i in 0..10_000 {
        let body = json!({"token": {"userId": i}}).to_string();
        auth.client
            .publish(format!("conn.b{}.token", i % 500), body.into())
            .await
            .unwrap();
    }
    for k in 1..=5 {
        let body = json!({"token": {"userId": k}}).to_string();
        auth.client
            .publish("conn.c1.token", body.into())
            .await
            .unwrap();
    }
    auth.client.flush().await.unwrap();
    loop {
        let msg = tokio::time::timeout(WAIT, heard.next())
            .await
            .expect("the gateway hears c1's token events")
            .unwrap();
        if parse_or_null(&msg.payload)["token"]["userId"] == json!(5) {
            break;
        }
    }
    let reply = gw
        .access("session.user.c1", "c1", json!({"userId": 5}))
        .await;
    assert_eq!(reply["result"]["get"], json!(true));

    let mut ids = Vec::new();
    while ids.last() != Some(&json!(5)) {
        let Ok(Some(msg)) = tokio::time::timeout(WAIT, gw.events.next()).await else {
            panic!("no change event to login 5 after {ids:?}");
        };
        if msg.subject.as_str() == "event.session.user.c1.change" {
            ids.push(parse_or_null(&msg.payload)["values"]["id"].clone());
        }
    }
    assert_eq!(ids, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    connres.stop().await;
}
