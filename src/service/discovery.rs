//! Service discovery on NATS: connres answers the NATS micro protocol v1 (`$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS`, as `nats micro` asks them), so an operator can list every
//! running instance with its version, the config it serves and what it has handled.
//!
//! async-nats's own `service` API is not used: it fixes the metadata at start and owns
//! the request subscriptions, while connres's config (its hash, generation and patterns)
//! changes on every reload and its requests are served from its own subscriptions on
//! one task. So the three verbs are answered here, from a [`View`] the serving task
//! replaces whenever a config is put in force, by a task of their own beside it: a
//! discovery request never waits for a request, nor a request for it.
//!
//! Each subscription of the service is an [`Endpoint`]; the serving task counts what it
//! handled there at the place it feeds `connres_requests_total`, so the two agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::stream::{SelectAll, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::route::Route;
use super::{Service, ServiceError};
use crate::config::Config;

/// The service name every instance shares: `$SRV.<VERB>.connres` reaches them all.
pub(super) const NAME: &str = "connres";

/// The version instances report.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

const DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");

/// The subject prefix of the micro protocol's requests.
const PREFIX: &str = "$SRV";

/// The discovery requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    const ALL: [Verb; 3] = [Verb::Ping, Verb::Info, Verb::Stats];

    fn as_str(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }

    /// The verb of a request on `subject` for the instance `id`: `$SRV.<VERB>`,
    /// `$SRV.<VERB>.connres` or `$SRV.<VERB>.connres.<id>`; `None` for anything else.
    fn of(subject: &str, id: &str) -> Option<Verb> {
        let mut parts = subject.strip_prefix(PREFIX)?.strip_prefix('.')?.split('.');
        let first = parts.next()?;
        let verb = Verb::ALL.into_iter().find(|v| v.as_str() == first)?;
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(verb),
            (Some(NAME), None, _) => Some(verb),
            (Some(NAME), Some(i), None) if i == id => Some(verb),
            _ => None,
        }
    }

    /// The three subjects of this verb an instance answers.
    fn subjects(self, id: &str) -> [String; 3] {
        let verb = self.as_str();
        [
            format!("{PREFIX}.{verb}"),
            format!("{PREFIX}.{verb}.{NAME}"),
            format!("{PREFIX}.{verb}.{NAME}.{id}"),
        ]
    }
}

/// One subscription of the service, with what was handled on it.
pub(super) struct Endpoint {
    route: Route,
    name: String,
    subject: String,
    /// Empty for a subscription outside any queue group (token events).
    queue_group: String,
    /// The resource pattern it serves, if any.
    pattern: Option<String>,
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    /// The last RES error reply, decoded only when STATS asks.
    last_error: Mutex<Option<Bytes>>,
}

