//! Reading a rule test file (`*.test.yaml`), every error with its position: the file
//! here, a case and its steps in `parse/case.rs`, the keys of a mapping by kind in
//! `parse/entries.rs`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::yaml::{self, Kind, Yaml};
use crate::config::{suggestion, ConfigError, ConfigErrors, Pos};

mod case;
mod entries;

const TOP_KEYS: &[&str] = &["config", "tests"];

/// The cases of one test file.
#[derive(Debug, Clone)]
pub struct Suite {
    pub file: String,
    /// The `config:` key: the path of the config the file tests, relative to the file,
    /// and where the path is written.
    pub config: Option<(String, Pos)>,
    pub cases: Vec<Case>,
}

/// One case: what connections do, in order, and what they must get.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub at: Pos,
    /// The resource its steps ask for, unless a step names another.
    pub resource: String,
    /// The connection its steps are made by, unless a step names another.
    pub cid: String,
    /// That connection's token at the start, delivered as the auth service would.
    pub token: Option<Value>,
    /// The query of its requests.
    pub query: Option<String>,
    /// What happens, in order. A case without `steps:` is two: its access
    /// expectations, then its `set` and `model`.
    pub steps: Vec<Step>,
    /// Written with `steps:`.
    pub sequence: bool,
}

/// One step of a case: at most one thing done, then what must hold.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Pos,
    pub resource: String,
    pub cid: String,
    pub action: Option<Action>,
    pub expect: Expect,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The auth service sets the connection's token; `None` logs it out.
    Token(Option<Value>),
    /// The connection calls `set` with these values, as a client through the gateway:
    /// an access request first.
    Set(Value),
    /// The connection calls `reset`, likewise.
    Reset,
    /// The connection calls a collection's `add` with these params (`value`, `idx`),
    /// likewise.
    Add(Map<String, Value>),
    /// The connection calls a collection's `remove` with these params (`idx` or
    /// `value`), likewise.
    Remove(Map<String, Value>),
    /// The connection calls a presence list's `join`, as a client through the gateway:
    /// an access request first.
    Join,
    /// The connection calls a presence list's `leave`, likewise.
    Leave,
    /// The connection calls a presence list's `ping`, likewise.
    Ping,
    /// A backend service sets these values through the write API.
    BackendSet(Map<String, Value>),
    /// A backend service resets the model (or empties the collection) through the
    /// write API.
    BackendReset,
    /// A backend service adds an item to a collection through the write API.
    BackendAdd(Map<String, Value>),
    /// A backend service removes an item from a collection through the write API.
    BackendRemove(Map<String, Value>),
    /// Time passes without a request; idle state expires as the sweep drops it.
    Wait(Duration),
}

impl Action {
    /// The step's key, as written.
    pub fn key(&self) -> &'static str {
        match self {
            Action::Token(_) => "token",
            Action::Set(_) => "set",
            Action::Reset => "reset",
            Action::Add(_) => "add",
            Action::Remove(_) => "remove",
            Action::Join => "join",
            Action::Leave => "leave",
            Action::Ping => "ping",
            Action::BackendSet(_) => "backend_set",
            Action::BackendReset => "backend_reset",
            Action::BackendAdd(_) => "backend_add",
            Action::BackendRemove(_) => "backend_remove",
            Action::Wait(_) => "wait",
        }
    }

    /// The method a client calls, for a call through the gateway: `set`, `reset`,
    /// `add`, `remove`, `join`, `leave` or `ping`.
    pub fn method(&self) -> Option<&'static str> {
        match self {
            Action::Set(_)
            | Action::Reset
            | Action::Add(_)
            | Action::Remove(_)
            | Action::Join
            | Action::Leave
            | Action::Ping => Some(self.key()),
            _ => None,
        }
    }

    /// The params the action sends (a call's or a backend write's), if any.
    pub fn params(&self) -> Option<Value> {
        match self {
            Action::Set(v) => Some(v.clone()),
            Action::Add(m)
            | Action::Remove(m)
            | Action::BackendSet(m)
            | Action::BackendAdd(m)
            | Action::BackendRemove(m) => Some(Value::Object(m.clone())),
            _ => None,
        }
    }

    /// The action as a person reads it in a report: `token null`, `set {"x":1}`.
    pub fn show(&self) -> String {
        match self {
            Action::Token(t) => format!("token {}", t.as_ref().unwrap_or(&Value::Null)),
            Action::Wait(d) => format!("wait {}", duration(*d)),
            Action::Reset | Action::BackendReset => self.key().to_string(),
            other => match other.params() {
                Some(params) => format!("{} {params}", other.key()),
                None => other.key().to_string(),
            },
        }
    }

    /// True for what answers with an outcome: calls and backend writes.
    pub fn answers(&self) -> bool {
        !matches!(self, Action::Token(_) | Action::Wait(_))
    }
}

