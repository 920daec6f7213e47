//! The declared shape of a `data` value (`fields:` of a data field or a collection's
//! item): an object of the declared keys only, each key's value checked by
//! [`FieldDef::check`] as a field's is, and given unless the key is optional. Pure.

use std::fmt;

use serde_json::Value;

use super::{short, FieldDef, FieldType};

/// How many data shapes may nest: a data field's `fields` is the first, a data key's
/// own `fields` inside it the second, and so on.
pub const MAX_SHAPE_DEPTH: usize = 4;

/// The keys a data value must have (`fields:`), in the order the file declares them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    pub keys: Vec<ShapeKey>,
}

/// One key of a shape.
#[derive(Debug, Clone)]
pub struct ShapeKey {
    /// The key's name, type and constraints, as a field has them (no default, no
    /// `from`, never writable on its own: the data value is written whole).
    pub field: FieldDef,
    /// `optional: true`: the key may be left out, or null.
    pub optional: bool,
}

/// Descriptions aside: a changed description changes no value a shape takes.
impl PartialEq for ShapeKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.field, &other.field);
        self.optional == other.optional
            && a.name == b.name
            && a.ty == b.ty
            && a.default == b.default
            && a.source == b.source
            && a.constraints == b.constraints
            && a.writable == b.writable
    }
}

/// Where a value breaks a shape: the path of keys to it (empty: the value itself), and
/// what is wrong there.
type Fault = (Vec<String>, String);

impl Shape {
    /// Checks a stored data value (not null) against the shape: an object, each
    /// declared key given (or optional) and valid, no other key. The error names the
    /// first key found wrong, with the path of keys to it (`` key `line.qty`: 0 is
    /// below min 1 ``).
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self.fault(value) {
            None => Ok(()),
            Some((path, what)) if path.is_empty() => Err(what),
            Some((path, what)) => Err(format!("key `{}`: {what}", path.join("."))),
        }
    }

    fn fault(&self, value: &Value) -> Option<Fault> {
        let Value::Object(obj) = value else {
            return Some((
                Vec::new(),
                format!(
                    "{} is not an object with keys {}",
                    short(value),
                    self.names()
                ),
            ));
        };
        for key in &self.keys {
            let name = key.field.name.as_str();
            let at = |what: String| Some((vec![name.to_string()], what));
            match obj.get(name) {
                None | Some(Value::Null) if key.optional => {}
                None => return at("is missing (it is not optional)".into()),
                Some(Value::Null) => return at("is null (it is not optional)".into()),
                Some(v) => match &key.field.constraints.shape {
                    Some(inner) => {
                        if let Some((mut path, what)) = inner.fault(v) {
                            path.insert(0, name.to_string());
                            return Some((path, what));
                        }
                    }
                    None => {
                        if let Err(what) = key.field.check(v) {
                            return at(what);
                        }
                    }
                },
            }
        }
        let undeclared = obj
            .keys()
            .find(|k| !self.keys.iter().any(|key| key.field.name == **k))?;
        Some((
            vec![crate::logs::excerpt(undeclared).into_owned()],
            format!("is not declared (the keys are {})", self.names()),
        ))
    }

    /// The declared keys, `a, b, c` (`none` for a shape of no keys).
    fn names(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.keys.iter().map(|k| k.field.name.as_str()).collect();
        names.join(", ")
    }

    /// The value with whole numbers written as floats (`7.0`) under integer keys made
    /// the integers they are, at any depth of the shape; nothing else changes (what
    /// does not fit is for [`Shape::check`] to say).
    pub fn whole_numbers(&self, mut value: Value) -> Value {
        if let Value::Object(obj) = &mut value {
            for key in &self.keys {
                let Some(v) = obj.get_mut(key.field.name.as_str()) else {
                    continue;
                };
                match (&key.field.constraints.shape, key.field.ty, &*v) {
                    (Some(inner), _, _) => *v = inner.whole_numbers(v.take()),
                    (None, FieldType::Integer, Value::Number(n))
                        if n.as_i64().is_none() && n.as_u64().is_none() =>
                    {
                        if let Some(whole) = FieldDef::whole(n) {
                            *v = whole;
                        }
                    }
                    _ => {}
                }
            }
        }
        value
    }
}

/// `{sku: string (max_length 20), qty: integer (min 1, max 99), note: string
/// (optional), size: data {w: integer}}`: each key with its type and constraints as
/// the file writes them.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", key.field.name, key.field.ty)?;
            let c = &key.field.constraints;
            if let Some(inner) = &c.shape {
                write!(f, " {inner}")?;
            }
            let mut notes: Vec<String> = c
                .as_written()
                .into_iter()
                .filter(|(name, _)| *name != "fields")
                .filter_map(|(name, v)| Some(format!("{name} {}", v?)))
                .collect();
            if key.optional {
                notes.push("optional".into());
            }
            if !notes.is_empty() {
                write!(f, " ({})", notes.join(", "))?;
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests;
