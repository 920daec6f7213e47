//! The tools for the people who edit the config, through the binary: `explain` (and
//! later `test`, `plan`, `schema`). No NATS is needed by any of them.

mod common;

use common::process::{connres, project_file, Proc};

/// Runs the binary to the end.
fn run(cmd: &mut std::process::Command) -> common::process::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(Proc::spawn(cmd).output())
}

fn explain(args: &[&str]) -> common::process::Output {
    let mut cmd = connres();
    cmd.arg("explain")
        .arg("--config")
        .arg(project_file("resources.yaml"));
    cmd.args(args);
    run(&mut cmd)
}

#[test]
fn explain_a_get_shows_pattern_params_rules_and_model() {
    let out = explain(&[
        "get",
        "session.user.c1",
        "--cid",
        "c1",
        "--token",
        r#"{"userId":42,"name":"Ann","role":"admin"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    for needle in [
        "pattern    session.user.{cid}",
        "params     cid = \"c1\"",
        "get         cid == params.cid\n              -> granted",
        "\"name\":\"Ann\"",
    ] {
        assert!(out.stdout.contains(needle), "{needle}:\n{}", out.stdout);
    }
    // Another connection asking: denied, still an evaluation (exit 0).
    let out = explain(&["get", "session.user.c1", "--cid", "c2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.contains("get        denied"), "{}", out.stdout);
}

#[test]
fn explain_a_call_validates_its_values() {
    let out = explain(&[
        "call",
        "session.prefs.c1",
        "--cid",
        "c1",
        "--token",
        r#"{"userId":1}"#,
        "--method",
        "set",
        "--params",
        r#"{"fontSize":99}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("call.set    cid == params.cid && token != null\n              -> granted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("refused: field `fontSize`: 99 is above max 32"),
        "{}",
        out.stdout
    );
    let out = explain(&["access", "session.prefs.c1", "--cid", "c1"]);
    assert!(
        out.stdout
            .contains(r#"access     {"call":"reset","get":true}"#),
        "{}",
        out.stdout
    );
}

#[test]
fn explain_fails_on_an_unknown_name_a_bad_config_or_bad_json() {
    let out = explain(&["get", "nope.c1", "--cid", "c1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no resource pattern matches `nope.c1`"),
        "{}",
        out.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nresources:\n  a.{cid}:\n    access:\n      get: model.x == 1\n",
    )
    .unwrap();
    let mut cmd = connres();
    cmd.args(["explain", "get", "a.c1", "--cid", "c1", "--config"])
        .arg(&bad);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("bad.yaml:5:12: `access.get`: `model.x` is not a field"),
        "{}",
        out.stderr
    );
    let out = explain(&["get", "session.user.c1", "--cid", "c1", "--token", "{oops"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(out.stderr.contains("not JSON"), "{}", out.stderr);
}

#[test]
fn a_yaml_boolean_is_the_constant_rule() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(&file, "version: 1\nresources:\n  a.{cid}:\n    fields:\n      x: { type: integer, default: 1, writable: true }\n    access:\n      get: true\n      call: false\n").unwrap();
    let mut cmd = connres();
    cmd.args([
        "explain",
        "call",
        "a.c1",
        "--cid",
        "c9",
        "--method",
        "set",
        "--params",
        r#"{"x":2}"#,
        "--config",
    ])
    .arg(&file);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("get         true\n              -> granted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("call        false\n              -> denied"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("denied by the access rules"),
        "{}",
        out.stdout
    );
}
