//! Reading a rule test file (`*.test.yaml`), every error with its position.

use serde_json::{Map, Value};

use crate::config::yaml::{self, Kind, Yaml};
use crate::config::{suggestion, ConfigError, ConfigErrors, Pos};

const TOP_KEYS: &[&str] = &["config", "tests"];
const CASE_KEYS: &[&str] = &[
    "name", "resource", "cid", "token", "query", "get", "call", "set", "outcome", "model",
];

/// The cases of one test file.
#[derive(Debug, Clone)]
pub struct Suite {
    pub file: String,
    /// The `config:` key: the path of the config the file tests, relative to the file,
    /// and where the path is written.
    pub config: Option<(String, Pos)>,
    pub cases: Vec<Case>,
}

/// One case: a request by a connection, and what it must give.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub at: Pos,
    pub resource: String,
    pub cid: String,
    pub token: Option<Value>,
    pub query: Option<String>,
    /// The expected `get` decision of an access request.
    pub get: Option<bool>,
    /// The expected call decisions.
    pub call: Option<CallExpect>,
    /// Values to `set` (after the access request).
    pub set: Option<Value>,
    /// The set's expected outcome: `ok`, `denied`, `invalid` or a RES error code.
    pub outcome: Option<String>,
    /// Values the model must hold at the end (other fields are not compared).
    pub model: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallExpect {
    /// Every method (`set` and `reset`) granted, or none.
    All(bool),
    Methods(Vec<(String, bool)>),
}

/// Parses a test file.
pub fn parse(file: &str, source: &str) -> Result<Suite, ConfigErrors> {
    let mut errors = Vec::new();
    let mut error = |pos: Pos, message: String| {
        errors.push(ConfigError {
            file: None,
            pos,
            message,
        })
    };
    let mut cases = Vec::new();
    let mut config = None;
    match yaml::parse(source) {
        Err(e) => error(e.pos, e.message),
        Ok((doc, duplicates)) => {
            for d in duplicates {
                error(d.pos, d.message);
            }
            let entries = match &doc.kind {
                Kind::Map(entries) => entries.as_slice(),
                _ => &[],
            };
            for (key, _) in entries
                .iter()
                .filter(|(k, _)| !TOP_KEYS.contains(&k.name.as_str()))
            {
                error(key.pos, unknown(&key.name, "the top level", TOP_KEYS));
            }
            match entries.iter().find(|(k, _)| k.name == "config") {
                None => {}
                Some((
                    _,
                    Yaml {
                        kind: Kind::Str(path),
                        pos,
                    },
                )) if !path.is_empty() => config = Some((path.clone(), *pos)),
                Some((_, other)) => {
                    let what = match other.kind {
                        Kind::Str(_) => "an empty string",
                        _ => other.type_name(),
                    };
                    error(
                        other.pos,
                        format!("`config` must be the path of the config the file tests, relative to the file, not {what}"),
                    )
                }
            }
            match entries.iter().find(|(k, _)| k.name == "tests") {
                None => error(
                    Pos { line: 1, col: 1 },
                    "missing `tests:` (a list of cases)".into(),
                ),
                Some((
                    _,
                    Yaml {
                        kind: Kind::Seq(items),
                        ..
                    },
                )) => {
                    for item in items {
                        if let Some(case) = case(item, &mut error) {
                            cases.push(case);
                        }
                    }
                }
                Some((_, other)) => error(
                    other.pos,
                    format!("`tests` must be a list of cases, not {}", other.type_name()),
                ),
            }
        }
    }
    if errors.is_empty() {
        Ok(Suite {
            file: file.to_string(),
            config,
            cases,
        })
    } else {
        errors.sort_by_key(|e| e.pos);
        Err(ConfigErrors {
            file: file.to_string(),
            errors,
        })
    }
}

fn unknown(name: &str, what: &str, allowed: &[&str]) -> String {
    let hint = match suggestion(name, allowed) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => format!(" (expected one of: {})", allowed.join(", ")),
    };
    format!("unknown key `{name}` in {what}{hint}")
}

fn case(node: &Yaml, error: &mut impl FnMut(Pos, String)) -> Option<Case> {
    let Kind::Map(entries) = &node.kind else {
        error(
            node.pos,
            format!("a case must be a mapping, not {}", node.type_name()),
        );
        return None;
    };
    // A case is where its first key is (a mapping's own position is its first value's).
    let at = entries.first().map_or(node.pos, |(key, _)| key.pos);
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key.name == k)
            .map(|(_, v)| v)
    };
    for (key, _) in entries
        .iter()
        .filter(|(k, _)| !CASE_KEYS.contains(&k.name.as_str()))
    {
        error(key.pos, unknown(&key.name, "a case", CASE_KEYS));
    }
    let mut string = |k: &str, required: bool| match get(k) {
        Some(Yaml {
            kind: Kind::Str(s), ..
        }) => Some(s.clone()),
        Some(other) => {
            error(
                other.pos,
                format!("`{k}` must be a string, not {}", other.type_name()),
            );
            None
        }
        None if required => {
            error(at, format!("a case needs `{k}`"));
            None
        }
        None => None,
    };
    let name = string("name", true);
    let resource = string("resource", true);
    let cid = string("cid", true);
    let query = string("query", false);
    let outcome = string("outcome", false);
    let mut boolean = |k: &str| match get(k) {
        Some(Yaml {
            kind: Kind::Bool(b),
            ..
        }) => Some(*b),
        Some(other) => {
            error(
                other.pos,
                format!("`{k}` must be true or false, not {}", other.type_name()),
            );
            None
        }
        None => None,
    };
    let get_expect = boolean("get");
    let call = match get("call") {
        None => None,
        Some(Yaml {
            kind: Kind::Bool(b),
            ..
        }) => Some(CallExpect::All(*b)),
        Some(Yaml {
            kind: Kind::Map(methods),
            ..
        }) => {
            let mut out = Vec::new();
            for (m, v) in methods {
                match v.kind {
                    Kind::Bool(b) => out.push((m.name.clone(), b)),
                    _ => error(
                        v.pos,
                        format!(
                            "`call.{}` must be true or false, not {}",
                            m.name,
                            v.type_name()
                        ),
                    ),
                }
            }
            Some(CallExpect::Methods(out))
        }
        Some(other) => {
            error(
                other.pos,
                format!(
                    "`call` must be true, false or a mapping of methods to true or false, not {}",
                    other.type_name()
                ),
            );
            None
        }
    };
    let object = |k: &str, error: &mut dyn FnMut(Pos, String)| match get(k) {
        Some(
            v @ Yaml {
                kind: Kind::Map(_), ..
            },
        ) => match v.to_json() {
            Value::Object(map) => Some(map),
            _ => None,
        },
        Some(other) => {
            error(
                other.pos,
                format!("`{k}` must be a mapping, not {}", other.type_name()),
            );
            None
        }
        None => None,
    };
    let set = object("set", error).map(Value::Object);
    let model = object("model", error);
    if outcome.is_some() && set.is_none() {
        error(
            node.pos,
            "`outcome` is the outcome of a `set`: give the values to set".into(),
        );
    }
    let token = get("token").map(Yaml::to_json).filter(|t| !t.is_null());
    let at = entries.first().map_or(node.pos, |(key, _)| key.pos);
    Some(Case {
        name: name?,
        at,
        resource: resource?,
        cid: cid?,
        token,
        query,
        get: get_expect,
        call,
        set,
        outcome,
        model,
    })
}
