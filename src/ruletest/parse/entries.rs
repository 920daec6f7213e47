//! Reading a mapping of a test file key by key: a value of the wrong kind is an error
//! at it, and the expectations a case or a step lists.

use serde_json::{Map, Value};

use super::{unknown, CallExpect, Errors, Expect};
use crate::config::yaml::{Key, Kind, Yaml};

/// The keys that say what must hold, as `Expect` keeps them.
const EXPECT_KEYS: &[&str] = &["get", "call", "outcome", "error", "model", "items"];

/// A mapping's entries, read key by key; a value of the wrong kind is an error at it.
pub(super) struct Entries<'y> {
    pub entries: &'y [(Key, Yaml)],
}

impl<'y> Entries<'y> {
    pub fn get(&self, k: &str) -> Option<&'y Yaml> {
        self.entries
            .iter()
            .find(|(key, _)| key.name == k)
            .map(|(_, v)| v)
    }

    pub fn key(&self, k: &str) -> Option<&'y Key> {
        self.entries
            .iter()
            .find(|(key, _)| key.name == k)
            .map(|(key, _)| key)
    }

    /// Keys that are not among `allowed`, each an error.
    pub fn unknown(&self, allowed: &[&str], what: &str, errors: &mut Errors) {
        for (key, _) in self.entries {
            if !allowed.contains(&key.name.as_str()) {
                errors.at(key.pos, unknown(&key.name, what, allowed));
            }
        }
    }

    pub fn string(&self, k: &str, errors: &mut Errors) -> Option<String> {
        match self.get(k)? {
            Yaml {
                kind: Kind::Str(s), ..
            } => Some(s.clone()),
            other => {
                let message = format!("`{k}` must be a string, not {}", other.type_name());
                errors.at(other.pos, message);
                None
            }
        }
    }

    fn boolean(&self, k: &str, errors: &mut Errors) -> Option<bool> {
        match self.get(k)? {
            Yaml {
                kind: Kind::Bool(b),
                ..
            } => Some(*b),
            other => {
                let message = format!("`{k}` must be true or false, not {}", other.type_name());
                errors.at(other.pos, message);
                None
            }
        }
    }

    pub fn object(&self, k: &str, errors: &mut Errors) -> Option<Map<String, Value>> {
        match self.get(k)? {
            v @ Yaml {
                kind: Kind::Map(_), ..
            } => match v.to_json() {
                Value::Object(map) => Some(map),
                _ => None,
            },
            other => {
                let message = format!("`{k}` must be a mapping, not {}", other.type_name());
                errors.at(other.pos, message);
                None
            }
        }
    }

    /// `items`: a list of values, as on the wire.
    fn list(&self, k: &str, errors: &mut Errors) -> Option<Vec<Value>> {
        match self.get(k)? {
            Yaml {
                kind: Kind::Seq(items),
                ..
            } => Some(items.iter().map(Yaml::to_json).collect()),
            other => {
                let message = format!(
                    "`{k}` must be a list of the collection's items, not {}",
                    other.type_name()
                );
                errors.at(other.pos, message);
                None
            }
        }
    }

    /// `call`: true, false, or a mapping of methods to true or false.
    fn call(&self, errors: &mut Errors) -> Option<CallExpect> {
        match self.get("call")? {
            Yaml {
                kind: Kind::Bool(b),
                ..
            } => Some(CallExpect::All(*b)),
            Yaml {
                kind: Kind::Map(methods),
                ..
            } => {
                let mut out = Vec::new();
                for (m, v) in methods {
                    match v.kind {
                        Kind::Bool(b) => out.push((m.name.clone(), b)),
                        _ => errors.at(
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
            other => {
                errors.at(
                    other.pos,
                    format!(
                        "`call` must be true, false or a mapping of methods to true or false, not {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }

    /// The expectations: `get`, `call`, `outcome`, `error`, `model`, `items`, and
    /// where each is written.
    pub fn expect(&self, errors: &mut Errors) -> Expect {
        Expect {
            get: self.boolean("get", errors),
            call: self.call(errors),
            outcome: self.string("outcome", errors),
            error: self.string("error", errors),
            model: self.object("model", errors),
            items: self.list("items", errors),
            written: EXPECT_KEYS
                .iter()
                .filter_map(|k| Some((*k, self.key(k)?.pos)))
                .collect(),
        }
    }
}

/// The entries of a mapping, or an error naming what it had to be.
pub(super) fn mapping<'y>(node: &'y Yaml, what: &str, errors: &mut Errors) -> Option<Entries<'y>> {
    match &node.kind {
        Kind::Map(entries) => Some(Entries { entries }),
        _ => {
            let message = format!("{what} must be a mapping, not {}", node.type_name());
            errors.at(node.pos, message);
            None
        }
    }
}
