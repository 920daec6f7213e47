//! Rule-test files with `steps`: how they read, what is refused where, and how a
//! sequence runs and fails. Single cases are covered through the binary
//! (`tests/authoring.rs`, `tests/docs.rs`).

use std::time::Duration;

use serde_json::json;

use super::*;

const SHIPPED: &str = include_str!("../../resources.yaml");

fn shipped() -> Config {
    Config::parse("resources.yaml", SHIPPED).unwrap()
}

/// The errors of a test file, as `line:col: message`.
fn errors(source: &str) -> Vec<String> {
    parse("t.test.yaml", source)
        .unwrap_err()
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.pos, e.message))
        .collect()
}

fn report(source: &str) -> Report {
    let suite = parse("t.test.yaml", source).unwrap_or_else(|e| panic!("{e}"));
    run(&shipped(), "resources.yaml", &[suite])
}

#[test]
fn steps_read_in_order_with_the_case_s_resource_and_connection() {
    let suite = parse(
        "t.test.yaml",
        "tests:\n  - name: n\n    resource: a.c1\n    cid: c1\n    token: { id: 1 }\n    steps:\n      - token: null\n      - cid: c2\n        set: { x: 1 }\n        outcome: denied\n      - resource: b.c1\n        backend_set: { y: 2 }\n        model: { y: 2 }\n      - backend_reset: true\n      - reset: true\n      - wait: 25h\n        get: true\n",
    )
    .unwrap();
    let case = &suite.cases[0];
    assert!(case.sequence);
    assert_eq!(case.token, Some(json!({"id": 1})));
    let steps: Vec<(&str, &str, Option<&Action>)> = case
        .steps
        .iter()
        .map(|s| (s.resource.as_str(), s.cid.as_str(), s.action.as_ref()))
        .collect();
    assert_eq!(
        steps,
        [
            ("a.c1", "c1", Some(&Action::Token(None))),
            ("a.c1", "c2", Some(&Action::Set(json!({"x": 1})))),
            (
                "b.c1",
                "c1",
                Some(&Action::BackendSet(
                    json!({"y": 2}).as_object().unwrap().clone()
                ))
            ),
            ("a.c1", "c1", Some(&Action::BackendReset)),
            ("a.c1", "c1", Some(&Action::Reset)),
            (
                "a.c1",
                "c1",
                Some(&Action::Wait(Duration::from_secs(25 * 3600)))
            ),
        ]
    );
    assert_eq!(case.steps[1].expect.outcome.as_deref(), Some("denied"));
    assert_eq!(case.steps[5].expect.get, Some(true));
    assert_eq!(case.steps[1].at.to_string(), "8:9");
}

#[test]
fn a_case_without_steps_is_its_access_then_its_set() {
    let suite = parse(
        "t.test.yaml",
        "tests:\n  - name: n\n    resource: a.c1\n    cid: c1\n    get: true\n    set: { x: 1 }\n    model: { x: 1 }\n",
    )
    .unwrap();
    let case = &suite.cases[0];
    assert!(!case.sequence);
    assert_eq!(case.steps.len(), 2);
    assert_eq!(case.steps[0].action, None);
    assert_eq!(case.steps[0].expect.get, Some(true));
    assert_eq!(case.steps[1].action, Some(Action::Set(json!({"x": 1}))));
    assert!(case.steps[1].expect.model.is_some());
}

#[test]
fn a_broken_step_is_an_error_where_it_is_written() {
    let got = errors(
        "tests:\n  - name: n\n    resource: a.c1\n    cid: c1\n    get: true\n    steps:\n      - token: null\n        set: { x: 1 }\n      - reset: false\n      - wait: 90\n      - token: { id: 1 }\n        outcome: ok\n      - backend_sett: { x: 1 }\n      - {}\n      - model: 3\n",
    );
    assert_eq!(
        got,
        [
            "5:5: `get` goes in a step: a case with `steps` does and checks everything in its steps",
            "8:9: a step does one thing: `token` and `set` are two; give each a step of its own",
            "9:16: `reset` must be true (the connection calls reset)",
            "10:15: `wait` must be a duration with its unit, such as 90s, 30m or 25h, not 90",
            "12:9: `outcome` is the outcome of the step's call or backend write: give `set`, `reset`, `add`, `remove`, `join`, `leave`, `ping`, `backend_set`, `backend_reset`, `backend_add` or `backend_remove`",
            "13:9: unknown key `backend_sett` in a step; did you mean `backend_set`?",
            "14:9: a step needs something to do (token, set, reset, add, remove, join, leave, ping, backend_set, backend_reset, backend_add, backend_remove, wait) or to check (get, call, model, items)",
            "15:16: `model` must be a mapping, not an integer",
        ]
    );
    assert_eq!(
        errors("tests:\n  - name: n\n    resource: a.c1\n    cid: c1\n    steps: []\n"),
        ["5:12: `steps` must list at least one step"]
    );
    assert_eq!(
        errors("tests:\n  - name: n\n    resource: a.c1\n    cid: c1\n    error: x\n"),
        ["5:5: `error` is the outcome of a `set`: give the values to set"]
    );
}

