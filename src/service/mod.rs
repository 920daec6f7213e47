//! The NATS side: the one module tree that uses `async_nats`. It subscribes the subjects
//! of every declared pattern, feeds each message to the engine in arrival order from a
//! single task, publishes the outcome, announces itself with `system.reset`, re-announces
//! after a reconnect, paces the resets owed for expired state, and drains on shutdown.
//!
//! One task owns the engine and the current config. Every message is handled to the end
//! (events published, then the reply) before the next one starts, so events and replies
//! leave in the order the state changed, and a request always sees exactly one config.
//! Reloads are prepared by another task (`reload`); the serving task only swaps them in.
//! `route` turns subjects into engine requests; `discovery` answers `$SRV.PING`, `INFO`
//! and `STATS` beside the serving task.

mod connect;
mod discovery;
mod reload;
mod route;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, Event};
use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{interval, MissedTickBehavior};

use crate::clock::Clock;
use crate::config::{Config, NatsOverrides};
use crate::engine::{self, Engine, ResetBatch, Status, RESET_BATCH};
use crate::metrics::{EventKind, Metrics};
use crate::protocol::{self, ResError};
use crate::reload::{ReloadReport, Triggers, WatchError};
use crate::store::{MemoryStore, Store};
use connect::ReconnectLog;
use discovery::{Discovery, Endpoint};
use reload::Prepared;
use route::{route_request, Route, Tagged};

/// How long a shutdown may spend answering requests already received.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a round trip to the NATS server may take before it counts as failed.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How often idle state is looked for (the clock counts whole seconds).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The least time between two `system.reset`s for dropped state: with [`RESET_BATCH`]
/// names each, at most 5,000 names a second reach the gateways, however many expire.
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
    subs: SelectAll<Tagged>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Set while the connection is down, so the next `Connected` is a reconnect.
    disconnected: bool,
    /// The config file to watch for reloads, if any.
    watched: Option<Triggers>,
    reports: broadcast::Sender<ReloadReport>,
    metrics: Arc<Metrics>,
    discovery: Discovery,
}

