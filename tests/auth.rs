//! The `auth:` block: connres answers `auth.<name>.<method>` requests as an auth
//! service would. A login with a valid JWT publishes the connection's token event
//! (built from the claims, with its `tid`) before the reply, and the models that follow
//! the token change; a refused JWT gets a `connres.invalidToken` error naming why and no
//! token event; a logout clears the token.
//!
//! "Before the reply": the test's client receives the token event and the reply on one
//! connection, and async-nats hands each message to its subscription in the order the
//! connection received them, so once the reply is in, an event published before it is
//! already waiting on the test's subscription.

mod common;

use common::auth::*;
use common::logs::Logs;
use common::*;
use futures::{FutureExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

#[tokio::test]
async fn a_login_with_a_jwt_sets_the_token_before_the_reply_and_the_model_follows() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config(&dir)).await;
    let mut tokens = token_events(&gw).await;
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);

    let reply = auth(
        &gw,
        "login",
        json!({"cid": "c1", "params": {"token": ann_jwt()}}),
    )
    .await;
    assert_eq!(reply, json!({"result": null}));
    let (subject, event) = received(&mut tokens).expect("the token event came before the reply");
    assert_eq!(subject, "conn.c1.token");
    assert_eq!(
        event["token"],
        json!({"userId": 42, "name": "Ann", "role": "admin"})
    );
    assert_eq!(event["tid"], json!("user-42"));
    // The JWT's `exp`: the token ends with it (`expire: at_exp`, the default).
    assert!(event["expires"].as_u64().unwrap() > now(), "{event}");
    // connres applies its own token event as any other, and answers the login only
    // then: the model's change event came before the reply too.
    let change = gw.events.next().now_or_never().flatten();
    let change = change.expect("the change event came before the reply");
    assert_eq!(change.subject.as_str(), "event.session.user.c1.change");
    let change = parse_or_null(&change.payload);
    assert_eq!(change["values"]["id"], json!(42));
    assert_eq!(change["values"]["name"], json!("Ann"));
    assert_eq!(gw.get("session.user.c1").await["name"], json!("Ann"));

    let reply = auth(&gw, "logout", json!({"cid": "c1"})).await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(
        received(&mut tokens),
        Some(("conn.c1.token".into(), json!({"token": null})))
    );
    let (_, change) = gw.next_event().await;
    assert_eq!(change["values"]["name"], Value::Null);
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);
    connres.stop().await;
}

#[tokio::test]
async fn header_auth_finds_the_jwt_in_a_bearer_header_or_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, _gw) = start(&server, &config(&dir)).await;
    let gw = Gateway::connect(&server).await;
    let mut tokens = token_events(&gw).await;
    let jwt = ann_jwt();
    // What Resgate sends with --wsheadauth session.header: the WebSocket's headers.
    let request = |cid: &str, header: Value| json!({"cid": cid, "header": header, "host": "127.0.0.1", "remoteAddr": "127.0.0.1:5000", "uri": "/"});
    let cases = [
        ("c1", json!({"Authorization": [format!("Bearer {jwt}")]})),
        (
            "c2",
            json!({"Cookie": [format!("theme=dark; session={jwt}")]}),
        ),
        // The first place that holds a token wins; a non-bearer Authorization holds none.
        (
            "c3",
            json!({"Authorization": ["Basic YTpi"], "Cookie": [format!("session={jwt}")]}),
        ),
    ];
    for (cid, header) in cases {
        let reply = auth(&gw, "header", request(cid, header)).await;
        assert_eq!(reply, json!({"result": null}), "{cid}");
        let (subject, event) = received(&mut tokens).expect("a token event");
        assert_eq!(subject, format!("conn.{cid}.token"));
        assert_eq!(event["token"]["userId"], json!(42));
    }
    // No token anywhere: refused, and the connection's token is left alone.
    let reply = auth(
        &gw,
        "header",
        request("c4", json!({"Cookie": ["theme=dark"]})),
    )
    .await;
    Gateway::expect_error(&reply, "connres.invalidToken");
    assert_eq!(reply["error"]["data"]["reason"], json!("missing"));
    assert!(received(&mut tokens).is_none());
    connres.stop().await;
}

