//! Hot reload against a real nats-server: edits to the watched file take effect live,
//! with a `system.reset` naming exactly what changed.

mod common;

use common::*;
use connres::reload::ReloadReport;
use serde_json::{json, Value};

const USER: &str = r#"
  session.user.{cid}:
    fields:
      name: { type: string, from: "{{token.name}}" }
    access:
      get: cid == params.cid
"#;

const PREFS: &str = r#"
  session.prefs.{cid}:
    fields:
      theme: { type: string, default: light, enum: [light, dark], writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
"#;

const ROOM: &str = r#"
  chat.room.{room}:
    fields:
      topic: { type: string, default: general }
    access:
      get: "true"
"#;

fn config(resources: &[&str]) -> String {
    format!("version: 1\nresources:{}", resources.concat())
}

fn applied(report: ReloadReport) -> connres::config::ConfigDiff {
    match report {
        ReloadReport::Applied { diff, .. } => diff,
        other => panic!("expected an applied reload, got {other:?}"),
    }
}

#[tokio::test]
async fn added_resource_is_served_after_a_rename_save() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;

    write_by_rename(&dir.path(), &config(&[USER, ROOM]));
    let diff = applied(next_reload(&mut reports).await);
    assert_eq!(diff.added, vec!["chat.room.{room}"]);
    assert!(
        diff.needs_no_reset(),
        "added patterns need no reset: {diff:?}"
    );
    assert_eq!(gw.get("chat.room.lobby").await, json!({"topic": "general"}));
    assert!(gw.pending_system().is_empty());
    connres.stop().await;
}

#[tokio::test]
async fn added_resource_is_served_after_an_in_place_write() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER]));
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;

    write_in_place(&dir.path(), &config(&[USER, PREFS]));
    applied(next_reload(&mut reports).await);
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));
    connres.stop().await;
}

#[tokio::test]
async fn access_rule_change_resets_access_only() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;
    assert_eq!(
        gw.access("session.prefs.c1", "c1", Value::Null).await["result"]["get"],
        json!(true)
    );

    let stricter = PREFS.replace(
        "get: cid == params.cid",
        "get: cid == params.cid && token != null",
    );
    write_by_rename(&dir.path(), &config(&[USER, &stricter]));
    applied(next_reload(&mut reports).await);
    let (subject, reset) = gw.next_system().await;
    assert_eq!(subject, "system.reset");
    assert_eq!(
        reset,
        json!({"resources": [], "access": ["session.prefs.*"]})
    );
    assert_eq!(
        gw.access("session.prefs.c1", "c1", Value::Null).await["result"]["get"],
        json!(false)
    );
    connres.stop().await;
}

#[tokio::test]
async fn default_change_resets_resources_and_serves_the_new_default() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));

    write_by_rename(
        &dir.path(),
        &config(&[USER, &PREFS.replace("default: light", "default: dark")]),
    );
    applied(next_reload(&mut reports).await);
    let (_, reset) = gw.next_system().await;
    assert_eq!(
        reset,
        json!({"resources": ["session.prefs.*"], "access": []})
    );
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "dark"}));
    connres.stop().await;
}

#[tokio::test]
async fn broken_edit_keeps_the_old_config_and_publishes_nothing() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;

    let broken = config(&[USER, &PREFS.replace("type: string", "tpye: string")]);
    write_by_rename(&dir.path(), &broken);
    let errors = match next_reload(&mut reports).await {
        ReloadReport::Rejected { errors } => errors,
        other => panic!("expected a rejected reload, got {other:?}"),
    };
    let file = dir.path().display().to_string();
    let line = broken.lines().position(|l| l.contains("tpye")).unwrap() + 1;
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("{file}:{line}:")) && e.contains("did you mean `type`")),
        "{errors:?}"
    );
    // Still served by the old config; the get's reply comes after anything published before it.
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));
    assert!(gw.pending_system().is_empty());

    // Fixing the file applies it.
    write_by_rename(&dir.path(), &config(&[USER, PREFS, ROOM]));
    assert_eq!(
        applied(next_reload(&mut reports).await).added,
        vec!["chat.room.{room}"]
    );
    connres.stop().await;
}

