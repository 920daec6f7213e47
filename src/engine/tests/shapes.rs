//! Data of a declared shape through the engine: clients' and the backend's writes of a
//! shaped data field and of shaped data items, refused whole when a key is wrong, and
//! a reload or a load from the shared store that tightens the shape.

use super::*;

const SHAPES: &str = include_str!("../../../tests/config/valid/data-shapes.yaml");
const CART: &str = "session.cart.c1";
const LAYOUT: &str = "session.layout.c1";

fn t() -> T {
    let clock = Clock::manual();
    T {
        config: Config::parse("c.yaml", SHAPES).unwrap_or_else(|e| panic!("{e}")),
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    }
}

fn params(params: Value) -> String {
    json!({"cid": "c1", "params": params}).to_string()
}

fn items(t: &mut T, rid: &str) -> Value {
    reply(&t.handle(Request::Get { rid }))["result"]["collection"].clone()
}

fn backend(t: &mut T, method: &str, rid: &str, payload: Value) -> Outcome {
    let payload = payload.to_string();
    let payload = payload.as_bytes();
    t.handle(match method {
        "add" => Request::ApiAdd { rid, payload },
        _ => Request::ApiSet { rid, payload },
    })
}

/// The message of a `system.invalidParams` reply; asserts nothing was published.
fn invalid(out: &Outcome) -> String {
    assert!(out.events.is_empty(), "published {:?}", events(out));
    let reply = reply(out);
    assert_eq!(reply["error"]["code"], "system.invalidParams", "{reply}");
    reply["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn items_of_the_shape_are_added_and_others_refused_naming_the_key() {
    let mut t = t();
    let line = json!({"sku": "A1", "qty": 2});
    let out = t.call(CART, "add", &params(json!({ "value": { "data": line } })));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(
        events(&out),
        vec![(
            format!("event.{CART}.add"),
            json!({"value": {"data": line}, "idx": 0})
        )]
    );
    for (value, message) in [
        (
            json!({"sku": "A2", "qty": 0}),
            "value: key `qty`: 0 is below min 1",
        ),
        (
            json!({"qty": 1}),
            "value: key `sku`: is missing (it is not optional)",
        ),
        (
            json!({"sku": "A2", "qty": 1, "size": "L"}),
            "value: key `size`: is not declared (the keys are sku, qty, note)",
        ),
        (
            json!({"data": [1]}),
            "value: [1] is not an object with keys sku, qty, note",
        ),
    ] {
        let out = t.call(CART, "add", &params(json!({ "value": value })));
        assert_eq!(invalid(&out), message);
        let out = backend(&mut t, "add", CART, json!({ "value": value }));
        assert_eq!(invalid(&out), message);
    }
    // The backend adds what fits, as clients do; an optional key may be left out.
    let noted = json!({"sku": "A3", "qty": 1, "note": "gift"});
    let out = backend(&mut t, "add", CART, json!({ "value": noted }));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(
        items(&mut t, CART),
        json!([{ "data": line }, { "data": noted }])
    );
}

#[test]
fn a_set_with_one_bad_key_stores_nothing_of_the_set() {
    let mut t = t();
    let window = json!({"width": 1024, "height": 768, "panel": {"side": "left", "open": true}});
    let out = t.call(
        LAYOUT,
        "set",
        &params(json!({ "window": window, "extra": [1] })),
    );
    assert_eq!(reply(&out), json!({"result": null}));
    let bad = json!({"width": 1024, "height": 768, "panel": {"side": "top", "open": true}});
    let message =
        "field `window`: key `panel.side`: \"top\" is not one of [\"left\", \"right\"] (enum)";
    let out = t.call(
        LAYOUT,
        "set",
        &params(json!({ "window": bad, "extra": [2] })),
    );
    assert_eq!(invalid(&out), message);
    let out = backend(
        &mut t,
        "set",
        LAYOUT,
        json!({"values": { "window": bad, "extra": [2] }}),
    );
    assert_eq!(invalid(&out), message);
    assert_eq!(
        t.get(LAYOUT),
        json!({"window": {"data": window}, "extra": {"data": [1]}})
    );
}

#[test]
fn a_reload_that_tightens_the_shape_drops_what_no_longer_fits() {
    let mut t = t();
    for line in [
        json!({"sku": "A1", "qty": 2}),
        json!({"sku": "A2", "qty": 20}),
        json!({"sku": "A3", "qty": 3, "note": "gift"}),
    ] {
        t.call(CART, "add", &params(json!({ "value": line })));
    }
    t.call(
        LAYOUT,
        "set",
        &params(json!({"window": {"width": 5000, "height": 600}})),
    );
    // `qty` at most 10, `note` gone, `width` at most 4000.
    let tighter = SHAPES
        .replace(
            "qty: { type: integer, min: 1, max: 99 }",
            "qty: { type: integer, min: 1, max: 10 }",
        )
        .replace("          note: { type: string, optional: true }\n", "")
        .replace(
            "width: { type: integer, min: 100, max: 10000 }",
            "width: { type: integer, min: 100, max: 4000 }",
        );
    let tighter = Config::parse("c.yaml", &tighter).unwrap();
    // A set: in no order.
    let mut invalidated = crate::engine::invalidated_patterns(&t.config, &tighter);
    invalidated.sort();
    assert_eq!(
        invalidated,
        vec![
            "session.cart.{cid}".to_string(),
            "session.layout.{cid}".to_string()
        ]
    );
    let dropped = t.engine.reloaded(&t.config, &tighter);
    t.config = tighter;
    assert_eq!(
        dropped.describe(),
        "session.cart.{cid} item: 2 (fails the item's new constraints); \
         session.layout.{cid} window: 1 (fails the field's new constraints)"
    );
    assert_eq!(
        items(&mut t, CART),
        json!([{"data": {"sku": "A1", "qty": 2}}])
    );
    assert_eq!(
        t.get(LAYOUT)["window"],
        json!({"data": {"width": 800, "height": 600}}),
        "back to its default"
    );
}

#[test]
fn a_loaded_unit_loses_the_items_its_shape_refuses() {
    use crate::engine::{fit_unit, DroppedValues};
    use crate::store::record::decode_unit;
    use crate::store::{Unit, UnitKey};
    let t = t();
    let key = UnitKey::Connection("c1".into());
    let stored = json!({"models": [
        {"rid": CART, "items": [
            {"sku": "A1", "qty": 2},
            {"sku": "A2", "qty": 2, "colour": "red"},
            {"sku": "A3"},
        ]},
        {"rid": LAYOUT, "written": {"window": {"width": 1, "height": 600}}},
    ]});
    let mut unit = decode_unit(&key, stored.to_string().as_bytes()).unwrap();
    let mut dropped = DroppedValues::default();
    assert!(fit_unit(&t.config, &mut unit, &key, &mut dropped));
    assert_eq!(
        dropped.describe(),
        "session.cart.{cid} item: 2 (fails the item's new constraints); \
         session.layout.{cid} window: 1 (fails the field's new constraints)"
    );
    let Unit::Connection(conn) = &unit else {
        panic!("a connection")
    };
    assert_eq!(conn.models.len(), 1, "the layout kept nothing written");
    assert_eq!(
        conn.models[0].written().items(),
        &[json!({"sku": "A1", "qty": 2})]
    );
}
