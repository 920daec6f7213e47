//! The NATS micro protocol v1 as connres speaks it: the verbs and the subjects each is
//! asked on, the service's name and version, and the JSON replies, built from a [`View`]
//! of the instance and the config in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::endpoint::Endpoint;
use crate::config::Config;
use crate::service::ClusterMetrics;

/// The service name every instance shares: `$SRV.<VERB>.connres` reaches them all.
pub(super) const NAME: &str = "connres";

/// The version instances report.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(super) const DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");

/// The subject prefix of the micro protocol's requests.
const PREFIX: &str = "$SRV";

/// The discovery requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    pub(super) const ALL: [Verb; 3] = [Verb::Ping, Verb::Info, Verb::Stats];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }

    /// The verb of a request on `subject` for the instance `id`: `$SRV.<VERB>`,
    /// `$SRV.<VERB>.connres` or `$SRV.<VERB>.connres.<id>`; `None` for anything else.
    pub(super) fn of(subject: &str, id: &str) -> Option<Verb> {
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
    pub(super) fn subjects(self, id: &str) -> [String; 3] {
        let verb = self.as_str();
        [
            format!("{PREFIX}.{verb}"),
            format!("{PREFIX}.{verb}.{NAME}"),
            format!("{PREFIX}.{verb}.{NAME}.{id}"),
        ]
    }
}

/// What discovery answers with: the instance, the config in force and its endpoints.
/// Replaced, never changed, when a config is put in force.
pub(super) struct View {
    pub(super) id: String,
    /// RFC 3339, UTC.
    pub(super) started: String,
    pub(super) config_hash: String,
    pub(super) generation: u64,
    pub(super) queue_group: String,
    pub(super) api_prefix: String,
    pub(super) endpoints: Vec<Arc<Endpoint>>,
    /// The config whose order the endpoints are answered in (put in that order at each
    /// answer, off the serving task); `None`: in the order they are.
    pub(super) order: Option<Arc<crate::config::Config>>,
    /// With the shared store: its live figures, read at each answer.
    pub(super) shared: Option<Arc<ClusterMetrics>>,
}

impl View {
    pub(super) fn new(
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
            order: None,
            shared: None,
        }
    }

    fn metadata(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::from([
            ("config_hash", self.config_hash.clone()),
            ("config_generation", self.generation.to_string()),
            ("queue_group", self.queue_group.clone()),
            ("api_prefix", self.api_prefix.clone()),
        ]);
        if let Some(shared) = &self.shared {
            m.insert("store", "nats".into());
            m.insert("partitions_served", shared.served().to_string());
            m.insert("partitions_held", shared.held().to_string());
            m.insert("instances_seen", shared.instances().to_string());
            m.insert("takeovers", shared.takeovers().to_string());
            m.insert("lease_renewals", shared.renewals().to_string());
        }
        m
    }

    /// The reply to `verb`, JSON as the micro protocol v1 defines it.
    pub(super) fn answer(&self, verb: Verb) -> Vec<u8> {
        let ordered;
        let endpoints = match &self.order {
            Some(config) => {
                ordered = super::in_config_order(config, self.endpoints.iter().cloned());
                &ordered
            }
            None => &self.endpoints,
        };
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
                endpoints: endpoints.iter().map(|e| e.info()).collect(),
            }),
            Verb::Stats => serde_json::to_vec(&Stats {
                kind: "io.nats.micro.v1.stats_response",
                identity,
                started: &self.started,
                endpoints: endpoints.iter().map(|e| e.stats()).collect(),
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
pub(super) struct EndpointInfo<'a> {
    pub(super) name: &'a str,
    pub(super) subject: &'a str,
    pub(super) queue_group: &'a str,
    pub(super) metadata: BTreeMap<&'static str, &'a str>,
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
pub(super) struct EndpointStats<'a> {
    pub(super) name: &'a str,
    pub(super) subject: &'a str,
    pub(super) queue_group: &'a str,
    pub(super) num_requests: u64,
    pub(super) num_errors: u64,
    pub(super) last_error: String,
    /// Nanoseconds.
    pub(super) processing_time: u64,
    /// Nanoseconds, truncated; 0 before the first request.
    pub(super) average_processing_time: u64,
}
