//! Unit tests of discovery: the subjects answered, endpoint names and errors, the three
//! replies to the byte, and endpoints in the config's order.

use std::time::Duration;

use serde_json::{json, Value};

use super::endpoint::{describe_error, endpoint_name};
use super::micro::{DESCRIPTION, NAME, VERSION};
use super::*;
use crate::service::route::Route;

const ID: &str = "Q1ZsPkvSWLaErKgR3ye2Ve";

#[test]
fn answers_its_three_subjects_per_verb() {
    for (subject, verb) in [
        ("$SRV.PING", Some(Verb::Ping)),
        ("$SRV.INFO.connres", Some(Verb::Info)),
        (
            "$SRV.STATS.connres.Q1ZsPkvSWLaErKgR3ye2Ve",
            Some(Verb::Stats),
        ),
        ("$SRV.STATS.connres.someoneelse", None),
        ("$SRV.PING.other", None),
        ("$SRV.PING.connres.Q1ZsPkvSWLaErKgR3ye2Ve.x", None),
        ("$SRV.SCHEMA", None),
        ("$SRV.ping", None),
        ("$SRV", None),
        ("$SRV.", None),
        ("SRV.PING", None),
        ("$SRVPING", None),
        ("", None),
    ] {
        assert_eq!(Verb::of(subject, ID), verb, "{subject}");
    }
    for verb in Verb::ALL {
        for subject in verb.subjects(ID) {
            assert_eq!(Verb::of(&subject, ID), Some(verb), "{subject}");
        }
    }
}

#[test]
fn endpoint_names_use_only_the_allowed_characters() {
    assert_eq!(
        endpoint_name(Route::Get, Some("session.user.{cid}")),
        "get-session-user-cid"
    );
    assert_eq!(
        endpoint_name(Route::Call, Some("a:b.{x_1}.c-d")),
        "call-a_b-x_1-c-d"
    );
    assert_eq!(endpoint_name(Route::Token, None), "token");
    assert_eq!(endpoint_name(Route::ApiReset, None), "api-reset");
}

#[test]
fn last_error_is_the_code_only() {
    let reply = crate::protocol::ResError::AccessDenied("no".into()).reply();
    assert_eq!(describe_error(&reply), "system.accessDenied");
    let quoted =
        crate::protocol::ResError::InvalidParams("field `SECRET` is not declared".into()).reply();
    assert_eq!(
        describe_error(&quoted),
        "system.invalidParams",
        "no client input"
    );
    assert_eq!(
        describe_error(b"SECRET not json"),
        "an error reply that is not RES JSON"
    );
}

fn view() -> View {
    let get = Endpoint::new(Route::Get, Some("a.{cid}"), "get.a.*", Some("connres"));
    get.record(Duration::from_nanos(300), None);
    get.record(Duration::from_nanos(101), None);
    let denied = crate::protocol::ResError::AccessDenied("no".into()).reply();
    get.record(Duration::from_nanos(100), Some(denied));
    View {
        id: ID.into(),
        started: "2025-01-02T03:04:05.678Z".into(),
        config_hash: "abc".into(),
        generation: 2,
        queue_group: "connres".into(),
        api_prefix: "connres".into(),
        endpoints: vec![
            Arc::new(Endpoint::new(Route::Token, None, "conn.*.token", None)),
            Arc::new(get),
        ],
        order: None,
        shared: None,
    }
}

fn answer(verb: Verb) -> Value {
    serde_json::from_slice(&view().answer(verb)).unwrap()
}

fn metadata() -> Value {
    json!({
        "config_hash": "abc",
        "config_generation": "2",
        "queue_group": "connres",
        "api_prefix": "connres",
    })
}

#[test]
fn ping_response() {
    assert_eq!(
        answer(Verb::Ping),
        json!({
            "type": "io.nats.micro.v1.ping_response",
            "name": "connres",
            "id": ID,
            "version": VERSION,
            "metadata": metadata(),
        })
    );
}