/// One thing for the serving task to do.
enum Step {
    Connection(Event),
    Reload(Box<Prepared>),
    Sweep,
    Reset,
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
        let mut subs = SelectAll::new();
        for tagged in subscribe_fixed(&client, &config).await? {
            subs.push(tagged);
        }
        for res in &config.resources {
            for tagged in subscribe_pattern(&client, &config, res.pattern.as_str()).await? {
                subs.push(tagged);
            }
        }
        let endpoints = subs.iter().map(|t| t.endpoint.clone()).collect();
        let discovery = Discovery::subscribe(&client, &config, endpoints).await?;
        tracing::info!(
            nats = settings.describe(),
            resources = config.resources.len(),
            queue_group = %config.nats.queue_group,
            "subscribed"
        );
        Ok(Service {
            client,
            config,
            engine: Engine::default(),
            subs,
            events,
            disconnected: false,
            watched: None,
            reports: broadcast::channel(16).0,
            metrics: Arc::default(),
            discovery,
        })
    }

    /// Reloads the config when `path` changes or on SIGHUP.
    pub fn watch(mut self, path: &Path) -> Result<Service, WatchError> {
        self.watched = Some(Triggers::watch(path)?);
        Ok(self)
    }

    /// Uses `clock` for idle expiry instead of the system clock (tests drive a manual
    /// one). Call before serving: the state starts empty.
    pub fn with_clock(mut self, clock: Clock) -> Service {
        self.engine = Engine::new(MemoryStore::default(), clock);
        self
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
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            announced = self.announce() => announced?,
        }
        self.config_in_force(false, Vec::new());
        let responder = self.discovery.answer(self.client.clone());
        tracing::info!(
            config = self.config.content_hash(),
            instance = self.discovery.id(),
            "connres is serving"
        );
        let mut reloads = match self.watched.take() {
            Some(triggers) => reload::spawn(
                self.client.clone(),
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
        loop {
            // Timers and reloads come before messages: under load there is always a
            // message waiting, and they must not starve.
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(ev) = self.events.recv() => Step::Connection(ev),
                Some(prepared) = reloads.recv() => Step::Reload(Box::new(prepared)),
                _ = sweep.tick() => Step::Sweep,
                _ = resets.tick(), if self.engine.pending_resets() > 0 => Step::Reset,
                item = self.subs.next() => match item {
                    // The common case stays small: one message, raced with shutdown.
                    Some(received) => {
                        tokio::select! {
                            biased;
                            _ = &mut shutdown => break,
                            _ = self.handle(received) => continue,
                        }
                    }
                    None => break,
                },
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                result = self.step(step) => result?,
            }
        }
        // Leaving: no longer listed by discovery.
        drop(responder);
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

    async fn step(&mut self, step: Step) -> Result<(), ServiceError> {
        match step {
            Step::Connection(ev) => self.connection_event(ev).await?,
            Step::Reload(prepared) => self.apply(*prepared).await,
            Step::Sweep => {
                let dropped = self.engine.sweep(&self.config);
                if dropped > 0 {
                    self.metrics.expired(dropped);
                    self.update_stats();
                    tracing::debug!(dropped, "dropped idle or least recently used state");
                }
            }
            Step::Reset => {
                if let Some(ResetBatch { resources, access }) = self.engine.take_reset(RESET_BATCH)
                {
                    let (subject, payload) = protocol::system_reset(&resources, &access);
                    self.metrics.event(EventKind::SystemReset);
                    if let Err(e) = self.publish(subject, payload).await {
                        tracing::error!(error = %e, "a system.reset for dropped state was not published; gateways may show stale models");
                    }
                }
            }
        }
        Ok(())
    }

    /// Unsubscribes, answers what was already received, and flushes.
    async fn drain(&mut self) -> Result<(), ServiceError> {
        for tagged in self.subs.iter_mut() {
            if let Err(e) = tagged.sub.drain().await {
                tracing::warn!(error = %e, "drain failed");
            }
        }
        while let Some(received) = self.subs.next().await {
            self.handle(received).await;
        }
        self.flush().await
    }

    /// Ends the subscriptions of the given patterns (their streams then finish).
    async fn unsubscribe_patterns(&mut self, patterns: &[String]) {
        for tagged in self.subs.iter_mut() {
            if tagged
                .pattern
                .as_ref()
                .is_some_and(|p| patterns.contains(p))
            {
                if let Err(e) = tagged.sub.unsubscribe().await {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
            }
        }
    }

    /// Writes out everything buffered for the server.
    async fn flush(&self) -> Result<(), ServiceError> {
        self.client
            .flush()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))
    }

    async fn publish(&self, subject: String, payload: bytes::Bytes) -> Result<(), ServiceError> {
        publish(&self.client, subject, payload).await
    }

    /// Makes sure the server has every subscription, then publishes `system.reset`
    /// naming every pattern: gateways re-fetch what they cached from an earlier run.
    async fn announce(&mut self) -> Result<(), ServiceError> {
        self.flush().await?;
        let patterns: Vec<String> = self
            .config
            .resources
            .iter()
            .map(|r| r.pattern.wildcard())
            .collect();
        let (subject, payload) = protocol::system_reset(&patterns, &patterns);
        self.publish(subject, payload).await?;
        self.metrics.event(EventKind::SystemReset);
        self.flush().await?;
        self.metrics.nats(true);
        self.metrics.set_ready(true);
        Ok(())
    }

    async fn connection_event(&mut self, ev: Event) -> Result<(), ServiceError> {
        match ev {
            Event::Connected if self.disconnected => {
                self.disconnected = false;
                self.metrics.reconnected();
                // async-nats resubscribes by itself; events may have been missed while
                // we were away, so gateways are told to re-fetch.
                tracing::info!("reconnected to NATS");
                self.engine.reconnected();
                self.announce().await?;
            }
            Event::Disconnected => {
                self.disconnected = true;
                self.metrics.set_ready(false);
                self.metrics.nats(false);
                tracing::warn!("lost the NATS connection; reconnecting");
                self.handle_received().await;
                // Token events are being missed from now on.
                self.engine.reconnected();
            }
            Event::SlowConsumer(sid) => {
                tracing::error!(
                    sid,
                    "NATS dropped messages for a slow subscription; requests went unanswered"
                )
            }
            Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            // Only with `nats.reconnect.max_attempts`: the client has closed. Exiting
            // lets the supervisor restart connres (or page someone).
            Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                return Err(ServiceError::Nats(
                    "gave up reconnecting after `nats.reconnect.max_attempts` attempts".into(),
                ))
            }
            // async-nats logs connection errors itself; repeating them adds noise.
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
        Ok(())
    }

    /// Handles the messages received before the connection dropped, with the token
    /// records as they were: async-nats hands every message it read to its subscription
    /// before it reports the disconnect, and while the connection is down nothing new
    /// arrives. Stops when the connection is back, since what arrives then is not from
    /// before the outage.
    async fn handle_received(&mut self) {
        while self.client.connection_state() != State::Connected {
            let Some(Some(received)) = self.subs.next().now_or_never() else {
                break;
            };
            self.handle(received).await;
        }
    }

    async fn handle(&mut self, (route, endpoint, msg): route::Received) {
        let started = std::time::Instant::now();
        let subject = msg.subject.as_str();
        let Some(request) = route_request(route, subject, &msg.payload, &self.config.api.prefix)
        else {
            tracing::warn!(subject, "ignored a message on an unexpected subject");
            return;
        };
        let outcome = self.engine.handle(&self.config, request);
        self.update_stats();
        let status = outcome.status;
        let error = match status {
            engine::Status::Error(_) => outcome.reply.clone(),
            _ => None,
        };
        for (subject, payload) in outcome.events {
            self.metrics.event(if subject.ends_with(".reaccess") {
                EventKind::Reaccess
            } else {
                EventKind::Change
            });
            if let Err(e) = self.client.publish(subject.clone(), payload).await {
                tracing::error!(subject, error = %e, "could not publish an event");
            }
        }
        match (outcome.reply, msg.reply) {
            (Some(body), Some(reply)) => {
                if let Err(e) = self.client.publish(reply, body).await {
                    tracing::error!(subject, error = %e, "could not publish a reply");
                }
            }
            (Some(_), None) => tracing::debug!(subject, "request without a reply subject"),
            // A token event sent as a request is acknowledged once its events are out,
            // so an auth service can answer the client's login after them (README,
            // "Tokens, login and logout").
            (None, Some(reply)) if route == Route::Token => {
                let ack = if status == Status::Ok {
                    protocol::null_reply()
                } else {
                    ResError::InvalidParams("not a token event (README, \"Tokens\")".into()).reply()
                };
                if let Err(e) = self.client.publish(reply, ack).await {
                    tracing::error!(subject, error = %e, "could not acknowledge a token event");
                }
            }
            (None, Some(_)) => tracing::info!(
                subject,
                "no declared resource matches (removed by a reload?); not answered"
            ),
            (None, None) => {}
        }
        let took = started.elapsed();
        self.metrics.request(route.kind(), status, took);
        endpoint.record(took, error);
    }

    fn update_stats(&self) {
        let store = self.engine.store();
        self.metrics.state(store.connections(), store.entries());
    }
}

