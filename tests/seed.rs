//! The seed scenario end to end: login, change, logout on `session.user.{cid}`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn login_change_logout() {
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, SEED).await;

    let access = gw.access("session.user.c1", "c1", json!(null)).await;
    assert_eq!(access, json!({"result": {"get": true}}));
    let model = gw.get("session.user.c1").await;
    assert_eq!(
        model,
        json!({"id": null, "name": null, "role": null, "user": null})
    );

    gw.token("c1", json!({"userId": 42, "name": "Ann", "role": "admin"}))
        .await;
    let (subject, payload) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(
        payload,
        json!({"values": {"id": 42, "name": "Ann", "role": "admin", "user": {"rid": "users.user.42"}}})
    );
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));

    gw.token("c1", json!({"userId": 42, "name": "Bea", "role": "admin"}))
        .await;
    let (_, payload) = gw.next_event().await;
    assert_eq!(payload, json!({"values": {"name": "Bea"}}));

    gw.token("c1", json!(null)).await;
    let (_, payload) = gw.next_event().await;
    assert_eq!(
        payload,
        json!({"values": {"id": null, "name": null, "role": null, "user": null}})
    );
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}
