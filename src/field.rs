//! Field definitions: the declared type and constraints of a model property, and the
//! conversions between RES wire values, template output and the stored value.
//!
//! A stored value is plain JSON: primitives as is, a `ref` as its resource ID string, a
//! `data` value as its JSON. Only [`ResValue`] turns it into a RES value for the wire.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::pattern::is_valid_ref;
use crate::rule::Rule;
use crate::template::Template;

mod constraints;
mod shape;

pub use constraints::Constraints;
pub use shape::{Shape, ShapeKey, MAX_SHAPE_DEPTH};

/// A field's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Ref,
    Data,
}

impl FieldType {
    pub const NAMES: &'static [&'static str] =
        &["string", "integer", "number", "boolean", "ref", "data"];

    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "ref" => FieldType::Ref,
            "data" => FieldType::Data,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Ref => "ref",
            FieldType::Data => "data",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated field of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub description: Option<String>,
    pub ty: FieldType,
    /// The null-reset default, already checked against type and constraints.
    pub default: Value,
    /// Where the value comes from, when it is derived (`from:`).
    pub source: Option<Template>,
    pub constraints: Constraints,
    /// Whether clients may `set` the field.
    pub writable: Writable,
}

/// Whether clients may `set` a field (`writable:`). Backend services write any field
/// without `from`, writable or not.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Writable {
    /// `false` (the default): clients may not.
    #[default]
    Never,
    /// `true`: clients may, when the resource's `access.call` rule allows the set.
    Always,
    /// A rule: clients may when it gives true for the set, evaluated over what the
    /// call rule sees; an error or anything else denies.
    When(Rule),
}

impl Writable {
    /// True unless the field is never writable by clients.
    pub fn ever(&self) -> bool {
        !matches!(self, Writable::Never)
    }

    /// The rule, for a field writable when a rule allows.
    pub fn rule(&self) -> Option<&Rule> {
        match self {
            Writable::When(rule) => Some(rule),
            _ => None,
        }
    }
}

impl fmt::Display for Writable {
    /// As written in the file: `false`, `true` or the rule in backquotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Writable::Never => f.write_str("false"),
            Writable::Always => f.write_str("true"),
            Writable::When(rule) => write!(f, "`{}`", rule.source()),
        }
    }
}

impl FieldDef {
    /// Whether a value (not null) is of the field's type; [`FieldDef::check`] checks the
    /// constraints too.
    pub fn is_of_type(&self, value: &Value) -> bool {
        match self.ty {
            FieldType::String => value.is_string(),
            FieldType::Integer => value.is_i64() || value.is_u64(),
            FieldType::Number => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::Ref => value.as_str().is_some_and(is_valid_ref),
            FieldType::Data => true,
        }
    }

