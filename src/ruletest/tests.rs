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
            "12:9: `outcome` is the outcome of the step's call or backend write: give `set`, `reset`, `backend_set` or `backend_reset`",
            "13:9: unknown key `backend_sett` in a step; did you mean `backend_set`?",
            "14:9: a step needs something to do (token, set, reset, backend_set, backend_reset, wait) or to check (get, call, model)",
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
