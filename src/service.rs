//! The NATS side: the one module that uses `async_nats`. It subscribes the subjects of
//! every declared pattern, feeds each message to the engine in arrival order from a
//! single task, publishes the outcome, announces itself with `system.reset`, re-announces
//! after a reconnect and drains on shutdown.
//!
//! One task owns the engine and the current config. Every message is handled to the end
//! (events published, then the reply) before the next one starts, so events and replies
//! leave in the order the state changed, and a request always sees exactly one config.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_nats::{Client, ConnectOptions, Event, Message, Subscriber};
use futures::stream::{SelectAll, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::engine::{Engine, Request};
use crate::protocol;

/// Default NATS server when neither the flag, the environment nor the file names one.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

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
}

impl Service {
    /// Connects, subscribes every subject of `config`, waits until the server has the
    /// subscriptions and only then publishes `system.reset` for every pattern.
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
        };
        let config = service.config.clone();
        service.subscribe_fixed(&config).await?;
        for res in &config.resources {
            service
                .subscribe_pattern(&config, res.pattern.as_str(), &res.pattern.wildcard())
                .await?;
        }
        service.announce().await?;
        tracing::info!(
            url = nats_url,
            resources = config.resources.len(),
            queue_group = %config.nats.queue_group,
            "connres is serving"
        );
        Ok(service)
    }

    /// Serves until `shutdown` resolves, then stops taking requests, answers the ones
    /// already received and flushes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(ev) = self.events.recv() => self.connection_event(ev).await?,
                item = self.subs.next() => match item {
                    Some((route, msg)) => self.handle(route, msg).await,
                    None => break,
                },
            }
        }
        tracing::info!("shutting down: draining subscriptions");
        for tagged in self.subs.iter_mut() {
            if let Err(e) = tagged.sub.drain().await {
                tracing::warn!(error = %e, "drain failed");
            }
        }
        while let Some((route, msg)) = self.subs.next().await {
            self.handle(route, msg).await;
        }
        self.client
            .flush()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        tracing::info!("stopped");
        Ok(())
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

    async fn subscribe_pattern(
        &mut self,
        _config: &Config,
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
        self.client
            .flush()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        let patterns: Vec<String> = self
            .config
            .resources
            .iter()
            .map(|r| r.pattern.wildcard())
            .collect();
        let (subject, payload) = protocol::system_reset(&patterns, &patterns);
        self.client
            .publish(subject, payload)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        self.client
            .flush()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))
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
                self.disconnected = true;
                tracing::warn!("lost the NATS connection; reconnecting")
            }
            Event::SlowConsumer(sid) => {
                tracing::error!(
                    sid,
                    "NATS dropped messages for a slow subscription; requests went unanswered"
                )
            }
            other => tracing::info!(event = %other, "NATS connection event"),
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
        if let Some(body) = outcome.reply {
            match msg.reply {
                Some(reply) => {
                    if let Err(e) = self.client.publish(reply, body).await {
                        tracing::error!(subject, error = %e, "could not publish a reply");
                    }
                }
                None => tracing::debug!(subject, "request without a reply subject"),
            }
        }
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
            Some(Request::ApiReset { rid: "a.b" })
        ));
        assert!(route_request(Route::Get, "access.a", b"", "connres").is_none());
    }
}
