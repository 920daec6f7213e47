//! Field types and constraints: wire values in, stored values checked, RES values out.

use super::*;
use regex::Regex;
use serde_json::json;

fn field(ty: FieldType) -> FieldDef {
    FieldDef {
        name: "f".into(),
        description: None,
        ty,
        default: Value::Null,
        source: None,
        constraints: Constraints::default(),
        writable: Writable::Always,
    }
}

#[test]
fn integer_wire_values() {
    let f = field(FieldType::Integer);
    assert_eq!(f.from_wire(&json!(7)).unwrap(), json!(7));
    assert_eq!(f.from_wire(&json!(7.0)).unwrap(), json!(7));
    assert!(f
        .from_wire(&json!(2.5))
        .unwrap_err()
        .contains("not an integer"));
    assert!(f
        .from_wire(&json!("7"))
        .unwrap_err()
        .contains("not an integer"));
    assert_eq!(f.from_wire(&json!(null)).unwrap(), json!(null));
}

#[test]
fn number_string_boolean_wire_values() {
    assert_eq!(
        field(FieldType::Number).from_wire(&json!(2)).unwrap(),
        json!(2)
    );
    assert_eq!(
        field(FieldType::Number).from_wire(&json!(2.5)).unwrap(),
        json!(2.5)
    );
    assert!(field(FieldType::Number).from_wire(&json!("2")).is_err());
    assert!(field(FieldType::String).from_wire(&json!(2)).is_err());
    assert!(field(FieldType::Boolean).from_wire(&json!("true")).is_err());
    assert_eq!(
        field(FieldType::Boolean).from_wire(&json!(true)).unwrap(),
        json!(true)
    );
}

#[test]
fn ref_and_data_wire_values() {
    let r = field(FieldType::Ref);
    assert!(
        r.from_wire(&json!({"rid": "a.b", "soft": true})).is_err(),
        "soft refs are not kept, so refused"
    );
    assert_eq!(
        r.from_wire(&json!({"rid": "a.b", "soft": false})).unwrap(),
        json!("a.b")
    );
    assert_eq!(
        r.from_wire(&json!({"rid": "users.user.1"})).unwrap(),
        json!("users.user.1")
    );
    assert_eq!(
        r.from_wire(&json!("users.user.1")).unwrap(),
        json!("users.user.1")
    );
    assert!(r.from_wire(&json!("users..1")).is_err());
    assert!(r.from_wire(&json!({"rid": 5})).is_err());
    let d = field(FieldType::Data);
    assert_eq!(
        d.from_wire(&json!({"data": [1, 2]})).unwrap(),
        json!([1, 2])
    );
    assert_eq!(d.from_wire(&json!({"a": 1})).unwrap(), json!({"a": 1}));
    assert_eq!(d.from_wire(&json!([1])).unwrap(), json!([1]));
    assert!(d.from_wire(&json!(5)).is_err());
}

#[test]
fn objects_and_delete_refused_for_primitives() {
    let s = field(FieldType::String);
    assert!(s
        .from_wire(&json!({"a": 1}))
        .unwrap_err()
        .contains("only allowed in data"));
    assert!(s.from_wire(&json!([1])).is_err());
    assert!(s
        .from_wire(&json!({"action": "delete"}))
        .unwrap_err()
        .contains("deleted"));
    let d = field(FieldType::Data);
    assert!(d
        .from_wire(&json!({"action": "delete"}))
        .unwrap_err()
        .contains("deleted"));
    assert_eq!(
        d.from_wire(&json!({"data": {"action": "delete"}})).unwrap(),
        json!({"action": "delete"})
    );
}

#[test]
fn constraints() {
    let mut f = field(FieldType::Integer);
    f.constraints.min = Some(8.0);
    f.constraints.max = Some(32.0);
    assert!(f.from_wire(&json!(7)).unwrap_err().contains("below min 8"));
    assert!(f
        .from_wire(&json!(33))
        .unwrap_err()
        .contains("above max 32"));
    assert!(f.from_wire(&json!(32)).is_ok());
    let mut s = field(FieldType::String);
    s.constraints.one_of = Some(vec![json!("light"), json!("dark")]);
    assert!(s.from_wire(&json!("blue")).unwrap_err().contains("enum"));
    s.constraints.one_of = None;
    s.constraints.max_length = Some(3);
    assert!(s
        .from_wire(&json!("abcd"))
        .unwrap_err()
        .contains("max_length 3"));
    assert!(s.from_wire(&json!("äöü")).is_ok());
    s.constraints.max_length = None;
    s.constraints.pattern = Some(Regex::new("^[a-z]+$").unwrap());
    assert!(s.from_wire(&json!("ABC")).unwrap_err().contains("pattern"));
    let mut n = field(FieldType::Number);
    n.constraints.one_of = Some(vec![json!(14)]);
    assert!(n.check(&json!(14.0)).is_ok());
}

