//! Collections: `add` and `remove`, by clients (after the resource's call rule and the
//! collection's `writable`) and by the backend API, and the `add`/`remove` events that
//! tell gateways the indices.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Engine, Events};
use crate::collection::{self, CollectionDef, Edit};
use crate::config::{Config, Resource};
use crate::field::json_eq;
use crate::protocol::{self, ResError};
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// `<prefix>.add.<rid>` and `<prefix>.remove.<rid>`: the backend adds or removes an
    /// item, whatever the collection's `writable` says.
    pub(super) fn api_items(
        &mut self,
        config: &Config,
        rid: &str,
        method: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let (res, _) = self.api_resolve(config, rid)?;
        if res.presence.is_some() {
            return Err(ResError::InvalidParams(format!(
                "{} is a presence list: its members join and leave themselves (join, leave); the backend may reset it",
                res.pattern
            )));
        }
        let Some(c) = &res.collection else {
            return Err(ResError::InvalidParams(format!(
                "{} is a model, not a collection: {method} applies to collections (a model takes set and reset)",
                res.pattern
            )));
        };
        let sent: Value = protocol::parse(payload, &format!("{method} request"))?;
        let max = config.state.max_value_bytes;
        self.edit_items(res, c, rid, method, Some(&sent), max, events)?;
        Ok(protocol::null_reply())
    }

    /// Adds or removes an item as `sent` says (`{"value", "idx"}`), all checked first
    /// (an added item no larger than `max_value`, `state.max_value_bytes`); the change
    /// goes out as one `add` or `remove` event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn edit_items(
        &mut self,
        res: &Resource,
        c: &CollectionDef,
        rid: &str,
        method: &str,
        sent: Option<&Value>,
        max_value: usize,
        events: &mut Events,
    ) -> Result<(), ResError> {
        let Some(Value::Object(sent)) = sent else {
            return Err(ResError::InvalidParams(format!(
                "{method} needs params as an object: {}",
                usage(method)
            )));
        };
        if let Some(k) = sent.keys().find(|k| *k != "value" && *k != "idx") {
            return Err(ResError::InvalidParams(format!(
                "{method} takes no `{k}`: {}",
                usage(method)
            )));
        }
        let items = self.written(res, rid).map_or(&[][..], |w| w.items());
        let len = items.len();
        let idx = index(sent)?;
        let value = |c: &CollectionDef| -> Result<Option<Value>, ResError> {
            let Some(wire) = sent.get("value") else {
                return Ok(None);
            };
            match c.item_from_wire(wire) {
                Ok(Value::Null) => Err(ResError::InvalidParams(
                    "value: null is not an item; remove an item to take it out".into(),
                )),
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(ResError::InvalidParams(format!("value: {e}"))),
            }
        };
        let edit = match method {
            "add" => {
                let Some(value) = value(c)? else {
                    return Err(ResError::InvalidParams(format!(
                        "add needs a `value`: {}",
                        usage(method)
                    )));
                };
                let size = protocol::json_len(&value);
                if size > max_value {
                    return Err(ResError::InvalidParams(protocol::value_too_big(
                        "the item", size, max_value,
                    )));
                }
                let idx = idx.unwrap_or(len);
                if idx > len {
                    return Err(ResError::InvalidParams(format!(
                        "`idx` {idx} is past the end: the collection holds {len} items"
                    )));
                }
                if len >= c.max_items {
                    return Err(ResError::InvalidParams(format!(
                        "the collection is full: it holds max_items {} items",
                        c.max_items
                    )));
                }
                Change::Add(idx, value)
            }
            _ => match (idx, value(c)?) {
                (Some(idx), None) if idx < len => Change::Remove(idx),
                (Some(idx), None) => {
                    return Err(ResError::InvalidParams(format!(
                        "no item at `idx` {idx}: the collection holds {len} items"
                    )))
                }
                // Removing a value that is not there leaves the collection as it is.
                (None, Some(value)) => match items.iter().position(|v| json_eq(v, &value)) {
                    Some(idx) => Change::Remove(idx),
                    None => return Ok(()),
                },
                _ => {
                    return Err(ResError::InvalidParams(format!(
                        "remove takes `idx` or `value`, one of them: {}",
                        usage(method)
                    )))
                }
            },
        };
        self.change(res, rid, events, |written| {
            let items = written.items_mut();
            match edit {
                Change::Add(idx, value) => items.insert(idx, value),
                Change::Remove(idx) => {
                    items.remove(idx);
                }
            }
        });
        Ok(())
    }
}

/// One checked change.
enum Change {
    Add(usize, Value),
    Remove(usize),
}

/// `idx`, when sent: a whole number, 0 or more.
fn index(sent: &Map<String, Value>) -> Result<Option<usize>, ResError> {
    match sent.get("idx") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| {
                ResError::InvalidParams(format!("`idx` must be a whole number, 0 or more, not {v}"))
            }),
    }
}

fn usage(method: &str) -> &'static str {
    match method {
        "add" => r#"{"value": <item>, "idx": <index, the end when left out>}"#,
        _ => r#"{"idx": <index>} or {"value": <item>}"#,
    }
}

/// The `add` and `remove` events that take a gateway's copy of a collection from
/// `before` to `after`; says whether there were any.
pub(super) fn push_edits(
    events: &mut Events,
    c: &CollectionDef,
    rid: &str,
    before: &[Value],
    after: &[Value],
) -> bool {
    let edits = collection::edits(before, after);
    for edit in &edits {
        events.push(match *edit {
            Edit::Add(idx, value) => protocol::add_event(rid, &c.item, value, idx),
            Edit::Remove(idx) => protocol::remove_event(rid, idx),
        });
    }
    !edits.is_empty()
}
