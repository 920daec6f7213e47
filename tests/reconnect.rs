//! NATS outages: connres reconnects by itself and, since token events may have been
//! missed meanwhile, fills token records in again from the next request.

mod common;

use common::*;
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
