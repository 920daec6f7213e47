//! The NATS side: the one module that uses `async_nats`. It subscribes the subjects of
//! every declared pattern, feeds each message to the engine in arrival order from a
//! single task, publishes the outcome, announces itself with `system.reset`, re-announces
//! after a reconnect and drains on shutdown.
//!
//! One task owns the engine and the current config. Every message is handled to the end
//! (events published, then the reply) before the next one starts, so events and replies
//! leave in the order the state changed, and a request always sees exactly one config.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, Message, Subscriber};
use futures::stream::{SelectAll, Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};

use crate::config::{self, Config};
use crate::engine::{Engine, Request};
use crate::protocol;
use crate::reload::{ReloadReport, Trigger, Triggers, WatchError};

/// Default NATS server when neither the flag, the environment nor the file names one.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long a shutdown may spend answering requests already received.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a round trip to the NATS server may take before it counts as failed.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe `{subject}`: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    #[error("NATS: {0}")]
    Nats(String),
}

/// Which kind of message a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Get,
    Access,
    Call,
    Token,
    ApiSet,
    ApiReset,
}

/// A subscription, tagged with its route and the pattern it serves (none for the
/// token and API subscriptions).
struct Tagged {
    route: Route,
    pattern: Option<String>,
    sub: Subscriber,
}

impl Stream for Tagged {
    type Item = (Route, Message);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let route = self.route;
        self.sub.poll_next_unpin(cx).map(|m| m.map(|m| (route, m)))
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
    /// Reload triggers, when the config came from a watched file.
    triggers: Option<Triggers>,
    reports: broadcast::Sender<ReloadReport>,
    reload_failures: u64,
}

