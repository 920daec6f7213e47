//! What a failed expectation says: the rule that decided (its place, text and result
//! for the step's inputs), and how what a get serves differs from a step's `model` or
//! `items`.

use serde_json::Value;

use super::Names;
use crate::config::{Pos, Resource};
use crate::field::json_eq;
use crate::rule::{Rule, RuleInput};

pub(in crate::ruletest) fn rule_key(name: &str) -> String {
    format!("rule {name}")
}

/// The site name of a presence list's `join` rule.
pub(super) const PRESENCE_JOIN: &str = "presence.join";

/// A presence list's `join` rule, if it has one.
pub(super) fn join_rule(res: &Resource) -> Option<&Rule> {
    res.presence.as_ref()?.join.as_ref()
}

pub(super) fn word(granted: bool) -> &'static str {
    if granted {
        "granted"
    } else {
        "denied"
    }
}

/// The site name of the rule that decides `method`.
pub(super) fn rule_name(res: &Resource, method: &str) -> String {
    let specific = format!("call.{method}");
    if res.sites.get(&specific).is_some() {
        specific
    } else {
        "call".to_string()
    }
}

/// The rule behind a decision: its place, text and result.
pub(super) fn why(res: &Resource, name: &str, input: &RuleInput, config_path: &str) -> String {
    let writable = |n: &str| {
        let field = n.strip_prefix("fields.")?.strip_suffix(".writable")?;
        res.field(field)?.writable.rule()
    };
    let rule = match name {
        "get" => res.access.get.as_ref(),
        "call" => res
            .access
            .call
            .rule("*")
            .or_else(|| res.access.call.rule("")),
        "collection.writable" => res.collection.as_ref().and_then(|c| c.writable.rule()),
        PRESENCE_JOIN => join_rule(res),
        n if n.starts_with("fields.") => writable(n),
        n => n
            .strip_prefix("call.")
            .and_then(|m| res.access.call.rule(m)),
    };
    match (rule, res.sites.get(name)) {
        (Some(rule), Some(site)) => {
            let result = match rule.eval(input) {
                Ok(b) => word(b).to_string(),
                Err(e) => format!("error, so denied: {e}"),
            };
            format!(
                "    rule {name} at {}: {} -> {result}",
                site.show(config_path),
                rule.source()
            )
        }
        _ => format!("    no `{name}` rule in `{}`: denied", res.pattern),
    }
}

/// ` at FILE:LINE:COL`, where the test file writes the expectation, when known.
fn written(names: &Names, at: Option<Pos>) -> String {
    at.map(|pos| format!(" at {}:{pos}", names.file))
        .unwrap_or_default()
}

/// A `call` expectation of a method the resource does not serve.
pub(super) fn not_a_method(
    res: &Resource,
    rid: &str,
    method: &str,
    names: &Names,
    at: Option<Pos>,
) -> String {
    format!(
        "  call.{method}{}: `{rid}` is {} (pattern `{}`): its methods are {}",
        written(names, at),
        kind(res),
        res.pattern,
        and_list(res.methods())
    )
}

/// What a resource is: a model, a collection or a presence list.
fn kind(res: &Resource) -> &'static str {
    match (&res.presence, &res.collection) {
        (Some(_), _) => "a presence list",
        (None, Some(_)) => "a collection",
        (None, None) => "a model",
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A `model` expectation of a collection, or an `items` one of a model.
pub(super) fn wrong_shape(
    res: &Resource,
    rid: &str,
    key: &str,
    names: &Names,
    at: Option<Pos>,
) -> String {
    let at = written(names, at);
    match res.collection {
        Some(_) => format!(
            "  {key}{at}: `{rid}` is {} (pattern `{}`), not a model: a get serves its {}; expect them with `items:`",
            kind(res),
            res.pattern,
            if res.presence.is_some() { "members" } else { "items" }
        ),
        None => format!(
            "  {key}{at}: `{rid}` is a model (pattern `{}`), not a collection: expect its values with `model:`",
            res.pattern
        ),
    }
}

/// What is wrong with `model.<field>`, if anything.
pub(super) fn model_problem(
    res: &Resource,
    field: &str,
    want: &Value,
    model: &Value,
) -> Option<String> {
    if res.field(field).is_none() {
        let names: Vec<&str> = res.fields.iter().map(|f| f.name.as_str()).collect();
        let hint = crate::config::suggestion(field, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Some(format!(
            "  model.{field}: not a field of `{}`{hint}",
            res.pattern
        ));
    }
    let got = model.get(field).unwrap_or(&Value::Null);
    (got != want).then(|| format!("  model.{field}: expected {want}, got {got}"))
}

/// What is wrong with a collection's items, if anything: all of them must be those
/// expected, in order (numbers compare by value).
pub(super) fn items_problem(want: &[Value], got: &Value) -> Option<String> {
    let items = got.as_array().map_or(&[][..], Vec::as_slice);
    let same = want.len() == items.len() && want.iter().zip(items).all(|(a, b)| json_eq(a, b));
    if same && got.is_array() {
        return None;
    }
    let first = want.iter().zip(items).position(|(a, b)| !json_eq(a, b));
    let detail = match first {
        Some(i) => format!("from idx {i}: expected {}, got {}", want[i], items[i]),
        None if got.is_array() => format!("{} item(s), not {}", items.len(), want.len()),
        None => "not a collection's items".to_string(),
    };
    Some(format!(
        "  items: expected {}, got {got} ({detail})",
        Value::from(want.to_vec())
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn items(want: Value, got: Value) -> Option<String> {
        items_problem(want.as_array().unwrap(), &got)
    }

    #[test]
    fn items_compare_all_in_order_and_say_where_they_differ() {
        assert_eq!(items(json!([1, "a"]), json!([1.0, "a"])), None);
        assert_eq!(items(json!([]), json!([])), None);
        assert_eq!(
            items(json!(["a", "b"]), json!(["b", "a"])).unwrap(),
            r#"  items: expected ["a","b"], got ["b","a"] (from idx 0: expected "a", got "b")"#
        );
        assert_eq!(
            items(json!(["a", "b"]), json!(["a"])).unwrap(),
            r#"  items: expected ["a","b"], got ["a"] (1 item(s), not 2)"#
        );
        assert_eq!(
            items(json!([]), json!([{ "rid": "x.1" }])).unwrap(),
            r#"  items: expected [], got [{"rid":"x.1"}] (1 item(s), not 0)"#
        );
        assert_eq!(
            items(json!([]), Value::Null).unwrap(),
            "  items: expected [], got null (not a collection's items)"
        );
    }
}