    /// Checks a stored value against the type and the constraints.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        if value.is_null() {
            return Ok(());
        }
        if !self.is_of_type(value) {
            return Err(format!("{} is not {}", short(value), type_phrase(self.ty)));
        }
        let c = &self.constraints;
        if let Some(options) = &c.one_of {
            if !options.iter().any(|o| json_eq(o, value)) {
                let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
                return Err(format!(
                    "{} is not one of [{}] (enum)",
                    short(value),
                    list.join(", ")
                ));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = c.min {
                if n < min {
                    return Err(format!("{} is below min {}", short(value), fmt_num(min)));
                }
            }
            if let Some(max) = c.max {
                if n > max {
                    return Err(format!("{} is above max {}", short(value), fmt_num(max)));
                }
            }
        }
        if let Some(s) = value.as_str() {
            if let Some(max_length) = c.max_length {
                let len = s.chars().count();
                if len > max_length {
                    return Err(format!(
                        "is {len} characters long, longer than max_length {max_length}"
                    ));
                }
            }
            if let Some(re) = &c.pattern {
                if !re.is_match(s) {
                    return Err(format!(
                        "{} does not match pattern `{}`",
                        short(value),
                        re.as_str()
                    ));
                }
            }
        }
        if let Some(shape) = &c.shape {
            shape.check(value)?;
        }
        Ok(())
    }

    /// Converts a RES value sent by a client or service into a stored value, checking
    /// type and constraints. The error names the rule broken, not the field.
    pub fn from_wire(&self, wire: &Value) -> Result<Value, String> {
        let value = match (self.ty, wire) {
            (_, Value::Null) => Value::Null,
            // The RES delete action, refused for every type (a data field that must hold
            // this very object takes it wrapped: {"data": {"action": "delete"}}).
            (_, Value::Object(obj))
                if obj.len() == 1
                    && obj.get("action").and_then(Value::as_str) == Some("delete") =>
            {
                return Err(
                    "cannot be deleted: declared fields can only be set (null clears them)".into(),
                )
            }
            (FieldType::Data, Value::Object(obj)) => match obj.get("data") {
                Some(inner) if obj.len() == 1 => self.shaped(inner.clone()),
                _ => self.shaped(wire.clone()),
            },
            (FieldType::Data, Value::Array(_)) => wire.clone(),
            (FieldType::Data, _) => {
                return Err(format!(
                    "{} is not data: send {{\"data\": ...}}, an object or an array",
                    short(wire)
                ))
            }
            (FieldType::Ref, Value::Object(obj)) => match (obj.get("rid"), obj.len()) {
                (Some(Value::String(rid)), n)
                    if n == 1 || (n == 2 && obj.get("soft") == Some(&Value::Bool(false))) =>
                {
                    Value::String(rid.clone())
                }
                _ => {
                    return Err(format!(
                        "{} is not a resource reference {{\"rid\": ...}}",
                        short(wire)
                    ))
                }
            },
            (_, Value::Object(_) | Value::Array(_)) => {
                return Err(format!(
                    "{} is not {}: objects and arrays are only allowed in data fields",
                    short(wire),
                    type_phrase(self.ty)
                ))
            }
            (FieldType::Integer, Value::Number(n))
                if n.as_i64().is_none() && n.as_u64().is_none() =>
            {
                match Self::whole(n) {
                    Some(v) => v,
                    None => return Err(format!("{} is not an integer", short(wire))),
                }
            }
            _ => wire.clone(),
        };
        self.check(&value)?;
        Ok(value)
    }

    /// Converts the output of a `from` template into a stored value. A single-expression
    /// template gives JSON; mixed text gives a string that is parsed for the field type.
    pub fn from_rendered(&self, rendered: Value) -> Result<Value, String> {
        let value = match (self.ty, rendered) {
            (_, Value::Null) => Value::Null,
            (FieldType::Integer, Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{} is not an integer", short_str(&s)))?,
            (FieldType::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{} is not a number", short_str(&s)))?,
            (FieldType::Boolean, Value::String(s)) => match s.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("{} is not a boolean", short_str(&s))),
            },
            // Each expression of `users.user.{{token.userId}}` fills one part of the
            // name: a value with a dot in it would point somewhere else.
            (FieldType::Ref, Value::String(s))
                if self
                    .source
                    .as_ref()
                    .and_then(Template::name_parts)
                    .is_some_and(|n| s.split('.').count() != n) =>
            {
                return Err(format!(
                    "{} does not fill the template's name parts one each (a value with a `.`)",
                    short_str(&s)
                ))
            }
            (FieldType::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Value::String(v.to_string())
            }
            (FieldType::Ref, Value::Number(n)) => Value::String(n.to_string()),
            (FieldType::Data, v) => self.shaped(v),
            (FieldType::Integer, Value::Number(n))
                if n.as_i64().is_none() && n.as_u64().is_none() =>
            {
                match Self::whole(&n) {
                    Some(v) => v,
                    None => return Err(format!("{n} is not an integer")),
                }
            }
            (_, v) => v,
        };
        self.check(&value)?;
        Ok(value)
    }
}

impl FieldDef {
    /// A data value with whole numbers written as floats (`7.0`) under the integer
    /// keys of its shape made the integers they are, as a `set` of an integer field
    /// does; anything else is left for [`FieldDef::check`].
    pub(crate) fn shaped(&self, value: Value) -> Value {
        match &self.constraints.shape {
            Some(shape) => shape.whole_numbers(value),
            None => value,
        }
    }

    /// A whole number written as a float, as the integer it is (`None`: not one).
    pub(crate) fn whole(n: &serde_json::Number) -> Option<Value> {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(Value::from(f as i64)),
            _ => None,
        }
    }
}

/// A stored value as a RES value on the wire: `ref` as `{"rid": ...}`, `data` as
/// `{"data": ...}`, primitives as is.
pub struct ResValue<'a>(pub FieldType, pub &'a Value);

impl Serialize for ResValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (_, Value::Null) => serializer.serialize_unit(),
            (FieldType::Ref, v) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("rid", v)?;
                map.end()
            }
            (FieldType::Data, v) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("data", v)?;
                map.end()
            }
            (_, v) => v.serialize(serializer),
        }
    }
}

/// JSON equality where numbers compare by value (14 equals 14.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn type_phrase(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "a string",
        FieldType::Integer => "an integer",
        FieldType::Number => "a number",
        FieldType::Boolean => "a boolean",
        FieldType::Ref => "a valid resource name",
        FieldType::Data => "data",
    }
}

fn fmt_num(n: f64) -> String {
    Value::from(n)
        .to_string()
        .trim_end_matches(".0")
        .to_string()
}

/// A string for an error message, quoted and cut short.
fn short_str(s: &str) -> String {
    short(&Value::String(s.to_string()))
}

/// A value for an error message, cut short so a large payload stays a short message.
fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 40 {
        let cut: String = s.chars().take(37).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
