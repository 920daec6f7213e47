//! The config: `resources.yaml` read, validated and compiled into an immutable
//! [`Config`] that requests are served from. Every error in a file is collected and
//! reported as `file:line:col: message`; an invalid file never becomes a `Config`.

mod diff;
mod error;
mod yaml;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

pub use diff::{diff, ConfigDiff};
pub use error::{suggestion, ConfigError, ConfigErrors};
pub use yaml::Pos;
use yaml::{Key, Kind, Yaml};

use crate::field::{Constraints, FieldDef, FieldType};
use crate::pattern::{Params, Part, Pattern};
use crate::rule::Rule;
use crate::template::Template;

/// The only config version this build reads.
pub const VERSION: i64 = 1;
/// Default queue group for request subscriptions.
pub const DEFAULT_QUEUE_GROUP: &str = "connres";
/// Default prefix of the backend write API.
pub const DEFAULT_API_PREFIX: &str = "connres";
/// Subject roots of RES and NATS that the backend write API must stay out of.
const RESERVED_SUBJECT_ROOTS: &[&str] = &[
    "get", "access", "call", "auth", "event", "conn", "system", "_INBOX",
];
/// The call methods connres serves.
pub const METHODS: &[&str] = &["set", "reset"];

/// A validated, immutable config.
#[derive(Debug)]
pub struct Config {
    pub nats: NatsSettings,
    pub api: ApiSettings,
    pub resources: Vec<Arc<Resource>>,
    /// A hash of the text this config was compiled from, to skip reloads of an
    /// unchanged file.
    source_hash: u64,
    /// Resources by part count and first literal part, for matching without a scan.
    index: HashMap<usize, PartIndex>,
}

/// Resources with one part count: by their first part when it is a literal, else listed.
#[derive(Debug, Default)]
struct PartIndex {
    by_first: HashMap<String, Vec<usize>>,
    by_capture: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub url: Option<String>,
    pub queue_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub prefix: String,
}

/// A declared connection resource.
#[derive(Debug, PartialEq)]
pub struct Resource {
    pub pattern: Pattern,
    pub description: Option<String>,
    pub fields: Vec<FieldDef>,
    pub reset_on_logout: bool,
    pub access: Access,
}

/// The access rules of a resource. A missing rule denies.
#[derive(Debug, Default, PartialEq)]
pub struct Access {
    pub get: Option<Rule>,
    pub call: CallAccess,
}

#[derive(Debug, Default, PartialEq)]
pub enum CallAccess {
    #[default]
    Deny,
    /// One rule for every method.
    All(Rule),
    /// A rule per method; methods not listed are denied.
    Methods(Vec<(String, Rule)>),
}

impl Access {
    /// Every rule: `get` and the call rules.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        let call: Vec<&Rule> = match &self.call {
            CallAccess::Deny => Vec::new(),
            CallAccess::All(r) => vec![r],
            CallAccess::Methods(rules) => rules.iter().map(|(_, r)| r).collect(),
        };
        self.get.iter().chain(call)
    }
}

impl CallAccess {
    /// The rule that decides a method, if any.
    pub fn rule(&self, method: &str) -> Option<&Rule> {
        match self {
            CallAccess::Deny => None,
            CallAccess::All(rule) => Some(rule),
            CallAccess::Methods(rules) => rules.iter().find(|(m, _)| m == method).map(|(_, r)| r),
        }
    }
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// True when an access rule reads `token` (so access may change at login).
    pub fn access_reads_token(&self) -> bool {
        self.access.rules().any(Rule::reads_token)
    }

    /// True when an access rule reads `model` (so the model is built for it).
    pub fn access_reads_model(&self) -> bool {
        self.access.rules().any(Rule::reads_model)
    }

    /// True when a field follows the token.
    pub fn fields_read_token(&self) -> bool {
        self.fields
            .iter()
            .any(|f| f.source.as_ref().is_some_and(Template::reads_token))
    }
}

