//! Rule tests of presence lists: `join`, `leave` and `ping` steps, `wait` running the
//! `ttl` sweep, the `presence.join` rule in failures and coverage, and the shipped
//! `presence.test.yaml`.

use super::*;

const PRESENCE: &str = include_str!("../../../tests/config/valid/presence.yaml");

fn presence_report(config: &str, source: &str) -> Report {
    let suite = parse("t.test.yaml", source).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::parse("presence.yaml", config).unwrap_or_else(|e| panic!("{e}"));
    run(&config, "presence.yaml", &[suite])
}

#[test]
fn presence_steps_read_as_written_and_must_be_true() {
    let suite = parse(
        "t.test.yaml",
        "tests:\n  - name: n\n    resource: lobby.members\n    cid: c1\n    steps:\n      - join: true\n      - ping: true\n        outcome: invalid\n      - leave: true\n        items: []\n",
    )
    .unwrap();
    let steps = &suite.cases[0].steps;
    let actions: Vec<Option<&Action>> = steps.iter().map(|s| s.action.as_ref()).collect();
    assert_eq!(
        actions,
        [
            Some(&Action::Join),
            Some(&Action::Ping),
            Some(&Action::Leave)
        ]
    );
    assert_eq!(steps[1].expect.outcome.as_deref(), Some("invalid"));
    let methods: Vec<Option<&str>> = [Action::Join, Action::Leave, Action::Ping]
        .iter()
        .map(Action::method)
        .collect();
    assert_eq!(methods, [Some("join"), Some("leave"), Some("ping")]);
    assert_eq!(Action::Join.show(), "join");
    assert!(Action::Ping.answers());
    assert_eq!(
        errors(
            "tests:\n  - name: n\n    resource: lobby.members\n    cid: c1\n    steps:\n      - join: false\n      - leave: { cid: c1 }\n      - ping: true\n        join: true\n",
        ),
        [
            "6:15: `join` must be true (the connection joins the presence list)",
            "7:16: `leave` must be true (the connection leaves the presence list)",
            "9:9: a step does one thing: `ping` and `join` are two; give each a step of its own",
        ]
    );
}

#[test]
fn the_shipped_presence_tests_pass_and_exercise_every_rule() {
    let suite = parse(
        "presence.test.yaml",
        include_str!("../../../tests/config/valid/presence.test.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::parse("presence.yaml", PRESENCE).unwrap();
    let r = run(&config, "presence.yaml", &[suite]);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.passed, 8);
    assert_eq!(r.uncovered, Vec::<String>::new(), "{}", r.text());
}

#[test]
fn a_wait_runs_the_presence_sweep_so_a_member_not_seen_for_ttl_leaves() {
    // The room's ttl is 60s: a join at 0 and a ping at `ping` keep Ann until 60s
    // after the last of them.
    let case = |ping: &str, wait: &str, items: &str| {
        presence_report(
            PRESENCE,
            &format!(
                "tests:\n  - name: n\n    resource: chat.room.r1.members\n    cid: c1\n    token: {{ name: Ann }}\n    steps:\n      - join: true\n      - wait: {ping}\n      - ping: true\n      - wait: {wait}\n        items: {items}\n",
            ),
        )
    };
    assert!(case("1s", "59s", "[Ann]").ok());
    assert!(case("1s", "60s", "[]").ok());
    assert!(case("30s", "59s", "[Ann]").ok());
    assert!(!case("30s", "59s", "[]").ok());
    let r = case("1s", "60s", "[Ann]");
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: n\n",
            "  step 4 at t.test.yaml:10:9: wait 1m\n",
            "    items: expected [\"Ann\"], got [] (0 item(s), not 1)",
        )]
    );
}

#[test]
fn a_refused_join_names_the_call_rule_and_the_join_rule() {
    let config = PRESENCE.replace("join: token != null", "join: token.name != 'Zed'");
    let r = presence_report(
        &config,
        "tests:\n  - name: zed\n    resource: chat.room.r1.members\n    cid: c1\n    token: { name: Zed }\n    steps:\n      - join: true\n      - token: null\n      - join: true\n",
    );
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: zed\n",
            "  step 1 at t.test.yaml:7:9: join\n",
            "    join: expected ok, got system.accessDenied: access denied: join on chat.room.r1.members: the `presence.join` rule denies\n",
            "      rule call at presence.yaml:14:13: token != null -> granted\n",
            "      rule presence.join at presence.yaml:9:13: token.name != 'Zed' -> denied\n",
            // The gateway refuses a logged-out join: the join rule never runs.
            "  step 3 at t.test.yaml:9:9: join\n",
            "    join: expected ok, got denied\n",
            "      rule call at presence.yaml:14:13: token != null -> denied",
        )]
    );
}

#[test]
fn presence_coverage_counts_the_call_rules_of_join_leave_ping_and_the_join_rule() {
    let look = "tests:\n  - name: look\n    resource: lobby.members\n    cid: c1\n    get: true\n  - name: room\n    resource: chat.room.r1.members\n    cid: c1\n    get: false\n";
    let r = presence_report(PRESENCE, look);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(
        r.uncovered,
        [
            "chat.room.{room}.members: rule presence.join (presence.yaml:9:13); rule call (presence.yaml:14:13)",
            "lobby.members: rule call.join (presence.yaml:21:15); rule call.leave (presence.yaml:22:16); rule call.ping (presence.yaml:23:15)",
        ]
    );
    let r = presence_report(
        PRESENCE,
        &format!(
            "{look}  - name: calls\n    resource: lobby.members\n    cid: c1\n    token: {{ userId: 1 }}\n    steps:\n      - join: true\n      - ping: true\n      - resource: chat.room.r1.members\n        join: true\n        outcome: invalid\n"
        ),
    );
    assert!(r.ok(), "{}", r.text());
    assert_eq!(
        r.uncovered,
        ["lobby.members: rule call.leave (presence.yaml:22:16)"]
    );
}

#[test]
fn model_and_other_methods_of_a_presence_list_are_named() {
    let r = presence_report(
        PRESENCE,
        "tests:\n  - name: shapes\n    resource: lobby.members\n    cid: c1\n    steps:\n      - model: { member: x }\n        call: { add: true }\n",
    );
    assert_eq!(
        r.failures,
        [concat!(
            "FAIL t.test.yaml:2:5: shapes\n",
            "  step 1 at t.test.yaml:6:9: check\n",
            "    call.add at t.test.yaml:7:9: `lobby.members` is a presence list (pattern `lobby.members`): its methods are join, leave and ping\n",
            "    model at t.test.yaml:6:9: `lobby.members` is a presence list (pattern `lobby.members`), not a model: a get serves its members; expect them with `items:`",
        )]
    );
}
