//! The static checks of `check.rs`, on a resource with a field of each kind.

use super::*;

fn problems(rule: &str) -> Vec<String> {
    // `window: { type: data, fields: { width: integer, panel: { type: data, fields:
    // { side: string } }, any: data } }`
    let panel = Keys(vec![("side".into(), Some(FieldType::String), None)]);
    let window = Keys(vec![
        ("width".into(), Some(FieldType::Integer), None),
        ("panel".into(), Some(FieldType::Data), Some(panel)),
        ("any".into(), Some(FieldType::Data), None),
    ]);
    let schema = Schema {
        fields: vec![
            ("items", Some(FieldType::Integer)),
            ("owner", Some(FieldType::String)),
            ("open", Some(FieldType::Boolean)),
            ("extra", Some(FieldType::Data)),
            ("broken", None),
            ("window", Some(FieldType::Data)),
        ],
        keys: vec![("window", &window)],
    };
    Rule::compile(rule).unwrap().check(&schema)
}

#[test]
fn sound_rules_pass() {
    for rule in [
        "cid == params.cid",
        "cid == params.cid && token != null",
        "token.role == 'admin' || token.roles.exists(r, r == 'admin')",
        "model.items > 0 && model.owner == cid && model.open",
        "model.extra.anything == 3 && has(model.owner)",
        "query == null || query.startsWith('x')",
        "size(model.owner) < 10 && model.items + 1 == 2",
        "true",
        "model.owner == null",
        "[1, 2].all(x, x > 0)",
        "token.n == 1 ? cid == 'a' : false",
        "params['cid'] == cid",
        "fields.all(f, f == 'items') && (!has(values.items) || values.items < 3)",
        "'owner' in fields || values.owner == cid || size(fields) == 0",
        "values.extra.x == 1 && values.open",
        "model.window.width > 100 && model.window.panel.side == 'left'",
        "values.window.any.whatever == 1 && has(model.window.panel)",
    ] {
        assert_eq!(problems(rule), Vec::<String>::new(), "{rule}");
    }
}

#[test]
fn misspelt_model_fields_are_named_with_a_suggestion() {
    assert_eq!(
        problems("model.itmes == 0"),
        ["`model.itmes` is not a field of this resource; did you mean `model.items`?"]
    );
    assert_eq!(
        problems("model.colour == 'red'"),
        ["`model.colour` is not a field of this resource (its fields: items, owner, open, extra, broken, window)"]
    );
    // A comprehension variable named `model` is not the model.
    assert!(problems("[{'x': 1}].exists(model, model.x == 1)").is_empty());
}

#[test]
fn misspelt_keys_of_a_declared_data_shape_are_named_with_a_suggestion() {
    assert_eq!(
        problems("model.window.widht > 100"),
        ["`model.window.widht` is not a key the data of `model.window` declares; did you mean `model.window.width`?"]
    );
    assert_eq!(
        problems("values.window.panel.colour == 'red'"),
        ["`values.window.panel.colour` is not a key the data of `values.window.panel` declares (its keys: side)"]
    );
    // Said once, where the path first leaves the shape.
    assert_eq!(problems("model.window.pannel.side == 'left'").len(), 1);
    // A declared key has its type.
    assert_eq!(problems("model.window.width == 'wide'").len(), 1);
}

#[test]
fn a_field_whose_type_is_in_error_is_still_a_field_of_any_type() {
    assert!(problems("model.broken == 'x' || model.broken > 2").is_empty());
    assert_eq!(
        problems("model.brokn == 1"),
        ["`model.brokn` is not a field of this resource; did you mean `model.broken`?"]
    );
}

#[test]
fn strings_compared_with_non_strings_are_errors() {
    assert_eq!(
        problems("cid == 3"),
        ["`cid` (a string) is compared with `3` (a number): they can never be equal or ordered, so this is always false or an error"]
    );
    assert_eq!(problems("params.cid != true").len(), 1);
    assert_eq!(problems("model.items == 'three'").len(), 1);
    assert_eq!(problems("model.owner < 2").len(), 1);
}

#[test]
fn rules_that_are_not_booleans_are_errors() {
    assert_eq!(
        problems("model.items"),
        ["the rule gives a number, not true or false, so it always denies"]
    );
    assert_eq!(problems("params.cid").len(), 1);
    assert_eq!(problems("'true'").len(), 1);
    assert_eq!(problems("[true]").len(), 1);
    // Unknown values may be booleans.
    assert!(problems("token.admin").is_empty());
}

#[test]
fn a_call_s_values_are_checked_as_the_model_is() {
    assert_eq!(
        problems("values.itme > 2"),
        ["`values.itme` is not a field of this resource; did you mean `values.items`?"]
    );
    assert_eq!(
        problems("values.owner == 3"),
        ["`values.owner` (a string) is compared with `3` (a number): they can never be equal or ordered, so this is always false or an error"]
    );
    // `fields` is a list of names.
    assert_eq!(
        problems("fields == 'items'"),
        ["`fields` (a list) is compared with `\"items\"` (a string): they can never be equal or ordered, so this is always false or an error"]
    );
    assert_eq!(
        problems("fields"),
        ["the rule gives a list, not true or false, so it always denies"]
    );
}
