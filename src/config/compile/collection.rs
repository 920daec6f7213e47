//! Compiling a collection (`collection:`): the type and constraints of its items,
//! `max_items` and `writable`.

use super::field::{declared_keys, schema_of, Declared};
use super::{Compiler, COLLECTION_KEYS};
use crate::collection::{CollectionDef, DEFAULT_MAX_ITEMS, MAX_ITEMS_LIMIT};
use crate::config::yaml::{Key, Kind, Pos, Yaml};
use crate::field::{FieldType, Writable};
use crate::pattern::Pattern;
use crate::rule::{Keys, Schema};
use crate::template::{Template, ITEM_ROOTS};

/// What the rules of a collection's calls read in `values`: the item sent (of the
/// item's type, when known) and the index.
pub(super) fn declared_values(item: Option<FieldType>, keys: Option<Keys>) -> Declared {
    vec![
        ("value".to_string(), item, keys),
        ("idx".to_string(), Some(FieldType::Integer), None),
    ]
}

impl Compiler {
    /// The collection, when it has no error, and what its rules may read in `values`.
    pub(super) fn collection(
        &mut self,
        pattern: &Pattern,
        at: Pos,
        node: &Yaml,
    ) -> (Option<CollectionDef>, Declared) {
        let Some(entries) = self.mapping(node, "`collection`", COLLECTION_KEYS) else {
            return (None, declared_values(None, None));
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.name == k)
                .map(|(key, v)| (key, *v))
        };
        let before = self.errors.len();
        let item = match get("item") {
            None => {
                self.error(
                    at,
                    "`collection` needs an `item`: the type of its items, as a field declares it (`item: { type: string }`)",
                );
                None
            }
            Some((key, n)) => self.item(pattern, key, n),
        };
        let keys = get("item").and_then(|(_, n)| declared_keys(n, 1));
        let declared = declared_values(item.as_ref().map(|i| i.ty), keys);
        let max_items = match get("max_items") {
            None => DEFAULT_MAX_ITEMS,
            Some((_, n)) => match n.kind {
                Kind::Int(i) if (1..=MAX_ITEMS_LIMIT as i64).contains(&i) => i as usize,
                _ => {
                    self.error(
                        n.pos,
                        format!("`collection.max_items` must be a whole number from 1 to {MAX_ITEMS_LIMIT}"),
                    );
                    0
                }
            },
        };
        let writable = match get("writable") {
            None => Writable::Never,
            Some((_, w)) => {
                let schema = schema_of(&declared);
                self.writable_at(
                    pattern,
                    w,
                    "`collection.writable`",
                    "collection.writable",
                    &schema,
                )
            }
        };
        if self.errors.len() > before {
            return (None, declared);
        }
        let collection = item.map(|item| CollectionDef {
            item,
            max_items,
            writable,
        });
        (collection, declared)
    }

    /// `item:`: a field's type and constraints, without what only a field has (a
    /// default, `from`, `writable`).
    fn item(
        &mut self,
        pattern: &Pattern,
        key: &Key,
        node: &Yaml,
    ) -> Option<crate::field::FieldDef> {
        let mut refused = false;
        let mut node = node.clone();
        let mut template = None;
        if let Kind::Map(entries) = &mut node.kind {
            let is_ref = entries
                .iter()
                .any(|(k, v)| k.name == "type" && matches!(&v.kind, Kind::Str(s) if s == "ref"));
            for (k, v) in entries.iter() {
                let why = match k.name.as_str() {
                    "default" => "an item has no default: a collection starts empty",
                    "from" if is_ref => {
                        template = self.item_template(v);
                        refused |= template.is_none();
                        continue;
                    }
                    "from" => "only a `ref` item takes `from` (the template that makes its name from the value sent: `from: \"shop.product.{{value}}\"`); other items are added as they are",
                    "writable" => {
                        "whether clients may add and remove is the collection's `writable`"
                    }
                    _ => continue,
                };
                self.error(
                    k.pos,
                    format!("`collection.item` takes no `{}`: {why}", k.name),
                );
                refused = true;
            }
            // Compiled without them: what they would say of the item is said above.
            entries.retain(|(k, _)| !["default", "from", "writable"].contains(&k.name.as_str()));
        }
        let schema = Schema::default();
        let mut item = self.field(pattern, key, &node, &schema)?;
        item.source = template;
        (!refused).then_some(item)
    }

    /// A `ref` item's `from`: a template over `value`, the value an add or remove sends.
    fn item_template(&mut self, node: &Yaml) -> Option<Template> {
        let Kind::Str(source) = &node.kind else {
            self.error(
                node.pos,
                "`collection.item.from` must be a template string (`shop.product.{{value}}`)",
            );
            return None;
        };
        Template::compile_reading(source, ITEM_ROOTS)
            .map_err(|e| {
                self.error(
                    node.pos,
                    format!(
                        "`collection.item.from`: {} (an item's template reads `value`, the value sent)",
                        e.message
                    ),
                )
            })
            .ok()
    }
}