#[tokio::test]
async fn a_refused_jwt_gets_an_error_naming_why_and_no_token_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &config(&dir)).await;
    let mut tokens = token_events(&gw).await;
    let iss = "https://id.example.test";
    let none_alg = {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"sub": 1, "iss": iss, "exp": now() + 600}))
        )
    };
    let cases = [
        (
            sign(json!({"sub": 1, "iss": iss, "exp": now() - 600}), SECRET),
            "expired",
        ),
        (
            sign(
                json!({"sub": 1, "iss": iss, "exp": now() + 600}),
                b"another secret of at least thirty-two bytes",
            ),
            "bad_signature",
        ),
        (
            sign(
                json!({"sub": 1, "iss": "https://other.test", "exp": now() + 600}),
                SECRET,
            ),
            "wrong_issuer",
        ),
        (sign(json!({"sub": 1, "iss": iss}), SECRET), "missing_claim"),
        (none_alg, "algorithm_not_allowed"),
        ("not.a.jwt".to_string(), "malformed"),
    ];
    for (jwt, reason) in cases {
        let reply = auth(&gw, "login", json!({"cid": "c1", "params": {"token": jwt}})).await;
        let message = Gateway::expect_error(&reply, "connres.invalidToken");
        assert_eq!(reply["error"]["data"]["reason"], json!(reason), "{message}");
        assert!(
            !reply.to_string().contains(&jwt),
            "the reply never quotes the token"
        );
        assert!(received(&mut tokens).is_none(), "{reason}: no token event");
    }
    let reply = auth(&gw, "login", json!({"cid": "c1", "params": {}})).await;
    assert_eq!(reply["error"]["data"]["reason"], json!("missing"));
    // Not a method of the name, not an auth request, not a connection ID.
    let reply = auth(&gw, "register", json!({"cid": "c1"})).await;
    Gateway::expect_error(&reply, "system.methodNotFound");
    let reply = gw.request_raw("auth.session.login", "[1]".into()).await;
    Gateway::expect_error(&reply, "system.invalidParams");
    let reply = auth(&gw, "logout", json!({"cid": "c.*"})).await;
    Gateway::expect_error(&reply, "system.invalidParams");
    assert!(received(&mut tokens).is_none());
    connres.stop().await;
}

#[tokio::test]
async fn an_auth_name_added_by_a_reload_is_answered_and_one_removed_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let without = SEED.to_string();
    let file = ConfigDir::new(&without);
    let (connres, gw, mut reports) = start_watched(&server, &file.path()).await;
    write_by_rename(&file.path(), &config(&dir));
    let diff = applied(next_reload(&mut reports).await);
    assert_eq!(diff.auth_added, vec!["session"]);
    let reply = auth(&gw, "logout", json!({"cid": "c1"})).await;
    assert_eq!(reply, json!({"result": null}));
    write_by_rename(&file.path(), &without);
    let diff = applied(next_reload(&mut reports).await);
    assert_eq!(diff.auth_removed, vec!["session"]);
    // The subscription ends just after the swap: a request that reaches it first is
    // not answered (as one for a removed pattern); then the server has no responder.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let request = gw.client.request(
            "auth.session.logout",
            json!({"cid": "c1"}).to_string().into(),
        );
        let answer = tokio::time::timeout(std::time::Duration::from_millis(500), request).await;
        let done = matches!(answer, Ok(Err(_)));
        answers.push(format!("{answer:?}"));
        if done {
            break;
        }
    }
    assert!(
        answers.last().is_some_and(|a| a.starts_with("Ok(Err")),
        "no instance answers a removed auth name (no responders): {answers:?}"
    );
    assert!(
        answers.iter().all(|a| !a.starts_with("Ok(Ok")),
        "never answered after the removal: {answers:?}"
    );
    connres.stop().await;
}