impl Config {
    /// Reads and compiles a config file.
    pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(source) => Config::parse(&file, &source),
            Err(e) => Err(ConfigErrors {
                file,
                errors: vec![ConfigError {
                    pos: Pos { line: 1, col: 1 },
                    message: format!("cannot read the file: {e}"),
                }],
            }),
        }
    }

    /// Compiles a config from its text; `file` names it in errors.
    pub fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            file: file.to_string(),
            errors,
        };
        let doc = yaml::parse(source).map_err(|e| {
            fail(vec![ConfigError {
                pos: e.pos,
                message: e.message,
            }])
        })?;
        let mut c = Compiler::default();
        let config = c.config(&doc).map(|mut config| {
            config.source_hash = source_hash(source);
            config
        });
        if c.errors.is_empty() {
            config.ok_or_else(|| fail(Vec::new()))
        } else {
            c.errors.sort_by_key(|e| e.pos);
            Err(fail(c.errors))
        }
    }

    /// The hash of the text this config was compiled from (see [`source_hash`]).
    pub fn source_hash(&self) -> u64 {
        self.source_hash
    }

    /// Finds the resource whose pattern matches a resource name, with its captures.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<(&'a Arc<Resource>, Params<'a>)> {
        let parts = name.bytes().filter(|&b| b == b'.').count() + 1;
        let first = name.split('.').next().unwrap_or(name);
        let index = self.index.get(&parts)?;
        let by_literal = index.by_first.get(first).into_iter().flatten();
        by_literal.chain(&index.by_capture).find_map(|&i| {
            let resource = &self.resources[i];
            resource
                .pattern
                .matches(name)
                .map(|params| (resource, params))
        })
    }

    fn new(nats: NatsSettings, api: ApiSettings, resources: Vec<Arc<Resource>>) -> Config {
        let mut index: HashMap<usize, PartIndex> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            let entry = index.entry(r.pattern.parts().len()).or_default();
            match r.pattern.parts().first() {
                Some(Part::Literal(l)) => entry.by_first.entry(l.clone()).or_default().push(i),
                _ => entry.by_capture.push(i),
            }
        }
        Config {
            nats,
            api,
            resources,
            source_hash: 0,
            index,
        }
    }
}

