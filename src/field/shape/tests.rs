//! Data shapes: the keys a data value takes, checked as fields are, without NATS.

use serde_json::{json, Value};

use crate::config::Config;
use crate::field::FieldDef;

/// The field `cart` of a resource declaring `fields` (YAML lines under `fields:`).
fn field(fields: &str) -> FieldDef {
    let text = format!(
        "version: 1\nresources:\n  session.c.{{cid}}:\n    fields:\n      cart:\n        type: data\n        fields:\n{fields}"
    );
    let config = Config::parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    config.resources[0].field("cart").unwrap().clone()
}

const CART: &str = "          sku: { type: string, max_length: 20 }
          qty: { type: integer, min: 1, max: 99 }
          note: { type: string, optional: true }
";

fn err(f: &FieldDef, wire: Value) -> String {
    f.from_wire(&wire).unwrap_err()
}

#[test]
fn a_value_of_the_declared_keys_is_taken_as_sent() {
    let f = field(CART);
    let v = json!({"sku": "A1", "qty": 2});
    assert_eq!(f.from_wire(&v), Ok(v.clone()));
    assert_eq!(f.from_wire(&json!({ "data": v })), Ok(v));
    let noted = json!({"sku": "A1", "qty": 2, "note": "gift"});
    assert_eq!(f.from_wire(&noted), Ok(noted.clone()));
    // An optional key may be null, as left out.
    let null = json!({"sku": "A1", "qty": 2, "note": null});
    assert_eq!(f.from_wire(&null), Ok(null));
    // A whole number as a float is the integer, as an integer field takes it.
    assert_eq!(
        f.from_wire(&json!({"sku": "A1", "qty": 3.0})),
        Ok(json!({"sku": "A1", "qty": 3}))
    );
    // Null clears the field, whatever its shape.
    assert_eq!(f.from_wire(&Value::Null), Ok(Value::Null));
}

#[test]
fn each_way_to_break_a_shape_names_the_key_and_the_rule() {
    let f = field(CART);
    assert_eq!(
        err(&f, json!({"qty": 2})),
        "key `sku`: is missing (it is not optional)"
    );
    assert_eq!(
        err(&f, json!({"sku": null, "qty": 2})),
        "key `sku`: is null (it is not optional)"
    );
    assert_eq!(
        err(&f, json!({"sku": "A1", "qty": 100})),
        "key `qty`: 100 is above max 99"
    );
    assert_eq!(
        err(&f, json!({"sku": "A1", "qty": 2.5})),
        "key `qty`: 2.5 is not an integer"
    );
    assert_eq!(
        err(&f, json!({"sku": "A1", "qty": "2"})),
        "key `qty`: \"2\" is not an integer"
    );
    assert_eq!(
        err(&f, json!({"sku": "x".repeat(21), "qty": 2})),
        "key `sku`: is 21 characters long, longer than max_length 20"
    );
    assert_eq!(
        err(&f, json!({"sku": "A1", "qty": 2, "colour": "red"})),
        "key `colour`: is not declared (the keys are sku, qty, note)"
    );
    assert_eq!(
        err(&f, json!([1, 2])),
        "[1,2] is not an object with keys sku, qty, note"
    );
    assert_eq!(
        err(&f, json!({ "data": 5 })),
        "5 is not an object with keys sku, qty, note"
    );
}

#[test]
fn an_undeclared_key_is_quoted_only_in_part() {
    let f = field(CART);
    let long = format!("SECRET-{}", "k".repeat(100_000));
    let e = err(&f, json!({"sku": "A1", "qty": 2, long: 1}));
    assert!(e.len() < 300, "{} bytes", e.len());
    assert!(e.contains("SECRET-"), "{e}");
}

#[test]
fn shapes_nest_and_errors_give_the_path_of_keys() {
    let f = field(
        "          sku: { type: string }
          size:
            type: data
            fields:
              w: { type: integer, min: 1 }
              unit: { type: string, enum: [cm, in], optional: true }
          extra: { type: data, optional: true }
",
    );
    assert_eq!(
        err(&f, json!({"sku": "a", "size": {"w": 0}})),
        "key `size.w`: 0 is below min 1"
    );
    assert_eq!(
        err(&f, json!({"sku": "a", "size": {"w": 2, "unit": "ft"}})),
        "key `size.unit`: \"ft\" is not one of [\"cm\", \"in\"] (enum)"
    );
    assert_eq!(
        err(&f, json!({"sku": "a", "size": 3})),
        "key `size`: 3 is not an object with keys w, unit"
    );
    assert_eq!(
        f.from_wire(&json!({"sku": "a", "size": {"w": 2.0}, "extra": [1, {"any": true}]})),
        Ok(json!({"sku": "a", "size": {"w": 2}, "extra": [1, {"any": true}]}))
    );
}

#[test]
fn a_stored_value_is_checked_against_a_changed_shape() {
    // What a reload and a load from the shared store ask of a stored value.
    let stored = json!({"sku": "A1", "qty": 50});
    assert_eq!(field(CART).check(&stored), Ok(()));
    let tightened = field(&CART.replace("max: 99", "max: 10"));
    assert_eq!(
        tightened.check(&stored),
        Err("key `qty`: 50 is above max 10".into())
    );
    let removed = field("          sku: { type: string }\n");
    assert_eq!(
        removed.check(&stored),
        Err("key `qty`: is not declared (the keys are sku)".into())
    );
    // Still data: a value that breaks the shape breaks a constraint, not the type.
    assert!(removed.is_of_type(&stored));
}

#[test]
fn a_default_must_fit_the_shape() {
    let text = "version: 1\nresources:\n  session.c.{cid}:\n    fields:\n      cart:\n        type: data\n        default: { sku: A1 }\n        fields:\n          sku: { type: string }\n          qty: { type: integer }\n";
    let e = Config::parse("t.yaml", text).unwrap_err().to_string();
    assert_eq!(
        e,
        "t.yaml:7:18: field `cart`: default key `qty`: is missing (it is not optional)"
    );
}

#[test]
fn a_default_s_whole_numbers_are_integers_as_a_field_s_are() {
    let text = "version: 1\nresources:\n  session.c.{cid}:\n    fields:\n      cart:\n        type: data\n        default: { qty: 2.0 }\n        fields:\n          qty: { type: integer }\n";
    let config = Config::parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let cart = config.resources[0].field("cart").unwrap();
    assert_eq!(cart.default, json!({"qty": 2}));
}

#[test]
fn a_shape_describes_itself_as_the_file_declares_it() {
    let f = field(
        "          sku: { type: string, max_length: 20 }
          qty: { type: integer, min: 1, max: 99 }
          size: { type: data, optional: true, fields: { w: { type: number } } }
",
    );
    assert_eq!(
        f.constraints.shape.unwrap().to_string(),
        "{sku: string (max_length 20), qty: integer (min 1, max 99), size: data {w: number} (optional)}"
    );
}