/// A token's end lives in the connection's record in the bucket: the instance that
/// takes the connection over logs it out when its JWT expires.
#[tokio::test]
async fn a_token_ends_at_its_jwts_exp_after_its_owner_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream();
    let yaml = shared_auth_yaml("ends", &config(&dir));
    let (a, gw, ma) = start_shared(&server, &yaml).await;
    settle(&[&ma]).await;
    let mut tokens = token_events(&gw).await;
    let exp = now() + 6;
    let jwt = sign(
        json!({"sub": 42, "name": "Ann", "iss": "https://id.example.test", "exp": exp}),
        SECRET,
    );
    let reply = auth(&gw, "login", json!({"cid": "c1", "params": {"token": jwt}})).await;
    assert_eq!(reply, json!({"result": null}));
    let (_, login) = received(&mut tokens).expect("the login's token event");
    assert_eq!(login["expires"], json!(exp));
    let (b, _, mb) = start_shared(&server, &yaml).await;
    settle(&[&ma, &mb]).await;
    // The first instance hands every partition it still holds over, and is gone.
    a.stop().await;
    settle(&[&mb]).await;
    let (subject, logout) = received_next(&mut tokens).await;
    assert_eq!(subject, "conn.c1.token");
    assert_eq!(logout, json!({"token": null}));
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);
    b.stop().await;
}

/// The shared store: any instance answers a login (once), and the connection's owner
/// applies the token event, whichever instance published it.
#[tokio::test]
async fn with_three_instances_each_login_is_answered_once_and_reaches_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream();
    let (instances, gw) = three_instances(&server, "auth3", &config(&dir)).await;
    let cids: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    for cid in &cids {
        assert_eq!(
            gw.get(&format!("session.user.{cid}")).await["id"],
            Value::Null
        );
    }
    let inbox = gw.client.new_inbox();
    let mut replies = gw.client.subscribe(inbox.clone()).await.unwrap();
    let jwt = ann_jwt();
    // Back to back, without waiting for replies.
    for cid in &cids {
        let payload = json!({"cid": cid, "params": {"token": jwt}});
        gw.client
            .publish_with_reply(
                "auth.session.login",
                inbox.clone(),
                payload.to_string().into(),
            )
            .await
            .unwrap();
    }
    for _ in &cids {
        let m = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("every login is answered")
            .unwrap();
        assert_eq!(parse_or_null(&m.payload), json!({"result": null}));
    }
    for cid in &cids {
        assert_eq!(
            gw.get(&format!("session.user.{cid}")).await["name"],
            json!("Ann"),
            "{cid}"
        );
    }
    for instance in instances {
        instance.stop().await;
    }
    // The server sent anything the instances flushed before this round trip's answer.
    gw.client.flush().await.unwrap();
    assert!(
        replies.next().now_or_never().flatten().is_none(),
        "a login answered twice"
    );
}