#[test]
fn a_failing_step_is_named_with_its_place_and_what_it_did() {
    let r = report(
        "tests:\n  - name: logout keeps the prefs\n    resource: session.prefs.c1\n    cid: c1\n    token: { userId: 1 }\n    steps:\n      - set: { theme: dark }\n      - token: null\n        call: { set: true }\n        model: { theme: light }\n      - set: { theme: light }\n        error: read-only\n",
    );
    assert_eq!(r.passed, 0);
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: logout keeps the prefs\n",
            "  step 2 at t.test.yaml:8:9: token null\n",
            "    call.set: expected granted, got denied\n",
            "      rule call.set at resources.yaml:34:14: cid == params.cid && token != null -> denied\n",
            "    model.theme: expected \"light\", got \"dark\"\n",
            "  step 3 at t.test.yaml:11:9: set {\"theme\":\"light\"}\n",
            "    set: expected ok, got denied\n",
            "      rule call.set at resources.yaml:34:14: cid == params.cid && token != null -> denied\n",
            "    error: expected a message containing \"read-only\", got denied",
        )]
    );
}

#[test]
fn backend_writes_and_their_outcomes() {
    let r = report(
        "tests:\n  - name: the backend writes the status\n    resource: session.status.c1\n    cid: c1\n    steps:\n      - backend_set: { cartItems: -1 }\n        outcome: invalid\n        error: \"field `cartItems`: -1 is below min 0\"\n      - backend_set: { cartItems: 2 }\n        model: { cartItems: 2 }\n      - backend_set: { nope: 1 }\n",
    );
    assert_eq!(
        r.failures,
        ["FAIL t.test.yaml:2:5: the backend writes the status\n  step 3 at t.test.yaml:11:9: backend_set {\"nope\":1}\n    backend_set: expected ok, got system.invalidParams: field `nope` is not declared on session.status.{cid}"]
    );
    assert_eq!(r.passed, 0);
}

#[test]
fn a_step_on_a_name_no_pattern_matches_ends_the_case() {
    let r = report(
        "tests:\n  - name: typo\n    resource: session.prefs.c1\n    cid: c1\n    steps:\n      - resource: session.prefz.c1\n        get: true\n      - get: false\n",
    );
    assert_eq!(
        r.failures,
        ["FAIL t.test.yaml:2:5: typo\n  step 1 at t.test.yaml:6:9: check\n    no resource pattern matches `session.prefz.c1`; did you mean `session.prefs.c1` (pattern `session.prefs.{cid}`)?"]
    );
}

#[test]
fn waiting_expires_idle_state_and_looking_is_activity() {
    let case = |waits: &[&str], theme: &str| {
        let steps: String = waits
            .iter()
            .map(|w| format!("      - wait: {w}\n"))
            .collect();
        report(&format!(
            "tests:\n  - name: n\n    resource: session.prefs.c1\n    cid: c1\n    token: {{ userId: 1 }}\n    steps:\n      - set: {{ theme: dark }}\n{steps}      - model: {{ theme: {theme} }}\n",
        ))
    };
    // idle_ttl is 24h: 23h keeps it, 24h without a request drops it.
    assert!(case(&["23h"], "dark").ok());
    assert!(case(&["12h", "12h"], "light").ok());
    assert!(case(&["24h"], "light").ok());
    assert!(!case(&["24h"], "dark").ok());
}

const COLLECTIONS: &str = include_str!("../../tests/config/valid/collections.yaml");