/// A duration in the largest unit that divides it: `24h`, `90m`, `45s`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (d.subsec_nanos(), secs) {
        (0, s) if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        (0, s) if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        (0, s) => format!("{s}s"),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// What must hold after a step.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The `get` decision of an access request.
    pub get: Option<bool>,
    /// The call decisions of an access request.
    pub call: Option<CallExpect>,
    /// The step's outcome: `ok` (the default for a step that answers), `denied`,
    /// `invalid` or a RES error code.
    pub outcome: Option<String>,
    /// Text the outcome's error message must contain.
    pub error: Option<String>,
    /// Values the model must hold (other fields are not compared).
    pub model: Option<Map<String, Value>>,
    /// The items a collection must hold, all of them, in order.
    pub items: Option<Vec<Value>>,
    /// Where each expectation is written, by its key.
    pub written: Vec<(&'static str, Pos)>,
}

impl Expect {
    /// True when the step looks at what a client of its connection would see: an
    /// access request, then the model (or the collection's items).
    pub fn looks(&self) -> bool {
        self.get.is_some() || self.call.is_some() || self.model.is_some() || self.items.is_some()
    }

    /// Where the expectation `key` is written.
    pub fn at(&self, key: &str) -> Option<Pos> {
        self.written
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, pos)| *pos)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallExpect {
    /// Every method (`set` and `reset`, a collection's `add` and `remove`, or a presence
    /// list's `join`, `leave` and `ping`) granted, or none.
    All(bool),
    Methods(Vec<(String, bool)>),
}

/// Parses a test file.
pub fn parse(file: &str, source: &str) -> Result<Suite, ConfigErrors> {
    let mut errors = Errors::default();
    let mut cases = Vec::new();
    let mut config = None;
    match yaml::parse(source) {
        Err(e) => errors.at(e.pos, e.message),
        Ok((doc, duplicates)) => {
            for d in duplicates {
                errors.at(d.pos, d.message);
            }
            let entries = match &doc.kind {
                Kind::Map(entries) => entries.as_slice(),
                _ => &[],
            };
            for (key, _) in entries
                .iter()
                .filter(|(k, _)| !TOP_KEYS.contains(&k.name.as_str()))
            {
                errors.at(key.pos, unknown(&key.name, "the top level", TOP_KEYS));
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
                    errors.at(
                        other.pos,
                        format!("`config` must be the path of the config the file tests, relative to the file, not {what}"),
                    )
                }
            }
            match entries.iter().find(|(k, _)| k.name == "tests") {
                None => errors.at(
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
                        if let Some(case) = case::case(item, &mut errors) {
                            cases.push(case);
                        }
                    }
                }
                Some((_, other)) => errors.at(
                    other.pos,
                    format!("`tests` must be a list of cases, not {}", other.type_name()),
                ),
            }
        }
    }
    let mut errors = errors.0;
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

/// The errors found so far.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn at(&mut self, pos: Pos, message: String) {
        self.0.push(ConfigError {
            file: None,
            pos,
            message,
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
