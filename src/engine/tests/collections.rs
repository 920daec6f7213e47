//! Collections through the engine: gets, `add` and `remove` by clients and the backend,
//! their events and indices, logout, the rules, and a reload that tightens the items.

use super::*;
use proptest::prelude::*;

const COLLECTIONS: &str = include_str!("../../../tests/config/valid/collections.yaml");

fn t() -> T {
    let clock = Clock::manual();
    T {
        config: Config::parse("c.yaml", COLLECTIONS).unwrap_or_else(|e| panic!("{e}")),
        engine: Engine::new(MemoryStore::default(), clock.clone()),
        clock,
    }
}

impl T {
    /// The items a get answers; asserts the get produced no events.
    fn items(&mut self, rid: &str) -> Value {
        let out = self.handle(Request::Get { rid });
        assert!(out.events.is_empty(), "get published {:?}", events(&out));
        reply(&out)["result"]["collection"].clone()
    }

    fn api(&mut self, method: &str, rid: &str, payload: Value) -> Outcome {
        let payload = payload.to_string();
        let payload = payload.as_bytes();
        self.handle(match method {
            "add" => Request::ApiAdd { rid, payload },
            "remove" => Request::ApiRemove { rid, payload },
            "set" => Request::ApiSet { rid, payload },
            _ => Request::ApiReset { rid, payload },
        })
    }
}

fn add(rid: &str, value: Value, idx: usize) -> (String, Value) {
    (
        format!("event.{rid}.add"),
        json!({"value": value, "idx": idx}),
    )
}

fn remove(rid: &str, idx: usize) -> (String, Value) {
    (format!("event.{rid}.remove"), json!({ "idx": idx }))
}

fn params(cid: &str, params: Value) -> String {
    json!({"cid": cid, "params": params}).to_string()
}

const RECENT: &str = "session.recent.c1";

#[test]
fn adds_and_removes_announce_their_indices_before_the_reply() {
    let mut t = t();
    assert_eq!(t.items(RECENT), json!([]));
    let out = t.call(RECENT, "add", &params("c1", json!({"value": "home"})));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(events(&out), vec![add(RECENT, json!("home"), 0)]);
    let out = t.call(
        RECENT,
        "add",
        &params("c1", json!({"value": "a", "idx": 0})),
    );
    assert_eq!(events(&out), vec![add(RECENT, json!("a"), 0)]);
    t.call(RECENT, "add", &params("c1", json!({"value": "z"})));
    assert_eq!(t.items(RECENT), json!(["a", "home", "z"]));
    let out = t.call(RECENT, "remove", &params("c1", json!({"idx": 1})));
    assert_eq!(events(&out), vec![remove(RECENT, 1)]);
    let out = t.call(RECENT, "remove", &params("c1", json!({"value": "z"})));
    assert_eq!(events(&out), vec![remove(RECENT, 1)]);
    assert_eq!(t.items(RECENT), json!(["a"]));
    // A value that is not there: nothing changes, nothing is announced.
    let out = t.call(RECENT, "remove", &params("c1", json!({"value": "gone"})));
    assert_eq!(reply(&out), json!({"result": null}));
    assert!(out.events.is_empty());
}

#[test]
fn bad_adds_and_removes_are_refused_with_what_was_wrong() {
    let mut t = t();
    t.call(RECENT, "add", &params("c1", json!({"value": "a"})));
    for (method, sent, says) in [
        ("add", json!({}), "add needs a `value`"),
        ("add", json!({"value": null}), "null is not an item"),
        ("add", json!({"value": 7}), "is not a string"),
        ("add", json!({"value": "x".repeat(41)}), "max_length 40"),
        (
            "add",
            json!({"value": "b", "idx": 2}),
            "`idx` 2 is past the end",
        ),
        (
            "add",
            json!({"value": "b", "idx": -1}),
            "`idx` must be a whole number",
        ),
        ("add", json!({"value": "b", "at": 0}), "add takes no `at`"),
        ("remove", json!({"idx": 1}), "no item at `idx` 1"),
        ("remove", json!({}), "remove takes `idx` or `value`"),
        ("remove", json!({"idx": 0, "value": "a"}), "one of them"),
    ] {
        let out = t.call(RECENT, method, &params("c1", sent.clone()));
        assert_eq!(error_code(&out), "system.invalidParams", "{sent}");
        assert!(
            error_message(&out).contains(says),
            "{sent}: {}",
            error_message(&out)
        );
        assert!(out.events.is_empty());
    }
    let out = t.call(RECENT, "set", &params("c1", json!({"value": "a"})));
    assert_eq!(error_code(&out), "system.methodNotFound");
    assert!(error_message(&out).contains("serves add and remove"));
    // Another connection's collection: the call rule denies.
    let out = t.call(RECENT, "add", &params("c2", json!({"value": "b"})));
    assert_eq!(error_code(&out), "system.accessDenied");
    assert_eq!(t.items(RECENT), json!(["a"]));
}

