use serde_json::json;

use super::*;

fn shipped() -> Config {
    Config::parse("resources.yaml", include_str!("../../resources.yaml")).unwrap()
}

fn ask(action: Action, rid: &str, cid: &str, token: Option<Value>) -> String {
    let q = Question {
        action,
        rid: rid.into(),
        cid: cid.into(),
        token,
        query: None,
    };
    explain(&shipped(), &q).unwrap()
}

#[test]
fn a_get_shows_the_rules_and_the_model() {
    let out = ask(
        Action::Get,
        "session.user.c1",
        "c1",
        Some(json!({"userId": 42, "name": "Ann", "role": "admin"})),
    );
    assert!(out.contains("pattern    session.user.{cid}"), "{out}");
    assert!(out.contains("params     cid = \"c1\""), "{out}");
    assert!(
        out.contains("get         cid == params.cid\n              -> granted"),
        "{out}"
    );
    assert!(out.contains("\"name\":\"Ann\""), "{out}");
    let other = ask(Action::Get, "session.user.c1", "c2", None);
    assert!(
        other.contains("-> denied") && other.contains("get        denied"),
        "{other}"
    );
}

#[test]
fn a_call_says_whether_it_is_allowed_and_valid() {
    let token = Some(json!({"userId": 42}));
    let set = |params: Value| Action::Call {
        method: "set".into(),
        params,
    };
    let ok = ask(
        set(json!({"theme": "dark"})),
        "session.prefs.c1",
        "c1",
        token.clone(),
    );
    assert!(
        ok.contains("granted and valid") && ok.contains("\"theme\":\"dark\""),
        "{ok}"
    );
    let bad = ask(
        set(json!({"fontSize": 99})),
        "session.prefs.c1",
        "c1",
        token,
    );
    assert!(
        bad.contains("refused:") && bad.contains("system.invalidParams"),
        "{bad}"
    );
    let out = ask(
        set(json!({"theme": "dark"})),
        "session.prefs.c1",
        "c1",
        None,
    );
    assert!(out.contains("denied by the access rules"), "{out}");
}

#[test]
fn rules_see_the_model_as_the_engine_binds_it() {
    let config = Config::parse(
        "r.yaml",
        "version: 1\nresources:\n  a.{cid}:\n    fields:\n      home: { type: ref, from: \"users.user.{{token.id}}\" }\n      tags: { type: data, default: [x] }\n    access:\n      get: model.home == 'users.user.1' && model.tags[0] == 'x'\n",
    )
    .unwrap();
    let q = Question {
        action: Action::Get,
        rid: "a.c1".into(),
        cid: "c1".into(),
        token: Some(json!({"id": 1})),
        query: None,
    };
    let out = explain(&config, &q).unwrap();
    assert!(
        out.contains("-> granted") && out.contains("get        granted"),
        "{out}"
    );
}

#[test]
fn a_name_no_pattern_matches_is_an_error() {
    let q = Question {
        action: Action::Get,
        rid: "nope.x".into(),
        cid: "c1".into(),
        token: None,
        query: None,
    };
    let err = explain(&shipped(), &q).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no resource pattern matches `nope.x`: connres would not answer it (another service may)"
    );
}

#[test]
fn a_misspelt_name_gets_the_nearest_name_a_pattern_serves() {
    let config = Config::parse(
        "r.yaml",
        "version: 1\nresources:\n  shop.cart.{cid}: {}\n  store.{shop}.info: {}\n  session.user.{cid}: {}\n",
    )
    .unwrap();
    let ask = |rid: &str| {
        let q = Question {
            action: Action::Get,
            rid: rid.into(),
            cid: "c1".into(),
            token: None,
            query: None,
        };
        explain(&config, &q).unwrap_err().to_string()
    };
    assert_eq!(
        ask("shop.kart.c1"),
        "no resource pattern matches `shop.kart.c1`: connres would not answer it (another service may); did you mean `shop.cart.c1` (pattern `shop.cart.{cid}`)?"
    );
    assert!(
        ask("store.acme.inf")
            .ends_with("; did you mean `store.acme.info` (pattern `store.{shop}.info`)?"),
        "{}",
        ask("store.acme.inf")
    );
    assert!(
        ask("sesion.user.c7")
            .ends_with("did you mean `session.user.c7` (pattern `session.user.{cid}`)?"),
        "{}",
        ask("sesion.user.c7")
    );
    // Nothing near, or not as many parts as any pattern: no suggestion.
    assert!(ask("orders.list.c1").ends_with("(another service may)"));
    assert!(ask("shop.cart").ends_with("(another service may)"));
}