impl Endpoint {
    pub(super) fn new(
        route: Route,
        pattern: Option<&str>,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Endpoint {
        Endpoint {
            route,
            name: endpoint_name(route, pattern),
            subject: subject.to_string(),
            queue_group: queue_group.unwrap_or_default().to_string(),
            pattern: pattern.map(str::to_string),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            processing_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// One message handled in `took`; `error` is its reply when that was a RES error.
    pub(super) fn record(&self, took: Duration, error: Option<Bytes>) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(reply) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
            // Release: whoever sees this error also sees its request counted.
            self.errors.fetch_add(1, Ordering::Release);
        }
    }

    /// The last error as `code:message`, or empty when there was none.
    fn last_error(&self) -> String {
        let reply = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        reply.as_deref().map(describe_error).unwrap_or_default()
    }
}

/// An endpoint's name, of the characters the micro protocol allows (`A-Z a-z 0-9 - _`):
/// the kind of message, then the pattern with dots as dashes and captures by their
/// name (`get-session-user-cid`). Two patterns may share a name; never a subject.
fn endpoint_name(route: Route, pattern: Option<&str>) -> String {
    let kind = match route {
        Route::Get => "get",
        Route::Access => "access",
        Route::Call => "call",
        Route::Token => "token",
        Route::ApiSet => "api-set",
        Route::ApiReset => "api-reset",
    };
    let Some(pattern) = pattern else {
        return kind.to_string();
    };
    let mut name = format!("{kind}-");
    for c in pattern.chars() {
        match c {
            '.' => name.push('-'),
            '{' | '}' => {}
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => name.push(c),
            _ => name.push('_'),
        }
    }
    name
}

/// `code:message` of a RES error reply (`{"error": {"code", "message"}}`).
fn describe_error(reply: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Reply {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Reply>(reply) {
        Ok(Reply { error }) => format!("{}:{}", error.code, error.message),
        Err(_) => String::from_utf8_lossy(reply).into_owned(),
    }
}

/// What discovery answers with: the instance, the config in force and its endpoints.
/// Replaced, never changed, when a config is put in force.
struct View {
    id: String,
    /// RFC 3339, UTC.
    started: String,
    config_hash: String,
    generation: u64,
    queue_group: String,
    api_prefix: String,
    endpoints: Vec<Arc<Endpoint>>,
}

impl View {
    fn new(
        id: &str,
        started: &str,
        config: &Config,
        generation: u64,
        endpoints: Vec<Arc<Endpoint>>,
    ) -> View {
        View {
            id: id.to_string(),
            started: started.to_string(),
            config_hash: config.content_hash().to_string(),
            generation,
            queue_group: config.nats.queue_group.clone(),
            api_prefix: config.api.prefix.clone(),
            endpoints,
        }
    }

    fn metadata(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("config_hash", self.config_hash.clone()),
            ("config_generation", self.generation.to_string()),
            ("queue_group", self.queue_group.clone()),
            ("api_prefix", self.api_prefix.clone()),
        ])
    }

    /// The reply to `verb`, JSON as the micro protocol v1 defines it.
    fn answer(&self, verb: Verb) -> Vec<u8> {
        let metadata = self.metadata();
        let identity = Identity {
            name: NAME,
            id: &self.id,
            version: VERSION,
            metadata: &metadata,
        };
        let encoded = match verb {
            Verb::Ping => serde_json::to_vec(&Ping {
                kind: "io.nats.micro.v1.ping_response",
                identity,
            }),
            Verb::Info => serde_json::to_vec(&Info {
                kind: "io.nats.micro.v1.info_response",
                identity,
                description: DESCRIPTION,
                endpoints: self.endpoints.iter().map(|e| e.info()).collect(),
            }),
            Verb::Stats => serde_json::to_vec(&Stats {
                kind: "io.nats.micro.v1.stats_response",
                identity,
                started: &self.started,
                endpoints: self.endpoints.iter().map(|e| e.stats()).collect(),
            }),
        };
        // Maps of strings, strings and numbers always encode.
        encoded.unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Identity<'a> {
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: &'a BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Ping<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    identity: Identity<'a>,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    identity: Identity<'a>,
    description: &'a str,
    endpoints: Vec<EndpointInfo<'a>>,
}

#[derive(Serialize)]
struct EndpointInfo<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    metadata: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    identity: Identity<'a>,
    started: &'a str,
    endpoints: Vec<EndpointStats<'a>>,
}

#[derive(Serialize)]
struct EndpointStats<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    num_requests: u64,
    num_errors: u64,
    last_error: String,
    /// Nanoseconds.
    processing_time: u64,
    /// Nanoseconds, truncated; 0 before the first request.
    average_processing_time: u64,
}

