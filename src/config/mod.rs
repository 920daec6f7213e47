//! The config: `resources.yaml` read, validated and compiled into an immutable
//! [`Config`] that requests are served from. Every error in a file is collected and
//! reported as `file:line:col: message`; an invalid file never becomes a `Config`.

pub(crate) mod auth;
mod compile;
mod diff;
mod error;
mod nats;
mod resource;
pub mod schema;
mod source;
mod state;
pub(crate) mod yaml;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthName, AuthSettings, JwtPlace, Method, MethodAction, TokenShape};
pub use diff::{diff, ConfigDiff};
pub use error::{excerpt, suggestion, ConfigError, ConfigErrors};
pub use nats::{
    split_urls, NatsAuth, NatsOverrides, NatsSettings, ReconnectSettings, Secret, TlsSettings,
    DEFAULT_NATS_URL, DEFAULT_QUEUE_GROUP,
};
pub use resource::{Access, CallAccess, Resource, Site, Sites};
pub use source::{is_config_file, read_named, SourceFile, Sources, MAX_DIR_BYTES, MAX_FILE_BYTES};
#[cfg(test)]
pub(crate) use state::STATE_KEYS;
pub(crate) use state::STORES;
pub use state::{
    SharedStore, StateSettings, StoreSettings, DEFAULT_BUCKET, DEFAULT_LEASE,
    DEFAULT_MAX_TOKEN_BYTES, DEFAULT_PARTITIONS, MAX_PARTITIONS,
};
pub use yaml::Pos;

use crate::pattern::{Params, Part};

/// The config's lookup maps hash with foldhash (seeded per process), cheaper than
/// SipHash for the short names every request looks up; their keys are the config's own.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The only config version this build reads.
pub const VERSION: i64 = 1;
/// Default prefix of the backend write API.
pub const DEFAULT_API_PREFIX: &str = "connres";
/// Subject roots of RES and NATS that the backend write API must stay out of.
pub(crate) const RESERVED_SUBJECT_ROOTS: &[&str] = &[
    "get", "access", "call", "auth", "event", "conn", "system", "_INBOX",
];
/// Default `state.idle_ttl`: a browser tab left open over a day and a night keeps its
/// state; a connection silent for longer has almost certainly closed (the gateway never
/// says so). `max_entries` bounds memory whatever the TTL.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `state.max_entries`: about 650 MiB of seed-like state at the bound (see docs/behaviour.md,
/// "Bounded state"), far above what one instance serves in practice.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;
/// The call methods connres serves.
pub const METHODS: &[&str] = &["set", "reset"];

/// A validated, immutable config.
#[derive(Debug)]
pub struct Config {
    pub nats: NatsSettings,
    pub api: ApiSettings,
    pub state: StateSettings,
    /// The `auth:` block: auth requests connres answers.
    pub auth: AuthSettings,
    pub resources: Vec<Arc<Resource>>,
    /// A hash of the text this config was compiled from, to skip reloads of an
    /// unchanged file.
    source_hash: u64,
    /// The SHA-256 of that text, hex: what `sha256sum` prints for the file, shown in
    /// metrics so that instances serving different files stand out.
    content_hash: String,
    /// Resources by part count and first literal part, for matching without a scan.
    index: HashMap<usize, PartIndex>,
    /// Resources by pattern text.
    by_pattern: HashMap<String, usize>,
    /// Resources whose pattern is literal parts and then one capture
    /// (`session.user.{cid}`), by those literal parts: one lookup of a name without its
    /// last part finds them. Patterns never overlap, so a hit is the only match.
    by_prefix: HashMap<String, usize>,
    /// Unique to this compiled config within the process (see [`Config::id`]).
    id: u64,
}

/// Resources with one part count: by their first part when it is a literal, else listed.
#[derive(Debug, Default)]
struct PartIndex {
    by_first: HashMap<String, Vec<usize>>,
    by_capture: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub prefix: String,
}

