//! The compiler: walks the spanned YAML tree into a [`Config`], collecting every error
//! with its position instead of stopping at the first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use super::yaml::{Key, Kind, Pos, Yaml};
use super::{
    suggestion, Access, ApiSettings, CallAccess, Config, ConfigError, Resource, Site, Sites,
    DEFAULT_API_PREFIX, METHODS, RESERVED_SUBJECT_ROOTS, VERSION,
};
use crate::field::{Constraints, FieldDef, FieldType};
use crate::pattern::{Part, Pattern};
use crate::rule::{Rule, Schema};
use crate::template::Template;

pub(crate) const TOP_KEYS: &[&str] = &["version", "nats", "api", "state", "resources"];
pub(crate) const API_KEYS: &[&str] = &["prefix"];
pub(crate) const RESOURCE_KEYS: &[&str] = &["description", "fields", "reset", "access"];
pub(crate) const RESET_KEYS: &[&str] = &["on_logout"];
pub(crate) const ACCESS_KEYS: &[&str] = &["get", "call"];
pub(crate) const FIELD_KEYS: &[&str] = &[
    "type",
    "description",
    "default",
    "from",
    "enum",
    "min",
    "max",
    "max_length",
    "pattern",
    "writable",
];

/// Walks the YAML tree, collecting every error instead of stopping at the first.
#[derive(Default)]
pub(super) struct Compiler {
    pub(super) errors: Vec<ConfigError>,
    /// Compiled rules and templates by source: configs repeat the same few rules
    /// (`cid == params.cid`) on every resource, and compiling CEL dominates load time.
    rules: HashMap<String, Rule>,
    templates: HashMap<String, Template>,
    /// The config file's directory: relative paths in the file are relative to it.
    pub(super) base: PathBuf,
    /// The file being compiled, when the config is a directory of files.
    pub(super) file: Option<String>,
    /// The sites of the resource being compiled.
    sites: Vec<(String, Site)>,
}

/// A parsed config file: its name (when the config is a directory) and its tree.
pub(super) type Doc = (Option<String>, Yaml);

type Entries<'y> = Vec<(&'y Key, &'y Yaml)>;

