//! Compiling a resource's fields: type, template, constraints and default, each
//! checked against the others.

use regex::Regex;
use serde_json::Value;

use super::access::RuleOf;
use super::{Compiler, FIELD_KEYS};
use crate::config::suggestion;
use crate::config::yaml::{Key, Kind, Yaml};
use crate::field::{Constraints, FieldDef, FieldType, Writable, MAX_SHAPE_DEPTH};
use crate::pattern::Pattern;
use crate::rule::{Keys, Schema};
use crate::template::Template;

/// Every field a resource declares, with its type when the type is known, and the
/// keys of a data field that declares them.
pub(super) type Declared = Vec<(String, Option<FieldType>, Option<Keys>)>;

/// What the rules of a resource are checked against: the fields `declared`.
pub(super) fn schema_of(declared: &Declared) -> Schema<'_> {
    Schema {
        fields: declared
            .iter()
            .map(|(n, ty, _)| (n.as_str(), *ty))
            .collect(),
        keys: declared
            .iter()
            .filter_map(|(n, _, keys)| Some((n.as_str(), keys.as_ref()?)))
            .collect(),
    }
}

impl Compiler {
    /// The fields without errors, and every field declared with its type when that is
    /// known: rules (access rules, and the fields' own `writable` rules) are checked
    /// against all the declared ones, so that a field with an error of its own is not
    /// also "not a field" of every rule reading it.
    pub(super) fn fields(&mut self, pattern: &Pattern, node: &Yaml) -> (Vec<FieldDef>, Declared) {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`fields` must be a mapping of field names, not {}",
                    node.type_name()
                ),
            );
            return Default::default();
        };
        let declared: Declared = entries
            .iter()
            .filter(|(key, _)| !key.name.is_empty())
            .map(|(key, value)| {
                let keys = declared_keys(value, 1);
                (key.name.clone(), declared_type(value), keys)
            })
            .collect();
        let schema = schema_of(&declared);
        let fields = entries
            .iter()
            .filter_map(|(key, value)| self.field(pattern, key, value, &schema))
            .collect();
        (fields, declared)
    }

    pub(super) fn field(
        &mut self,
        pattern: &Pattern,
        key: &Key,
        node: &Yaml,
        schema: &Schema,
    ) -> Option<FieldDef> {
        let name = &key.name;
        if name.is_empty() {
            self.error(key.pos, "a field name must not be empty");
            return None;
        }
        let what = format!("field `{name}`");
        let entries = self.mapping(node, &what, FIELD_KEYS)?;
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.name == k)
                .map(|(_, v)| *v)
        };
        let before = self.errors.len();

        let ty = match get("type") {
            None => {
                self.error(
                    key.pos,
                    format!("{what} needs a `type` ({})", FieldType::NAMES.join(", ")),
                );
                None
            }
            Some(t) => match self.string(t, &format!("{what}: `type`")) {
                Some(s) => {
                    let ty = FieldType::parse(s);
                    if ty.is_none() {
                        let hint = suggestion(s, FieldType::NAMES)
                            .map(|h| format!("; did you mean `{h}`?"))
                            .unwrap_or_else(|| {
                                format!(" (expected one of: {})", FieldType::NAMES.join(", "))
                            });
                        self.error(t.pos, format!("unknown field type `{s}`{hint}"));
                    }
                    ty
                }
                None => None,
            },
        };
        let description = get("description")
            .and_then(|d| self.string(d, &format!("{what}: `description`")))
            .map(str::to_string);
        let writable = match get("writable") {
            None => Writable::Never,
            Some(w) => self.writable(pattern, name, w, schema),
        };
        let source = get("from").and_then(|f| {
            let text = self.string(f, &format!("{what}: `from`"))?;
            let compiled = match self.templates.get(text) {
                Some(t) => Ok(t.clone()),
                None => Template::compile(text),
            };
            match compiled {
                Ok(t) => {
                    self.templates.insert(text.to_string(), t.clone());
                    Some((f, t))
                }
                Err(e) => {
                    let at = e
                        .pos
                        .map(|(l, c)| format!(" (template line {l}, column {c})"))
                        .unwrap_or_default();
                    self.error(f.pos, format!("{what}: {}{at}", e.message));
                    None
                }
            }
        });
        if let Some((f, t)) = &source {
            match &writable {
                Writable::Never => {}
                Writable::Always => self.error(f.pos, format!("{what} has both `from` and `writable: true`; a derived field cannot be written")),
                Writable::When(_) => self.error(f.pos, format!("{what} has both `from` and a `writable` rule; a derived field cannot be written")),
            }
            let reads = match (t.reads_token(), t.reads_cid()) {
                (true, _) => Some("token"),
                (false, true) => Some("cid"),
                (false, false) => None,
            };
            if let Some(var) = reads.filter(|_| !pattern.has_cid()) {
                self.error(
                    f.pos,
                    format!("{what} reads `{var}`, but resource `{pattern}` has no `{{cid}}` capture to tie it to a connection"),
                );
            }
            self.check_params(pattern, t.params_read(), f.pos, &what);
        }

        let mut constraints = Constraints::default();
        let numeric = matches!(ty, Some(FieldType::Integer | FieldType::Number));
        let textual = matches!(ty, Some(FieldType::String));
        let only_for = |c: &mut Compiler, key: &str, allowed: bool, types: &str| {
            if let (Some(node), Some(ty)) = (get(key), ty) {
                if !allowed {
                    c.error(
                        node.pos,
                        format!("{what}: `{key}` applies to {types} fields, not to {ty}"),
                    );
                    return None;
                }
            }
            get(key)
        };
        if let Some(n) = only_for(self, "min", numeric, "integer and number") {
            constraints.min = self.number(n, &format!("{what}: `min`"));
        }
        if let Some(n) = only_for(self, "max", numeric, "integer and number") {
            constraints.max = self.number(n, &format!("{what}: `max`"));
        }
        if let (Some(min), Some(max)) = (constraints.min, constraints.max) {
            if min > max {
                self.error(
                    get("max").map_or(node.pos, |n| n.pos),
                    format!("{what}: `max` {max} is below `min` {min}"),
                );
            }
        }
        if let Some(n) = only_for(self, "max_length", textual, "string") {
            match n.kind {
                Kind::Int(i) if i >= 0 => constraints.max_length = Some(i as usize),
                _ => self.error(
                    n.pos,
                    format!("{what}: `max_length` must be a whole number of characters, 0 or more"),
                ),
            }
        }
        if let Some(n) = only_for(self, "pattern", textual, "string") {
            if let Some(re) = self.string(n, &format!("{what}: `pattern`")) {
                match Regex::new(re) {
                    Ok(r) => constraints.pattern = Some(r),
                    Err(e) => self.error(
                        n.pos,
                        format!(
                            "{what}: bad regex in `pattern`: {}",
                            first_line(&e.to_string())
                        ),
                    ),
                }
            }
        }
        if let Some(n) = only_for(self, "fields", ty == Some(FieldType::Data), "data") {
            constraints.shape = self.shape(pattern, name, n);
        }
        let enumerable = !matches!(ty, Some(FieldType::Ref | FieldType::Data));
        if let Some(n) = only_for(
            self,
            "enum",
            enumerable,
            "string, integer, number and boolean",
        ) {
            match &n.kind {
                Kind::Seq(items) if !items.is_empty() => {
                    constraints.one_of = Some(items.iter().map(Yaml::to_json).collect())
                }
                _ => self.error(
                    n.pos,
                    format!("{what}: `enum` must be a non-empty list of values"),
                ),
            }
        }

        if self.errors.len() > before {
            return None;
        }
        let mut field = FieldDef {
            name: name.clone(),
            description,
            ty: ty?,
            default: Value::Null,
            source: source.map(|(_, t)| t),
            constraints,
            writable,
        };
        // Enum values must themselves be valid values of the field.
        if let (Some(options), Some(n)) = (field.constraints.one_of.clone(), get("enum")) {
            let unconstrained = FieldDef {
                constraints: Constraints::default(),
                ..field.clone()
            };
            for (opt, item) in options.iter().zip(yaml_items(n)) {
                if let Err(e) = unconstrained.check(opt) {
                    self.error(item.pos, format!("{what}: enum value {e}"));
                }
            }
        }
        if let Some(d) = get("default") {
            let value = d.to_json();
            let value = if field.ty == FieldType::Data {
                field.shaped(value)
            } else {
                field.from_wire(&value).unwrap_or(value)
            };
            match field.check(&value) {
                Ok(()) => field.default = value,
                Err(e) => self.error(d.pos, format!("{what}: default {e}")),
            }
        }
        (self.errors.len() == before).then_some(field)
    }
}