fn collections_report(source: &str) -> Report {
    let suite = parse("t.test.yaml", source).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::parse("collections.yaml", COLLECTIONS).unwrap();
    run(&config, "collections.yaml", &[suite])
}

#[test]
fn collection_steps_and_items_read_as_written() {
    let suite = parse(
        "t.test.yaml",
        "tests:\n  - name: n\n    resource: session.recent.c1\n    cid: c1\n    steps:\n      - add: { value: /a, idx: 0 }\n      - remove: { idx: 0 }\n      - backend_add: { value: /b }\n      - backend_remove: { value: /b }\n        items: []\n  - name: single\n    resource: session.recent.c1\n    cid: c1\n    items: [/a, { rid: x.y }]\n",
    )
    .unwrap();
    let object = |v: serde_json::Value| v.as_object().unwrap().clone();
    let actions: Vec<Option<&Action>> = suite.cases[0]
        .steps
        .iter()
        .map(|s| s.action.as_ref())
        .collect();
    assert_eq!(
        actions,
        [
            Some(&Action::Add(object(json!({"value": "/a", "idx": 0})))),
            Some(&Action::Remove(object(json!({"idx": 0})))),
            Some(&Action::BackendAdd(object(json!({"value": "/b"})))),
            Some(&Action::BackendRemove(object(json!({"value": "/b"})))),
        ]
    );
    let last = &suite.cases[0].steps[3];
    assert_eq!(last.expect.items, Some(vec![]));
    assert_eq!(last.expect.at("items").unwrap().to_string(), "10:9");
    assert_eq!(
        Action::Add(object(json!({"value": "/a"}))).show(),
        r#"add {"value":"/a"}"#
    );
    // A case without steps looks at its items after its access request.
    let single = &suite.cases[1];
    assert_eq!(single.steps.len(), 2);
    assert_eq!(
        single.steps[1].expect.items,
        Some(vec![json!("/a"), json!({"rid": "x.y"})])
    );
}

#[test]
fn broken_collection_steps_are_errors_where_they_are_written() {
    let got = errors(
        "tests:\n  - name: n\n    resource: session.recent.c1\n    cid: c1\n    steps:\n      - add: /a\n      - items: { a: 1 }\n      - token: null\n        error: full\n      - remove: { idx: 0 }\n        backend_remove: { idx: 0 }\n      - {}\n",
    );
    assert_eq!(
        got,
        [
            "6:14: `add` must be a mapping, not a string",
            "7:16: `items` must be a list of the collection's items, not a mapping",
            "9:9: `error` is the outcome of the step's call or backend write: give `set`, `reset`, `add`, `remove`, `join`, `leave`, `ping`, `backend_set`, `backend_reset`, `backend_add` or `backend_remove`",
            "11:9: a step does one thing: `remove` and `backend_remove` are two; give each a step of its own",
            "12:9: a step needs something to do (token, set, reset, add, remove, join, leave, ping, backend_set, backend_reset, backend_add, backend_remove, wait) or to check (get, call, model, items)",
        ]
    );
}

#[test]
fn the_shipped_collection_tests_pass_and_exercise_every_rule() {
    let suite = parse(
        "collections.test.yaml",
        include_str!("../../tests/config/valid/collections.test.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::parse("collections.yaml", COLLECTIONS).unwrap();
    let r = run(&config, "collections.yaml", &[suite]);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.passed, 8);
    assert_eq!(r.uncovered, Vec::<String>::new(), "{}", r.text());
}

#[test]
fn a_wrong_items_expectation_shows_both_lists_and_where_they_differ() {
    let r = collections_report(
        "tests:\n  - name: order\n    resource: session.recent.c1\n    cid: c1\n    steps:\n      - add: { value: /a }\n      - add: { value: /b, idx: 0 }\n        items: [/a, /b]\n      - backend_remove: { idx: 0 }\n        items: [/a, /b]\n",
    );
    assert_eq!(r.passed, 0);
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: order\n",
            "  step 2 at t.test.yaml:7:9: add {\"idx\":0,\"value\":\"/b\"}\n",
            "    items: expected [\"/a\",\"/b\"], got [\"/b\",\"/a\"] (from idx 0: expected \"/a\", got \"/b\")\n",
            "  step 3 at t.test.yaml:9:9: backend_remove {\"idx\":0}\n",
            "    items: expected [\"/a\",\"/b\"], got [\"/a\"] (1 item(s), not 2)",
        )]
    );
}

