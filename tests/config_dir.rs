//! A config directory: every `*.yaml` in it forms one config, checked as one, served as
//! one and reloaded as a whole when any of its files changes.

mod common;

use common::process::{connres, Proc};
use common::*;
use connres::reload::ReloadReport;
use serde_json::json;

const BASE: &str = "version: 1\nstate: { idle_ttl: 1h }\n";

const USERS: &str = r#"resources:
  session.user.{cid}:
    fields:
      name: { type: string, from: "{{token.name}}" }
    access:
      get: cid == params.cid
"#;

const ROOMS: &str = r#"resources:
  chat.room.{room}:
    fields:
      topic: { type: string, default: general }
    access:
      get: "true"
"#;

/// Rooms again, under a pattern that overlaps the users' one.
const OVERLAP: &str = r#"resources:
  session.{kind}.{cid}:
    fields:
      x: { type: string }
"#;

fn dir_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[tokio::test]
async fn a_directory_is_served_and_reloaded_as_a_whole() {
    let server = NatsServer::start();
    let dir = dir_of(&[("00-base.yaml", BASE), ("users.yaml", USERS)]);
    let (connres, gw, mut reports) = start_watched(&server, dir.path()).await;
    assert_eq!(gw.get("session.user.c1").await, json!({"name": null}));

    // A team adds its file: its pattern is served.
    write_by_rename(&dir.path().join("rooms.yaml"), ROOMS);
    match next_reload(&mut reports).await {
        ReloadReport::Applied { diff, .. } => assert_eq!(diff.added, ["chat.room.{room}"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.get("chat.room.lobby").await, json!({"topic": "general"}));

    // Another team's file clashes with the users' file: the whole set is refused, the
    // error names both files, and everything keeps serving.
    write_by_rename(&dir.path().join("zz-other.yaml"), OVERLAP);
    let ReloadReport::Rejected { errors } = next_reload(&mut reports).await else {
        panic!("the overlap is rejected");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("zz-other.yaml:2:3") && errors[0].contains("users.yaml:2:3"),
        "{errors:?}"
    );
    assert_eq!(gw.get("chat.room.lobby").await, json!({"topic": "general"}));

    // Removing it brings the set back to what is served.
    std::fs::remove_file(dir.path().join("zz-other.yaml")).unwrap();
    let outcome = loop {
        match tokio::time::timeout(WAIT, reports.recv()).await {
            Ok(Ok(ReloadReport::Compiling)) => continue,
            other => break other.expect("a reload report").expect("reports open"),
        }
    };
    assert_eq!(outcome, ReloadReport::Unchanged { restored: true });
    connres.stop().await;
}

#[tokio::test]
async fn check_takes_a_directory_and_several_paths() {
    let dir = dir_of(&[
        ("00-base.yaml", BASE),
        ("users.yaml", USERS),
        ("rooms.yaml", ROOMS),
    ]);
    let out = Proc::spawn(connres().arg("check").arg("--config").arg(dir.path()))
        .output()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("session.user.{cid}") && out.stdout.contains("chat.room.{room}"));
    assert!(out.stdout.contains("2 resource(s)"), "{}", out.stdout);

    // Paths as arguments: each is checked; one bad one fails the run.
    let bad = dir_of(&[(
        "resources.yaml",
        "version: 1\nresources:\n  a.{cid}:\n    fields:\n      x: { type: sting }\n",
    )]);
    let bad_file = bad.path().join("resources.yaml");
    let out = Proc::spawn(connres().arg("check").arg(dir.path()).arg(&bad_file))
        .output()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{}: ok", dir.path().display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!(
            "{}:5:18: unknown field type `sting`",
            bad_file.display()
        )),
        "{}",
        out.stderr
    );
}
