//! `connres test FILE` runs a test file against the config it belongs to: its
//! `config:` key, else the `X.yaml` beside `X.test.yaml`, else `--config`; a test file
//! that names one config while `--config` names another is an error, and so is one
//! that names none when nothing else does. Through the binary, in temporary
//! directories.

mod common;

use std::path::Path;

use common::process::{connres, project_file};

/// What a finished `connres` printed.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `connres ARGS` run in `dir`, with `env` set.
fn connres_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = connres();
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("connres runs");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The shipped chat rule tests without a `config:` key: they name no config.
fn chat_tests_naming_no_config() -> String {
    let text = std::fs::read_to_string(project_file("tests/config/valid/chat.test.yaml")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with("config:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A directory holding the shipped `resources.yaml` (the `--config` default), and
/// `team/chat.yaml` with its tests beside it as `team/chat.test.yaml`.
fn project_with_a_team_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        project_file("resources.yaml"),
        dir.path().join("resources.yaml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("team")).unwrap();
    std::fs::copy(
        project_file("tests/config/valid/chat.yaml"),
        dir.path().join("team/chat.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("team/chat.test.yaml"),
        chat_tests_naming_no_config(),
    )
    .unwrap();
    dir
}

fn assert_passed(out: &Out, cases: usize) {
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{cases} case(s) passed, 0 failed")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_test_file_runs_against_the_config_beside_it() {
    let dir = project_with_a_team_config();
    let out = connres_in(dir.path(), &["test", "team/chat.test.yaml"], &[]);
    assert_passed(&out, 5);
    assert!(
        out.stdout
            .starts_with("running team/chat.test.yaml against team/chat.yaml\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_shipped_chat_tests_name_their_config() {
    let out = connres_in(
        &project_file(""),
        &["test", "tests/config/valid/chat.test.yaml"],
        &[],
    );
    assert_passed(&out, 5);
    assert!(
        out.stdout.starts_with(
            "running tests/config/valid/chat.test.yaml against tests/config/valid/chat.yaml\n"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_config_key_names_the_config_relative_to_the_test_file() {
    let dir = project_with_a_team_config();
    std::fs::create_dir(dir.path().join("checks")).unwrap();
    std::fs::write(
        dir.path().join("checks/rooms.test.yaml"),
        format!(
            "config: ../team/chat.yaml\n{}",
            chat_tests_naming_no_config()
        ),
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "checks/rooms.test.yaml"], &[]);
    assert_passed(&out, 5);
    assert!(
        out.stdout
            .starts_with("running checks/rooms.test.yaml against checks/../team/chat.yaml\n"),
        "{}",
        out.stdout
    );

    // A config key naming nothing is an error at the key.
    std::fs::write(
        dir.path().join("checks/typo.test.yaml"),
        "config: ../team/chats.yaml\ntests: []\n",
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "checks/typo.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "checks/typo.test.yaml:1:9: `config` names checks/../team/chats.yaml, which does not exist"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_config_key_must_be_a_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.test.yaml"),
        "config: [a.yaml]\ntests: []\n",
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "x.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("x.test.yaml:1:9: `config` must be the path of the config the file tests, relative to the file, not a list"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_config_flag_naming_another_config_is_an_error() {
    let dir = project_with_a_team_config();
    let expected = "team/chat.test.yaml:1:1: the file tests team/chat.yaml (the file beside it), but --config names resources.yaml";
    let out = connres_in(
        dir.path(),
        &["test", "--config", "resources.yaml", "team/chat.test.yaml"],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains(expected), "{}", out.stderr);
    assert!(!out.stdout.contains("case(s) passed"), "{}", out.stdout);

    // $CONNRES_CONFIG is --config.
    let out = connres_in(
        dir.path(),
        &["test", "team/chat.test.yaml"],
        &[("CONNRES_CONFIG", "resources.yaml")],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains(expected), "{}", out.stderr);

    // A `config:` key against the flag: the error is at the key.
    let out = connres_in(
        &project_file(""),
        &[
            "test",
            "--config",
            "resources.yaml",
            "tests/config/valid/chat.test.yaml",
        ],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("tests/config/valid/chat.test.yaml:2:9: the file tests tests/config/valid/chat.yaml (its `config:`), but --config names resources.yaml"),
        "{}",
        out.stderr
    );

    // The same config, however it is spelt, agrees.
    let out = connres_in(
        dir.path(),
        &[
            "test",
            "--config",
            "./team/chat.yaml",
            "team/chat.test.yaml",
        ],
        &[],
    );
    assert_passed(&out, 5);
}

#[test]
fn a_test_file_naming_no_config_is_an_error() {
    let dir = project_with_a_team_config();
    std::fs::create_dir(dir.path().join("checks")).unwrap();
    std::fs::write(
        dir.path().join("checks/rooms.test.yaml"),
        chat_tests_naming_no_config(),
    )
    .unwrap();
    // Nothing beside it, no key, no --config: resources.yaml is elsewhere.
    let out = connres_in(dir.path(), &["test", "checks/rooms.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("checks/rooms.test.yaml:1:1: no config to test: no rooms.yaml beside it, no `config:` key in it and no --config; add `config: PATH` (relative to this file) or give --config"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("case(s)"), "{}", out.stdout);

    // --config gives it one.
    let out = connres_in(
        dir.path(),
        &[
            "test",
            "--config",
            "team/chat.yaml",
            "checks/rooms.test.yaml",
        ],
        &[],
    );
    assert_passed(&out, 5);
}

#[test]
fn files_of_several_configs_run_each_against_its_own() {
    let out = connres_in(
        &project_file(""),
        &[
            "test",
            "resources.test.yaml",
            "tests/config/valid/chat.test.yaml",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let runs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("running ") || l.contains("case(s) passed"))
        .collect();
    assert_eq!(runs.len(), 4, "{}", out.stdout);
    assert_eq!(
        runs[0],
        "running resources.test.yaml against resources.yaml"
    );
    assert_eq!(
        runs[2],
        "running tests/config/valid/chat.test.yaml against tests/config/valid/chat.yaml"
    );
    assert_eq!(runs[3], "5 case(s) passed, 0 failed");
}

#[test]
fn discovery_skips_test_files_of_other_configs() {
    // Beside profile.yaml are only the test files of chat.yaml, collections.yaml,
    // presence.yaml and shop.yaml.
    let out = connres_in(
        &project_file(""),
        &["test", "--config", "tests/config/valid/profile.yaml"],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    assert!(
        out.stderr.contains("connres: no rule tests for tests/config/valid/profile.yaml: no *.test.yaml beside it tests it (tests/config/valid/chat.test.yaml tests tests/config/valid/chat.yaml; tests/config/valid/collections.test.yaml tests tests/config/valid/collections.yaml; tests/config/valid/presence.test.yaml tests tests/config/valid/presence.yaml; tests/config/valid/shop.test.yaml tests tests/config/valid/shop.yaml)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_config_directory_is_the_config_of_the_test_files_of_its_files() {
    // conf.d: the shipped file, and chat.yaml's resources as a file of their own.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::copy(project_file("resources.yaml"), conf.join("00-main.yaml")).unwrap();
    let chat = std::fs::read_to_string(project_file("tests/config/valid/chat.yaml")).unwrap();
    let resources = &chat[chat.find("\nresources:").unwrap() + 1..];
    std::fs::write(conf.join("chat.yaml"), resources).unwrap();
    std::fs::write(conf.join("chat.test.yaml"), chat_tests_naming_no_config()).unwrap();

    // chat.yaml beside the test file is one file of --config: they agree.
    let out = connres_in(
        dir.path(),
        &["test", "--config", "conf.d", "conf.d/chat.test.yaml"],
        &[],
    );
    assert_passed(&out, 5);
    assert!(
        out.stdout
            .starts_with("running conf.d/chat.test.yaml against conf.d\n"),
        "{}",
        out.stdout
    );
    let out = connres_in(dir.path(), &["test", "--config", "conf.d"], &[]);
    assert_passed(&out, 5);

    // Alone, the file beside it is not a whole config.
    let out = connres_in(dir.path(), &["test", "conf.d/chat.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("connres: conf.d/chat.test.yaml not run: the config they test does not load"),
        "{}",
        out.stderr
    );

    // `config: .` names the directory.
    std::fs::write(
        conf.join("chat.test.yaml"),
        format!("config: .\n{}", chat_tests_naming_no_config()),
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "conf.d/chat.test.yaml"], &[]);
    assert_passed(&out, 5);
}

#[test]
fn the_collection_tests_pass_and_a_wrong_items_expectation_shows_both_lists() {
    let out = connres_in(
        &project_file(""),
        &["test", "tests/config/valid/collections.test.yaml"],
        &[],
    );
    assert_passed(&out, 8);
    assert!(!out.stdout.contains("not exercised"), "{}", out.stdout);

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        project_file("tests/config/valid/collections.yaml"),
        dir.path().join("collections.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("collections.test.yaml"),
        "tests:\n  - name: pins in order\n    resource: board.b1.pins\n    cid: c1\n    steps:\n      - backend_add: { value: { rid: users.user.1 } }\n      - backend_add: { value: { rid: users.user.2 }, idx: 0 }\n        items: [{ rid: users.user.1 }, { rid: users.user.2 }]\n      - model: { pinned: null }\n",
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "collections.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let expected = concat!(
        "running collections.test.yaml against collections.yaml\n",
        "FAIL collections.test.yaml:2:5: pins in order\n",
        "  step 2 at collections.test.yaml:7:9: backend_add {\"idx\":0,\"value\":{\"rid\":\"users.user.2\"}}\n",
        "    items: expected [{\"rid\":\"users.user.1\"},{\"rid\":\"users.user.2\"}], got [{\"rid\":\"users.user.2\"},{\"rid\":\"users.user.1\"}] (from idx 0: expected {\"rid\":\"users.user.1\"}, got {\"rid\":\"users.user.2\"})\n",
        "  step 3 at collections.test.yaml:9:9: check\n",
        "    model at collections.test.yaml:9:9: `board.b1.pins` is a collection (pattern `board.{id}.pins`), not a model: a get serves its items; expect them with `items:`\n",
        "0 case(s) passed, 1 failed\n",
    );
    assert!(out.stdout.starts_with(expected), "{}", out.stdout);
}

#[test]
fn the_presence_tests_pass_and_a_member_kept_past_ttl_is_a_failure() {
    let out = connres_in(
        &project_file(""),
        &["test", "tests/config/valid/presence.test.yaml"],
        &[],
    );
    assert_passed(&out, 8);
    assert!(!out.stdout.contains("not exercised"), "{}", out.stdout);

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        project_file("tests/config/valid/presence.yaml"),
        dir.path().join("presence.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("presence.test.yaml"),
        "tests:\n  - name: still here\n    resource: chat.room.r1.members\n    cid: c1\n    token: { name: Ann }\n    steps:\n      - join: true\n      - wait: 60s\n        items: [Ann]\n      - ping: true\n",
    )
    .unwrap();
    let out = connres_in(dir.path(), &["test", "presence.test.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let expected = concat!(
        "running presence.test.yaml against presence.yaml\n",
        "FAIL presence.test.yaml:2:5: still here\n",
        "  step 2 at presence.test.yaml:8:9: wait 1m\n",
        "    items: expected [\"Ann\"], got [] (0 item(s), not 1)\n",
        "  step 3 at presence.test.yaml:10:9: ping\n",
        "    ping: expected ok, got system.invalidParams: connection c1 has not joined chat.room.r1.members (or was not seen for ttl 1m): call join\n",
        "0 case(s) passed, 1 failed\n",
    );
    assert!(out.stdout.starts_with(expected), "{}", out.stdout);
}
