//! `{ recheck: true }`: what a gateway sends for each connection of a
//! `system.tokenReset` naming the method. The connection's owner verifies the JWT the
//! connection logged in with again, as the config verifies now: refused (a rotated key,
//! an expired JWT), the connection is logged out and its models reset; accepted, it
//! stays as it is. With the shared store, the owner does it, whichever instance the
//! gateway's request reaches.

mod common;

use common::auth::*;
use common::*;
use serde_json::{json, Value};

const RECHECKS: &str = "      recheck: { recheck: true }\n";

#[tokio::test]
async fn a_recheck_logs_out_a_connection_whose_jwt_the_rotated_key_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let yaml = config_with(&dir, "", RECHECKS);
    let file = ConfigDir::new(&yaml);
    let (connres, mut gw, mut reports) = start_watched(&server, &file.path()).await;
    let mut tokens = token_events(&gw).await;
    let jwt = ann_jwt();
    let reply = auth(&gw, "login", json!({"cid": "c1", "params": {"token": jwt}})).await;
    assert_eq!(reply, json!({"result": null}));
    let (_, login) = received(&mut tokens).expect("the login's token event");
    assert_eq!(login["jwt"], json!(jwt), "the JWT is kept for the recheck");
    // Another auth service's login: no JWT to check again.
    gw.token("c2", json!({"userId": 7})).await;
    assert_eq!(received_next(&mut tokens).await.0, "conn.c2.token");
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));

    // The key still verifies the JWT: nothing changes, no token event.
    let reply = auth(
        &gw,
        "recheck",
        json!({"cid": "c1", "token": {"userId": 42}}),
    )
    .await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(received(&mut tokens), None);

    // The key rotates: the JWT signed with the old one is refused now.
    let rotated = dir.path().join("rotated.secret");
    std::fs::write(&rotated, b"another secret of at least thirty-two bytes").unwrap();
    let old = dir.path().join("jwt.secret").display().to_string();
    write_by_rename(
        &file.path(),
        &yaml.replace(&old, &rotated.display().to_string()),
    );
    let _ = next_reload(&mut reports).await;
    let reply = auth(
        &gw,
        "recheck",
        json!({"cid": "c1", "token": {"userId": 42}}),
    )
    .await;
    Gateway::expect_error(&reply, "connres.invalidToken");
    assert_eq!(reply["error"]["data"]["reason"], json!("bad_signature"));
    assert!(
        !reply.to_string().contains(&jwt),
        "no reply quotes the JWT: {reply}"
    );
    assert_eq!(
        received(&mut tokens),
        Some(("conn.c1.token".into(), json!({"token": null})))
    );
    let (subject, change) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(change["values"]["name"], Value::Null);
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);

    // Logged out now, or never logged in by this name: nothing to check.
    for cid in ["c1", "c2", "c3"] {
        let reply = auth(&gw, "recheck", json!({"cid": cid})).await;
        assert_eq!(reply, json!({"result": null}), "{cid}");
    }
    assert_eq!(received(&mut tokens), None, "c2 keeps its token");
    let reply = auth(&gw, "recheck", json!({"token": null})).await;
    Gateway::expect_error(&reply, "system.invalidParams");
    connres.stop().await;
}

/// A JWT that expired while its connection kept it (`expire: never` keeps the token
/// past `exp`), rechecked through 3 instances: each connection's owner logs it out,
/// once, wherever the request arrives.
#[tokio::test]
async fn with_three_instances_each_recheck_is_done_once_by_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream();
    let yaml = config_with(&dir, "    expire: never\n", RECHECKS);
    let (instances, gw) = three_instances(&server, "recheck3", &yaml).await;
    let mut tokens = token_events(&gw).await;
    let exp = now() + 2;
    let jwt = sign(
        json!({"sub": 42, "name": "Ann", "iss": "https://id.example.test", "exp": exp}),
        SECRET,
    );
    let cids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for cid in &cids {
        let reply = auth(&gw, "login", json!({"cid": cid, "params": {"token": jwt}})).await;
        assert_eq!(reply, json!({"result": null}));
        assert_eq!(
            received_next(&mut tokens).await.0,
            format!("conn.{cid}.token")
        );
    }
    // The JWT's `exp` is wall-clock time: the owners' clocks must pass it (the
    // verifier's leeway is 0).
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for cid in &cids {
        let reply = auth(&gw, "recheck", json!({"cid": cid})).await;
        Gateway::expect_error(&reply, "connres.invalidToken");
        assert_eq!(reply["error"]["data"]["reason"], json!("expired"), "{cid}");
        assert_eq!(
            received_next(&mut tokens).await,
            (format!("conn.{cid}.token"), json!({"token": null}))
        );
        assert_eq!(
            gw.get(&format!("session.user.{cid}")).await["id"],
            Value::Null
        );
    }
    for instance in instances {
        instance.stop().await;
    }
    gw.client.flush().await.unwrap();
    assert_eq!(
        received(&mut tokens),
        None,
        "each connection logged out once"
    );
}