/// With `expire: at_exp` (the default), a login's token ends when its JWT does: connres
/// publishes the logout itself, and the models follow. On a manual clock (the JWT's
/// `exp` is counted from `MANUAL_EPOCH_SECS`, where the clock starts).
#[tokio::test]
async fn a_token_ends_when_its_jwt_expires_and_the_connection_is_logged_out_live() {
    use connres::clock::{Clock, MANUAL_EPOCH_SECS};
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let clock = Clock::manual();
    let (connres, mut gw, _) = start_clocked(&server, &config(&dir), clock.clone()).await;
    let mut tokens = token_events(&gw).await;
    let exp = MANUAL_EPOCH_SECS + 60;
    let jwt = sign(
        json!({"sub": 42, "name": "Ann", "iss": "https://id.example.test", "exp": exp}),
        SECRET,
    );
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);
    let reply = auth(&gw, "login", json!({"cid": "c1", "params": {"token": jwt}})).await;
    assert_eq!(reply, json!({"result": null}));
    let (_, event) = received(&mut tokens).expect("the login's token event");
    assert_eq!(event["expires"], json!(exp), "the token ends with the JWT");
    assert_eq!(gw.next_event().await.1["values"]["name"], json!("Ann"));
    // Another auth service's token event without `expires` never ends.
    gw.token("c2", json!({"userId": 7})).await;
    assert_eq!(received_next(&mut tokens).await.0, "conn.c2.token");

    clock.advance(std::time::Duration::from_secs(61));
    let (subject, logout) = received_next(&mut tokens).await;
    assert_eq!(subject, "conn.c1.token", "connres logs c1 out, and only c1");
    assert_eq!(logout, json!({"token": null}));
    let (subject, change) = gw.next_event().await;
    assert_eq!(subject, "event.session.user.c1.change");
    assert_eq!(change["values"]["name"], Value::Null);
    assert_eq!(gw.get("session.user.c1").await["id"], Value::Null);
    connres.stop().await;
}

/// "Log out everywhere": the backend's revocation names token IDs; connres asks the
/// gateways (`system.tokenReset`) to call the name's logout method for every connection
/// whose token has one of them, and that call logs the connection out.
#[tokio::test]
async fn a_revocation_asks_the_gateways_to_log_out_every_connection_of_the_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config(&dir)).await;
    let mut tokens = token_events(&gw).await;
    let reply = gw
        .request(
            "connres.revoke.session",
            json!({"tids": ["user-42", "user-7"]}),
        )
        .await;
    assert_eq!(reply, json!({"result": null}));
    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.tokenReset");
    assert_eq!(
        reset,
        json!({"tids": ["user-42", "user-7"], "subject": "auth.session.logout"})
    );
    // What a gateway then sends for each connection with one of the tids: no params.
    let token = json!({"userId": 42, "name": "Ann", "role": "admin"});
    let reply = gw
        .request("auth.session.logout", json!({"cid": "c1", "token": token}))
        .await;
    assert_eq!(reply, json!({"result": null}));
    assert_eq!(
        received(&mut tokens),
        Some(("conn.c1.token".into(), json!({"token": null})))
    );
    // By claims: the `tid` template (`user-{{claims.sub}}`) makes the token ID.
    let reply = gw
        .request(
            "connres.revoke.session",
            json!({"claims": {"sub": 42, "name": "whoever"}, "tids": ["user-9"]}),
        )
        .await;
    assert_eq!(reply, json!({"result": null}));
    let (_, reset) = gw.next_system().await;
    assert_eq!(
        reset,
        json!({"tids": ["user-9", "user-42"], "subject": "auth.session.logout"})
    );
    for bad in [
        json!({}),
        json!({"tids": []}),
        json!({"tids": [""]}),
        json!({"tids": ["a"], "x": 1}),
        // Claims that make no token ID: `sub` missing or null.
        json!({"claims": {"name": "Ann"}}),
        json!({"claims": {"sub": null}}),
    ] {
        let reply = gw.request("connres.revoke.session", bad.clone()).await;
        Gateway::expect_error(&reply, "system.invalidParams");
    }
    assert!(
        gw.pending_system().is_empty(),
        "a refused revocation publishes nothing"
    );
    connres.stop().await;
}

const RESUMES: &str = "      resume: { resume: true }\n";

