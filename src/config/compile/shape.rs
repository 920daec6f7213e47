//! Compiling a data value's shape (`fields:` of a data field or item): each key
//! compiled as a field is, with `optional`, without what only a field has.

use super::{Compiler, SHAPE_KEYS};
use crate::config::yaml::{Key, Kind, Yaml};
use crate::field::{FieldType, Shape, ShapeKey, MAX_SHAPE_DEPTH};
use crate::pattern::Pattern;
use crate::rule::Schema;

impl Compiler {
    /// The shape `node` declares for the data field `owner` (a key's path, `cart` or
    /// `cart.size`, inside a shape), when it has no error.
    pub(super) fn shape(&mut self, pattern: &Pattern, owner: &str, node: &Yaml) -> Option<Shape> {
        if self.shape_depth >= MAX_SHAPE_DEPTH {
            self.error(
                node.pos,
                format!(
                    "field `{owner}`: `fields` nests data shapes more than {MAX_SHAPE_DEPTH} deep"
                ),
            );
            return None;
        }
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "field `{owner}`: `fields` must be a mapping of the data's keys, not {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let before = self.errors.len();
        self.shape_depth += 1;
        let keys: Vec<ShapeKey> = entries
            .iter()
            .filter_map(|(key, value)| self.shape_key(pattern, owner, key, value))
            .collect();
        self.shape_depth -= 1;
        (self.errors.len() == before).then_some(Shape { keys })
    }

    /// One key of a shape: its type and constraints compiled as a field's (messages
    /// name it by its path, `field `cart.sku``), and `optional`.
    fn shape_key(
        &mut self,
        pattern: &Pattern,
        owner: &str,
        key: &Key,
        node: &Yaml,
    ) -> Option<ShapeKey> {
        if key.name.is_empty() {
            self.error(
                key.pos,
                format!("field `{owner}`: a key of `fields` must not be empty"),
            );
            return None;
        }
        let path = format!("{owner}.{}", key.name);
        let what = format!("field `{path}`");
        let before = self.errors.len();
        let mut node = node.clone();
        let mut optional = false;
        if let Kind::Map(entries) = &mut node.kind {
            for (k, v) in entries.iter() {
                let why = match k.name.as_str() {
                    "default" => "a key of a data value has no default: mark it `optional: true` to let it be left out",
                    "from" => "a data value is written whole: only the data field itself takes `from`",
                    "writable" => "a data value is written whole: whether clients may write it is the data field's `writable`",
                    "type" if matches!(&v.kind, Kind::Str(s) if s == "ref") => {
                        self.error(
                            v.pos,
                            format!("{what}: a key of a data value cannot be a `ref`: Resgate sends data as it is and follows no reference inside it (declare a `ref` field, or a `string` key)"),
                        );
                        continue;
                    }
                    "optional" => {
                        optional = self
                            .boolean(v, &format!("{what}: `optional`"))
                            .unwrap_or_default();
                        continue;
                    }
                    _ => continue,
                };
                self.error(k.pos, format!("{what} takes no `{}`: {why}", k.name));
            }
            entries.retain(|(k, _)| !["default", "from", "writable"].contains(&k.name.as_str()));
            // Unknown keys are reported here, against a shape's keys; what is left is
            // a field's.
            let known: Vec<String> = self
                .mapping(&node, &what, SHAPE_KEYS)
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.name != "optional")
                .map(|(k, _)| k.name.clone())
                .collect();
            if let Kind::Map(entries) = &mut node.kind {
                entries.retain(|(k, _)| known.contains(&k.name));
            }
        }
        let named = Key {
            name: path,
            pos: key.pos,
        };
        let schema = Schema::default();
        let mut field = self.field(pattern, &named, &node, &schema)?;
        field.name = key.name.clone();
        let fine = self.errors.len() == before && field.ty != FieldType::Ref;
        fine.then_some(ShapeKey { field, optional })
    }
}