impl Service {
    /// Connects and subscribes every subject of `config`. Nothing is served until
    /// [`Service::run`], which first announces the service with `system.reset`.
    pub async fn start(config: Config, nats_url: &str) -> Result<Service, ServiceError> {
        let (tx, events) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .name("connres")
            .max_reconnects(None)
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(ev);
                }
            })
            .connect(nats_url)
            .await
            .map_err(|source| ServiceError::Connect {
                url: nats_url.to_string(),
                source,
            })?;
        let mut service = Service {
            client,
            config: Arc::new(config),
            engine: Engine::default(),
            subs: SelectAll::new(),
            events,
            disconnected: false,
            triggers: None,
            reports: broadcast::channel(16).0,
            reload_failures: 0,
        };
        let config = service.config.clone();
        service.subscribe_fixed(&config).await?;
        for res in &config.resources {
            service
                .subscribe_pattern(res.pattern.as_str(), &res.pattern.wildcard())
                .await?;
        }
        tracing::info!(
            url = nats_url,
            resources = config.resources.len(),
            queue_group = %config.nats.queue_group,
            "subscribed"
        );
        Ok(service)
    }

    /// Reloads the config when `path` changes or on SIGHUP.
    pub fn watch(mut self, path: &Path) -> Result<Service, WatchError> {
        self.triggers = Some(Triggers::watch(path)?);
        Ok(self)
    }

    /// Reports of every reload from now on.
    pub fn reload_reports(&self) -> broadcast::Receiver<ReloadReport> {
        self.reports.subscribe()
    }

    /// Makes sure the server has every subscription, publishes `system.reset` naming
    /// every pattern (the readiness signal), then serves until `shutdown` resolves;
    /// then it stops taking requests, answers the ones already received and flushes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        tokio::pin!(shutdown);
        self.announce().await?;
        tracing::info!("connres is serving");
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(ev) = self.events.recv() => self.connection_event(ev).await?,
                trigger = next_trigger(&mut self.triggers) => self.reload(trigger).await,
                item = self.subs.next() => match item {
                    Some((route, msg)) => self.handle(route, msg).await,
                    None => break,
                },
            }
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
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

    /// Unsubscribes, answers what was already received, and flushes.
    async fn drain(&mut self) -> Result<(), ServiceError> {
        for tagged in self.subs.iter_mut() {
            if let Err(e) = tagged.sub.drain().await {
                tracing::warn!(error = %e, "drain failed");
            }
        }
        while let Some((route, msg)) = self.subs.next().await {
            self.handle(route, msg).await;
        }
        self.flush().await
    }

    async fn subscribe_fixed(&mut self, config: &Config) -> Result<(), ServiceError> {
        let prefix = &config.api.prefix;
        self.subscribe(Route::Token, None, "conn.*.token".into(), false)
            .await?;
        self.subscribe(Route::ApiSet, None, format!("{prefix}.set.>"), true)
            .await?;
        self.subscribe(Route::ApiReset, None, format!("{prefix}.reset.>"), true)
            .await
    }

    /// Loads the watched file again and, when it is valid and different, puts it in force:
    /// subscribe added patterns, swap, carry state over, unsubscribe removed patterns,
    /// then one `system.reset` naming exactly what changed. Never fatal: whatever goes
    /// wrong before the swap leaves the old config serving.
    async fn reload(&mut self, trigger: Trigger) {
        let Some(path) = self.triggers.as_ref().map(|t| t.path().to_path_buf()) else {
            return;
        };
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                let line = format!("{}:1:1: cannot read the file: {e}", path.display());
                self.reject(vec![line]);
                return;
            }
        };
        if trigger == Trigger::FileChanged
            && self.config.source_hash() == config::source_hash(&source)
        {
            tracing::debug!(file = %path.display(), "config file unchanged");
            let _ = self.reports.send(ReloadReport::Unchanged);
            return;
        }
        let started = Instant::now();
        let mut new = match Config::parse(&path.display().to_string(), &source) {
            Ok(c) => c,
            Err(errors) => {
                self.reject(errors.lines());
                return;
            }
        };
        self.keep_restart_settings(&mut new);
        let diff = config::diff(&self.config, &new);
        let new = Arc::new(new);
        if let Err(e) = self.subscribe_added(&new, &diff.added).await {
            self.unsubscribe_patterns(&diff.added).await;
            self.reject(vec![format!("{}: reload not applied: {e}", path.display())]);
            return;
        }
        let old = std::mem::replace(&mut self.config, new);
        self.engine.reloaded(&old, &self.config);
        let parse_to_swap_us = started.elapsed().as_micros() as u64;
        self.unsubscribe_patterns(&diff.removed).await;
        if !diff.needs_no_reset() {
            let (subject, payload) =
                protocol::system_reset(&diff.reset_resources, &diff.reset_access);
            if let Err(e) = self.publish(subject, payload).await {
                tracing::error!(error = %e, "the reload's system.reset was not published; gateways may serve stale models");
            }
        }
        tracing::info!(
            file = %path.display(),
            added = ?diff.added,
            removed = ?diff.removed,
            reset_resources = ?diff.reset_resources,
            reset_access = ?diff.reset_access,
            parse_to_swap_us,
            "config reloaded"
        );
        let _ = self.reports.send(ReloadReport::Applied {
            diff,
            parse_to_swap_us,
        });
    }

    /// Subscribes the added patterns and waits until the server has them: they must be
    /// live before the config that declares them is in force.
    async fn subscribe_added(
        &mut self,
        new: &Config,
        added: &[String],
    ) -> Result<(), ServiceError> {
        if added.is_empty() {
            return Ok(());
        }
        for pattern in added {
            if let Some(res) = new.resources.iter().find(|r| r.pattern.as_str() == pattern) {
                self.subscribe_pattern(pattern, &res.pattern.wildcard())
                    .await?;
            }
        }
        self.sync_with_server().await
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

    fn reject(&mut self, errors: Vec<String>) {
        self.reload_failures += 1;
        for line in &errors {
            tracing::error!("{line}");
        }
        tracing::error!(
            failures = self.reload_failures,
            "config reload rejected; the previous config keeps serving"
        );
        let _ = self.reports.send(ReloadReport::Rejected { errors });
    }

    /// The NATS connection, queue group and API prefix are fixed for the process's life.
    fn keep_restart_settings(&self, new: &mut Config) {
        if new.nats != self.config.nats || new.api != self.config.api {
            tracing::warn!(
                "`nats` and `api` settings take effect on restart; keeping the running ones"
            );
            new.nats = self.config.nats.clone();
            new.api = self.config.api.clone();
        }
    }

    /// How many reloads were rejected since start.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures
    }

    /// Waits until the server has processed everything sent so far on this connection,
    /// subscriptions included: a message to ourselves makes the round trip after them.
    /// (`flush` only empties the socket buffer.)
    async fn sync_with_server(&self) -> Result<(), ServiceError> {
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| ServiceError::Subscribe {
                subject: inbox.clone(),
                source,
            })?;
        self.publish(inbox, bytes::Bytes::new()).await?;
        match tokio::time::timeout(SYNC_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(ServiceError::Nats(
                "the server did not echo a message in time".into(),
            )),
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
        self.client
            .publish(subject, payload)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))
    }

    async fn subscribe_pattern(
        &mut self,
        pattern: &str,
        wildcard: &str,
    ) -> Result<(), ServiceError> {
        let p = Some(pattern.to_string());
        self.subscribe(Route::Get, p.clone(), format!("get.{wildcard}"), true)
            .await?;
        self.subscribe(Route::Access, p.clone(), format!("access.{wildcard}"), true)
            .await?;
        self.subscribe(Route::Call, p, format!("call.{wildcard}.*"), true)
            .await
    }

    async fn subscribe(
        &mut self,
        route: Route,
        pattern: Option<String>,
        subject: String,
        queue: bool,
    ) -> Result<(), ServiceError> {
        let result = if queue {
            let group = self.config.nats.queue_group.clone();
            self.client.queue_subscribe(subject.clone(), group).await
        } else {
            self.client.subscribe(subject.clone()).await
        };
        let sub = result.map_err(|source| ServiceError::Subscribe { subject, source })?;
        self.subs.push(Tagged {
            route,
            pattern,
            sub,
        });
        Ok(())
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
        self.flush().await
    }

    async fn connection_event(&mut self, ev: Event) -> Result<(), ServiceError> {
        match ev {
            Event::Connected if self.disconnected => {
                self.disconnected = false;
                // async-nats resubscribes by itself; events may have been missed while
                // we were away, so tokens are re-learned and gateways told to re-fetch.
                tracing::info!("reconnected to NATS");
                self.engine.reconnected();
                self.announce().await?;
            }
            Event::Disconnected => {
                // Token events are being missed from now on; the reconnect may be noticed
                // only after the first messages on the new connection are handled.
                self.disconnected = true;
                self.engine.reconnected();
                tracing::warn!("lost the NATS connection; reconnecting")
            }
            Event::SlowConsumer(sid) => {
                tracing::error!(
                    sid,
                    "NATS dropped messages for a slow subscription; requests went unanswered"
                )
            }
            Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            // async-nats logs connection errors itself; repeating them adds noise.
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
        Ok(())
    }

    async fn handle(&mut self, route: Route, msg: Message) {
        let subject = msg.subject.as_str();
        let Some(request) = route_request(route, subject, &msg.payload, &self.config.api.prefix)
        else {
            tracing::warn!(subject, "ignored a message on an unexpected subject");
            return;
        };
        let outcome = self.engine.handle(&self.config, request);
        for (subject, payload) in outcome.events {
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
            (None, Some(_)) => tracing::info!(
                subject,
                "no declared resource matches (removed by a reload?); not answered"
            ),
            (None, None) => {}
        }
    }
}

