//! The NATS side: the one module tree that uses `async_nats`. It subscribes the subjects
//! of every declared pattern, feeds each message to the engine in arrival order from a
//! single task, publishes the outcome, announces itself with `system.reset`, re-announces
//! after a reconnect, paces the resets owed for expired state, and drains on shutdown.
//!
//! One task owns the engine and the current config. Every message is handled to the end
//! (events published, then the reply) before the next one starts, so events and replies
//! leave in the order the state changed, and a request always sees exactly one config.
//! Reloads are prepared by another task (`reload`); the serving task only swaps them in.
//!
//! This module holds the `Service`, connecting and the serving loop: what it waits for,
//! in which order, and shutdown raced against every step. `serve` does each step
//! (a message, a connection event, a sweep, a paced reset, the announcement, the drain);
//! `subscribe` makes and ends the subscriptions; `connect` turns the `nats:` settings into
//! client options; `route` turns subjects into engine requests; `discovery` answers
//! `$SRV.PING`, `INFO` and `STATS` beside the serving task.

mod attempts;
mod cluster;
mod connect;
mod discovery;
mod jwks;
mod ordered;
mod outcome;
mod recheck;
mod reload;
mod resume;
mod route;
mod serve;
mod subscribe;
mod woken;

/// Resumes refused for their key a connection may make within a minute.
const RESUME_FAILURES: u32 = 5;
/// Logins refused for their token a connection may make within a minute (each costs a
/// signature check on the serving task: up to 164 us for ES256).
const LOGIN_FAILURES: u32 = 10;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, Event};
use futures::stream::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{interval, MissedTickBehavior};

use crate::clock::Clock;
use crate::config::{Config, NatsOverrides};
use crate::engine::Engine;
use crate::metrics::{Metrics, Requests};
use crate::reload::{ReloadReport, Triggers, WatchError};
use crate::store::MemoryStore;
use cluster::Cluster;
pub use cluster::ClusterMetrics;
use connect::ReconnectLog;
use discovery::Discovery;
use ordered::{subscribe_auth, subscribe_pattern, Ordered};
use route::Merged;
use serve::Step;
use subscribe::subscribe_forwarded;

/// How long a shutdown may spend answering requests already received.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a round trip to the NATS server may take before it counts as failed.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How often idle state is looked for (the clock counts whole seconds).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// At most this many messages are handled one after the other without looking at the
/// timers (expiry sweeps, paced resets) in between; connection events, reloads and
/// shutdown are looked at before every message.
pub const BURST: usize = 64;

/// The least time between two `system.reset`s for dropped state: with
/// [`RESET_BATCH`](crate::engine::RESET_BATCH) names each, at most 5,000 names a second
/// reach the gateways, however many expire.
pub const RESET_EVERY: Duration = Duration::from_millis(100);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe `{subject}`")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("NATS: {0}")]
    Nats(String),
    /// The connection settings cannot be used (conflicting options, unreadable files).
    #[error("{0}")]
    Settings(String),
}

impl ServiceError {
    /// What the operator can do about a failure to connect, if it is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ServiceError::Connect { source, .. } => Some(connect::hint(source)),
            _ => None,
        }
    }
}

/// A running connres service.
pub struct Service {
    client: Client,
    config: Arc<Config>,
    engine: Engine,
    subs: Merged,
    events: mpsc::UnboundedReceiver<Event>,
    /// Set while the connection is down, so the next `Connected` is a reconnect.
    disconnected: bool,
    /// The config file to watch for reloads, if any.
    watched: Option<Triggers>,
    reports: broadcast::Sender<ReloadReport>,
    metrics: Arc<Metrics>,
    /// Auth answers waiting for their token event to be applied
    /// (`Finished::answer_auth`); the drain waits for them.
    auth_answers: tokio::task::JoinSet<()>,
    /// Failed resumes per connection (`resume.rs`).
    resume_failures: Arc<attempts::Attempts>,
    /// Logins refused for their token, per connection.
    login_failures: attempts::Attempts,
    /// The tasks fetching JWKS from URLs (`jwks.rs`).
    jwks: jwks::Jwks,
    /// The request counters of the config in force.
    requests: Requests,
    /// Reports of messages that get no answer.
    unanswered: serve::Unanswered,
    /// The connections, entries and bytes last set on the state gauges.
    held: (usize, usize, usize),
    discovery: Discovery,
    /// The state-changing subscriptions, into one channel (in `subs`).
    ordered: Ordered,
    /// With `state.store: nats`: the partitions, leases and the bucket.
    cluster: Option<Cluster>,
    /// Set once the service serves (after its announcement; with the shared store, once
    /// it has seen the cluster).
    serving: watch::Sender<bool>,
}

