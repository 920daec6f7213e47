//! Bounded state and hostile input: idle expiry, the size bound, the resets they owe,
//! and requests that must leave nothing behind or change nothing.

use std::time::Duration;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn api_set(t: &mut T, rid: &str, values: Value) -> Outcome {
    let payload = json!({ "values": values }).to_string();
    t.handle(Request::ApiSet {
        rid,
        payload: payload.as_bytes(),
    })
}

fn sweep(t: &mut T) -> usize {
    t.engine.sweep(&t.config)
}

/// Every reset the engine owes, batch by batch.
fn resets(t: &mut T) -> Vec<ResetBatch> {
    std::iter::from_fn(|| t.engine.take_reset(RESET_BATCH)).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn idle_connections_expire_and_gateways_are_told_what_they_may_still_cache() {
    let mut t = T::with_state("state: { idle_ttl: 1h }\n");
    // c1: logged in, its user model cached, prefs written.
    t.token("c1", ANN);
    t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert_eq!(t.get("session.user.c1"), ann_user());
    let set = t.call(
        "session.prefs.c1",
        "set",
        r#"{"cid":"c1","params":{"theme":"dark"}}"#,
    );
    assert_eq!(reply(&set), json!({"result": null}));
    // c2: logged out; prefs access cached without a token (its `set` rule reads it).
    t.access("session.prefs.c2", r#"{"cid":"c2"}"#);
    // c3: touched again later, so it stays.
    t.access("session.user.c3", r#"{"cid":"c3"}"#);
    t.clock.advance(HOUR / 2);
    t.get("session.user.c3");
    t.clock.advance(HOUR / 2);
    assert_eq!(sweep(&mut t), 2);

    assert!(t.engine.store().connection("c1").is_none());
    assert!(t.engine.store().connection("c2").is_none());
    assert!(t.engine.store().connection("c3").is_some());
    // Access first (the token comes back with the re-asked access), then re-fetches.
    assert_eq!(
        resets(&mut t),
        vec![
            ResetBatch {
                resources: vec![],
                access: names(&["session.user.c1", "session.prefs.c2"]),
            },
            ResetBatch {
                resources: names(&["session.prefs.c1"]),
                access: vec![],
            },
        ]
    );
    // Dropped state reads as its defaults.
    assert_eq!(
        t.get("session.prefs.c1"),
        json!({"theme": "light", "fontSize": 14})
    );
    // The re-asked access fills the token in again: the cached model stays right.
    t.access(
        "session.user.c1",
        &format!(r#"{{"cid":"c1","token":{}}}"#, &ANN[9..ANN.len() - 1]),
    );
    assert_eq!(t.get("session.user.c1"), ann_user());
}

#[test]
fn nothing_expires_before_its_time() {
    let mut t = T::with_state("state: { idle_ttl: 1h }\n");
    t.token("c1", ANN);
    t.clock.advance(HOUR - Duration::from_secs(1));
    assert_eq!(sweep(&mut t), 0);
    assert!(t.engine.store().connection("c1").is_some());
    assert!(resets(&mut t).is_empty());
}

#[test]
fn models_without_a_cid_expire_on_their_own() {
    let mut t = T::with_state("state: { idle_ttl: 1h }\n");
    for name in ["a", "b", "c"] {
        api_set(
            &mut t,
            &format!("public.board.{name}"),
            json!({"title": name}),
        );
    }
    t.clock.advance(HOUR / 2);
    // Written to, and read: both keep a model.
    api_set(&mut t, "public.board.b", json!({"title": "B2"}));
    t.get("public.board.c");
    t.clock.advance(HOUR / 2);
    assert_eq!(sweep(&mut t), 1);
    assert_eq!(
        resets(&mut t),
        vec![ResetBatch {
            resources: names(&["public.board.a"]),
            access: vec![],
        }]
    );
    assert_eq!(t.get("public.board.a"), json!({"title": null}));
    assert_eq!(t.get("public.board.b"), json!({"title": "B2"}));
    assert_eq!(t.get("public.board.c"), json!({"title": "c"}));
}

#[test]
fn past_max_entries_the_least_recently_touched_connection_goes_first() {
    let mut t = T::with_state("state: { max_entries: 3 }\n");
    for cid in ["c1", "c2", "c3"] {
        t.token(cid, ANN);
        t.get(&format!("session.user.{cid}"));
    }
    assert_eq!(t.engine.store().entries(), 3);
    t.get("session.user.c1");
    t.token("c4", ANN);
    assert_eq!(t.engine.store().entries(), 3);
    assert!(t.engine.store().connection("c2").is_none());
    for cid in ["c1", "c3", "c4"] {
        assert!(t.engine.store().connection(cid).is_some(), "{cid} kept");
    }
    assert_eq!(
        resets(&mut t),
        vec![ResetBatch {
            resources: vec![],
            access: names(&["session.user.c2"]),
        }]
    );
}

#[test]
fn a_lower_max_entries_after_a_reload_is_reached_by_the_sweep() {
    let mut t = T::new();
    for i in 0..10 {
        t.token(&format!("c{i}"), ANN);
    }
    let smaller = Config::parse("t.yaml", &format!("state: {{ max_entries: 4 }}\n{YAML}")).unwrap();
    t.engine.reloaded(&t.config, &smaller);
    t.config = smaller;
    assert_eq!(sweep(&mut t), 6);
    assert_eq!(t.engine.store().entries(), 4);
    assert!(t.engine.store().connection("c9").is_some());
}

#[test]
fn denied_requests_and_unknown_names_create_nothing() {
    let mut t = T::new();
    for i in 0..1000 {
        let rid = format!("session.prefs.other{i}");
        let out = t.access(&rid, r#"{"cid":"c1","token":{"userId":1}}"#);
        assert_eq!(reply(&out), json!({"result": {"get": false}}));
        let out = t.call(
            &rid,
            "set",
            r#"{"cid":"c1","token":{"userId":1},"params":{}}"#,
        );
        assert_eq!(error_code(&out), "system.accessDenied");
    }
    let out = t.handle(Request::Get {
        rid: "nobody.serves.this",
    });
    assert!(out.reply.is_none());
    assert_eq!(t.engine.store().entries(), 0);
}

#[test]
fn empty_writes_create_nothing() {
    let mut t = T::new();
    let out = api_set(&mut t, "session.prefs.c1", json!({}));
    assert_eq!(reply(&out), json!({"result": null}));
    let out = api_set(&mut t, "public.board.x", json!({}));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(t.engine.store().entries(), 0);
    // A client's empty set learns its token, but keeps no model.
    let out = t.call(
        "session.prefs.c1",
        "set",
        r#"{"cid":"c1","token":{"userId":1},"params":{}}"#,
    );
    assert_eq!(reply(&out), json!({"result": null}));
    assert!(out.events.is_empty());
    let conn = t
        .engine
        .store()
        .connection("c1")
        .expect("the token is known");
    assert!(conn.models.is_empty());
}

#[test]
fn a_reset_forgets_a_model_that_only_held_written_values() {
    let mut t = T::new();
    // session.draft's rules and fields ignore the token.
    api_set(&mut t, "session.draft.c1", json!({"text": "x"}));
    assert_eq!(t.engine.store().entries(), 1);
    t.handle(Request::ApiReset {
        rid: "session.draft.c1",
        payload: b"",
    });
    assert!(t.engine.store().connection("c1").unwrap().models.is_empty());
}

#[test]
fn a_token_event_without_a_token_key_changes_nothing() {
    let mut t = T::new();
    t.get("session.user.c1");
    t.token("c1", ANN);
    assert!(t.token("c1", r#"{"tid":"t1"}"#).is_empty());
    assert_eq!(t.get("session.user.c1"), ann_user());
    // A null token is a logout.
    assert_eq!(
        t.token("c1", r#"{"token":null,"tid":"t1"}"#),
        vec![change("session.user.c1", null_user())]
    );
}

#[test]
fn a_stale_call_after_logout_is_denied() {
    let mut t = T::new();
    t.token("c1", ANN);
    let set = |t: &mut T| {
        t.call(
            "session.prefs.c1",
            "set",
            r#"{"cid":"c1","token":{"userId":42},"params":{"theme":"dark"}}"#,
        )
    };
    assert!(set(&mut t)
        .reply
        .is_some_and(|r| &r[..] == b"{\"result\":null}"));
    t.token("c1", LOGOUT);
    // In flight with the old token: the rule holds against what is known now.
    let out = set(&mut t);
    assert_eq!(error_code(&out), "system.accessDenied");
    assert!(out.events.is_empty());
    // Access keeps the gateway's token: it caches its answer per token.
    let out = t.access("session.prefs.c1", r#"{"cid":"c1","token":{"userId":42}}"#);
    assert_eq!(
        reply(&out),
        json!({"result": {"get": true, "call": "set,reset"}})
    );
}

#[test]
fn names_with_wildcards_are_refused_everywhere() {
    let mut t = T::new();
    for rid in ["session.prefs.*", "session.prefs.>", "session.prefs. x"] {
        let out = api_set(&mut t, rid, json!({"theme": "dark"}));
        assert_eq!(error_code(&out), "system.invalidParams", "{rid}");
        let out = t.handle(Request::ApiReset { rid, payload: b"" });
        assert_eq!(error_code(&out), "system.invalidParams", "{rid}");
        let out = t.handle(Request::Get { rid });
        assert_eq!(error_code(&out), "system.invalidParams", "{rid}");
        let out = t.access(rid, r#"{"cid":"c1"}"#);
        assert_eq!(error_code(&out), "system.invalidParams", "{rid}");
        let out = t.call(rid, "set", r#"{"cid":"c1","params":{}}"#);
        assert_eq!(error_code(&out), "system.invalidParams", "{rid}");
    }
    // Empty parts.
    for rid in ["session.prefs.", "session..prefs.c1", ""] {
        let out = api_set(&mut t, rid, json!({"theme": "dark"}));
        assert_eq!(error_code(&out), "system.invalidParams", "{rid:?}");
    }
    // A cid that is not a connection ID, in a payload or a token event.
    let out = t.access("session.prefs.c1", r#"{"cid":"*"}"#);
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(t.token("*", ANN).is_empty());
    assert!(t.token(">", ANN).is_empty());
    assert_eq!(t.engine.store().entries(), 0);
}

#[test]
fn a_logged_out_model_that_follows_the_token_is_named_so_a_later_login_reaches_it() {
    let mut t = T::with_state("state: { idle_ttl: 1h }\n");
    // c1: logged out, its user model cached by the gateway (all null).
    t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert_eq!(t.get("session.user.c1"), null_user());
    t.clock.advance(HOUR);
    assert_eq!(sweep(&mut t), 1);
    assert_eq!(
        resets(&mut t),
        vec![ResetBatch {
            resources: vec![],
            access: names(&["session.user.c1"]),
        }]
    );
    // The gateway asks again (no token) and keeps its null model; the login that
    // follows must reach it.
    t.access("session.user.c1", r#"{"cid":"c1"}"#);
    assert_eq!(
        t.token("c1", ANN),
        vec![change("session.user.c1", ann_user())]
    );
}

/// A token whose claim would make the `user` reference point somewhere else (a dot),
/// or at something the gateway refuses, gives a null reference instead.
#[test]
fn a_token_that_renders_an_invalid_reference_gives_a_null_one() {
    let mut t = T::new();
    for (cid, user_id) in [
        ("d1", json!("a.b.c")),
        ("d2", json!("x\u{0}")),
        ("d3", json!("é")),
    ] {
        t.token(
            cid,
            &json!({"token": {"userId": user_id, "name": "n"}}).to_string(),
        );
        let model = t.get(&format!("session.user.{cid}"));
        assert_eq!(model["user"], Value::Null, "{cid}: {model}");
        assert_eq!(model["name"], json!("n"));
    }
    t.token("d4", &json!({"token": {"userId": 7.0}}).to_string());
    assert_eq!(
        t.get("session.user.d4")["user"],
        json!({"rid": "users.user.7"})
    );
}

/// A token over `state.max_token_bytes` is never kept: its token event is ignored, and
/// a request carrying it is refused, so no connection's record grows with it.
#[test]
fn a_token_over_max_token_bytes_is_ignored_or_refused_and_never_kept() {
    let mut t = T::with_state("state: { max_token_bytes: 1000 }\n");
    let big = json!({"userId": 1, "blob": "x".repeat(2_000)});
    let out = t.handle(Request::Token {
        cid: "b1",
        payload: json!({ "token": big }).to_string().as_bytes(),
    });
    assert_eq!(out.status, Status::Ignored);
    assert!(t.engine.store().connection("b1").is_none());
    // Through an access request for an unknown connection, and a call.
    let access = json!({"cid": "b2", "token": big}).to_string();
    let out = t.access("session.user.b2", &access);
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(error_message(&out).contains("over state.max_token_bytes (1000)"));
    let call = json!({"cid": "b2", "token": big, "params": {"theme": "dark"}}).to_string();
    let out = t.call("session.prefs.b2", "set", &call);
    assert!(error_message(&out).contains("max_token_bytes"));
    assert!(t.engine.store().connection("b2").is_none());
    // Under the limit: as ever.
    t.token(
        "b3",
        &json!({"token": {"userId": 3, "name": "n"}}).to_string(),
    );
    assert_eq!(t.get("session.user.b3")["id"], json!(3));
}

/// A message over the most connres reads (twice `max_token_bytes` plus 256 KiB at the
/// default `max_value_bytes`) is
/// refused unread: a request for one of its names with `system.invalidParams`, a token
/// event ignored; a request for a name it does not serve still gets no reply.
#[test]
fn a_payload_over_the_most_connres_reads_is_refused_unread() {
    let mut t = T::with_state("state: { max_token_bytes: 1000 }\n");
    let max = 2 * 1000 + 256 * 1024;
    // Not even JSON: it is never parsed.
    let big = vec![b'['; max + 1];
    for (out, what) in [
        (
            t.access("session.user.c1", std::str::from_utf8(&big).unwrap()),
            "access",
        ),
        (
            t.call(
                "session.prefs.c1",
                "set",
                std::str::from_utf8(&big).unwrap(),
            ),
            "call",
        ),
        (
            t.handle(Request::ApiSet {
                rid: "session.prefs.c1",
                payload: &big,
            }),
            "backend set",
        ),
    ] {
        assert_eq!(error_code(&out), "system.invalidParams", "{what}");
        assert!(
            error_message(&out).contains(&format!("over the most connres reads ({max}")),
            "{what}: {}",
            error_message(&out)
        );
        assert!(out.events.is_empty(), "{what}");
        assert!(
            out.resource.is_some(),
            "{what}: counted against its resource"
        );
    }
    let out = t.handle(Request::Token {
        cid: "c1",
        payload: &big,
    });
    assert_eq!(out.status, Status::Ignored);
    let out = t.access("elsewhere.thing", std::str::from_utf8(&big).unwrap());
    assert_eq!(out.status, Status::Unanswered);
    assert!(out.reply.is_none());
    // At the limit, read as ever (and refused here for what it says).
    let at = vec![b' '; max];
    let out = t.handle(Request::ApiSet {
        rid: "session.prefs.c1",
        payload: &at,
    });
    assert!(
        !error_message(&out).contains("most connres reads"),
        "{}",
        error_message(&out)
    );
    // Values allowed to be larger make room for themselves, twice over.
    let t = T::with_state("state: { max_token_bytes: 1000, max_value_bytes: 524288 }\n");
    assert_eq!(t.config.state.max_payload_bytes(), 2 * 1000 + 2 * 524288);
}