#[test]
fn model_of_a_collection_items_of_a_model_and_set_of_a_collection_are_named() {
    let r = collections_report(
        "tests:\n  - name: shapes\n    resource: session.recent.c1\n    cid: c1\n    steps:\n      - get: true\n        model: { page: /a }\n        call: { set: true, add: true }\n  - name: a set\n    resource: session.recent.c1\n    cid: c1\n    set: { page: /a }\n",
    );
    assert_eq!(
        r.failures,
        [
            concat!(
                "FAIL t.test.yaml:2:5: shapes\n",
                "  step 1 at t.test.yaml:6:9: check\n",
                "    call.set at t.test.yaml:8:9: `session.recent.c1` is a collection (pattern `session.recent.{cid}`): its methods are add and remove\n",
                "    model at t.test.yaml:7:9: `session.recent.c1` is a collection (pattern `session.recent.{cid}`), not a model: a get serves its items; expect them with `items:`",
            ),
            concat!(
                "FAIL t.test.yaml:9:5: a set\n",
                "  set: expected ok, got system.methodNotFound: method `set` not found: session.recent.{cid} serves add and remove",
            ),
        ]
    );
    let r = report(
        "tests:\n  - name: items of a model\n    resource: session.prefs.c1\n    cid: c1\n    items: []\n",
    );
    assert_eq!(
        r.failures,
        ["FAIL t.test.yaml:2:5: items of a model\n  items at t.test.yaml:5:5: `session.prefs.c1` is a model (pattern `session.prefs.{cid}`), not a collection: expect its values with `model:`"]
    );
}

#[test]
fn a_refused_add_names_the_call_rule_and_the_collection_s_writable_rule() {
    let r = collections_report(
        "tests:\n  - name: red before login\n    resource: session.tags.c1\n    cid: c1\n    steps:\n      - add: { value: red }\n",
    );
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: red before login\n",
            "  step 1 at t.test.yaml:6:9: add {\"value\":\"red\"}\n",
            "    add: expected ok, got system.accessDenied: access denied: add on session.tags.c1: the collection is not writable for this call: its `writable` rule denies\n",
            "      rule call.add at collections.yaml:29:14: cid == params.cid -> granted\n",
            "      rule collection.writable at collections.yaml:25:17: values.value != 'red' || token != null -> denied",
        )]
    );
}

#[test]
fn collection_coverage_counts_calls_and_the_writable_rule_never_fields() {
    // Looking exercises the access rules only; an add or a remove exercises its call
    // rule and the collection's `writable` rule.
    let look =
        "tests:\n  - name: look\n    resource: session.tags.c1\n    cid: c1\n    get: true\n";
    let r = collections_report(look);
    let tags: Vec<&String> = r
        .uncovered
        .iter()
        .filter(|u| u.starts_with("session.tags"))
        .collect();
    assert_eq!(
        tags,
        ["session.tags.{cid}: rule collection.writable (collections.yaml:25:17); rule call.add (collections.yaml:29:14); rule call.remove (collections.yaml:30:17)"]
    );
    let r = collections_report(&format!(
        "{look}  - name: add\n    resource: session.tags.c1\n    cid: c1\n    steps:\n      - add: {{ value: blue }}\n"
    ));
    assert!(r.ok(), "{}", r.text());
    let tags: Vec<&String> = r
        .uncovered
        .iter()
        .filter(|u| u.starts_with("session.tags"))
        .collect();
    assert_eq!(
        tags,
        ["session.tags.{cid}: rule call.remove (collections.yaml:30:17)"]
    );
    assert!(!r.text().contains("field(s)"), "{}", r.text());
}

mod presence;

#[test]
fn test_files_are_read_as_config_files_are() {
    // A device named as a test file is refused, not read without end; a missing file
    // is named.
    let errors = load(&[std::path::PathBuf::from("/dev/zero")]).unwrap_err();
    let text = errors[0].to_string();
    assert!(
        text.contains("a character device, and a test file must be a regular file"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.test.yaml");
    std::fs::write(&big, vec![b'#'; crate::config::MAX_FILE_BYTES as usize + 1]).unwrap();
    let text = load(&[big]).unwrap_err()[0].to_string();
    assert!(
        text.contains("larger than 16 MiB, the most a test file may hold"),
        "{text}"
    );
}