#[test]
fn a_full_collection_refuses_an_add() {
    let mut t = t();
    let rid = "session.tags.c1";
    for (i, v) in ["green", "blue", "green"].iter().enumerate() {
        let out = t.call(rid, "add", &params("c1", json!({ "value": v })));
        assert_eq!(events(&out), vec![add(rid, json!(v), i)]);
    }
    let out = t.call(rid, "add", &params("c1", json!({"value": "blue"})));
    assert_eq!(error_code(&out), "system.invalidParams");
    assert!(error_message(&out).contains("full: it holds max_items 3"));
    // Whoever writes it: the backend too.
    let out = t.api("add", rid, json!({"value": "blue"}));
    assert_eq!(error_code(&out), "system.invalidParams");
}

#[test]
fn the_writable_rule_decides_each_add_and_remove() {
    let mut t = t();
    let rid = "session.tags.c1";
    // `values.value != 'red' || token != null`: no token, no red.
    let out = t.call(rid, "add", &params("c1", json!({"value": "red"})));
    assert_eq!(error_code(&out), "system.accessDenied");
    assert!(error_message(&out).contains("its `writable` rule denies"));
    t.token("c1", ANN);
    let out = t.call(rid, "add", &params("c1", json!({"value": "red"})));
    assert_eq!(events(&out), vec![add(rid, json!("red"), 0)]);
}

#[test]
fn only_the_backend_writes_a_collection_that_is_not_writable() {
    let mut t = t();
    let rid = "board.b1.pins";
    let out = t.call(rid, "add", &params("c1", json!({"value": {"rid": "a.b"}})));
    assert_eq!(error_code(&out), "system.accessDenied");
    let out = t.api("add", rid, json!({"value": {"rid": "notes.n1"}}));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(events(&out), vec![add(rid, json!({"rid": "notes.n1"}), 0)]);
    let out = t.api("add", rid, json!({"value": {"rid": "notes.n0"}, "idx": 0}));
    assert_eq!(events(&out), vec![add(rid, json!({"rid": "notes.n0"}), 0)]);
    assert_eq!(
        t.items(rid),
        json!([{"rid": "notes.n0"}, {"rid": "notes.n1"}])
    );
    let out = t.api("add", rid, json!({"value": {"rid": "not a name"}}));
    assert_eq!(error_code(&out), "system.invalidParams");
    let out = t.api("remove", rid, json!({"value": {"rid": "notes.n0"}}));
    assert_eq!(events(&out), vec![remove(rid, 0)]);
    // A model's write does not apply to a collection, nor a collection's to a model.
    let out = t.api("set", rid, json!({"values": {"x": 1}}));
    assert!(error_message(&out).contains("is a collection"));
    // The backend's reset empties it, from the end.
    t.api("add", rid, json!({"value": {"rid": "notes.n2"}}));
    let out = t.api("reset", rid, json!({}));
    assert_eq!(events(&out), vec![remove(rid, 1), remove(rid, 0)]);
    assert_eq!(t.items(rid), json!([]));
}

#[test]
fn a_logout_empties_a_collection_that_resets_on_logout_and_keeps_one_that_does_not() {
    let mut t = t();
    t.token("c1", ANN);
    t.call(RECENT, "add", &params("c1", json!({"value": "a"})));
    for v in ["green", "blue"] {
        t.call(
            "session.tags.c1",
            "add",
            &params("c1", json!({ "value": v })),
        );
    }
    let out = t.token("c1", LOGOUT);
    assert_eq!(
        out,
        vec![remove("session.tags.c1", 1), remove("session.tags.c1", 0)]
    );
    assert_eq!(t.items("session.tags.c1"), json!([]));
    assert_eq!(
        t.items(RECENT),
        json!(["a"]),
        "reset: {{ on_logout: false }}"
    );
}