impl Compiler {
    /// `writable:` of a field: true, false, or a rule over what a call's rules read (a
    /// rule with an error leaves the field in error, so `Never` is never served for it).
    fn writable(
        &mut self,
        pattern: &Pattern,
        name: &str,
        node: &Yaml,
        schema: &Schema,
    ) -> Writable {
        let what = format!("field `{name}`: `writable`");
        let site = format!("fields.{name}.writable");
        self.writable_at(pattern, node, &what, &site, schema)
    }

    /// `writable:` named `what` in messages and `site` among the resource's sites.
    pub(super) fn writable_at(
        &mut self,
        pattern: &Pattern,
        node: &Yaml,
        what: &str,
        site: &str,
        schema: &Schema,
    ) -> Writable {
        match &node.kind {
            Kind::Bool(true) => Writable::Always,
            Kind::Bool(false) => Writable::Never,
            Kind::Str(_) => self
                .rule(pattern, node, what, site, schema, RuleOf::Call)
                .map_or(Writable::Never, Writable::When),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be true, false or a rule (a CEL expression string), not {}",
                        node.type_name()
                    ),
                );
                Writable::Never
            }
        }
    }
}

fn yaml_items(node: &Yaml) -> &[Yaml] {
    match &node.kind {
        Kind::Seq(items) => items,
        _ => &[],
    }
}

/// The regex crate's message without its source excerpt: the `error: ...` line.
fn first_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix("error:"))
        .map_or(s.lines().next().unwrap_or(s), str::trim)
}

/// The type a field declares, when it names one (errors are the field compiler's).
fn declared_type(node: &Yaml) -> Option<FieldType> {
    let Kind::Map(entries) = &node.kind else {
        return None;
    };
    entries.iter().find_map(|(key, value)| match &value.kind {
        Kind::Str(t) if key.name == "type" => FieldType::parse(t),
        _ => None,
    })
}

/// The keys a data field or key declares (`fields:`), for the rules' checks, down to
/// the deepest shape allowed (errors are the field compiler's).
pub(super) fn declared_keys(node: &Yaml, depth: usize) -> Option<Keys> {
    let Kind::Map(entries) = &node.kind else {
        return None;
    };
    let (_, fields) = entries.iter().find(|(key, _)| key.name == "fields")?;
    let Kind::Map(keys) = &fields.kind else {
        return None;
    };
    let keys = keys
        .iter()
        .filter(|(key, _)| !key.name.is_empty())
        .map(|(key, value)| {
            let inner = (depth < MAX_SHAPE_DEPTH)
                .then(|| declared_keys(value, depth + 1))
                .flatten();
            (key.name.clone(), declared_type(value), inner)
        })
        .collect();
    Some(Keys(keys))
}
