//! What connres logs, captured from instances running in-process (`common::logs`):
//! refused requests with what decided them (at `debug`), a reload that drops written
//! values, the shared store's partition changes in one line per batch (and the written
//! values a load of partitions dropped; nothing per partition on a normal join and
//! leave), instances that run different configs and the requests that then go
//! unanswered, and a stop that says nothing worse than `info`.

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

/// The seed and a resource with a field that a `writable` rule guards.
fn with_cart() -> String {
    format!(
        "{SEED}  cart.{{cid}}:\n    fields:\n      items: {{ type: integer, default: 0, writable: \"token != null\" }}\n    access:\n      get: cid == params.cid\n      call: cid == params.cid\n"
    )
}

#[tokio::test]
async fn refused_requests_are_logged_at_debug_with_what_decided() {
    let logs = Logs::capture("info,connres=debug");
    let server = NatsServer::start();
    let yaml = with_cart();
    let (connres, gw) = start(&server, &yaml).await;
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
            site_of(&yaml, "set:", set_rule)
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

    // A set the call rule allows and a field's `writable` rule refuses.
    let r = gw
        .call("cart.c5", "set", "c5", Value::Null, json!({"items": 3}))
        .await;
    Gateway::expect_error(&r, "system.invalidParams");
    let writable = logs.matching(&["request refused", r#"rid="cart.c5""#]);
    assert_eq!(writable.len(), 1, "{writable:?}");
    let rule = "token != null";
    // The rule's place is that of its YAML value, the quote included.
    let at = site_of(&yaml, "items:", &format!("\"{rule}\""));
    assert!(
        writable[0].contains(&format!(
            r#"denied_by="fields.items.writable at line {at}: {rule}""#
        )),
        "{}",
        writable[0]
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
            site_of(&yaml, "get:", get_rule)
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

/// An instance that watches its config (the reloader runs beside it), after a reload
/// that added a pattern, drains and stops without a warning: the ordered channel
/// ends once the serving task closes it, whatever the reloader holds.
#[tokio::test]
async fn a_watched_instance_drains_and_stops_without_a_warning() {
    let logs = Logs::capture("info");
    let server = NatsServer::start();
    let dir = ConfigDir::new(SEED);
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    let board = "  board.{id}:\n    fields:\n      title: { type: string }\n    access:\n      get: \"true\"\n";
    write_by_rename(&dir.path(), &format!("{SEED}{board}"));
    next_reload(&mut reports).await;
    assert_eq!(gw.get("board.b1").await, json!({"title": null}));
    connres.stop().await;
    let lines = logs.lines();
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
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

#[tokio::test]
async fn partition_changes_are_summed_up_in_one_line() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("summary");
    let (first, _gw, _) = start_shared(&server, &yaml).await;
    let line = logs.wait_for(&["partitions changed"]).await;
    let all = format!("0-{}", PARTITIONS - 1);
    for part in [
        "INFO",
        &format!("acquired={PARTITIONS} "),
        &format!("acquired_partitions={all} "),
        "units_loaded=0",
        "released=0 ",
        &format!("held={PARTITIONS} partitions={PARTITIONS}"),
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    // Nothing at `info` per partition.
    let per_partition: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains(" INFO ") && l.contains("partition="))
        .collect();
    assert!(per_partition.is_empty(), "{per_partition:?}");
    assert_eq!(logs.matching(&["partitions changed"]).len(), 1);
    drop(first);
}

/// A normal join and leave: partitions move by handover, which each instance says in
/// its summary lines only; nothing at `info` or above per partition, and no warning
/// (nothing went wrong).
#[tokio::test]
async fn a_normal_join_and_leave_log_nothing_per_partition() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("join");
    let (first, gw, first_cluster) = start_shared(&server, &yaml).await;
    // Units in most partitions, so that the handovers move some.
    for i in 0..64 {
        let r = gw
            .request(
                &format!("connres.set.session.prefs.c{i}"),
                json!({"values": {"theme": "dark"}}),
            )
            .await;
        assert_eq!(r, json!({"result": null}));
    }
    let (second, second_cluster) = start_member(&server, &yaml).await;
    let all = i64::from(PARTITIONS);
    // Looked at with each line logged: a summary line follows the last partition
    // moved (an instance serves a partition from the step that installs it).
    logs.wait_until("both instances serving their share", |l| {
        let (a, b) = (first_cluster.served(), second_cluster.served());
        l.contains("partitions changed") && a > 0 && b > 0 && a + b == all
    })
    .await;
    second.stop().await;
    logs.wait_until("the first instance serving every partition again", |l| {
        l.contains("partitions changed") && first_cluster.served() == all
    })
    .await;
    let noisy: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains(" WARN ") || (l.contains(" INFO ") && l.contains("partition=")))
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
    // The moves were said, in summary lines.
    assert!(logs.matching(&["partitions changed", "acquired=0 "]).len() >= 2);
    first.stop().await;
}

/// Partitions loaded from the shared store by an instance whose config does not keep
/// some of their written values (written under another config) say how many values
/// went and where, in the words of a reload that drops values.
#[tokio::test]
async fn loading_partitions_that_drops_written_values_says_how_many_and_where() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("loaddrop");
    let (first, gw, _) = start_shared(&server, &yaml).await;
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
    first.stop().await;
    // `dark` is no longer allowed and `fontSize` is gone: three values go.
    let narrower = yaml
        .replace("enum: [light, dark]", "enum: [light, sepia]")
        .replace(
            "      fontSize: { type: integer, default: 14, min: 8, max: 32, writable: true }\n",
            "",
        );
    assert_ne!(narrower, yaml);
    assert!(logs.matching(&["dropped written values"]).is_empty());
    let (second, gw, _) = start_shared(&server, &narrower).await;
    let line = logs.wait_for(&["dropped written values"]).await;
    for part in [
        "WARN",
        "loading partitions",
        "values=3",
        r#"dropped="session.prefs.{cid} fontSize: 1 (field removed); session.prefs.{cid} theme: 2 (fails the field's new constraints)""#,
        "those fields read as their defaults",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert_eq!(logs.matching(&["dropped written values"]).len(), 1);
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));
    assert_eq!(gw.get("session.prefs.c3").await, json!({"theme": "light"}));
    second.stop().await;
}

