//! Authentication and least privilege: connres connects with the credentials in its
//! NATS URL (a token; users with passwords), serves the seed scenario on a NATS server
//! configured with `deploy/nats-server.conf` (separate users for Resgate, connres, a
//! backend and an operator), only the backend user may use the backend write API, and
//! the operator's discovery requests are answered.

mod common;

use std::path::Path;

use common::process::project_file;
use common::*;
use serde_json::{json, Value};

fn conf() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats-server.conf")
}

fn shipped() -> String {
    std::fs::read_to_string(project_file("resources.yaml")).unwrap()
}

/// connres on the shipped file as its user, with a gateway as Resgate's user.
async fn start_least_privileged(server: &NatsServer) -> (Connres, Gateway) {
    let resgate = Gateway::connect_as(server, "resgate", "change-me-resgate").await;
    let url = server.url_as("connres", "change-me-connres");
    start_as(&url, resgate, &shipped()).await
}

#[tokio::test]
async fn connres_serves_the_seed_scenario_with_least_privilege() {
    let server = NatsServer::start_with_config(&conf());
    let (connres, mut gw) = start_least_privileged(&server).await;
    // (Its subscriptions to events are refused: it only publishes and asks.)
    let backend = Gateway::connect_as(&server, "backend", "change-me-backend").await;

    // Resgate asks access and gets; the auth service logs the connection in.
    let model = gw.subscribe("session.user.c1", "c1", Value::Null).await;
    assert_eq!(model["id"], json!(null));
    let prefs = gw.subscribe("session.prefs.c1", "c1", Value::Null).await;
    assert_eq!(prefs["theme"], json!("light"));
    backend
        .token("c1", json!({"userId": 42, "name": "Ann", "role": "admin"}))
        .await;
    let (subject, payload) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(payload["values"]["name"], json!("Ann"));
    assert_eq!(gw.next_event().await.0, "event.session.prefs.c1.reaccess");

    // A client write through Resgate, a backend write through the API.
    let token = json!({"userId": 42});
    let r = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            token,
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    assert_eq!(
        gw.next_event().await,
        (
            "event.session.prefs.c1.change".to_string(),
            json!({"values": {"theme": "dark"}})
        )
    );
    let r = backend
        .request(
            "connres.set.session.status.c1",
            json!({"values": {"cartItems": 2}}),
        )
        .await;
    assert_eq!(r, json!({"result": null}));
    assert_eq!(gw.next_event().await.0, "event.session.status.c1.change");

    // Logout.
    backend.token("c1", Value::Null).await;
    let (_, payload) = gw.next_event().await;
    assert_eq!(payload["values"]["name"], json!(null));
    connres.stop().await;
}

#[tokio::test]
async fn the_gateway_user_may_not_use_the_backend_api() {
    let server = NatsServer::start_with_config(&conf());
    let (connres, mut gw) = start_least_privileged(&server).await;
    // Resgate's user again, watching its connection's errors.
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let resgate = async_nats::ConnectOptions::with_user_and_password(
        "resgate".into(),
        "change-me-resgate".into(),
    )
    .event_callback(move |ev| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = ev {
                let _ = tx.send(e.to_string());
            }
        }
    })
    .connect(&server.url)
    .await
    .unwrap();
    let body = json!({"values": {"cartItems": 99}}).to_string();
    resgate
        .publish("connres.set.session.status.c1", body.into())
        .await
        .unwrap();
    resgate.flush().await.unwrap();
    let error = tokio::time::timeout(WAIT, errors.recv())
        .await
        .expect("the server reports the violation")
        .unwrap();
    assert!(
        error.contains("Permissions Violation for Publish to \"connres.set.session.status.c1\""),
        "{error}"
    );
    // Nothing was written.
    let model = gw.get("session.status.c1").await;
    assert_eq!(model["cartItems"], json!(0));
    assert!(gw.pending_events().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn the_operator_discovers_connres_with_least_privilege() {
    let server = NatsServer::start_with_config(&conf());
    let (connres, _gw) = start_least_privileged(&server).await;
    let ops =
        async_nats::ConnectOptions::with_user_and_password("ops".into(), "change-me-ops".into())
            .connect(&server.url)
            .await
            .unwrap();
    let hash = connres::config::Config::parse("resources.yaml", &shipped())
        .unwrap()
        .content_hash()
        .to_string();
    for subject in ["$SRV.PING", "$SRV.INFO.connres", "$SRV.STATS.connres"] {
        let reply = tokio::time::timeout(WAIT, ops.request(subject, "".into()))
            .await
            .unwrap_or_else(|_| panic!("no answer to {subject}"))
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["name"], "connres", "{reply}");
        assert_eq!(reply["metadata"]["config_hash"], hash.as_str(), "{reply}");
    }
    connres.stop().await;
}

