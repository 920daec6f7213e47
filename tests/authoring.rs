//! The tools for the people who edit the config, through the binary: `explain`,
//! `test`, `plan` and `schema` (which config `test` runs a file against:
//! `rule_tests.rs`). No NATS is needed by any of them.

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
    assert!(!out.stderr.contains("did you mean"), "{}", out.stderr);
    let out = explain(&["get", "session.prefz.c1", "--cid", "c1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no resource pattern matches `session.prefz.c1`: connres would not answer it (another service may); did you mean `session.prefs.c1` (pattern `session.prefs.{cid}`)?"),
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

fn test_cmd(config: &std::path::Path, files: &[&std::path::Path]) -> common::process::Output {
    let mut cmd = connres();
    cmd.arg("test").arg("--config").arg(config).args(files);
    run(&mut cmd)
}

#[test]
fn the_shipped_rule_tests_pass_and_exercise_every_rule_and_field() {
    for config in [
        "resources.yaml",
        "tests/config/valid/chat.yaml",
        "tests/config/valid/shop.yaml",
        "tests/config/valid/collections.yaml",
    ] {
        let out = test_cmd(&project_file(config), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{config}:\n{}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains("passed, 0 failed"), "{}", out.stdout);
        assert!(
            !out.stdout.contains("not exercised"),
            "{config}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn a_failing_case_names_the_rule_and_coverage_gaps_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.test.yaml");
    std::fs::write(
        &file,
        "tests:\n  - name: logged out, set prefs\n    resource: session.prefs.c1\n    cid: c1\n    call: { set: true }\n  - name: a typo\n    resource: session.prefs.c1\n    cid: c1\n    model: { themes: dark }\n  - name: a misspelt name\n    resource: session.prefz.c1\n    cid: c1\n    get: true\n",
    )
    .unwrap();
    let config = project_file("resources.yaml");
    let out = test_cmd(&config, &[&file]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let shown = config.display().to_string();
    for needle in [
        format!("FAIL {}:2:5: logged out, set prefs", file.display()),
        "  call.set: expected granted, got denied".to_string(),
        format!("    rule call.set at {shown}:34:14: cid == params.cid && token != null -> denied"),
        "  model.themes: not a field of `session.prefs.{cid}`; did you mean `theme`?".to_string(),
        "  no resource pattern matches `session.prefz.c1`; did you mean `session.prefs.c1` (pattern `session.prefs.{cid}`)?".to_string(),
        "0 case(s) passed, 3 failed".to_string(),
        "not exercised by any case:".to_string(),
        format!("  session.user.{{cid}}: rule get ({shown}:22:12); field(s) id, name, role, user"),
    ] {
        assert!(out.stdout.contains(&needle), "{needle}\n{}", out.stdout);
    }
}

#[test]
fn a_failing_set_names_the_writable_rules_of_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cart.test.yaml");
    std::fs::write(
        &file,
        "tests:\n  - name: logged out, items\n    resource: shop.cart.c1\n    cid: c1\n    set: { items: 2, coupon: A }\n",
    )
    .unwrap();
    let config = project_file("tests/config/valid/shop.yaml");
    let out = test_cmd(&config, &[&file]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let shown = config.display().to_string();
    for needle in [
        "  set: expected ok, got system.invalidParams: field `items` is not writable for this call: its `writable` rule denies".to_string(),
        format!("    rule fields.items.writable at {shown}:8:72: token != null -> denied"),
        format!("  shop.cart.{{cid}}: rule fields.express.writable ({shown}:10:59);"),
    ] {
        assert!(out.stdout.contains(&needle), "{needle}\n{}", out.stdout);
    }
    // Its fields' rules were exercised; the items' was, so it is not listed.
    assert!(
        !out.stdout.contains("rule fields.items.writable ("),
        "{}",
        out.stdout
    );
}

#[test]
fn a_broken_test_file_is_reported_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.test.yaml");
    std::fs::write(
        &file,
        "tests:\n  - name: x\n    resource: session.user.c1\n    cdi: c1\n    get: yes\n",
    )
    .unwrap();
    let out = test_cmd(&project_file("resources.yaml"), &[&file]);
    assert_eq!(out.status.code(), Some(1));
    let f = file.display();
    for needle in [
        format!("{f}:2:5: a case needs `cid`"),
        format!("{f}:4:5: unknown key `cdi` in a case; did you mean `cid`?"),
        format!("{f}:5:10: `get` must be true or false, not a string"),
    ] {
        assert!(out.stderr.contains(&needle), "{needle}\n{}", out.stderr);
    }
}

/// `connres plan` from the shipped file to an edited copy of it, with the shipped tests.
fn plan(edit: impl Fn(&str) -> String) -> common::process::Output {
    plan_with(edit, &[])
}

/// `connres plan` from the shipped file to an edited copy of it, with the shipped tests
/// and `tests`.
fn plan_with(edit: impl Fn(&str) -> String, tests: &[&std::path::Path]) -> common::process::Output {
    let shipped = std::fs::read_to_string(project_file("resources.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("resources.yaml");
    std::fs::write(&new, edit(&shipped)).unwrap();
    let mut cmd = connres();
    cmd.arg("plan")
        .arg(project_file("resources.yaml"))
        .arg(&new)
        .arg("--tests")
        .arg(project_file("resources.test.yaml"));
    for t in tests {
        cmd.arg("--tests").arg(t);
    }
    run(&mut cmd)
}

#[test]
fn plan_exit_codes_gate_a_ci_job() {
    // Comments only: nothing changes.
    let out = plan(|s| format!("# reviewed\n{s}"));
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("system.reset:     none"),
        "{}",
        out.stdout
    );

    // A rules-only change that the rule tests see: exit 3, with the case and the reset.
    let out = plan(|s| {
        s.replace(
            "set: cid == params.cid && token != null",
            "set: cid == params.cid",
        )
    });
    assert_eq!(out.status.code(), Some(3), "{}", out.stdout);
    for needle in [
        "session.prefs.{cid}: call.set `cid == params.cid && token != null` -> `cid == params.cid`",
        r#"system.reset:     {"resources":[],"access":["session.prefs.*"]}"#,
        "preferences cannot be set while logged out, but can be reset: call.set denied -> granted",
    ] {
        assert!(out.stdout.contains(needle), "{needle}\n{}", out.stdout);
    }

    // A field change no tested decision depends on: exit 2.
    let out = plan(|s| s.replace("max: 32", "max: 40"));
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert!(
        out.stdout.contains("~ fontSize (max 32 -> 40"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(r#"{"resources":["session.prefs.*"],"access":[]}"#),
        "{}",
        out.stdout
    );

    // A removal: its tested requests go unserved, listed as such; no served decision
    // changes.
    let out = plan(|s| s[..s.find("  # What backend services").unwrap()].to_string());
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    for needle in [
        "patterns removed: session.status.{cid}",
        "tested requests of removed resources (no longer served):",
        "the session status is readable by its connection only, never writable: session.status.c1 (session.status.{cid}) was get granted, call.set denied, call.reset denied",
        "decisions that change for the rule tests",
    ] {
        assert!(out.stdout.contains(needle), "{needle}\n{}", out.stdout);
    }

    // A broken new file: exit 1 with its errors.
    let out = plan(|s| s.replace("type: integer", "type: int"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("unknown field type `int`; did you mean `integer`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_of_a_resource_added_with_its_tests_exits_2() {
    // A resource added with its own tests: exit 2, its cases listed as newly served.
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("notes.test.yaml");
    std::fs::write(
        &cases,
        "tests:\n  - name: a connection writes its own note\n    resource: session.note.c1\n    cid: c1\n    get: true\n    call: { set: true, reset: false }\n",
    )
    .unwrap();
    let out = plan_with(
        |s| {
            format!("{s}\n  session.note.{{cid}}:\n    fields:\n      text: {{ type: string, writable: true }}\n    access:\n      get: cid == params.cid\n      call: {{ set: cid == params.cid }}\n")
        },
        &[&cases],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    for needle in [
        "patterns added:   session.note.{cid}",
        "tested requests of added resources (served from now on):",
        &format!("{}:2:5: a connection writes its own note: session.note.c1 (session.note.{{cid}}) get granted, call.set granted, call.reset denied", cases.display()),
        "decisions that change for the rule tests",
        "the reload changes what is served (exit 2)",
    ] {
        assert!(out.stdout.contains(needle), "{needle}\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("unserved ->"), "{}", out.stdout);
}

#[test]
fn plan_compares_the_tests_beside_new_that_test_it() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("resources.yaml", "resources.yaml"),
        ("resources.test.yaml", "resources.test.yaml"),
        ("tests/config/valid/chat.yaml", "chat.yaml"),
        ("tests/config/valid/chat.test.yaml", "chat.test.yaml"),
    ] {
        std::fs::copy(project_file(from), dir.path().join(to)).unwrap();
    }
    let mut cmd = connres();
    cmd.arg("plan")
        .arg(project_file("resources.yaml"))
        .arg(dir.path().join("resources.yaml"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let heading = format!(
        "decisions that change for the rule tests ({}): none",
        dir.path().join("resources.test.yaml").display()
    );
    assert!(out.stdout.contains(&heading), "{heading}\n{}", out.stdout);
}

#[test]
fn plan_of_a_collection_change_describes_it_and_the_tested_adds_it_refuses() {
    let old = project_file("tests/config/valid/collections.yaml");
    let text = std::fs::read_to_string(&old).unwrap();
    let edited = text
        .replace("max_items: 20", "max_items: 10")
        // The first collection's (session.recent.{cid}) only.
        .replacen("      writable: true\n", "      writable: false\n", 1);
    assert_ne!(edited, text);
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("collections.yaml");
    std::fs::write(&new, edited).unwrap();
    let tests = project_file("tests/config/valid/collections.test.yaml");
    let mut cmd = connres();
    cmd.arg("plan")
        .arg(&old)
        .arg(&new)
        .arg("--tests")
        .arg(&tests);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
    for needle in [
        "collections changed:\n  session.recent.{cid}: max_items 20 -> 10 (items past it are dropped, from the end); writable true -> false\n".to_string(),
        r#"system.reset:     {"resources":["session.recent.*"],"access":[]}"#.to_string(),
        format!("{}:19:5: pages are added at the end or at an index, and removed by index or by value: step 1 add ok -> denied", tests.display()),
    ] {
        assert!(out.stdout.contains(&needle), "{needle}\n{}", out.stdout);
    }
}

#[test]
fn schema_prints_the_committed_json_schema() {
    let out = run(connres().arg("schema"));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["title"], "connres config");
    assert!(schema["properties"]["resources"].is_object(), "{schema}");
    let committed = std::fs::read_to_string(project_file("connres.schema.json")).unwrap();
    assert!(
        out.stdout == committed,
        "connres.schema.json is not what `connres schema` prints; regenerate it with\n    cargo run -q -- schema > connres.schema.json"
    );
}