#[test]
fn info_response() {
    assert_eq!(
        answer(Verb::Info),
        json!({
            "type": "io.nats.micro.v1.info_response",
            "name": "connres",
            "id": ID,
            "version": VERSION,
            "metadata": metadata(),
            "description": DESCRIPTION,
            "endpoints": [
                {"name": "token", "subject": "conn.*.token", "queue_group": "", "metadata": {}},
                {
                    "name": "get-a-cid",
                    "subject": "get.a.*",
                    "queue_group": "connres",
                    "metadata": {"pattern": "a.{cid}"},
                },
            ],
        })
    );
}

#[test]
fn stats_response() {
    assert_eq!(
        answer(Verb::Stats),
        json!({
            "type": "io.nats.micro.v1.stats_response",
            "name": "connres",
            "id": ID,
            "version": VERSION,
            "metadata": metadata(),
            "started": "2025-01-02T03:04:05.678Z",
            "endpoints": [
                {
                    "name": "token",
                    "subject": "conn.*.token",
                    "queue_group": "",
                    "num_requests": 0,
                    "num_errors": 0,
                    "last_error": "",
                    "processing_time": 0,
                    "average_processing_time": 0,
                },
                {
                    "name": "get-a-cid",
                    "subject": "get.a.*",
                    "queue_group": "connres",
                    "num_requests": 3,
                    "num_errors": 1,
                    "last_error": "system.accessDenied",
                    "processing_time": 501,
                    "average_processing_time": 167,
                },
            ],
        })
    );
}

#[test]
fn the_version_is_semver_and_the_name_allowed() {
    // The micro protocol requires both; `nats micro` validates them.
    let semver = regex::Regex::new(
        r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$",
    )
    .unwrap();
    assert!(semver.is_match(VERSION), "{VERSION}");
    assert!(NAME
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
}

#[test]
fn endpoints_follow_the_config() {
    let config = |patterns: &[&str]| {
        let mut yaml = String::from("version: 1\nresources:\n");
        for p in patterns {
            yaml.push_str(&format!(
                "  {p}:\n    fields:\n      x: {{ type: string }}\n"
            ));
        }
        Config::parse("t.yaml", &yaml).unwrap()
    };
    let endpoint =
        |route, pattern: Option<&str>| Arc::new(Endpoint::new(route, pattern, "s", None));
    let a = endpoint(Route::Get, Some("a.{cid}"));
    let b = endpoint(Route::Get, Some("b.{cid}"));
    let token = endpoint(Route::Token, None);
    let names = |es: &[Arc<Endpoint>]| es.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    let call = endpoint(Route::Call, Some("a.{cid}"));
    let api = endpoint(Route::ApiSet, None);
    let ordered = in_config_order(
        &config(&["b.{cid}", "a.{cid}"]),
        vec![call, api, a, token, b],
    );
    assert_eq!(
        names(&ordered),
        ["token", "api-set", "get-b-cid", "get-a-cid", "call-a-cid"]
    );
    let ordered = in_config_order(&config(&["a.{cid}"]), ordered);
    assert_eq!(
        names(&ordered),
        ["token", "api-set", "get-a-cid", "call-a-cid"]
    );
}

#[test]
fn a_view_answers_its_endpoints_in_the_order_of_its_config() {
    // The serving task hands the endpoints over as they come (cheap whatever the
    // config's size); the answer, off it, puts them in config order and leaves out
    // those of patterns the config no longer declares.
    let config = Config::parse(
        "t.yaml",
        "version: 1\nresources:\n  b.{cid}:\n    fields:\n      x: { type: string }\n  a.{cid}:\n    fields:\n      x: { type: string }\n",
    )
    .unwrap();
    let endpoint =
        |route, pattern: Option<&str>| Arc::new(Endpoint::new(route, pattern, "s", None));
    let mut view = view();
    view.endpoints = vec![
        endpoint(Route::Get, Some("a.{cid}")),
        endpoint(Route::Get, Some("gone.{cid}")),
        endpoint(Route::Get, Some("b.{cid}")),
        endpoint(Route::Token, None),
    ];
    view.order = Some(Arc::new(config));
    let info: Value = serde_json::from_slice(&view.answer(Verb::Info)).unwrap();
    let names: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["token", "get-b-cid", "get-a-cid"]);
}