#[test]
fn rendered_strings_convert_to_the_field_type() {
    assert_eq!(
        field(FieldType::Integer)
            .from_rendered(json!("42"))
            .unwrap(),
        json!(42)
    );
    assert_eq!(
        field(FieldType::Integer).from_rendered(json!(42)).unwrap(),
        json!(42)
    );
    assert!(field(FieldType::Integer)
        .from_rendered(json!("4x"))
        .is_err());
    assert_eq!(
        field(FieldType::Number)
            .from_rendered(json!("2.5"))
            .unwrap(),
        json!(2.5)
    );
    assert_eq!(
        field(FieldType::Boolean)
            .from_rendered(json!("true"))
            .unwrap(),
        json!(true)
    );
    assert_eq!(
        field(FieldType::String).from_rendered(json!(42)).unwrap(),
        json!("42")
    );
    assert_eq!(
        field(FieldType::Ref)
            .from_rendered(json!("users.user.42"))
            .unwrap(),
        json!("users.user.42")
    );
    assert!(field(FieldType::Ref)
        .from_rendered(json!("users.user."))
        .is_err());
    assert_eq!(
        field(FieldType::Data)
            .from_rendered(json!({"a": 1}))
            .unwrap(),
        json!({"a": 1})
    );
}

#[test]
fn res_value_encoding() {
    let enc = |ty, v: Value| serde_json::to_value(ResValue(ty, &v)).unwrap();
    assert_eq!(enc(FieldType::Ref, json!("a.b")), json!({"rid": "a.b"}));
    assert_eq!(enc(FieldType::Data, json!([1])), json!({"data": [1]}));
    assert_eq!(enc(FieldType::Ref, json!(null)), json!(null));
    assert_eq!(enc(FieldType::String, json!("x")), json!("x"));
}

#[test]
fn references_the_gateway_would_refuse_are_refused() {
    let f = field(FieldType::Ref);
    for bad in [
        "users.user.\u{0}",
        "users.user.é",
        "users.user.a b",
        "users.*",
        "users.user.1?x=2",
    ] {
        let e = f.from_wire(&json!({ "rid": bad })).unwrap_err();
        assert!(e.contains("not a valid resource name"), "{bad:?}: {e}");
    }
    let long = format!("users.{}", "x".repeat(2_000));
    assert!(f.from_wire(&json!({ "rid": long })).is_err());
    assert_eq!(
        f.from_wire(&json!({"rid": "users.user.42"})).unwrap(),
        json!("users.user.42")
    );
}

#[test]
fn a_template_value_fills_one_part_of_a_reference() {
    let f = FieldDef {
        source: Some(Template::compile("users.user.{{token.userId}}").unwrap()),
        writable: Writable::Never,
        ..field(FieldType::Ref)
    };
    let render = |token: Value| {
        let input = crate::template::TemplateInput {
            cid: None,
            token: crate::template::TokenIn::Value(&token),
            params: &[],
            claims: None,
            value: None,
        };
        f.from_rendered(f.source.as_ref().unwrap().render(&input).unwrap())
    };
    assert_eq!(render(json!({"userId": 42})), Ok(json!("users.user.42")));
    // A whole number written as a float is the integer it is.
    assert_eq!(render(json!({"userId": 42.0})), Ok(json!("users.user.42")));
    // A claim with dots would point at another resource.
    let e = render(json!({"userId": "a.b.c"})).unwrap_err();
    assert!(e.contains("name parts"), "{e}");
    assert!(render(json!({"userId": "\u{1}"})).is_err());
}

#[test]
fn errors_quote_a_long_template_value_only_in_part() {
    let f = field(FieldType::Integer);
    let e = f
        .from_rendered(json!(format!("SECRET-{}", "y".repeat(900_000))))
        .unwrap_err();
    assert!(e.len() < 80, "{} bytes", e.len());
    assert!(e.contains("SECRET-"), "{e}");
}