impl Compiler {
    pub(super) fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            pos,
            message: message.into(),
        });
    }

    /// The entries of a mapping; unknown keys are reported (with a suggestion) and left out.
    pub(super) fn mapping<'y>(
        &mut self,
        node: &'y Yaml,
        what: &str,
        allowed: &[&str],
    ) -> Option<Entries<'y>> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, not {}", node.type_name()),
            );
            return None;
        };
        let mut known = Vec::new();
        for (key, value) in entries {
            if allowed.contains(&key.name.as_str()) {
                known.push((key, value));
            } else {
                let hint = match suggestion(&key.name, allowed) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => format!(" (expected one of: {})", allowed.join(", ")),
                };
                self.error(
                    key.pos,
                    format!("unknown key `{}` in {what}{hint}", key.name),
                );
            }
        }
        Some(known)
    }

    pub(super) fn string<'y>(&mut self, node: &'y Yaml, what: &str) -> Option<&'y str> {
        match &node.kind {
            Kind::Str(s) => Some(s),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, not {}", node.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Yaml, what: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be true or false, not {}", node.type_name()),
                );
                None
            }
        }
    }

    /// A duration written with its unit (`30s`, `24h`), at least `min`.
    pub(super) fn duration(&mut self, node: &Yaml, what: &str, min: Duration) -> Option<Duration> {
        if let Kind::Int(n) = node.kind {
            self.error(
                node.pos,
                format!("{what} needs a unit: write e.g. {n}s, 30m or 24h"),
            );
            return None;
        }
        let text = self.string(node, what)?;
        match humantime::parse_duration(text) {
            Ok(d) if d >= min => Some(d),
            Ok(_) => {
                let min = humantime::format_duration(min);
                self.error(node.pos, format!("{what} must be at least {min}"));
                None
            }
            Err(e) => {
                self.error(
                    node.pos,
                    format!("{what} `{text}` is not a duration ({e}); write e.g. 500ms, 30s, 30m or 24h"),
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Yaml, what: &str) -> Option<f64> {
        match node.kind {
            Kind::Int(i) => Some(i as f64),
            Kind::Float(f) => Some(f),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a number, not {}", node.type_name()),
                );
                None
            }
        }
    }

    /// Compiles the files of a config: `version` and each top-level block in one file
    /// at most, resources from all. `complete` is false when a file did not parse: then
    /// nothing is said to be missing.
    pub(super) fn config(&mut self, docs: &[Doc], complete: bool) -> Option<Config> {
        // Each top-level key with the file and the node that set it.
        let mut found: Vec<(&'static str, &Option<String>, &Key, &Yaml)> = Vec::new();
        for (file, doc) in docs {
            self.file = file.clone();
            for (key, value) in self
                .mapping(doc, "the top level", TOP_KEYS)
                .unwrap_or_default()
            {
                let name = TOP_KEYS
                    .iter()
                    .find(|k| **k == key.name)
                    .copied()
                    .unwrap_or("");
                let first = found
                    .iter()
                    .find(|(n, ..)| *n == name && name != "resources");
                if let Some((_, first_file, first_key, _)) = first {
                    let at = match first_file {
                        Some(f) => format!("{f}:{}", first_key.pos),
                        None => first_key.pos.to_string(),
                    };
                    self.error(
                        key.pos,
                        format!(
                            "`{name}` is already set at {at}; top-level settings go in one file"
                        ),
                    );
                    continue;
                }
                found.push((name, file, key, value));
            }
        }
        let get = |this: &mut Self, k: &str| {
            found.iter().find(|(n, ..)| *n == k).map(|(_, file, _, v)| {
                this.file = (*file).clone();
                *v
            })
        };
        // A key that is missing belongs to the (first) file as a whole.
        let top = Pos { line: 1, col: 1 };
        match get(self, "version") {
            None if complete => {
                self.file = docs.first().and_then(|(f, _)| f.clone());
                self.error(top, format!("missing `version: {VERSION}`"))
            }
            None => {}
            Some(v) if v.kind == Kind::Int(VERSION) => {}
            Some(v) => self.error(
                v.pos,
                format!(
                    "unsupported version {}: this build reads version {VERSION}",
                    v.to_json()
                ),
            ),
        }
        let nats = get(self, "nats").map(|n| self.nats(n)).unwrap_or_default();
        let api = get(self, "api")
            .map(|a| self.api(a))
            .unwrap_or(ApiSettings {
                prefix: DEFAULT_API_PREFIX.into(),
            });
        let state = get(self, "state")
            .map(|s| self.state(s))
            .unwrap_or_default();
        let blocks: Vec<(&Option<String>, &Yaml)> = found
            .iter()
            .filter(|(n, ..)| *n == "resources")
            .map(|(_, file, _, v)| (*file, *v))
            .collect();
        if blocks.is_empty() && complete {
            self.file = docs.first().and_then(|(f, _)| f.clone());
            self.error(top, "missing `resources:` (a mapping of resource patterns)");
        }
        let resources = self.resources(&blocks);
        Some(Config::new(nats, api, state, resources))
    }

    fn api(&mut self, node: &Yaml) -> ApiSettings {
        let mut out = ApiSettings {
            prefix: DEFAULT_API_PREFIX.into(),
        };
        for (_, value) in self.mapping(node, "`api`", API_KEYS).unwrap_or_default() {
            let Some(s) = self.string(value, "`api.prefix`") else {
                continue;
            };
            let first = s.split('.').next().unwrap_or(s);
            if !s.split('.').all(is_subject_token) {
                self.error(
                    value.pos,
                    format!("`api.prefix` `{s}` must be a NATS subject (dot-separated tokens without spaces or wildcards)"),
                );
            } else if RESERVED_SUBJECT_ROOTS.contains(&first) {
                self.error(
                    value.pos,
                    format!("`api.prefix` `{s}` starts with `{first}`, which RES and NATS use ({}); the write API must not share their subjects", RESERVED_SUBJECT_ROOTS.join(", ")),
                );
            } else {
                out.prefix = s.to_string();
            }
        }
        out
    }

    /// The `resources:` blocks of every file, as one list; a pattern that overlaps one
    /// declared before (in this file or an earlier one) is an error naming both.
    fn resources(&mut self, blocks: &[(&Option<String>, &Yaml)]) -> Vec<Arc<Resource>> {
        let mut out: Vec<(Option<String>, Pos, Arc<Resource>)> = Vec::new();
        for (file, node) in blocks {
            self.file = (*file).clone();
            let Kind::Map(entries) = &node.kind else {
                self.error(
                    node.pos,
                    format!(
                        "`resources` must be a mapping of resource patterns, not {}",
                        node.type_name()
                    ),
                );
                continue;
            };
            for (key, value) in entries {
                let pattern = match Pattern::parse(&key.name) {
                    Ok(p) => p,
                    Err(e) => {
                        self.error(key.pos, e.to_string());
                        continue;
                    }
                };
                let overlap = out.iter().find(|(.., r)| r.pattern.overlaps(&pattern));
                if let Some((other_file, pos, other)) = overlap {
                    let at = match other_file {
                        Some(f) if f != self.file.as_deref().unwrap_or_default() => {
                            format!("{f}:{}", pos)
                        }
                        _ => format!("line {}", pos.line),
                    };
                    let message = format!(
                        "resource pattern `{pattern}` overlaps `{}` ({at}): both match names like `{}`",
                        other.pattern,
                        example_name(&pattern, &other.pattern)
                    );
                    self.error(key.pos, message);
                    continue;
                }
                if let Some(resource) = self.resource(key, pattern, value) {
                    out.push((self.file.clone(), key.pos, Arc::new(resource)));
                }
            }
        }
        out.into_iter().map(|(.., r)| r).collect()
    }

    fn resource(&mut self, key: &Key, pattern: Pattern, node: &Yaml) -> Option<Resource> {
        let site = Site {
            file: self.file.clone(),
            pos: key.pos,
        };
        self.sites = vec![("pattern".to_string(), site)];
        let what = format!("resource `{pattern}`");
        let entries = self.mapping(node, &what, RESOURCE_KEYS)?;
        let (mut description, mut fields, mut reset_on_logout) = (None, Vec::new(), true);
        let mut access_node = None;
        for (key, value) in entries {
            match key.name.as_str() {
                "description" => {
                    description = self
                        .string(value, &format!("{what}: `description`"))
                        .map(str::to_string)
                }
                "fields" => fields = self.fields(&pattern, value),
                "reset" => {
                    for (_, v) in self
                        .mapping(value, "`reset`", RESET_KEYS)
                        .unwrap_or_default()
                    {
                        if let Some(b) = self.boolean(v, "`reset.on_logout`") {
                            reset_on_logout = b;
                        }
                    }
                }
                _ => access_node = Some(value),
            }
        }
        // Rules are checked against the fields, wherever the file puts them.
        let access = access_node.map_or_else(Access::default, |node| {
            let schema = Schema {
                fields: fields.iter().map(|f| (f.name.as_str(), f.ty)).collect(),
            };
            self.access(&pattern, node, &schema)
        });
        let mut resource = Resource::new(pattern, description, fields, reset_on_logout, access);
        resource.sites = Sites(std::mem::take(&mut self.sites));
        Some(resource)
    }

    fn fields(&mut self, pattern: &Pattern, node: &Yaml) -> Vec<FieldDef> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`fields` must be a mapping of field names, not {}",
                    node.type_name()
                ),
            );
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(key, value)| self.field(pattern, key, value))
            .collect()
    }

    fn field(&mut self, pattern: &Pattern, key: &Key, node: &Yaml) -> Option<FieldDef> {
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
        let writable = get("writable")
            .and_then(|w| self.boolean(w, &format!("{what}: `writable`")))
            .unwrap_or(false);
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
            if writable {
                self.error(f.pos, format!("{what} has both `from` and `writable: true`; a derived field cannot be written"));
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
                value
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

    /// Every `params.<name>` read must be a capture of the pattern.
    fn check_params(&mut self, pattern: &Pattern, read: &[String], pos: Pos, what: &str) {
        for name in read {
            if !pattern.captures().any(|c| c == name) {
                let captures: Vec<String> =
                    pattern.captures().map(|c| format!("params.{c}")).collect();
                let known = if captures.is_empty() {
                    "it has no captures".to_string()
                } else {
                    format!("it has {}", captures.join(", "))
                };
                self.error(
                    pos,
                    format!("{what} reads `params.{name}`, but resource `{pattern}` has no `{{{name}}}` capture ({known})"),
                );
            }
        }
    }

    fn access(&mut self, pattern: &Pattern, node: &Yaml, schema: &Schema) -> Access {
        let mut access = Access::default();
        for (key, value) in self
            .mapping(node, "`access`", ACCESS_KEYS)
            .unwrap_or_default()
        {
            if key.name == "get" {
                access.get = self.rule(pattern, value, "`access.get`", schema);
                continue;
            }
            access.call = match &value.kind {
                Kind::Map(_) => {
                    let methods = self
                        .mapping(value, "`access.call`", METHODS)
                        .unwrap_or_default();
                    let rules = methods
                        .into_iter()
                        .filter_map(|(m, v)| {
                            let rule = self.rule(
                                pattern,
                                v,
                                &format!("`access.call.{}`", m.name),
                                schema,
                            )?;
                            Some((m.name.clone(), rule))
                        })
                        .collect();
                    CallAccess::Methods(rules)
                }
                _ => self
                    .rule(pattern, value, "`access.call`", schema)
                    .map_or(CallAccess::Deny, CallAccess::All),
            };
        }
        access
    }

    fn rule(
        &mut self,
        pattern: &Pattern,
        node: &Yaml,
        what: &str,
        schema: &Schema,
    ) -> Option<Rule> {
        let rule = self.compile_rule(node, what)?;
        let before = self.errors.len();
        self.check_params(pattern, rule.params_read(), node.pos, what);
        for problem in rule.check(schema) {
            self.error(node.pos, format!("{what}: {problem}"));
        }
        let name = what.trim_matches('`').trim_start_matches("access.");
        self.sites.push((
            name.to_string(),
            Site {
                file: self.file.clone(),
                pos: node.pos,
            },
        ));
        (self.errors.len() == before).then_some(rule)
    }

    fn compile_rule(&mut self, node: &Yaml, what: &str) -> Option<Rule> {
        let source = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(b) => b.to_string(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be a CEL expression string, not {}",
                        node.type_name()
                    ),
                );
                return None;
            }
        };
        if let Some(rule) = self.rules.get(&source) {
            return Some(rule.clone());
        }
        Rule::compile(&source)
            .inspect(|rule| {
                self.rules.insert(source.clone(), rule.clone());
            })
            .map_err(|e| {
                let at = e
                    .pos
                    .map(|(l, c)| format!(" (rule line {l}, column {c})"))
                    .unwrap_or_default();
                self.error(node.pos, format!("{what}: {}{at}", e.message));
            })
            .ok()
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

/// A NATS subject token: non-empty, no whitespace, dots or wildcards.
pub(super) fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '.' || c == '*' || c == '>')
}

/// A resource name both overlapping patterns match, for the error message.
fn example_name(a: &Pattern, b: &Pattern) -> String {
    a.parts()
        .iter()
        .zip(b.parts())
        .map(|parts| match parts {
            (Part::Literal(l), _) | (_, Part::Literal(l)) => l.clone(),
            (Part::Capture(n), _) => format!("<{n}>"),
        })
        .collect::<Vec<_>>()
        .join(".")
}