impl Service {
    /// Connects to `nats_url` (which may carry credentials) with the rest of the
    /// config's `nats:` settings; see [`Service::connect`].
    pub async fn start(config: Config, nats_url: &str) -> Result<Service, ServiceError> {
        let overrides = NatsOverrides {
            url: Some(nats_url.to_string()),
            ..NatsOverrides::default()
        };
        Service::connect(config, &overrides).await
    }

    /// Connects with the config's `nats:` settings under `overrides` (flags and the
    /// environment) and subscribes every subject of `config`. Nothing is served until
    /// [`Service::run`], which first announces the service with `system.reset`.
    pub async fn connect(
        config: Config,
        overrides: &NatsOverrides,
    ) -> Result<Service, ServiceError> {
        let settings = config
            .nats
            .with_overrides(overrides)
            .map_err(ServiceError::Settings)?;
        let urls = settings.urls_or_default();
        let (tx, events) = mpsc::unbounded_channel();
        let reconnects = ReconnectLog::default();
        let client = connect::options(&settings)
            .await?
            // Asked before every connection attempt; used only to report why the last
            // ones failed (the client's own events carry no cause).
            .reconnect_to_server_callback(move |servers, _| {
                reconnects.attempt(&servers);
                std::future::ready(None)
            })
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(ev);
                }
            })
            .connect(urls.as_slice())
            .await
            .map_err(|source| ServiceError::Connect {
                url: urls.join(","),
                source,
            })?;
        let config = Arc::new(config);
        let mut subs = Merged::default();
        let shared = config.state.store.shared();
        let (mut ordered, channel) = Ordered::new(&client);
        subs.push(channel);
        ordered.subscribe_fixed(&config, shared.is_some()).await?;
        for res in &config.resources {
            let tx = ordered.sender();
            ordered
                .add(subscribe_pattern(&client, tx.as_ref(), &config, res.pattern.as_str()).await?);
        }
        for entry in &config.auth.names {
            let tx = ordered.sender();
            let subs = subscribe_auth(&client, tx.as_ref(), &config, &entry.name).await?;
            ordered.add(subs);
        }
        let mut endpoints: Vec<_> = subs
            .iter()
            .filter(|t| t.route != route::Route::Ordered)
            .map(|t| t.endpoint.clone())
            .collect();
        endpoints.extend(ordered.endpoints());
        let mut discovery = Discovery::subscribe(&client, &config, endpoints).await?;
        let metrics = Arc::new(Metrics::default());
        let mut jwks = jwks::Jwks::default();
        jwks.follow(&config);
        let mut engine = Engine::default();
        let cluster = match shared {
            Some(settings) => {
                let cluster =
                    Cluster::open(&client, settings, discovery.id(), config.content_hash()).await?;
                subs.push(subscribe_forwarded(&client, &cluster.forward_subject()).await?);
                ordered.subscribe_extra(cluster.probe_subject()).await?;
                metrics.add(cluster.metrics.registry());
                discovery.shared_store(cluster.metrics.clone());
                engine.store_mut().track_changes();
                engine.log_tokens();
                engine.bound_elsewhere();
                engine.presence_apart();
                Some(cluster)
            }
            None => None,
        };
        tracing::info!(
            nats = settings.describe(),
            resources = config.resources.len(),
            queue_group = %config.nats.queue_group,
            "subscribed"
        );
        Ok(Service {
            requests: metrics.requests(&config, shared.is_some()),
            unanswered: serve::Unanswered::default(),
            auth_answers: tokio::task::JoinSet::new(),
            resume_failures: Arc::new(attempts::Attempts::new(RESUME_FAILURES)),
            login_failures: attempts::Attempts::new(LOGIN_FAILURES),
            jwks,
            client,
            config,
            engine,
            subs,
            events,
            disconnected: false,
            watched: None,
            reports: broadcast::channel(16).0,
            metrics,
            held: (0, 0, 0),
            discovery,
            ordered,
            cluster,
            serving: watch::channel(false).0,
        })
    }

    /// Whether the service serves yet, and a way to wait until it does.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Reloads the config when `path` changes or on SIGHUP.
    pub fn watch(mut self, path: &Path) -> Result<Service, WatchError> {
        self.watched = Some(Triggers::watch(path)?);
        Ok(self)
    }

    /// Uses `clock` for idle expiry instead of the system clock (tests drive a manual
    /// one). Call before serving: the state starts empty.
    pub fn with_clock(mut self, clock: Clock) -> Service {
        let mut store = MemoryStore::default();
        if self.cluster.is_some() {
            store.track_changes();
        }
        self.engine = Engine::new(store, clock);
        if self.cluster.is_some() {
            self.engine.log_tokens();
            self.engine.bound_elsewhere();
            self.engine.presence_apart();
        }
        self
    }

    /// With `state.store: nats`: this instance's ID, as the bucket's leases name their
    /// owners (`lease.<p>`: `{"owner": "<instance>"}`).
    pub fn instance_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.id())
    }

    /// With `state.store: nats`: the shared store's figures.
    pub fn cluster_metrics(&self) -> Option<Arc<ClusterMetrics>> {
        self.cluster.as_ref().map(|c| c.metrics.clone())
    }

    /// Reports of every reload from now on.
    pub fn reload_reports(&self) -> broadcast::Receiver<ReloadReport> {
        self.reports.subscribe()
    }

    /// The service's metrics (also the live figures of its state).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Makes sure the server has every subscription, publishes `system.reset` naming
    /// every pattern (the readiness signal), then serves until `shutdown` resolves;
    /// then it stops taking requests, answers the ones already received and flushes.
    /// Shutdown is seen at once, also while a message is being handled or a publish
    /// waits for a NATS connection that is down.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        tokio::pin!(shutdown);
        // Polled on every turn of the loop below: only worth it once a signal woke it.
        let mut shutdown = woken::WokenOnly::new(shutdown);
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            announced = self.announce() => announced?,
        }
        self.config_in_force(false, Vec::new(), &[]);
        match &mut self.cluster {
            Some(cluster) => {
                cluster.start().await?;
                self.check_mapping();
            }
            None => {
                let _ = self.serving.send(true);
            }
        }
        let responder = self.discovery.answer(self.client.clone());
        tracing::info!(
            config = self.config.content_hash(),
            instance = self.discovery.id(),
            "connres is serving"
        );
        let mut reloads = match self.watched.take() {
            Some(triggers) => reload::spawn(
                self.client.clone(),
                self.ordered.sender(),
                triggers,
                self.config.clone(),
                self.reports.clone(),
                self.metrics.clone(),
            ),
            None => mpsc::channel(1).1,
        };
        let mut sweep = interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut resets = interval(RESET_EVERY);
        resets.set_missed_tick_behavior(MissedTickBehavior::Delay);
        'serving: loop {
            // Timers and reloads come before messages: under load there is always a
            // message waiting, and they must not starve. Connection events and reloads
            // are also looked at before each message of a burst; the timers after it,
            // at most BURST messages later.
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(ev) = self.events.recv() => Step::Connection(ev),
                Some(prepared) = reloads.recv() => Step::Reload(Box::new(prepared)),
                next = cluster_next(&mut self.cluster) => Step::Cluster(next),
                _ = sweep.tick() => Step::Sweep,
                _ = resets.tick(), if self.engine.pending_resets() > 0 => Step::Reset,
                item = self.subs.next() => match item {
                    // The common case stays small: one message, raced with shutdown;
                    // then the messages already received, while nothing else waits.
                    Some(received) => {
                        let mut next = Some(received);
                        let mut handled = 0;
                        while let Some(received) = next.take() {
                            // Pinned where it is made: a handling future is kilobytes,
                            // and moving it into `finish_on_shutdown` copied it (about
                            // 600 instructions a message).
                            let stop = {
                                let handling = std::pin::pin!(self.handle(received));
                                finish_on_shutdown(&mut shutdown, handling).await
                            };
                            if stop {
                                break 'serving;
                            }
                            handled += 1;
                            next = self.received_next(handled, &reloads).await;
                        }
                        continue;
                    }
                    None => break,
                },
            };
            let mut result = Ok(());
            let stop = finish_on_shutdown(
                &mut shutdown,
                std::pin::pin!(async { result = self.step(step).await }),
            )
            .await;
            result?;
            if stop {
                break;
            }
        }
        // Leaving: no longer listed by discovery.
        drop(responder);
        if self.cluster.is_some() && self.client.connection_state() == State::Connected {
            self.leave().await;
        }
        if self.client.connection_state() != State::Connected {
            tracing::warn!("shutting down while NATS is unreachable: nothing to drain");
            return Ok(());
        }
        tracing::info!("shutting down: draining subscriptions");
        match tokio::time::timeout(DRAIN_TIMEOUT, self.drain()).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                timeout = ?DRAIN_TIMEOUT,
                "gave up draining (NATS went away?); requests still in flight are unanswered"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long a step under way may go on once shutdown was asked for (then it is given
/// up: NATS is unreachable and publishing waits).
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a step to its end; says whether shutdown was asked for meanwhile. A step is
/// not cancelled half done (its changes are taken, and its events and reply must
/// follow), unless it cannot finish in [`FINISH_TIMEOUT`].
async fn finish_on_shutdown<F: Future<Output = ()>>(
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    mut step: Pin<&mut F>,
) -> bool {
    tokio::select! {
        biased;
        () = step.as_mut() => false,
        () = shutdown => {
            if tokio::time::timeout(FINISH_TIMEOUT, step.as_mut()).await.is_err() {
                tracing::warn!("shutting down in the middle of a step that could not finish (NATS unreachable?)");
            }
            true
        }
    }
}

/// What the shared store needs looked at next (never, without one).
async fn cluster_next(cluster: &mut Option<Cluster>) -> cluster::Next {
    match cluster {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}