/// The seed with one more resource, which the seed alone does not declare.
fn with_extra(bucket: &str) -> String {
    format!(
        "{}\n  extra.{{cid}}:\n    fields:\n      n: {{ type: integer, default: 0, writable: true }}\n    access:\n      get: \"true\"\n      call: \"true\"\n",
        shared_seed(bucket).trim_end()
    )
}

#[tokio::test]
async fn instances_running_different_configs_say_so_and_what_goes_unanswered() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let wide = with_extra("mixed");
    let narrow = shared_seed("mixed");
    let (wide_instance, gw, _) = start_shared(&server, &wide).await;
    let (narrow_instance, _, narrow_cluster) = start_shared(&server, &narrow).await;
    let narrow_metrics = last_shared_metrics();
    // Each sees the other's heartbeat.
    let hash = |y: &str| {
        connres::config::Config::parse("x", y)
            .unwrap()
            .content_hash()
            .to_string()
    };
    for (theirs, mine) in [(hash(&narrow), hash(&wide)), (hash(&wide), hash(&narrow))] {
        logs.wait_for(&[
            "another instance runs a different config",
            &format!("config={theirs}"),
            &format!("this={mine}"),
        ])
        .await;
    }
    // The narrow instance must hold partitions before a name of one can be found: its
    // own line says when it took some.
    let all = format!("acquired={PARTITIONS} ");
    logs.wait_until("of the narrow instance taking partitions", |l| {
        l.contains("partitions changed") && l.contains("released=0 ") && !l.contains(&all)
    })
    .await;
    assert!(narrow_cluster.served() > 0);
    // A read of a connection whose partition the narrow instance owns: forwarded there
    // by the wide one (the only subscriber), answered with an error and counted.
    let mut owned_by_narrow = None;
    for i in 0..200 {
        let cid = format!("m{i}");
        let r = gw.request(&format!("get.extra.{cid}"), Value::Null).await;
        if r["error"]["code"] == json!("system.internalError") {
            owned_by_narrow = Some(cid);
            break;
        }
        assert_eq!(r["result"]["model"], json!({"n": 0}), "{r}");
    }
    let cid = owned_by_narrow.expect("a connection whose partition the narrow instance owns");
    let text = narrow_metrics.encode();
    let line = r#"connres_requests_total{kind="get",outcome="internal_error",resource="-"} 1"#;
    assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    // A call on it: only the wide instance subscribes it, and keeps it for the owner,
    // which never receives it. The wide instance says so.
    let inbox = gw.client.new_inbox();
    gw.client
        .publish_with_reply(
            format!("call.extra.{cid}.set"),
            inbox,
            json!({"cid": cid, "params": {"n": 1}}).to_string().into(),
        )
        .await
        .unwrap();
    let line = logs
        .wait_for(&["waits for its partition's owner, which runs a different config"])
        .await;
    for part in [
        "WARN",
        &format!(r#"subject="call.extra.{cid}.set""#),
        &format!("owner_config={}", hash(&narrow)),
        "skipped=0",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    drop(narrow_instance);
    drop(wide_instance);
}

/// A flood of malformed token events makes one warning line (with how many were left
/// out to come), and a huge claim that breaks a template is quoted only in part.
#[tokio::test]
async fn client_values_stay_short_in_logs_and_floods_are_rate_limited() {
    let logs = Logs::capture("info");
    let server = NatsServer::start();
    let yaml = format!(
        "{SEED}  session.age.{{cid}}:\n    fields:\n      age: {{ type: integer, from: \"{{{{token.age}}}}\" }}\n    access:\n      get: 'true'\n"
    );
    let (connres, mut gw) = start(&server, &yaml).await;
    let secret = format!("SECRET-{}", "y".repeat(200_000));
    for i in 0..500 {
        let body = bytes::Bytes::from(format!("{{\"token\": {secret}{i}}}"));
        gw.client
            .publish(format!("conn.m{i}.token"), body)
            .await
            .unwrap();
    }
    // Under state.max_token_bytes (16 KiB), far over what a line may quote.
    let claim = format!("SECRET-{}", "z".repeat(10_000));
    gw.token("a1", json!({ "age": claim })).await;
    gw.token_barrier().await;
    let model = gw.get("session.age.a1").await;
    assert_eq!(model["age"], Value::Null);
    let malformed = logs.matching(&["ignored a malformed"]);
    assert_eq!(malformed.len(), 1, "{} lines", malformed.len());
    let template = logs.matching(&["from template value"]);
    assert_eq!(template.len(), 1);
    for line in logs.lines() {
        assert!(
            line.len() < 1_000,
            "a {}-byte line: {}",
            line.len(),
            &line[..200]
        );
    }
    connres.stop().await;
}

/// A message on this instance's forwarding subject whose own subject names no request
/// kind (sent by hand, or by an instance of another version) is not dropped silently:
/// it is reported like any message on an unexpected subject.
#[tokio::test]
async fn a_forwarded_message_on_an_unknown_subject_is_reported() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let (connres, gw, _) = start_shared(&server, &shared_seed("unknownfwd")).await;
    let serving = logs.wait_for(&["connres is serving"]).await;
    let id = serving
        .split("instance=")
        .nth(1)
        .map(|rest| rest.trim_start_matches('"'))
        .and_then(|rest| rest.split(['"', ' ']).next())
        .expect("the serving line names the instance")
        .to_string();
    gw.client
        .publish(
            format!("_CONNRES.unknownfwd.fwd.{id}.1.nonsense.subject"),
            "{}".into(),
        )
        .await
        .unwrap();
    gw.client.flush().await.unwrap();
    let line = logs
        .wait_for(&["a forwarded message on an unexpected subject"])
        .await;
    for part in ["WARN", "nonsense.subject", "not answered"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    connres.stop().await;
}

/// An instance started with other `state` settings than the running ones takes no
/// partition, and says why, naming the difference; the running instance goes on
/// serving every partition, and requests that reach the newcomer are still answered.
#[tokio::test]
async fn an_instance_with_other_state_settings_takes_no_partition_and_says_why() {
    let mut logs = Logs::capture("info");
    let server = NatsServer::start_jetstream();
    let yaml = shared_seed("othersettings");
    let (first, gw, first_metrics) = start_shared(&server, &yaml).await;
    common::auth::settle(&[&first_metrics]).await;
    let other = yaml.replace("lease: 2s", "lease: 3s");
    assert_ne!(other, yaml);
    let (second, _, second_metrics) = start_shared(&server, &other).await;
    let line = logs
        .wait_for(&[
            "this instance takes no partition",
            "`state.lease` is 2s there, 3s here",
        ])
        .await;
    assert!(line.contains("ERROR"), "{line}");
    // Whichever instance the queue group hands a get to, it is answered.
    for i in 0..16 {
        let model = gw.get(&format!("session.prefs.o{i}")).await;
        assert_eq!(model["theme"], json!("light"), "o{i}");
    }
    assert_eq!(second_metrics.served(), 0);
    assert_eq!(first_metrics.served(), i64::from(PARTITIONS));
    second.stop().await;
    first.stop().await;
}