async fn publish(
    client: &Client,
    subject: String,
    payload: bytes::Bytes,
) -> Result<(), ServiceError> {
    client
        .publish(subject, payload)
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))
}

/// The token event and backend API subscriptions.
async fn subscribe_fixed(client: &Client, config: &Config) -> Result<Vec<Tagged>, ServiceError> {
    let prefix = &config.api.prefix;
    let group = Some(config.nats.queue_group.as_str());
    Ok(vec![
        // Every instance tracks every token: no queue group.
        subscribe(client, Route::Token, None, "conn.*.token".into(), None).await?,
        subscribe(
            client,
            Route::ApiSet,
            None,
            format!("{prefix}.set.>"),
            group,
        )
        .await?,
        subscribe(
            client,
            Route::ApiReset,
            None,
            format!("{prefix}.reset.>"),
            group,
        )
        .await?,
    ])
}

/// The get, access and call subscriptions of one pattern.
async fn subscribe_pattern(
    client: &Client,
    config: &Config,
    pattern: &str,
) -> Result<Vec<Tagged>, ServiceError> {
    let Some(res) = config.resource(pattern) else {
        return Ok(Vec::new());
    };
    let w = res.pattern.wildcard();
    let p = Some(pattern.to_string());
    let group = Some(config.nats.queue_group.as_str());
    Ok(vec![
        subscribe(client, Route::Get, p.clone(), format!("get.{w}"), group).await?,
        subscribe(
            client,
            Route::Access,
            p.clone(),
            format!("access.{w}"),
            group,
        )
        .await?,
        subscribe(client, Route::Call, p, format!("call.{w}.*"), group).await?,
    ])
}

async fn subscribe(
    client: &Client,
    route: Route,
    pattern: Option<String>,
    subject: String,
    queue_group: Option<&str>,
) -> Result<Tagged, ServiceError> {
    let result = match queue_group {
        Some(group) => {
            client
                .queue_subscribe(subject.clone(), group.to_string())
                .await
        }
        None => client.subscribe(subject.clone()).await,
    };
    let endpoint = Endpoint::new(route, pattern.as_deref(), &subject, queue_group);
    let sub = result.map_err(|source| ServiceError::Subscribe { subject, source })?;
    Ok(Tagged {
        route,
        pattern,
        endpoint: Arc::new(endpoint),
        sub,
    })
}

/// Waits until the server has processed everything sent so far on this connection,
/// subscriptions included: a message to ourselves makes the round trip after them.
/// (`flush` only empties the socket buffer.)
async fn sync_with_server(client: &Client) -> Result<(), ServiceError> {
    let inbox = client.new_inbox();
    let mut echo =
        client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| ServiceError::Subscribe {
                subject: inbox.clone(),
                source,
            })?;
    publish(client, inbox, bytes::Bytes::new()).await?;
    match tokio::time::timeout(SYNC_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(ServiceError::Nats(
            "the server did not echo a message in time".into(),
        )),
    }
}
