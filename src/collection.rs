//! Collections: a resource whose value is an ordered list of items of one declared
//! type, and the index bookkeeping of its changes: the `add` and `remove` events that
//! turn the list a gateway holds into the new one. Pure.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::field::{json_eq, FieldDef, ResValue, Writable};
use crate::template::TemplateInput;

/// A declared collection (`collection:`).
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionDef {
    /// The items' type and constraints, as a field named `item` has them (no default,
    /// no `from`, not itself writable).
    pub item: FieldDef,
    /// How many items the collection holds at most: an `add` past it is refused.
    pub max_items: usize,
    /// Whether clients may `add` and `remove` (the resource's `access.call` rule decides
    /// the call first). Backend services add and remove whatever this says.
    pub writable: Writable,
}

/// `max_items` when the file does not say.
pub const DEFAULT_MAX_ITEMS: usize = 100;

impl CollectionDef {
    /// An item as a call or the backend API sends it, as the collection holds it. A
    /// `ref` item with a template (`from: "shop.product.{{value}}"`) takes the value
    /// that fills it (a string or a number) and holds the name it renders, which must
    /// be a valid resource name with each expression filling one part; any other item
    /// takes its RES form (`{"rid": ...}`, `{"data": ...}`, a primitive).
    pub fn item_from_wire(&self, wire: &Value) -> Result<Value, String> {
        let Some(template) = &self.item.source else {
            return self.item.from_wire(wire);
        };
        match wire {
            Value::Null => Ok(Value::Null),
            Value::String(_) | Value::Number(_) => {
                let input = TemplateInput {
                    cid: None,
                    token: crate::template::TokenIn::None,
                    params: &[],
                    claims: None,
                    value: Some(wire),
                };
                match template.render(&input) {
                    Some(rendered) => self.item.from_rendered(rendered),
                    None => Err(format!(
                        "{} gives no resource name through `{}`",
                        crate::logs::excerpt(&wire.to_string()),
                        template.source()
                    )),
                }
            }
            _ => Err(format!(
                "the item's name is made by `{}` from a string or a number, not {}",
                template.source(),
                crate::logs::excerpt(&wire.to_string())
            )),
        }
    }
}

/// The most items `max_items` may allow: every change of a collection compares its
/// whole list, so a list stays short enough for that to cost microseconds.
pub const MAX_ITEMS_LIMIT: usize = 10_000;

/// The collection's methods, for clients and the backend API.
pub const METHODS: &[&str] = &["add", "remove"];

/// One change to a list, as RES announces it: an item added at an index (the items at
/// and after it move up one), or the item at an index removed (those after it move
/// down one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Edit<'a> {
    Add(usize, &'a Value),
    Remove(usize),
}

/// The edits that turn `before` into `after`, in the order they apply: the items
/// between the longest common head and tail are removed, highest index first, then
/// the new ones added in order. An `add` or `remove` of one item gives one edit; a
/// list cleared gives one remove per item, from the end, so no index moves.
pub fn edits<'a>(before: &[Value], after: &'a [Value]) -> Vec<Edit<'a>> {
    let head = before
        .iter()
        .zip(after)
        .take_while(|(a, b)| json_eq(a, b))
        .count();
    let rest = before.len().min(after.len()) - head;
    let tail = before
        .iter()
        .rev()
        .zip(after.iter().rev())
        .take(rest)
        .take_while(|(a, b)| json_eq(a, b))
        .count();
    let removed = (head..before.len() - tail).rev().map(Edit::Remove);
    let added = (head..after.len() - tail).map(|i| Edit::Add(i, &after[i]));
    removed.chain(added).collect()
}

/// Applies edits to a list (what a gateway does with the events).
pub fn apply(list: &mut Vec<Value>, edits: &[Edit]) {
    for edit in edits {
        match *edit {
            Edit::Add(idx, value) => list.insert(idx, value.clone()),
            Edit::Remove(idx) => {
                list.remove(idx);
            }
        }
    }
}

/// A collection's items as RES values, for a get reply: `[...]`.
pub struct ItemsView<'a> {
    pub item: &'a FieldDef,
    pub items: &'a [Value],
}

impl Serialize for ItemsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.items.iter().map(|v| ResValue(self.item.ty, v)))
    }
}

/// The payload of an `add` event: `{"value": ..., "idx": n}`.
pub struct AddEvent<'a> {
    pub item: &'a FieldDef,
    pub value: &'a Value,
    pub idx: usize,
}

impl Serialize for AddEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("value", &ResValue(self.item.ty, self.value))?;
        map.serialize_entry("idx", &self.idx)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn list(items: &[i64]) -> Vec<Value> {
        items.iter().map(|&i| json!(i)).collect()
    }

    #[test]
    fn one_add_or_remove_is_one_edit_at_its_index() {
        let before = list(&[1, 2, 3]);
        let after = list(&[1, 9, 2, 3]);
        assert_eq!(edits(&before, &after), vec![Edit::Add(1, &json!(9))]);
        let after = list(&[1, 3]);
        assert_eq!(edits(&before, &after), vec![Edit::Remove(1)]);
        let after = list(&[1, 2, 3, 4]);
        assert_eq!(edits(&before, &after), vec![Edit::Add(3, &json!(4))]);
        assert_eq!(edits(&before, &before), vec![]);
    }

    #[test]
    fn a_cleared_list_is_removed_from_the_end() {
        let before = list(&[1, 2, 3]);
        assert_eq!(
            edits(&before, &[]),
            vec![Edit::Remove(2), Edit::Remove(1), Edit::Remove(0)]
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let before = vec![json!(14)];
        let after = vec![json!(14.0)];
        assert_eq!(edits(&before, &after), vec![]);
    }

    proptest! {
        /// A shadow list: whatever the two lists, applying the edits to the first gives
        /// the second, and no edit's index is out of range when it applies.
        #[test]
        fn edits_turn_one_list_into_the_other(
            before in proptest::collection::vec(0i64..4, 0..12),
            after in proptest::collection::vec(0i64..4, 0..12),
        ) {
            let (before, after) = (list(&before), list(&after));
            let mut shadow = before.clone();
            for edit in edits(&before, &after) {
                match edit {
                    Edit::Add(idx, _) => prop_assert!(idx <= shadow.len()),
                    Edit::Remove(idx) => prop_assert!(idx < shadow.len()),
                }
                apply(&mut shadow, &[edit]);
            }
            prop_assert_eq!(shadow, after);
        }

        /// Under any order of single adds and removes, each step is one edit.
        #[test]
        fn each_single_step_is_one_edit(
            steps in proptest::collection::vec((any::<bool>(), 0usize..20, 0i64..3), 0..40),
        ) {
            let mut items: Vec<Value> = Vec::new();
            for (add, at, v) in steps {
                let before = items.clone();
                if add {
                    items.insert(at.min(items.len()), json!(v));
                } else if !items.is_empty() {
                    items.remove(at % items.len());
                } else {
                    continue;
                }
                let e = edits(&before, &items);
                prop_assert_eq!(e.len(), 1);
                let mut shadow = before.clone();
                apply(&mut shadow, &e);
                prop_assert_eq!(&shadow, &items);
            }
        }
    }
}