#[tokio::test]
async fn removed_resource_is_reset_and_no_longer_answered() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));

    write_by_rename(&dir.path(), &config(&[USER]));
    assert_eq!(
        applied(next_reload(&mut reports).await).removed,
        vec!["session.prefs.{cid}"]
    );
    let (_, reset) = gw.next_system().await;
    assert_eq!(
        reset,
        json!({"resources": ["session.prefs.*"], "access": ["session.prefs.*"]})
    );
    // No subscription is left, so NATS answers "no responders" at once.
    let err = gw
        .client
        .request("get.session.prefs.c1", bytes::Bytes::new())
        .await
        .expect_err("nobody serves a removed resource");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    connres.stop().await;
}

#[tokio::test]
async fn state_survives_a_reload() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;
    assert_eq!(gw.get("session.user.c1").await, json!({"name": null}));
    gw.token("c1", json!({"name": "Ann"})).await;
    gw.next_event().await;
    let set = gw
        .call(
            "session.prefs.c1",
            "set",
            "c1",
            json!({"name": "Ann"}),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(set, json!({"result": null}));
    gw.next_event().await;

    write_by_rename(&dir.path(), &config(&[USER, PREFS, ROOM]));
    applied(next_reload(&mut reports).await);
    assert_eq!(gw.get("session.user.c1").await, json!({"name": "Ann"}));
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "dark"}));

    // A constraint the written value breaks sends the field back to its default.
    let narrower = PREFS.replace("enum: [light, dark]", "enum: [light, sepia]");
    write_by_rename(&dir.path(), &config(&[USER, &narrower, ROOM]));
    applied(next_reload(&mut reports).await);
    assert_eq!(gw.get("session.prefs.c1").await, json!({"theme": "light"}));
    connres.stop().await;
}

#[tokio::test]
async fn unchanged_file_is_a_no_op() {
    let server = NatsServer::start();
    let text = config(&[USER, PREFS]);
    let dir = ConfigDir::new(&text);
    let (connres, mut gw, mut reports) = start_watched(&server, &dir.path()).await;

    write_by_rename(&dir.path(), &text);
    let report = tokio::time::timeout(WAIT, reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report, ReloadReport::Unchanged { restored: false });
    gw.get("session.user.c1").await;
    assert!(gw.pending_system().is_empty());
    connres.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_while_the_file_is_rewritten() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&config(&[USER, PREFS]));
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut tasks = Vec::new();
    for t in 0..4 {
        let client = gw.client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = tokio::time::timeout(
                    WAIT,
                    client.request(format!("get.session.prefs.c{t}"), bytes::Bytes::new()),
                )
                .await
                .expect("answered in time")
                .expect("answered");
                let v: Value = serde_json::from_slice(&reply.payload).unwrap();
                let theme = &v["result"]["model"]["theme"];
                assert!(theme == "light" || theme == "dark", "{v}");
                answered += 1;
            }
            answered
        }));
    }
    for i in 0..20 {
        let default = if i % 2 == 0 { "dark" } else { "light" };
        write_by_rename(
            &dir.path(),
            &config(&[
                USER,
                &PREFS.replace("default: light", &format!("default: {default}")),
            ]),
        );
        applied(next_reload(&mut reports).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        let answered = t.await.unwrap();
        assert!(answered > 0);
        total += answered;
    }
    assert!(total >= 4);
    connres.stop().await;
}