/// A login answers a resume key; a new connection presenting it takes the session over:
/// the token and the written models move to it (their events before the answer), the
/// old connection is logged out and keeps nothing, and the key works once.
#[tokio::test]
async fn a_resume_moves_the_session_to_the_new_connection_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, mut gw) = start(&server, &config_with(&dir, "", RESUMES)).await;
    let mut tokens = token_events(&gw).await;
    assert_eq!(gw.get("session.prefs.old").await["theme"], json!("light"));
    let reply = auth(
        &gw,
        "login",
        json!({"cid": "old", "params": {"token": ann_jwt()}}),
    )
    .await;
    let key = reply["result"]["resume"].as_str();
    let key = key
        .unwrap_or_else(|| panic!("a resume key: {reply}"))
        .to_string();
    assert!(key.starts_with("old."), "{key}");
    let (_, login) = received(&mut tokens).expect("the login's token event");
    assert!(
        !login.to_string().contains(key.rsplit_once('.').unwrap().1),
        "the secret never travels"
    );
    let token = login["token"].clone();
    // The key's hash travels in the token event: it takes nothing.
    let hash = login["resume"]["hash"]
        .as_str()
        .expect("the kept hash")
        .to_string();
    for take in [
        json!({"secret": hash, "to": "evil"}),
        json!({"hash": hash, "to": "evil"}),
    ] {
        let reply = gw.request("connres.resume.session.old", take).await;
        assert!(reply.get("error").is_some(), "{reply}");
    }
    let set = gw
        .call(
            "session.prefs.old",
            "set",
            "old",
            token.clone(),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(set, json!({"result": null}));
    // The new connection's models, as its page fetches them after reconnecting.
    assert_eq!(gw.get("session.user.new").await["id"], Value::Null);
    assert_eq!(gw.get("session.prefs.new").await["theme"], json!("light"));
    while gw.events.next().now_or_never().flatten().is_some() {}
    while received(&mut tokens).is_some() {}

    let reply = auth(&gw, "resume", json!({"cid": "new", "params": {"key": key}})).await;
    let next = reply["result"]["resume"].as_str().expect("a fresh key");
    assert!(next.starts_with("new.") && next != key, "{next}");
    // Everything happened before the answer: the token events and the change events.
    let mut seen = Vec::new();
    while let Some(m) = gw.events.next().now_or_never().flatten() {
        seen.push((m.subject.to_string(), parse_or_null(&m.payload)));
    }
    let changed = |rid: &str| {
        seen.iter()
            .find(|(s, _)| s == &format!("event.{rid}.change"))
            .map(|(_, p)| p["values"].clone())
    };
    assert_eq!(
        changed("session.user.new").unwrap()["name"],
        json!("Ann"),
        "{seen:?}"
    );
    assert_eq!(
        changed("session.prefs.new").unwrap()["theme"],
        json!("dark"),
        "{seen:?}"
    );
    assert_eq!(
        changed("session.prefs.old").unwrap()["theme"],
        json!("light"),
        "{seen:?}"
    );
    let mut moved = Vec::new();
    while let Some(t) = received(&mut tokens) {
        moved.push(t);
    }
    assert!(
        moved.contains(&("conn.old.token".into(), json!({"token": null}))),
        "{moved:?}"
    );
    let new = moved
        .iter()
        .find(|(s, _)| s == "conn.new.token")
        .expect("the new token event");
    assert_eq!(new.1["token"], token);
    assert_eq!(
        new.1["tid"],
        json!("user-42"),
        "revocation still finds the session"
    );
    assert_eq!(gw.get("session.user.old").await["id"], Value::Null);

    // Used: refused, for the same connection or another.
    for cid in ["new", "third"] {
        let again = auth(&gw, "resume", json!({"cid": cid, "params": {"key": key}})).await;
        Gateway::expect_error(&again, "connres.invalidResumeKey");
    }
    // The fresh key works once, from yet another connection.
    let reply = auth(
        &gw,
        "resume",
        json!({"cid": "third", "params": {"key": next}}),
    )
    .await;
    assert!(reply["result"]["resume"]
        .as_str()
        .unwrap()
        .starts_with("third."));
    assert_eq!(gw.get("session.prefs.third").await["theme"], json!("dark"));
    connres.stop().await;
}

