//! The compiler: walks the spanned YAML tree into a [`Config`], collecting every error
//! with its position instead of stopping at the first. A resource's fields are compiled
//! in `field.rs`, its access rules in `access.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::yaml::{Key, Kind, Pos, Yaml};
use super::{
    excerpt, suggestion, Access, ApiSettings, Config, ConfigError, Resource, Site, Sites,
    DEFAULT_API_PREFIX, RESERVED_SUBJECT_ROOTS, VERSION,
};
use crate::pattern::{OverlapIndex, Part, Pattern};
use crate::rule::Rule;
use crate::template::Template;

mod access;
mod auth;
mod collection;
mod field;
mod jwt;
mod presence;
mod shape;

pub(crate) const TOP_KEYS: &[&str] = &["version", "nats", "api", "state", "auth", "resources"];
pub(crate) const API_KEYS: &[&str] = &["prefix"];
pub(crate) const RESOURCE_KEYS: &[&str] = &[
    "description",
    "fields",
    "collection",
    "presence",
    "reset",
    "access",
];
pub(crate) const PRESENCE_KEYS: &[&str] = &["member", "join", "ttl", "max_members"];
pub(crate) const COLLECTION_KEYS: &[&str] = &["item", "max_items", "writable"];
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
    "fields",
];
/// A key of a data shape (`fields:` of a data field or item) takes a field's type and
/// constraints, and `optional`; not what only a field has (`default`, `from`,
/// `writable`).
pub(crate) const SHAPE_KEYS: &[&str] = &[
    "type",
    "description",
    "enum",
    "min",
    "max",
    "max_length",
    "pattern",
    "fields",
    "optional",
];

/// Walks the YAML tree, collecting every error instead of stopping at the first.
pub(crate) struct Compiler {
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
    /// The methods of the resource being compiled (a model's or a collection's).
    methods: &'static [&'static str],
    /// The most items a list a rule reads may hold, for its cost estimate (from
    /// `state.max_token_bytes`).
    pub(super) input_items: u64,
    /// How many data shapes enclose the field being compiled.
    shape_depth: usize,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler {
            errors: Vec::new(),
            rules: HashMap::new(),
            templates: HashMap::new(),
            base: PathBuf::new(),
            file: None,
            sites: Vec::new(),
            methods: super::METHODS,
            input_items: crate::rule::input_items(super::state::DEFAULT_MAX_TOKEN_BYTES),
            shape_depth: 0,
        }
    }
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
                    format!("unknown key `{}` in {what}{hint}", excerpt(&key.name)),
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
                    excerpt(&v.to_json().to_string())
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
        self.input_items = crate::rule::input_items(state.max_token_bytes);
        let auth = get(self, "auth").map(|a| self.auth(a)).unwrap_or_default();
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
        Some(Config::new(nats, api, state, auth, resources))
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
    /// declared before (in this file or an earlier one) is an error naming both (the
    /// first declared, when it overlaps several).
    fn resources(&mut self, blocks: &[(&Option<String>, &Yaml)]) -> Vec<Arc<Resource>> {
        let mut out: Vec<(Option<String>, Pos, Arc<Resource>)> = Vec::new();
        // The patterns of `out`, by their place in it: finding an overlap costs what
        // can match, not a comparison with every pattern declared before.
        let mut declared = OverlapIndex::default();
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
                let overlap = declared.first_overlap(&pattern).map(|i| &out[i]);
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
                    declared.insert(&resource.pattern, out.len());
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
        let mut declared = Vec::new();
        let mut access_node = None;
        let mut collection = None;
        let shape = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.name == name)
                .map(|(k, _)| k.pos)
        };
        let shapes: Vec<&str> = ["fields", "collection", "presence"]
            .into_iter()
            .filter(|k| shape(k).is_some())
            .collect();
        if let [first, second, ..] = shapes.as_slice() {
            self.error(
                shape(second).unwrap_or(key.pos),
                format!("{what} declares both `{first}` and `{second}`: a resource is a model (fields), a collection (items) or a presence list (members), one of them"),
            );
        }
        self.methods = match (shape("collection"), shape("presence")) {
            (_, Some(_)) => crate::presence::METHODS,
            (Some(_), _) => crate::collection::METHODS,
            _ => super::METHODS,
        };
        let mut presence = None;
        for (key, value) in entries {
            match key.name.as_str() {
                "description" => {
                    description = self
                        .string(value, &format!("{what}: `description`"))
                        .map(str::to_string)
                }
                "fields" => (fields, declared) = self.fields(&pattern, value),
                "collection" => (collection, declared) = self.collection(&pattern, key.pos, value),
                "presence" => presence = self.presence(&pattern, key.pos, value),
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
        // Rules are checked against the fields, wherever the file puts them, and
        // against every field declared, those with errors included.
        let access = access_node.map_or_else(Access::default, |node| {
            let schema = field::schema_of(&declared);
            self.access(&pattern, node, &schema)
        });
        // A presence list is served as a collection of its members.
        if let Some(p) = &presence {
            collection = Some(crate::presence::as_collection(p));
        }
        let mut resource = Resource::new(
            pattern,
            description,
            fields,
            collection,
            reset_on_logout,
            access,
        );
        resource.presence = presence;
        resource.sites = Sites(std::mem::take(&mut self.sites));
        Some(resource)
    }
}

/// A NATS subject token: non-empty, no whitespace, dots or wildcards.
pub(crate) fn is_subject_token(s: &str) -> bool {
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
