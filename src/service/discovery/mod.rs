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
//!
//! `micro` holds the protocol (verbs, subjects, replies), `endpoint` the counters; this
//! module the serving task's side ([`Discovery`]) and the responder.

mod endpoint;
mod micro;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::{Client, Subscriber};
use futures::stream::{SelectAll, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Service, ServiceError};
use crate::config::Config;
use micro::{Verb, View};

pub(super) use endpoint::Endpoint;

/// The serving task's side of discovery: the endpoints in force and the view it
/// publishes, and the subscriptions until [`Discovery::answer`] hands them to the
/// responder.
pub(super) struct Discovery {
    id: String,
    started: String,
    endpoints: Vec<Arc<Endpoint>>,
    view: watch::Sender<Arc<View>>,
    subs: Vec<Subscriber>,
    shared: Option<Arc<crate::service::ClusterMetrics>>,
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
            shared: None,
        })
    }

    /// This instance's id, unique per process.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// With the shared store: its figures show in every answer's metadata.
    pub(super) fn shared_store(&mut self, metrics: Arc<crate::service::ClusterMetrics>) {
        self.shared = Some(metrics);
    }

    /// `config`, the `generation`th, is in force, with the endpoints of its added
    /// patterns live and those of its `removed` patterns gone: discovery answers with
    /// it from now on. Cheap on the serving task whatever the config's size: the
    /// endpoints are put in config order when a discovery request is answered, off it.
    pub(super) fn in_force(
        &mut self,
        config: &Arc<Config>,
        generation: u64,
        added: Vec<Arc<Endpoint>>,
        removed: &[String],
    ) {
        if !removed.is_empty() {
            self.endpoints.retain(|e| {
                e.pattern
                    .as_ref()
                    .is_none_or(|p| !removed.iter().any(|r| r == p))
            });
        }
        self.endpoints.extend(added);
        let mut view = View::new(
            &self.id,
            &self.started,
            config,
            generation,
            self.endpoints.clone(),
        );
        view.order = Some(config.clone());
        view.shared = self.shared.clone();
        let old = self.view.send_replace(Arc::new(view));
        // The old view may hold the last reference to the old config, whose freeing
        // takes milliseconds: not on the serving task.
        tokio::task::spawn_blocking(move || drop(old));
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
pub(super) fn in_config_order(
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
    pub(super) fn config_in_force(
        &mut self,
        reloaded: bool,
        added: Vec<Arc<Endpoint>>,
        removed: &[String],
    ) {
        self.metrics.config(self.config.content_hash(), reloaded);
        self.discovery
            .in_force(&self.config, self.metrics.generation(), added, removed);
    }
}