impl Endpoint {
    fn info(&self) -> EndpointInfo<'_> {
        let mut metadata = BTreeMap::new();
        if let Some(pattern) = &self.pattern {
            metadata.insert("pattern", pattern.as_str());
        }
        EndpointInfo {
            name: &self.name,
            subject: &self.subject,
            queue_group: &self.queue_group,
            metadata,
        }
    }

    fn stats(&self) -> EndpointStats<'_> {
        // Read while the serving task counts: errors first, so never more errors than
        // requests.
        let errors = self.errors.load(Ordering::Acquire);
        let requests = self.requests.load(Ordering::Relaxed);
        let processing_time = self.processing_ns.load(Ordering::Relaxed);
        EndpointStats {
            name: &self.name,
            subject: &self.subject,
            queue_group: &self.queue_group,
            num_requests: requests,
            num_errors: errors,
            last_error: self.last_error(),
            processing_time,
            average_processing_time: processing_time.checked_div(requests).unwrap_or(0),
        }
    }
}

/// The serving task's side of discovery: the endpoints in force and the view it
/// publishes, and the subscriptions until [`Discovery::answer`] hands them to the
/// responder.
pub(super) struct Discovery {
    id: String,
    started: String,
    endpoints: Vec<Arc<Endpoint>>,
    view: watch::Sender<Arc<View>>,
    subs: Vec<Subscriber>,
}

impl Discovery {
    /// Subscribes the discovery subjects (no queue group: every instance answers) for
    /// a service whose subscriptions are `endpoints`, serving `config`.
    pub(super) async fn subscribe(
        client: &Client,
        config: &Config,
        endpoints: Vec<Arc<Endpoint>>,
    ) -> Result<Discovery, ServiceError> {
        let id = nuid::next().to_string();
        let mut subs = Vec::new();
        for verb in Verb::ALL {
            for subject in verb.subjects(&id) {
                let sub = client.subscribe(subject.clone()).await;
                subs.push(sub.map_err(|source| ServiceError::Subscribe { subject, source })?);
            }
        }
        let started = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let endpoints = in_config_order(config, endpoints);
        // Generation 0 until the first config is in force; nobody asks before that.
        let view = View::new(&id, &started, config, 0, endpoints.clone());
        Ok(Discovery {
            id,
            started,
            endpoints,
            view: watch::Sender::new(Arc::new(view)),
            subs,
        })
    }

    /// This instance's id, unique per process.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// `config`, the `generation`th, is in force, with the endpoints of its added
    /// patterns live: discovery answers with it from now on. Endpoints of patterns it
    /// no longer declares leave.
    pub(super) fn in_force(&mut self, config: &Config, generation: u64, added: Vec<Arc<Endpoint>>) {
        let all = std::mem::take(&mut self.endpoints).into_iter().chain(added);
        self.endpoints = in_config_order(config, all);
        let view = View::new(
            &self.id,
            &self.started,
            config,
            generation,
            self.endpoints.clone(),
        );
        self.view.send_replace(Arc::new(view));
    }

    /// Starts answering discovery requests, until the returned guard is dropped.
    pub(super) fn answer(&mut self, client: Client) -> Responder {
        let subs: SelectAll<Subscriber> = std::mem::take(&mut self.subs).into_iter().collect();
        Responder(tokio::spawn(respond(client, subs, self.view.subscribe())))
    }
}

/// The fixed endpoints first, then each pattern's in the order `config` declares them,
/// each by kind (token, API; get, access, call); endpoints of patterns `config` does not
/// declare are left out.
fn in_config_order(
    config: &Config,
    endpoints: impl IntoIterator<Item = Arc<Endpoint>>,
) -> Vec<Arc<Endpoint>> {
    let mut all: Vec<Arc<Endpoint>> = endpoints.into_iter().collect();
    all.sort_by_key(|e| e.route as u8);
    let mut ordered = Vec::with_capacity(all.len());
    let mut by_pattern: HashMap<&str, Vec<&Arc<Endpoint>>> = HashMap::new();
    for endpoint in &all {
        match &endpoint.pattern {
            None => ordered.push(endpoint.clone()),
            Some(p) => by_pattern.entry(p.as_str()).or_default().push(endpoint),
        }
    }
    for res in &config.resources {
        if let Some(endpoints) = by_pattern.get(res.pattern.as_str()) {
            ordered.extend(endpoints.iter().map(|e| Arc::clone(e)));
        }
    }
    ordered
}

