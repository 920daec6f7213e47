//! What connres logs, captured from instances running in-process (`common::logs`):
//! refused requests with what decided them (at `debug`), a reload that drops written
//! values, requests that get no answer.

mod common;

use common::logs::Logs;
use common::*;
use serde_json::{json, Value};

/// `line:col` of the value of the first line of `yaml` holding `text` (where the
/// config compiler says a rule is written).
fn site_of(yaml: &str, key: &str, text: &str) -> String {
    let (i, line) = yaml
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(key) && l.contains(text))
        .unwrap_or_else(|| panic!("{key} {text} in the config"));
    let col = line.find(text).unwrap() + 1;
    format!("{}:{col}", i + 1)
}

#[tokio::test]
async fn refused_requests_are_logged_at_debug_with_what_decided() {
    let logs = Logs::capture("info,connres=debug");
    let server = NatsServer::start();
    let (connres, gw) = start(&server, SEED).await;
    let prefs = "session.prefs.c1";
    let token = json!({"userId": 1});

    // A set without a token: the `set` rule denies it.
    let r = gw
        .call(prefs, "set", "c1", Value::Null, json!({"theme": "dark"}))
        .await;
    Gateway::expect_error(&r, "system.accessDenied");
    let set_rule = "cid == params.cid && token != null";
    let denied = logs.matching(&["call denied", r#"rid="session.prefs.c1""#]);
    assert_eq!(denied.len(), 1, "{denied:?}");
    for part in [
        "DEBUG",
        "resource=session.prefs.{cid}",
        r#"method="set""#,
        &format!(
            "call.set at line {}: {set_rule}",
            site_of(SEED, "set:", set_rule)
        ),
    ] {
        assert!(denied[0].contains(part), "{part} in {}", denied[0]);
    }

    // A set the field's constraints refuse, by a client and by the backend API.
    let r = gw
        .call(prefs, "set", "c1", token.clone(), json!({"fontSize": 99}))
        .await;
    let message = Gateway::expect_error(&r, "system.invalidParams");
    let refused = logs.matching(&["request refused", r#"kind="call""#]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    for part in [
        "DEBUG",
        "resource=session.prefs.{cid}",
        r#"method="set""#,
        r#"code="system.invalidParams""#,
        &message,
    ] {
        assert!(refused[0].contains(part), "{part} in {}", refused[0]);
    }
    let r = gw
        .request(
            "connres.set.session.prefs.c2",
            json!({"values": {"theme": "blue"}}),
        )
        .await;
    Gateway::expect_error(&r, "system.invalidParams");
    let api = logs.matching(&["request refused", r#"kind="api""#]);
    assert_eq!(api.len(), 1, "{api:?}");
    assert!(
        api[0].contains("resource=session.prefs.{cid}") && api[0].contains("`theme`"),
        "{}",
        api[0]
    );

    // Access to another connection's model: the `get` rule denies it.
    let r = gw.access("session.user.c1", "c2", Value::Null).await;
    assert_eq!(r["result"]["get"], json!(false));
    let get_rule = "cid == params.cid";
    let access = logs.matching(&["access denied", r#"rid="session.user.c1""#]);
    assert_eq!(access.len(), 1, "{access:?}");
    assert!(
        access[0].contains(&format!(
            "get at line {}: {get_rule}",
            site_of(SEED, "get:", get_rule)
        )) && access[0].contains("cid=\"c2\""),
        "{}",
        access[0]
    );
    // A request that was served is not logged.
    let before = logs.lines().len();
    assert_eq!(gw.get(prefs).await["theme"], json!("light"));
    assert_eq!(logs.lines().len(), before, "{:?}", logs.lines());
    connres.stop().await;
}

#[tokio::test]
async fn a_reload_that_drops_written_values_says_how_many_and_where() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start();
    let dir = ConfigDir::new(SEED);
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    for (cid, values) in [
        ("c1", json!({"theme": "dark", "fontSize": 30})),
        ("c2", json!({"theme": "dark"})),
        ("c3", json!({"theme": "light"})),
    ] {
        let r = gw
            .request(
                &format!("connres.set.session.prefs.{cid}"),
                json!({ "values": values }),
            )
            .await;
        assert_eq!(r, json!({"result": null}));
    }
    // `dark` is no longer allowed and `fontSize` is gone: three values go.
    let narrower = SEED
        .replace("enum: [light, dark]", "enum: [light, sepia]")
        .replace(
            "      fontSize: { type: integer, default: 14, min: 8, max: 32, writable: true }\n",
            "",
        );
    assert_ne!(narrower, SEED);
    write_by_rename(&dir.path(), &narrower);
    next_reload(&mut reports).await;
    let line = logs.wait_for(&["dropped written values"]).await;
    for part in [
        "WARN",
        "values=3",
        r#"dropped="session.prefs.{cid} fontSize: 1 (field removed); session.prefs.{cid} theme: 2 (fails the field's new constraints)""#,
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert_eq!(gw.get("session.prefs.c3").await, json!({"theme": "light"}));
    // A reload that keeps every value says nothing of the kind.
    write_by_rename(
        &dir.path(),
        &narrower.replace("default: light", "default: sepia"),
    );
    next_reload(&mut reports).await;
    assert_eq!(logs.matching(&["dropped written values"]).len(), 1);
    connres.stop().await;
}

#[tokio::test]
async fn requests_for_a_removed_pattern_are_reported_at_most_every_ten_seconds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let logs = Logs::capture("info");
    let server = NatsServer::start();
    let dir = ConfigDir::new(SEED);
    let (connres, _gw, mut reports) = start_watched(&server, &dir.path()).await;
    let metrics = last_shared_metrics();
    // Requests for session.prefs keep coming from a thread of their own, so that some
    // have been received, not yet handled, when a reload that removes the pattern is
    // put in force (a prepared reload goes before the messages waiting): those find no
    // pattern and get no answer.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, url) = (stop.clone(), server.url.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = async_nats::connect(url).await.unwrap();
                let inbox = client.new_inbox();
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..50 {
                        let subject = format!("get.session.prefs.p{i}");
                        let _ = client
                            .publish_with_reply(subject, inbox.clone(), "".into())
                            .await;
                    }
                    let _ = client.flush().await;
                }
            })
        })
    };
    let without = SEED
        .split("  session.prefs.{cid}:")
        .next()
        .unwrap()
        .to_string();
    let unanswered = || {
        let text = metrics.encode();
        let prefix = r#"connres_requests_total{kind="get",outcome="unanswered",resource="-"} "#;
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    // Until at least two went unanswered (each round removes the pattern, then puts it
    // back).
    let deadline = tokio::time::Instant::now() + WAIT;
    while unanswered() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request was left unanswered"
        );
        write_by_rename(&dir.path(), &without);
        next_reload(&mut reports).await;
        write_by_rename(&dir.path(), SEED);
        next_reload(&mut reports).await;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let lines = logs.matching(&["no declared resource matches the name"]);
    assert_eq!(lines.len(), 1, "{} unanswered: {lines:?}", unanswered());
    for part in [
        "WARN",
        r#"subject="get.session.prefs.p"#,
        "skipped=0",
        "not answered",
    ] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
    connres.stop().await;
}