#[tokio::test]
async fn a_token_in_the_url_authenticates() {
    let server = NatsServer::start_with_args(&["--auth", "s3cret-token"]);
    let gateway = Gateway::connect_with_token(&server, "s3cret-token").await;
    let url = format!("nats://s3cret-token@127.0.0.1:{}", server.port);
    let (connres, gw) = start_as(&url, gateway, &shipped()).await;
    let model = gw.subscribe("session.user.c1", "c1", Value::Null).await;
    assert_eq!(model["id"], json!(null));
    connres.stop().await;
}

#[tokio::test]
async fn without_the_token_connres_does_not_start() {
    let server = NatsServer::start_with_args(&["--auth", "s3cret-token"]);
    let config = connres::config::Config::parse("t.yaml", &shipped()).unwrap();
    let url = format!("nats://wrong@127.0.0.1:{}", server.port);
    let Err(e) = connres::service::Service::start(config, &url).await else {
        panic!("connres started with a wrong token");
    };
    let message = connres::logs::error_chain(&e);
    assert!(message.contains("nats://127.0.0.1"), "{message}");
    assert!(
        message.to_lowercase().contains("authorization"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "{message}");
}

/// The shipped file on the shared store, with a one-second lease.
fn shipped_shared() -> String {
    let text = shipped();
    let (head, rest) = text.split_once("state:\n").expect("a state block");
    let rest: String = rest
        .lines()
        .skip_while(|l| l.starts_with("  ") || l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{head}state:\n  store: nats\n  partitions: 8\n  lease: 2s\n{rest}")
}

#[tokio::test]
async fn the_shared_store_works_with_least_privilege() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().display().to_string();
    let server = NatsServer::start_with_config_and_args(&conf(), &["-js", "-sd", &sd]);
    let url = server.url_as("connres", "change-me-connres");
    let yaml = shipped_shared();
    let gw = Gateway::connect_as(&server, "resgate", "change-me-resgate").await;
    let (a, mut gw) = start_as(&url, gw, &yaml).await;
    let other = Gateway::connect_as(&server, "resgate", "change-me-resgate").await;
    let (b, _) = start_as(&url, other, &yaml).await;
    let backend = Gateway::connect_as(&server, "backend", "change-me-backend").await;
    let ann = json!({"userId": 42, "name": "Ann", "role": "admin"});
    for cid in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        let model = gw
            .subscribe(&format!("session.user.{cid}"), cid, Value::Null)
            .await;
        assert_eq!(model["id"], json!(null));
        backend.token(cid, ann.clone()).await;
        // The login reaches the gateway before its set (a token event may take a hop to
        // its partition's owner).
        let login = format!("event.session.user.{cid}.change");
        while gw.next_event().await.0 != login {}
        let r = gw
            .call(
                &format!("session.prefs.{cid}"),
                "set",
                cid,
                ann.clone(),
                json!({"theme": "dark"}),
            )
            .await;
        assert_eq!(r, json!({"result": null}), "{cid}");
    }
    a.stop().await;
    b.stop().await;
    let gw = Gateway::connect_as(&server, "resgate", "change-me-resgate").await;
    let (a, gw) = start_as(&url, gw, &yaml).await;
    for cid in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        assert_eq!(
            gw.get(&format!("session.prefs.{cid}")).await["theme"],
            json!("dark")
        );
        assert_eq!(
            gw.get(&format!("session.user.{cid}")).await["name"],
            json!("Ann")
        );
    }
    a.stop().await;
}