/// Stops the responder when dropped.
pub(super) struct Responder(JoinHandle<()>);

impl Drop for Responder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers each discovery request with the view in force when it arrives.
async fn respond(
    client: Client,
    mut subs: SelectAll<Subscriber>,
    view: watch::Receiver<Arc<View>>,
) {
    while let Some(msg) = subs.next().await {
        let Some(reply) = msg.reply else {
            continue; // nobody to answer
        };
        let view = view.borrow().clone();
        let Some(verb) = Verb::of(&msg.subject, &view.id) else {
            tracing::debug!(subject = %msg.subject, "ignored a discovery request on an unexpected subject");
            continue;
        };
        // STATS of a large config is thousands of endpoints: encoded off the thread
        // that serves requests.
        let Ok(body) = tokio::task::spawn_blocking(move || view.answer(verb)).await else {
            continue;
        };
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::warn!(verb = verb.as_str(), error = %e, "could not answer a discovery request");
        }
    }
}

impl Service {
    /// A config is in force, the first or a reload (with the endpoints of the patterns
    /// it added): the metrics and discovery say so.
    pub(super) fn config_in_force(&mut self, reloaded: bool, added: Vec<Arc<Endpoint>>) {
        self.metrics.config(self.config.content_hash(), reloaded);
        self.discovery
            .in_force(&self.config, self.metrics.generation(), added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const ID: &str = "Q1ZsPkvSWLaErKgR3ye2Ve";

    #[test]
    fn answers_its_three_subjects_per_verb() {
        for (subject, verb) in [
            ("$SRV.PING", Some(Verb::Ping)),
            ("$SRV.INFO.connres", Some(Verb::Info)),
            (
                "$SRV.STATS.connres.Q1ZsPkvSWLaErKgR3ye2Ve",
                Some(Verb::Stats),
            ),
            ("$SRV.STATS.connres.someoneelse", None),
            ("$SRV.PING.other", None),
            ("$SRV.PING.connres.Q1ZsPkvSWLaErKgR3ye2Ve.x", None),
            ("$SRV.SCHEMA", None),
            ("$SRV.ping", None),
            ("$SRV", None),
            ("$SRV.", None),
            ("SRV.PING", None),
            ("$SRVPING", None),
            ("", None),
        ] {
            assert_eq!(Verb::of(subject, ID), verb, "{subject}");
        }
        for verb in Verb::ALL {
            for subject in verb.subjects(ID) {
                assert_eq!(Verb::of(&subject, ID), Some(verb), "{subject}");
            }
        }
    }

    #[test]
    fn endpoint_names_use_only_the_allowed_characters() {
        assert_eq!(
            endpoint_name(Route::Get, Some("session.user.{cid}")),
            "get-session-user-cid"
        );
        assert_eq!(
            endpoint_name(Route::Call, Some("a:b.{x_1}.c-d")),
            "call-a_b-x_1-c-d"
        );
        assert_eq!(endpoint_name(Route::Token, None), "token");
        assert_eq!(endpoint_name(Route::ApiReset, None), "api-reset");
    }

    #[test]
    fn last_error_is_code_and_message() {
        let reply = crate::protocol::ResError::AccessDenied("no".into()).reply();
        assert_eq!(describe_error(&reply), "system.accessDenied:no");
        assert_eq!(describe_error(b"not json"), "not json");
    }

    fn view() -> View {
        let get = Endpoint::new(Route::Get, Some("a.{cid}"), "get.a.*", Some("connres"));
        get.record(Duration::from_nanos(300), None);
        get.record(Duration::from_nanos(101), None);
        let denied = crate::protocol::ResError::AccessDenied("no".into()).reply();
        get.record(Duration::from_nanos(100), Some(denied));
        View {
            id: ID.into(),
            started: "2025-01-02T03:04:05.678Z".into(),
            config_hash: "abc".into(),
            generation: 2,
            queue_group: "connres".into(),
            api_prefix: "connres".into(),
            endpoints: vec![
                Arc::new(Endpoint::new(Route::Token, None, "conn.*.token", None)),
                Arc::new(get),
            ],
        }
    }

    fn answer(verb: Verb) -> Value {
        serde_json::from_slice(&view().answer(verb)).unwrap()
    }

    fn metadata() -> Value {
        json!({
            "config_hash": "abc",
            "config_generation": "2",
            "queue_group": "connres",
            "api_prefix": "connres",
        })
    }

    #[test]
    fn ping_response() {
        assert_eq!(
            answer(Verb::Ping),
            json!({
                "type": "io.nats.micro.v1.ping_response",
                "name": "connres",
                "id": ID,
                "version": VERSION,
                "metadata": metadata(),
            })
        );
    }

    #[test]
    fn info_response() {
        assert_eq!(
            answer(Verb::Info),
            json!({
                "type": "io.nats.micro.v1.info_response",
                "name": "connres",
                "id": ID,
                "version": VERSION,
                "metadata": metadata(),
                "description": DESCRIPTION,
                "endpoints": [
                    {"name": "token", "subject": "conn.*.token", "queue_group": "", "metadata": {}},
                    {
                        "name": "get-a-cid",
                        "subject": "get.a.*",
                        "queue_group": "connres",
                        "metadata": {"pattern": "a.{cid}"},
                    },
                ],
            })
        );
    }

    #[test]
    fn stats_response() {
        assert_eq!(
            answer(Verb::Stats),
            json!({
                "type": "io.nats.micro.v1.stats_response",
                "name": "connres",
                "id": ID,
                "version": VERSION,
                "metadata": metadata(),
                "started": "2025-01-02T03:04:05.678Z",
                "endpoints": [
                    {
                        "name": "token",
                        "subject": "conn.*.token",
                        "queue_group": "",
                        "num_requests": 0,
                        "num_errors": 0,
                        "last_error": "",
                        "processing_time": 0,
                        "average_processing_time": 0,
                    },
                    {
                        "name": "get-a-cid",
                        "subject": "get.a.*",
                        "queue_group": "connres",
                        "num_requests": 3,
                        "num_errors": 1,
                        "last_error": "system.accessDenied:no",
                        "processing_time": 501,
                        "average_processing_time": 167,
                    },
                ],
            })
        );
    }

    #[test]
    fn the_version_is_semver_and_the_name_allowed() {
        // The micro protocol requires both; `nats micro` validates them.
        let semver = regex::Regex::new(
            r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$",
        )
        .unwrap();
        assert!(semver.is_match(VERSION), "{VERSION}");
        assert!(NAME
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn endpoints_follow_the_config() {
        let config = |patterns: &[&str]| {
            let mut yaml = String::from("version: 1\nresources:\n");
            for p in patterns {
                yaml.push_str(&format!(
                    "  {p}:\n    fields:\n      x: {{ type: string }}\n"
                ));
            }
            Config::parse("t.yaml", &yaml).unwrap()
        };
        let endpoint =
            |route, pattern: Option<&str>| Arc::new(Endpoint::new(route, pattern, "s", None));
        let a = endpoint(Route::Get, Some("a.{cid}"));
        let b = endpoint(Route::Get, Some("b.{cid}"));
        let token = endpoint(Route::Token, None);
        let names = |es: &[Arc<Endpoint>]| es.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        let call = endpoint(Route::Call, Some("a.{cid}"));
        let api = endpoint(Route::ApiSet, None);
        let ordered = in_config_order(
            &config(&["b.{cid}", "a.{cid}"]),
            vec![call, api, a, token, b],
        );
        assert_eq!(
            names(&ordered),
            ["token", "api-set", "get-b-cid", "get-a-cid", "call-a-cid"]
        );
        let ordered = in_config_order(&config(&["a.{cid}"]), ordered);
        assert_eq!(
            names(&ordered),
            ["token", "api-set", "get-a-cid", "call-a-cid"]
        );
    }
}
