//! A field's constraints beyond its type (`enum`, `min`, `max`, `max_length`,
//! `pattern`, and a data value's shape), as the file writes them. What they allow is
//! [`super::FieldDef::check`]'s.

use regex::Regex;
use serde_json::Value;

use super::Shape;

/// Constraints beyond the type. Which ones a type allows is checked at load.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub one_of: Option<Vec<Value>>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_length: Option<usize>,
    pub pattern: Option<Regex>,
    /// A `data` value's declared shape (`fields:`): an object of these keys only.
    pub shape: Option<Shape>,
}

impl PartialEq for Constraints {
    fn eq(&self, other: &Self) -> bool {
        self.one_of == other.one_of
            && self.min == other.min
            && self.max == other.max
            && self.max_length == other.max_length
            && self.pattern.as_ref().map(Regex::as_str) == other.pattern.as_ref().map(Regex::as_str)
            && self.shape == other.shape
    }
}

impl Constraints {
    /// Each constraint by its key in the file, as the file writes it (`None`: not
    /// given), for `connres check` and `plan`.
    pub fn as_written(&self) -> [(&'static str, Option<String>); 6] {
        let num = |n: Option<f64>| n.map(|n| n.to_string());
        [
            (
                "enum",
                self.one_of
                    .as_ref()
                    .map(|v| Value::from(v.clone()).to_string()),
            ),
            ("min", num(self.min)),
            ("max", num(self.max)),
            ("max_length", self.max_length.map(|n| n.to_string())),
            (
                "pattern",
                self.pattern.as_ref().map(|r| r.as_str().to_string()),
            ),
            ("fields", self.shape.as_ref().map(Shape::to_string)),
        ]
    }
}