#[tokio::test]
async fn resume_keys_are_refused_when_wrong_expired_or_tried_too_often() {
    use connres::clock::{Clock, MANUAL_EPOCH_SECS};
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let clock = Clock::manual();
    let yaml = config_with(&dir, "    resume: { ttl: 1m }\n", RESUMES);
    let (connres, gw, _) = start_clocked(&server, &yaml, clock.clone()).await;
    let jwt = sign(
        json!({"sub": 1, "iss": "https://id.example.test", "exp": MANUAL_EPOCH_SECS + 3600}),
        SECRET,
    );
    let login = |cid: &'static str| {
        let gw = &gw;
        let jwt = jwt.clone();
        async move {
            let reply = auth(gw, "login", json!({"cid": cid, "params": {"token": jwt}})).await;
            reply["result"]["resume"].as_str().unwrap().to_string()
        }
    };
    let key = login("a").await;
    // Another secret for the same connection, a malformed key, none at all.
    let (cid, _) = key.rsplit_once('.').unwrap();
    let forged = format!("{cid}.{}", "A".repeat(43));
    for (params, code) in [
        (json!({"key": forged}), "connres.invalidResumeKey"),
        (json!({"key": "a.nonsense"}), "connres.invalidResumeKey"),
        (json!({}), "connres.invalidResumeKey"),
        (json!({"key": key.clone()}), "connres.invalidResumeKey"), // its own connection
    ] {
        let cid = if params["key"] == json!(key) {
            "a"
        } else {
            "b"
        };
        let reply = auth(&gw, "resume", json!({"cid": cid, "params": params})).await;
        Gateway::expect_error(&reply, code);
    }
    // Past its ttl.
    clock.advance(std::time::Duration::from_secs(61));
    let reply = auth(&gw, "resume", json!({"cid": "b", "params": {"key": key}})).await;
    Gateway::expect_error(&reply, "connres.invalidResumeKey");
    // A connection that keeps failing is stopped, even with a good key.
    let good = login("c").await;
    for _ in 0..5 {
        let reply = auth(
            &gw,
            "resume",
            json!({"cid": "d", "params": {"key": forged}}),
        )
        .await;
        Gateway::expect_error(&reply, "connres.invalidResumeKey");
    }
    let reply = auth(&gw, "resume", json!({"cid": "d", "params": {"key": good}})).await;
    Gateway::expect_error(&reply, "connres.tooManyAttempts");
    let reply = auth(&gw, "resume", json!({"cid": "e", "params": {"key": good}})).await;
    assert!(reply["result"]["resume"].is_string(), "{reply}");
    connres.stop().await;
}