impl Config {
    /// Reads and compiles a config: a file, or a directory of `*.yaml` files.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::compile(&Sources::read(path)?)
    }

    /// Compiles a config from its text; `file` names it in errors.
    pub fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        Config::compile(&Sources::single(file, source.to_string(), Path::new(file)))
    }

    /// Compiles a config read from its files: every error of every file, in file order.
    pub fn compile(sources: &Sources) -> Result<Config, ConfigErrors> {
        let mut c = compile::Compiler::default();
        c.base = if sources.dir {
            sources.path.clone()
        } else {
            sources
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let mut docs = Vec::new();
        for f in &sources.files {
            c.file = sources.dir.then(|| f.name.clone());
            match yaml::parse(&f.text) {
                Ok((doc, duplicates)) => {
                    for d in duplicates {
                        c.error(d.pos, d.message);
                    }
                    docs.push((c.file.clone(), doc));
                }
                Err(e) => c.error(e.pos, e.message),
            }
        }
        let complete = docs.len() == sources.files.len();
        let config = c.config(&docs, complete).map(|mut config| {
            config.source_hash = sources.source_hash();
            config.content_hash = sources.content_hash();
            config
        });
        let fail = |errors| ConfigErrors {
            file: sources.path.display().to_string(),
            errors,
        };
        if c.errors.is_empty() {
            config.ok_or_else(|| fail(Vec::new()))
        } else {
            // By file (a map: a directory may hold many), then place.
            let index: HashMap<&str, usize> = sources
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_str(), i))
                .collect();
            let order = |e: &ConfigError| {
                let file = e.file.as_deref().and_then(|f| index.get(f).copied());
                (file, e.pos)
            };
            c.errors.sort_by_key(order);
            Err(fail(c.errors))
        }
    }

    /// The hash of the text this config was compiled from (see [`source_hash`]).
    pub fn source_hash(&self) -> u64 {
        self.source_hash
    }

    /// The SHA-256 of the text this config was compiled from, in hex.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// A number no other config compiled in this process has: what the engine's cached
    /// replies are checked against, so none outlives the config it was made under.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Finds the resource whose pattern matches a resource name, with its captures.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<(&'a Arc<Resource>, Params<'a>)> {
        if let Some(resource) = self.by_prefix(name).map(|i| &self.resources[i]) {
            return resource
                .pattern
                .matches(name)
                .map(|params| (resource, params));
        }
        self.candidates(name).find_map(|i| {
            let resource = &self.resources[i];
            resource
                .pattern
                .matches(name)
                .map(|params| (resource, params))
        })
    }

    /// The resource declared with exactly this pattern text.
    pub fn resource(&self, pattern: &str) -> Option<&Arc<Resource>> {
        self.by_pattern.get(pattern).map(|&i| &self.resources[i])
    }

    /// The resource whose pattern matches a resource name, without its captures (and
    /// without allocating).
    pub fn resource_of(&self, name: &str) -> Option<&Arc<Resource>> {
        self.position_of(name).map(|i| &self.resources[i])
    }

    /// Where in [`Config::resources`] the resource whose pattern matches a name is: what
    /// per-resource figures (metrics) are indexed by.
    pub fn position_of(&self, name: &str) -> Option<usize> {
        self.by_prefix(name).or_else(|| {
            self.candidates(name)
                .find(|&i| self.resources[i].pattern.is_match(name))
        })
    }

    /// For a name no pattern matches, the nearest name one serves, and its resource
    /// ("did you mean"): each pattern of as many parts, its captures filled with the
    /// name's parts, is a candidate, and [`suggestion`] picks.
    pub fn nearest(&self, name: &str) -> Option<(String, &Arc<Resource>)> {
        let parts: Vec<&str> = name.split('.').collect();
        let candidates: Vec<(String, &Arc<Resource>)> = self
            .resources
            .iter()
            .filter(|r| r.pattern.parts().len() == parts.len())
            .map(|r| {
                let filled: Vec<&str> = r
                    .pattern
                    .parts()
                    .iter()
                    .zip(&parts)
                    .map(|(part, given)| match part {
                        Part::Literal(l) => l.as_str(),
                        Part::Capture(_) => given,
                    })
                    .collect();
                (filled.join("."), r)
            })
            .filter(|(filled, _)| filled != name)
            .collect();
        let names: Vec<&str> = candidates.iter().map(|(n, _)| n.as_str()).collect();
        let best = suggestion(name, &names)?;
        candidates.into_iter().find(|(n, _)| *n == best)
    }

    /// The resource of a `literal.….{capture}` pattern matching a name, by one lookup.
    fn by_prefix(&self, name: &str) -> Option<usize> {
        let (prefix, last) = crate::pattern::split_last(name)?;
        if last.is_empty() {
            return None;
        }
        self.by_prefix.get(prefix).copied()
    }

    /// The resources that may match a name: same part count and first literal, or a
    /// capture first.
    fn candidates<'a>(&'a self, name: &str) -> impl Iterator<Item = usize> + 'a {
        let parts = name.bytes().filter(|&b| b == b'.').count() + 1;
        let first = name.split('.').next().unwrap_or(name);
        let index = self.index.get(&parts);
        let by_literal = index
            .and_then(|i| i.by_first.get(first))
            .into_iter()
            .flatten();
        let by_capture = index.into_iter().flat_map(|i| &i.by_capture);
        by_literal.chain(by_capture).copied()
    }

    fn new(
        nats: NatsSettings,
        api: ApiSettings,
        state: StateSettings,
        auth: AuthSettings,
        resources: Vec<Arc<Resource>>,
    ) -> Config {
        let mut index: HashMap<usize, PartIndex> = HashMap::default();
        let by_pattern = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.pattern.as_str().to_string(), i))
            .collect();
        let mut by_prefix = HashMap::default();
        for (i, r) in resources.iter().enumerate() {
            if let [literals @ .., Part::Capture(_)] = r.pattern.parts() {
                let prefix: Option<Vec<&str>> = literals
                    .iter()
                    .map(|p| match p {
                        Part::Literal(l) => Some(l.as_str()),
                        Part::Capture(_) => None,
                    })
                    .collect();
                if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
                    by_prefix.insert(prefix.join("."), i);
                }
            }
            let entry = index.entry(r.pattern.parts().len()).or_default();
            match r.pattern.parts().first() {
                Some(Part::Literal(l)) => entry.by_first.entry(l.clone()).or_default().push(i),
                _ => entry.by_capture.push(i),
            }
        }
        Config {
            nats,
            api,
            state,
            auth,
            resources,
            source_hash: 0,
            content_hash: String::new(),
            index,
            by_pattern,
            by_prefix,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The next [`Config::id`]; 0 is never one.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A hash of config text, stable within one process.
pub fn source_hash(source: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