/// The next reload trigger, or never when the config is not watched.
async fn next_trigger(triggers: &mut Option<Triggers>) -> Trigger {
    match triggers {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

/// Turns a subject into an engine request.
fn route_request<'a>(
    route: Route,
    subject: &'a str,
    payload: &'a [u8],
    prefix: &str,
) -> Option<Request<'a>> {
    let rest = |p: &str| subject.strip_prefix(p);
    Some(match route {
        Route::Get => Request::Get { rid: rest("get.")? },
        Route::Access => Request::Access {
            rid: rest("access.")?,
            payload,
        },
        Route::Call => {
            let (rid, method) = rest("call.")?.rsplit_once('.')?;
            Request::Call {
                rid,
                method,
                payload,
            }
        }
        Route::Token => Request::Token {
            cid: rest("conn.")?.strip_suffix(".token")?,
            payload,
        },
        Route::ApiSet => Request::ApiSet {
            rid: rest(prefix)?.strip_prefix(".set.")?,
            payload,
        },
        Route::ApiReset => Request::ApiReset {
            rid: rest(prefix)?.strip_prefix(".reset.")?,
            payload,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_subjects() {
        assert!(matches!(
            route_request(Route::Call, "call.session.prefs.c1.set", b"{}", "connres"),
            Some(Request::Call {
                rid: "session.prefs.c1",
                method: "set",
                ..
            })
        ));
        assert!(matches!(
            route_request(Route::Token, "conn.c1.token", b"{}", "connres"),
            Some(Request::Token { cid: "c1", .. })
        ));
        assert!(matches!(
            route_request(Route::ApiSet, "my.api.set.a.b", b"{}", "my.api"),
            Some(Request::ApiSet { rid: "a.b", .. })
        ));
        assert!(matches!(
            route_request(Route::ApiReset, "connres.reset.a.b", b"", "connres"),
            Some(Request::ApiReset { rid: "a.b", .. })
        ));
        assert!(route_request(Route::Get, "access.a", b"", "connres").is_none());
    }
}