/// With the shared store, the take reaches the old connection's owner and the moved
/// state the new connection's, whichever instances those are.
#[tokio::test]
async fn with_three_instances_a_resume_moves_the_session_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream();
    let yaml = config_with(&dir, "", RESUMES);
    let (instances, gw) = three_instances(&server, "resume3", &yaml).await;
    // A revocation, whichever instance receives it: one answer, one tokenReset.
    let mut gw = gw;
    let reply = gw
        .request("connres.revoke.session", json!({"tids": ["user-42"]}))
        .await;
    assert_eq!(reply, json!({"result": null}));
    // (Instances joining publish `system.reset`s of their own.)
    let reset = loop {
        let (subject, payload) = gw.next_system().await;
        if subject == "system.tokenReset" {
            break payload;
        }
    };
    assert_eq!(reset["subject"], json!("auth.session.logout"));
    // Several sessions, so that old and new connections land in different partitions.
    for i in 0..8 {
        let (old, new) = (format!("o{i}"), format!("n{i}"));
        let reply = auth(
            &gw,
            "login",
            json!({"cid": old, "params": {"token": ann_jwt()}}),
        )
        .await;
        let key = reply["result"]["resume"].as_str().unwrap().to_string();
        let token = json!({"userId": 42, "name": "Ann", "role": "admin"});
        let set = gw
            .call(
                &format!("session.prefs.{old}"),
                "set",
                &old,
                token,
                json!({"fontSize": 20 + i}),
            )
            .await;
        assert_eq!(set, json!({"result": null}));
        let reply = auth(&gw, "resume", json!({"cid": new, "params": {"key": key}})).await;
        assert!(reply["result"]["resume"].is_string(), "{reply}");
        assert_eq!(
            gw.get(&format!("session.user.{new}")).await["name"],
            json!("Ann")
        );
        assert_eq!(
            gw.get(&format!("session.prefs.{new}")).await["fontSize"],
            json!(20 + i)
        );
        assert_eq!(
            gw.get(&format!("session.prefs.{old}")).await["fontSize"],
            json!(14)
        );
        assert_eq!(
            gw.get(&format!("session.user.{old}")).await["id"],
            Value::Null
        );
    }
    for instance in instances {
        instance.stop().await;
    }
    gw.client.flush().await.unwrap();
    let resets: Vec<_> = gw
        .pending_system()
        .into_iter()
        .filter(|(s, _)| s == "system.tokenReset")
        .collect();
    assert!(
        resets.is_empty(),
        "one tokenReset per revocation: {resets:?}"
    );
}

/// A JWKS served over HTTP on loopback, which the test can change; every fetch is
/// counted and announced.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = b.lock().unwrap().clone();
                // Chunked, as identity providers often answer.
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
                    text.len()
                );
                f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        JwksServer { url, body, fetches }
    }
}

/// The JWKS of an Ed25519 test key: its raw public key is the last 32 bytes of the
/// SPKI.
fn ed25519_jwks(pem_file: &str, kid: &str) -> String {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(format!("tests/fixtures/jwt/{pem_file}")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}]})
        .to_string()
}

fn ed25519_jwt(key_file: &str, kid: &str) -> String {
    let pem = std::fs::read(format!("tests/fixtures/jwt/{key_file}")).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let claims = json!({"sub": 42, "name": "Ann", "exp": now() + 600});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

/// A JWKS from a URL: fetched at start, and again when a token names a key it does not
/// hold (an identity provider that rotated its keys).
#[tokio::test]
async fn a_jwks_from_a_url_is_fetched_and_fetched_again_for_an_unknown_kid() {
    let jwks = JwksServer::start(ed25519_jwks("ed25519.pub.pem", "a")).await;
    let server = NatsServer::start();
    let yaml = format!(
        "version: 1\nauth:\n  session:\n    jwt:\n      algorithms: [EdDSA]\n      jwks: {{ url: \"{}\" }}\n    token: {{ userId: \"{{{{claims.sub}}}}\" }}\n    methods:\n      login: {{ jwt: params.token }}\nresources: {{}}\n",
        jwks.url
    );
    let login = |jwt: String| json!({"cid": "c1", "params": {"token": jwt}});
    let mut logs = Logs::capture("connres=info");
    let (connres, gw) = start(&server, &yaml).await;
    logs.wait_for(&["fetched the JWKS", "\"a\""]).await;
    let a = ed25519_jwt("ed25519.key.pem", "a");
    assert_eq!(
        auth(&gw, "login", login(a.clone())).await,
        json!({"result": null})
    );

    // The provider rotates to another key: a token naming it makes connres fetch again.
    *jwks.body.lock().unwrap() = ed25519_jwks("ed25519-2.pub.pem", "b");
    let b = ed25519_jwt("ed25519-2.key.pem", "b");
    let reply = auth(&gw, "login", login(b.clone())).await;
    assert_eq!(
        reply["error"]["data"]["reason"],
        json!("unknown_key"),
        "{reply}"
    );
    logs.wait_for(&["fetched the JWKS", "\"b\""]).await;
    assert_eq!(auth(&gw, "login", login(b)).await, json!({"result": null}));
    let reply = auth(&gw, "login", login(a)).await;
    assert_eq!(
        reply["error"]["data"]["reason"],
        json!("unknown_key"),
        "the old key is gone"
    );
    let fetched = jwks.fetches.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fetched, 2, "at start, and once for the unknown kid");
    connres.stop().await;
}