#[test]
fn a_set_shows_the_writable_rules_of_the_fields_it_writes() {
    let config = Config::parse(
        "shop.yaml",
        include_str!("../../tests/config/valid/shop.yaml"),
    )
    .unwrap();
    let ask = |token: Option<Value>, params: Value| {
        let q = Question {
            action: Action::Call {
                method: "set".into(),
                params,
            },
            rid: "shop.cart.c1".into(),
            cid: "c1".into(),
            token,
            query: None,
        };
        explain(&config, &q).unwrap()
    };
    let out = ask(None, json!({"items": 2, "coupon": "A"}));
    assert!(
        out.contains("  fields.items.writable token != null\n              -> denied\n"),
        "{out}"
    );
    // Only the fields the set writes, and only those with a rule.
    assert!(
        !out.contains("fields.coupon") && !out.contains("fields.express"),
        "{out}"
    );
    assert!(
        out.contains("call set   refused: field `items` is not writable for this call: its `writable` rule denies (system.invalidParams)"),
        "{out}"
    );
    let out = ask(Some(json!({"userId": 1})), json!({"items": 2}));
    assert!(
        out.contains("  fields.items.writable token != null\n              -> granted\n"),
        "{out}"
    );
    assert!(out.contains("granted and valid"), "{out}");
}

#[test]
fn a_call_s_rules_are_shown_for_what_it_writes() {
    let config = Config::parse(
        "r.yaml",
        "version: 1\nresources:\n  a.{cid}:\n    fields:\n      address: { type: string, writable: true }\n      express: { type: boolean, writable: true }\n    access:\n      get: true\n      call: token != null || fields.all(f, f == 'address')\n",
    )
    .unwrap();
    let ask = |params: Value| {
        let q = Question {
            action: Action::Call {
                method: "set".into(),
                params,
            },
            rid: "a.c1".into(),
            cid: "c1".into(),
            token: None,
            query: None,
        };
        explain(&config, &q).unwrap()
    };
    let rule = "call        token != null || fields.all(f, f == 'address')";
    let out = ask(json!({"address": "Main St"}));
    assert!(
        out.contains(&format!("{rule}\n              -> granted")),
        "{out}"
    );
    assert!(out.contains("granted and valid"), "{out}");
    // The gateway's access answer (a call writing nothing) grants; connres denies the
    // call for what it writes.
    let out = ask(json!({"address": "Main St", "express": true}));
    assert!(
        out.contains(&format!("{rule}\n              -> denied")),
        "{out}"
    );
    assert!(
        out.contains("call set   refused: access denied: set on a.c1 (system.accessDenied)"),
        "{out}"
    );
}

#[test]
fn an_add_of_data_that_breaks_its_shape_is_refused_naming_the_key() {
    let shapes = Config::parse(
        "data-shapes.yaml",
        include_str!("../../tests/config/valid/data-shapes.yaml"),
    )
    .unwrap();
    let add = |value: Value| Question {
        action: Action::Call {
            method: "add".into(),
            params: json!({ "value": value }),
        },
        rid: "session.cart.c1".into(),
        cid: "c1".into(),
        token: None,
        query: None,
    };
    let ok = explain(&shapes, &add(json!({"sku": "A1", "qty": 2}))).unwrap();
    assert!(
        ok.contains("granted and valid") && ok.contains(r#"[{"data":{"qty":2,"sku":"A1"}}]"#),
        "{ok}"
    );
    let bad = explain(&shapes, &add(json!({"sku": "A1", "qty": 2, "size": "L"}))).unwrap();
    assert!(
        bad.contains("refused: value: key `size`: is not declared (the keys are sku, qty, note) (system.invalidParams)"),
        "{bad}"
    );
}