/// Kubernetes mounts a ConfigMap as `resources.yaml -> ..data/resources.yaml` with
/// `..data -> ..<timestamp>/`, and updates it by swapping the `..data` symlink.
#[tokio::test]
async fn configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("..2026_11_26_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("resources.yaml"), config(&[USER])).unwrap();
    symlink("..2026_11_26_v1", dir.path().join("..data")).unwrap();
    symlink("..data/resources.yaml", dir.path().join("resources.yaml")).unwrap();
    let path = dir.path().join("resources.yaml");
    let (connres, gw, mut reports) = start_watched(&server, &path).await;

    let v2 = dir.path().join("..2026_11_26_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("resources.yaml"), config(&[USER, ROOM])).unwrap();
    symlink("..2026_11_26_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();

    assert_eq!(
        applied(next_reload(&mut reports).await).added,
        vec!["chat.room.{room}"]
    );
    assert_eq!(gw.get("chat.room.lobby").await, json!({"topic": "general"}));
    connres.stop().await;
}

/// The next report, skipping only `Compiling`.
async fn next_outcome(
    reports: &mut tokio::sync::broadcast::Receiver<ReloadReport>,
) -> ReloadReport {
    loop {
        let report = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a reload report")
            .expect("reports open");
        if report != ReloadReport::Compiling {
            return report;
        }
    }
}

/// The next report other than `Compiling` and `StillRejected`.
async fn next_new_outcome(
    reports: &mut tokio::sync::broadcast::Receiver<ReloadReport>,
) -> ReloadReport {
    loop {
        let report = next_outcome(reports).await;
        if report != ReloadReport::StillRejected {
            return report;
        }
    }
}

#[tokio::test]
async fn a_log_beside_the_config_triggers_nothing_and_bad_content_is_reported_once() {
    let server = NatsServer::start();
    let good = config(&[USER, PREFS]);
    let dir = ConfigDir::new(&good);
    let (connres, _gw, mut reports) = start_watched(&server, &dir.path()).await;

    let bad_a = format!("{good}  broken: [\n");
    write_by_rename(&dir.path(), &bad_a);
    assert!(matches!(
        next_outcome(&mut reports).await,
        ReloadReport::Rejected { .. }
    ));
    // A log written line by line into the config's directory: no reload, no report.
    {
        use std::io::Write;
        let mut log = std::fs::File::create(dir.dir.path().join("connres.log")).unwrap();
        for i in 0..200 {
            writeln!(log, "log line {i}").unwrap();
            log.sync_data().unwrap();
        }
    }
    // The same bad content saved again is not reported again.
    write_by_rename(&dir.path(), &bad_a);
    assert_eq!(
        next_outcome(&mut reports).await,
        ReloadReport::StillRejected
    );
    // Other bad content is. (Should the watcher see one save as two batches, the repeat
    // is `StillRejected`, never a second report.)
    write_by_rename(&dir.path(), &format!("{good}  also: {{ broken\n"));
    assert!(matches!(
        next_new_outcome(&mut reports).await,
        ReloadReport::Rejected { .. }
    ));
    // Back to what is served: reported (and logged) once as restored.
    write_by_rename(&dir.path(), &good);
    assert_eq!(
        next_new_outcome(&mut reports).await,
        ReloadReport::Unchanged { restored: true }
    );
    connres.stop().await;
}

/// A config of `n` resources, each with a written field whose default is `default`.
fn large_config(n: usize, default: u32) -> String {
    let mut s = String::from("version: 1\nresources:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  app{i}.model.{{cid}}:\n    fields:\n      name: {{ type: string, from: \"{{{{token.name}}}}\" }}\n      size: {{ type: integer, default: {default}, min: 0, writable: true }}\n    access:\n      get: cid == params.cid\n      call:\n        set: cid == params.cid && token != null\n"
        ));
    }
    s
}

#[tokio::test]
async fn requests_are_answered_while_a_large_file_compiles() {
    let server = NatsServer::start();
    let dir = ConfigDir::new(&large_config(1000, 1));
    let (connres, gw, mut reports) = start_watched(&server, &dir.path()).await;
    write_by_rename(&dir.path(), &large_config(1000, 2));
    loop {
        let report = tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("a report")
            .expect("reports open");
        if report == ReloadReport::Compiling {
            break;
        }
    }
    // Until the swap the old config answers: requests do not wait for the compiler.
    let mut answered_while_compiling = 0;
    while gw.get("app7.model.c1").await["size"] == json!(1) {
        answered_while_compiling += 1;
    }
    assert!(
        answered_while_compiling > 0,
        "no request was answered while the file compiled"
    );
    applied(next_reload(&mut reports).await);
    assert_eq!(gw.get("app999.model.c1").await["size"], json!(2));
    connres.stop().await;
}