/// Each refused token costs a signature check: a connection past 10 refused logins in a
/// minute is refused without one, even with a good token; others are not.
#[tokio::test]
async fn a_connection_past_its_refused_logins_is_refused_until_the_minute_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let (connres, gw) = start(&server, &config(&dir)).await;
    let forged = sign(
        json!({"sub": 1, "iss": "https://id.example.test", "exp": now() + 600}),
        b"another secret of at least thirty-two bytes",
    );
    for _ in 0..10 {
        let reply = auth(
            &gw,
            "login",
            json!({"cid": "c9", "params": {"token": forged}}),
        )
        .await;
        assert_eq!(reply["error"]["data"]["reason"], json!("bad_signature"));
    }
    let good = json!({"cid": "c9", "params": {"token": ann_jwt()}});
    let reply = auth(&gw, "login", good).await;
    Gateway::expect_error(&reply, "connres.tooManyAttempts");
    let other = json!({"cid": "c10", "params": {"token": ann_jwt()}});
    assert_eq!(auth(&gw, "login", other).await, json!({"result": null}));
    connres.stop().await;
}

/// A JWKS served over TLS on loopback by its own thread, with a certificate for
/// 127.0.0.1 from a test CA (written to `ca.pem` in `dir`); returns its URL.
fn tls_jwks_server(dir: &std::path::Path, body: String) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/jwks.json", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
    });
    url
}

/// A JWKS over https: fetched from a server whose certificate a root the process
/// trusts vouches for (the test's CA, through `SSL_CERT_FILE`, as an operator adds a
/// private CA); refused, the keys left empty, from one it does not.
#[tokio::test]
async fn a_jwks_over_https_is_fetched_from_a_trusted_server_only() {
    use common::process::{connres, project_file, Proc};
    let dir = tempfile::tempdir().unwrap();
    let url = tls_jwks_server(dir.path(), ed25519_jwks("ed25519.pub.pem", "a"));
    let server = NatsServer::start();
    let yaml = format!(
        "version: 1\nauth:\n  session:\n    jwt:\n      algorithms: [EdDSA]\n      jwks: {{ url: \"{url}\" }}\n    token: {{ userId: \"{{{{claims.sub}}}}\" }}\n    methods:\n      login: {{ jwt: params.token }}\nresources: {{}}\n"
    );
    let config = dir.path().join("resources.yaml");
    std::fs::write(&config, yaml).unwrap();
    let serve = |trusted: bool| {
        let mut cmd = connres();
        cmd.args(["serve", "--config"])
            .arg(&config)
            .args(["--nats", &server.url])
            .env("RUST_LOG", "info");
        if trusted {
            cmd.env("SSL_CERT_FILE", dir.path().join("ca.pem"));
        } else {
            // Roots from a file that holds none of ours.
            cmd.env(
                "SSL_CERT_FILE",
                project_file("tests/fixtures/jwt/README.md"),
            );
        }
        Proc::spawn(&mut cmd)
    };
    let mut untrusted = serve(false);
    let line = untrusted.wait_for_log("could not fetch the JWKS");
    assert!(line.contains("TLS"), "{line}");
    untrusted.stop();
    drop(untrusted);

    let gw = Gateway::connect(&server).await;
    let mut trusted = serve(true);
    trusted.wait_for_log("fetched the JWKS");
    let jwt = ed25519_jwt("ed25519.key.pem", "a");
    let reply = auth(&gw, "login", json!({"cid": "c1", "params": {"token": jwt}})).await;
    assert_eq!(reply, json!({"result": null}));
}