#[test]
fn a_reload_drops_the_items_a_tightened_item_refuses_and_those_past_max_items() {
    let mut t = t();
    for v in ["short", "a longer page"] {
        t.call(RECENT, "add", &params("c1", json!({ "value": v })));
    }
    for v in ["green", "blue", "green"] {
        t.call(
            "session.tags.c1",
            "add",
            &params("c1", json!({ "value": v })),
        );
    }
    let tighter = COLLECTIONS
        .replace("max_length: 40", "max_length: 8")
        .replace("max_items: 3", "max_items: 2");
    let tighter = Config::parse("c.yaml", &tighter).unwrap();
    let dropped = t.engine.reloaded(&t.config, &tighter);
    t.config = tighter;
    assert_eq!(dropped.total(), 2, "{}", dropped.describe());
    assert!(dropped
        .describe()
        .contains("fails the item's new constraints"));
    assert!(dropped.describe().contains("past the new max_items"));
    assert_eq!(t.items(RECENT), json!(["short"]));
    assert_eq!(t.items("session.tags.c1"), json!(["green", "blue"]));
}

#[test]
fn a_collection_that_becomes_a_model_loses_its_items() {
    let mut t = t();
    t.call(RECENT, "add", &params("c1", json!({"value": "a"})));
    let model = COLLECTIONS.replace(
        "    collection:\n      item: { type: string, max_length: 40 }\n      max_items: 20\n      writable: true\n",
        "    fields:\n      page: { type: string, writable: true }\n",
    );
    let model = Config::parse("c.yaml", &model).unwrap();
    let dropped = t.engine.reloaded(&t.config, &model);
    t.config = model;
    assert_eq!(dropped.total(), 1);
    assert!(dropped.describe().contains("now a model"));
    assert_eq!(t.get(RECENT), json!({"page": null}));
}

proptest! {
    /// A shadow list kept from the events alone (what a gateway holds) equals what a
    /// get answers after every add and remove, whoever makes it and in any order.
    #[test]
    fn a_gateways_copy_from_the_events_equals_the_get(
        steps in proptest::collection::vec((0u8..4, 0usize..6, 0u8..3), 1..40),
    ) {
        let mut t = t();
        let rid = "board.b1.pins";
        let mut shadow: Vec<Value> = Vec::new();
        for (op, at, v) in steps {
            let value = json!({"rid": format!("notes.n{v}")});
            let sent = match op {
                0 => json!({"value": value}),
                1 => json!({"value": value, "idx": at}),
                2 => json!({"idx": at}),
                _ => json!({"value": value}),
            };
            let method = if op < 2 { "add" } else { "remove" };
            let out = t.api(method, rid, sent);
            fold_list(&mut shadow, rid, &events(&out)).map_err(TestCaseError::fail)?;
            prop_assert_eq!(Value::Array(shadow.clone()), t.items(rid));
        }
    }
}

#[test]
fn a_ref_item_with_a_template_takes_the_value_that_fills_it() {
    let mut t = t();
    let rid = "session.favorites.c1";
    // The client sends an ID; the collection holds the name it makes.
    let out = t.call(rid, "add", &params("c1", json!({"value": "p42"})));
    assert_eq!(reply(&out), json!({"result": null}));
    assert_eq!(
        events(&out),
        vec![add(rid, json!({"rid": "shop.product.p42"}), 0)]
    );
    let out = t.call(rid, "add", &params("c1", json!({"value": 7})));
    assert_eq!(
        events(&out),
        vec![add(rid, json!({"rid": "shop.product.7"}), 1)]
    );
    assert_eq!(
        t.items(rid),
        json!([{"rid": "shop.product.p42"}, {"rid": "shop.product.7"}])
    );
    // A value that would add a part, a name Resgate refuses, or anything but a string
    // or a number is refused, and nothing changes.
    for (value, why) in [
        (
            json!("a.b"),
            "value: \"shop.product.a.b\" does not fill the template's name parts one each (a value with a `.`)",
        ),
        (json!("p 1"), "valid resource name"),
        (json!({"rid": "users.user.1"}), "from a string or a number"),
        (json!(["p1"]), "from a string or a number"),
    ] {
        let out = t.call(rid, "add", &params("c1", json!({ "value": value })));
        let e = reply(&out);
        assert_eq!(e["error"]["code"], json!("system.invalidParams"), "{value}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{value}: {e}");
        assert!(out.events.is_empty());
    }
    // Removing by the value sent finds the name it makes; the backend sends the same.
    let out = t.call(rid, "remove", &params("c1", json!({"value": "p42"})));
    assert_eq!(events(&out), vec![remove(rid, 0)]);
    let out = t.api("add", rid, json!({"value": "p9", "idx": 0}));
    assert_eq!(
        events(&out),
        vec![add(rid, json!({"rid": "shop.product.p9"}), 0)]
    );
    assert_eq!(
        t.items(rid),
        json!([{"rid": "shop.product.p9"}, {"rid": "shop.product.7"}])
    );
}
