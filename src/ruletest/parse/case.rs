//! A case of a test file: one request with its expectations, or `steps`, a sequence of
//! them.

use serde_json::Value;

use super::entries::{mapping, Entries};
use super::{Action, Case, Errors, Expect, Step};
use crate::config::yaml::{Key, Kind, Yaml};

const CASE_KEYS: &[&str] = &[
    "name", "resource", "cid", "token", "query", "get", "call", "set", "outcome", "error", "model",
    "items", "steps",
];
/// The keys of a case with `steps`: what its steps share.
const SEQUENCE_KEYS: &[&str] = &["name", "resource", "cid", "token", "query", "steps"];
const STEP_KEYS: &[&str] = &[
    "resource",
    "cid",
    "token",
    "set",
    "reset",
    "add",
    "remove",
    "join",
    "leave",
    "ping",
    "backend_set",
    "backend_reset",
    "backend_add",
    "backend_remove",
    "wait",
    "get",
    "call",
    "outcome",
    "error",
    "model",
    "items",
];
/// What a step may do, one at most.
const ACTIONS: &[&str] = &[
    "token",
    "set",
    "reset",
    "add",
    "remove",
    "join",
    "leave",
    "ping",
    "backend_set",
    "backend_reset",
    "backend_add",
    "backend_remove",
    "wait",
];
/// The actions that answer with an outcome, as a message lists them.
const ANSWERING: &str =
    "`set`, `reset`, `add`, `remove`, `join`, `leave`, `ping`, `backend_set`, `backend_reset`, `backend_add` or `backend_remove`";

pub(super) fn case(node: &Yaml, errors: &mut Errors) -> Option<Case> {
    let entries = mapping(node, "a case", errors)?;
    // A case is where its first key is (a mapping's own position is its first value's).
    let at = entries.entries.first().map_or(node.pos, |(key, _)| key.pos);
    entries.unknown(CASE_KEYS, "a case", errors);
    let required = |k: &str, errors: &mut Errors| {
        let value = entries.string(k, errors);
        if entries.get(k).is_none() {
            errors.at(at, format!("a case needs `{k}`"));
        }
        value
    };
    let name = required("name", errors);
    let resource = required("resource", errors);
    let cid = required("cid", errors);
    let query = entries.string("query", errors);
    let token = entries
        .get("token")
        .map(Yaml::to_json)
        .filter(|t| !t.is_null());
    // Without them the case is in error, but its other keys are still checked.
    let default = |v: &Option<String>| v.clone().unwrap_or_default();
    let (step_resource, step_cid) = (default(&resource), default(&cid));
    let (steps, sequence) = match entries.get("steps") {
        Some(node) => {
            for (key, _) in entries.entries.iter().filter(|(k, _)| {
                CASE_KEYS.contains(&k.name.as_str()) && !SEQUENCE_KEYS.contains(&k.name.as_str())
            }) {
                errors.at(
                    key.pos,
                    format!("`{}` goes in a step: a case with `steps` does and checks everything in its steps", key.name),
                );
            }
            (steps(node, &step_resource, &step_cid, errors), true)
        }
        None => {
            let steps = single(at, &entries, &step_resource, &step_cid, errors);
            (Some(steps), false)
        }
    };
    Some(Case {
        name: name?,
        at,
        resource: resource?,
        cid: cid?,
        token,
        query,
        steps: steps?,
        sequence,
    })
}

/// A case without `steps`: its access expectations, then its `set` and `model` (or a
/// collection's `items`).
fn single(
    at: crate::config::Pos,
    entries: &Entries,
    resource: &str,
    cid: &str,
    errors: &mut Errors,
) -> Vec<Step> {
    let Expect {
        get,
        call,
        outcome,
        error,
        model,
        items,
        written,
    } = entries.expect(errors);
    let set = entries.object("set", errors).map(Value::Object);
    for key in ["outcome", "error"] {
        if let (Some(k), None) = (entries.key(key), &set) {
            errors.at(
                k.pos,
                format!("`{key}` is the outcome of a `set`: give the values to set"),
            );
        }
    }
    let step = |action, expect| Step {
        at,
        resource: resource.to_string(),
        cid: cid.to_string(),
        action,
        expect,
    };
    let mut steps = vec![step(
        None,
        Expect {
            get,
            call,
            written: written.clone(),
            ..Expect::default()
        },
    )];
    if set.is_some() || model.is_some() || items.is_some() {
        let expect = Expect {
            outcome,
            error,
            model,
            items,
            written,
            ..Expect::default()
        };
        steps.push(step(set.map(Action::Set), expect));
    }
    steps
}