/// A hash of config text, stable within one process.
pub fn source_hash(source: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

const TOP_KEYS: &[&str] = &["version", "nats", "api", "resources"];
const NATS_KEYS: &[&str] = &["url", "queue_group"];
const API_KEYS: &[&str] = &["prefix"];
const RESOURCE_KEYS: &[&str] = &["description", "fields", "reset", "access"];
const RESET_KEYS: &[&str] = &["on_logout"];
const ACCESS_KEYS: &[&str] = &["get", "call"];
const FIELD_KEYS: &[&str] = &[
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
struct Compiler {
    errors: Vec<ConfigError>,
    /// Compiled rules and templates by source: configs repeat the same few rules
    /// (`cid == params.cid`) on every resource, and compiling CEL dominates load time.
    rules: HashMap<String, Rule>,
    templates: HashMap<String, Template>,
}

type Entries<'y> = Vec<(&'y Key, &'y Yaml)>;

impl Compiler {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(ConfigError {
            pos,
            message: message.into(),
        });
    }

    /// The entries of a mapping; unknown keys are reported (with a suggestion) and left out.
    fn mapping<'y>(&mut self, node: &'y Yaml, what: &str, allowed: &[&str]) -> Option<Entries<'y>> {
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

    fn string<'y>(&mut self, node: &'y Yaml, what: &str) -> Option<&'y str> {
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

    fn boolean(&mut self, node: &Yaml, what: &str) -> Option<bool> {
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

    fn config(&mut self, doc: &Yaml) -> Option<Config> {
        let entries = self.mapping(doc, "the top level", TOP_KEYS)?;
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.name == k)
                .map(|(_, v)| *v)
        };
        // The top-level mapping's own position is where its first value starts; a key
        // that is missing belongs to the file as a whole.
        let top = Pos { line: 1, col: 1 };
        match get("version") {
            None => self.error(top, format!("missing `version: {VERSION}`")),
            Some(v) if v.kind == Kind::Int(VERSION) => {}
            Some(v) => self.error(
                v.pos,
                format!(
                    "unsupported version {}: this build reads version {VERSION}",
                    v.to_json()
                ),
            ),
        }
        let nats = get("nats").map(|n| self.nats(n)).unwrap_or(NatsSettings {
            url: None,
            queue_group: DEFAULT_QUEUE_GROUP.into(),
        });
        let api = get("api").map(|a| self.api(a)).unwrap_or(ApiSettings {
            prefix: DEFAULT_API_PREFIX.into(),
        });
        let resources = match get("resources") {
            Some(r) => self.resources(r),
            None => {
                self.error(top, "missing `resources:` (a mapping of resource patterns)");
                Vec::new()
            }
        };
        Some(Config::new(nats, api, resources))
    }

    fn nats(&mut self, node: &Yaml) -> NatsSettings {
        let mut out = NatsSettings {
            url: None,
            queue_group: DEFAULT_QUEUE_GROUP.into(),
        };
        for (key, value) in self.mapping(node, "`nats`", NATS_KEYS).unwrap_or_default() {
            let Some(s) = self.string(value, &format!("`nats.{}`", key.name)) else {
                continue;
            };
            match key.name.as_str() {
                "url" => out.url = Some(s.to_string()),
                _ if is_subject_token(s) => out.queue_group = s.to_string(),
                _ => self.error(value.pos, "`nats.queue_group` must be one NATS subject token (no spaces, dots or wildcards)"),
            }
        }
        out
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

    fn resources(&mut self, node: &Yaml) -> Vec<Arc<Resource>> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`resources` must be a mapping of resource patterns, not {}",
                    node.type_name()
                ),
            );
            return Vec::new();
        };
        let mut out: Vec<(Pos, Arc<Resource>)> = Vec::new();
        for (key, value) in entries {
            let pattern = match Pattern::parse(&key.name) {
                Ok(p) => p,
                Err(e) => {
                    self.error(key.pos, e.to_string());
                    continue;
                }
            };
            if let Some((pos, other)) = out.iter().find(|(_, r)| r.pattern.overlaps(&pattern)) {
                self.error(
                    key.pos,
                    format!(
                        "resource pattern `{pattern}` overlaps `{}` (line {}): both match names like `{}`",
                        other.pattern,
                        pos.line,
                        example_name(&pattern, &other.pattern)
                    ),
                );
                continue;
            }
            if let Some(resource) = self.resource(pattern, value) {
                out.push((key.pos, Arc::new(resource)));
            }
        }
        out.into_iter().map(|(_, r)| r).collect()
    }

    fn resource(&mut self, pattern: Pattern, node: &Yaml) -> Option<Resource> {
        let what = format!("resource `{pattern}`");
        let entries = self.mapping(node, &what, RESOURCE_KEYS)?;
        let mut resource = Resource {
            pattern,
            description: None,
            fields: Vec::new(),
            reset_on_logout: true,
            access: Access::default(),
        };
        for (key, value) in entries {
            match key.name.as_str() {
                "description" => {
                    resource.description = self
                        .string(value, &format!("{what}: `description`"))
                        .map(str::to_string)
                }
                "fields" => resource.fields = self.fields(&resource.pattern, value),
                "reset" => {
                    for (_, v) in self
                        .mapping(value, "`reset`", RESET_KEYS)
                        .unwrap_or_default()
                    {
                        if let Some(b) = self.boolean(v, "`reset.on_logout`") {
                            resource.reset_on_logout = b;
                        }
                    }
                }
                _ => resource.access = self.access(&resource.pattern, value),
            }
        }
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
            if t.reads_token() && !pattern.has_cid() {
                self.error(
                    f.pos,
                    format!("{what} reads `token`, but resource `{pattern}` has no `{{cid}}` capture to tie it to a connection"),
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

    fn access(&mut self, pattern: &Pattern, node: &Yaml) -> Access {
        let mut access = Access::default();
        for (key, value) in self
            .mapping(node, "`access`", ACCESS_KEYS)
            .unwrap_or_default()
        {
            if key.name == "get" {
                access.get = self.rule(pattern, value, "`access.get`");
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
                            let rule =
                                self.rule(pattern, v, &format!("`access.call.{}`", m.name))?;
                            Some((m.name.clone(), rule))
                        })
                        .collect();
                    CallAccess::Methods(rules)
                }
                _ => self
                    .rule(pattern, value, "`access.call`")
                    .map_or(CallAccess::Deny, CallAccess::All),
            };
        }
        access
    }

    fn rule(&mut self, pattern: &Pattern, node: &Yaml, what: &str) -> Option<Rule> {
        let rule = self.compile_rule(node, what)?;
        let before = self.errors.len();
        self.check_params(pattern, rule.params_read(), node.pos, what);
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
fn is_subject_token(s: &str) -> bool {
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

#[cfg(test)]
mod tests;