fn steps(node: &Yaml, resource: &str, cid: &str, errors: &mut Errors) -> Option<Vec<Step>> {
    let items = match &node.kind {
        Kind::Seq(items) if !items.is_empty() => items,
        Kind::Seq(_) => {
            errors.at(node.pos, "`steps` must list at least one step".into());
            return None;
        }
        _ => {
            let message = format!("`steps` must be a list of steps, not {}", node.type_name());
            errors.at(node.pos, message);
            return None;
        }
    };
    let steps: Vec<Option<Step>> = items
        .iter()
        .map(|item| step(item, resource, cid, errors))
        .collect();
    steps.into_iter().collect()
}

fn step(node: &Yaml, resource: &str, cid: &str, errors: &mut Errors) -> Option<Step> {
    let entries = mapping(node, "a step", errors)?;
    let at = entries.entries.first().map_or(node.pos, |(key, _)| key.pos);
    entries.unknown(STEP_KEYS, "a step", errors);
    let resource = entries
        .string("resource", errors)
        .unwrap_or_else(|| resource.to_string());
    let cid = entries
        .string("cid", errors)
        .unwrap_or_else(|| cid.to_string());
    let done: Vec<&Key> = entries
        .entries
        .iter()
        .map(|(k, _)| k)
        .filter(|k| ACTIONS.contains(&k.name.as_str()))
        .collect();
    if let [first, second, ..] = done.as_slice() {
        errors.at(
            second.pos,
            format!(
                "a step does one thing: `{}` and `{}` are two; give each a step of its own",
                first.name, second.name
            ),
        );
    }
    let action = done.first().and_then(|k| action(&entries, &k.name, errors));
    let expect = entries.expect(errors);
    let answers = action.as_ref().is_some_and(Action::answers);
    for key in ["outcome", "error"] {
        if let (Some(k), false) = (entries.key(key), answers) {
            errors.at(
                k.pos,
                format!(
                    "`{key}` is the outcome of the step's call or backend write: give {ANSWERING}"
                ),
            );
        }
    }
    // Only where it names nothing else: a wrong or unknown key has its own error.
    let named = |k: &Key| k.name != "resource" && k.name != "cid";
    if !entries.entries.iter().any(|(k, _)| named(k)) {
        errors.at(
            at,
            format!(
                "a step needs something to do ({}) or to check (get, call, model, items)",
                ACTIONS.join(", ")
            ),
        );
    }
    Some(Step {
        at,
        resource,
        cid,
        action,
        expect,
    })
}

/// The action under `key`.
fn action(entries: &Entries, key: &str, errors: &mut Errors) -> Option<Action> {
    let node = entries.get(key)?;
    let mut must_be_true = |does: &str| match node.kind {
        Kind::Bool(true) => true,
        _ => {
            errors.at(node.pos, format!("`{key}` must be true ({does})"));
            false
        }
    };
    Some(match key {
        "token" => Action::Token(Some(node.to_json()).filter(|t| !t.is_null())),
        "set" => Action::Set(Value::Object(entries.object(key, errors)?)),
        "add" => Action::Add(entries.object(key, errors)?),
        "remove" => Action::Remove(entries.object(key, errors)?),
        "backend_set" => Action::BackendSet(entries.object(key, errors)?),
        "backend_add" => Action::BackendAdd(entries.object(key, errors)?),
        "backend_remove" => Action::BackendRemove(entries.object(key, errors)?),
        "reset" => must_be_true("the connection calls reset").then_some(Action::Reset)?,
        "join" => must_be_true("the connection joins the presence list").then_some(Action::Join)?,
        "leave" => {
            must_be_true("the connection leaves the presence list").then_some(Action::Leave)?
        }
        "ping" => must_be_true("the connection pings the presence list").then_some(Action::Ping)?,
        "backend_reset" => {
            must_be_true("a backend service resets the resource").then_some(Action::BackendReset)?
        }
        _ => Action::Wait(wait(node, errors)?),
    })
}

/// `wait`: a duration with its unit.
fn wait(node: &Yaml, errors: &mut Errors) -> Option<std::time::Duration> {
    let parsed = match &node.kind {
        Kind::Str(text) => humantime::parse_duration(text).ok(),
        _ => None,
    };
    if parsed.is_none() {
        errors.at(
            node.pos,
            format!(
                "`wait` must be a duration with its unit, such as 90s, 30m or 25h, not {}",
                node.to_json()
            ),
        );
    }
    parsed
}
