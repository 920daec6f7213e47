//! What the serving task does, one step at a time: a message handled to the end (events
//! published, then the reply), a NATS connection event (on a reconnect the service is
//! announced again; on a disconnect what was already received is handled first), an
//! expiry sweep, one paced `system.reset` for dropped state. Also the announcement
//! itself and the drain at shutdown.

use std::task::Poll;
use std::time::Instant;

use async_nats::connection::State;
use async_nats::{Client, Event};
use futures::stream::StreamExt;
use futures::FutureExt;
use tokio::sync::mpsc;

use std::sync::Arc;

use super::cluster::Next;
use super::discovery::Endpoint;
use super::outcome::Finished;
use super::reload::Prepared;
use super::route::{route_request, Received, Route};
use super::{Service, ServiceError, BURST};
use crate::engine::{AuthPlan, ResetBatch, Status, RESET_BATCH};
use crate::logs::Throttle;
use crate::metrics::EventKind;
use crate::protocol;
use crate::store::Store;

/// Messages that get no answer, reported at most every ten seconds per reason, with
/// how many went unreported since the last line.
#[derive(Default)]
pub(super) struct Unanswered {
    /// Requests for names no pattern of the config in force matches.
    no_pattern: Throttle,
    /// Messages on subjects connres does not serve.
    unexpected: Throttle,
}

impl Service {
    /// A message on a subject no route serves: ignored, so a request on it is not
    /// answered.
    fn unexpected(&mut self, subject: &str, what: &str) {
        if let Some(skipped) = self.unanswered.unexpected.occurred(Instant::now()) {
            tracing::warn!(subject, skipped, "ignored {what} on an unexpected subject: not answered; reported at most every 10s, `skipped` since the last line");
        }
    }
}

/// One thing for the serving task to do.
pub(super) enum Step {
    Connection(Event),
    Reload(Box<Prepared>),
    Sweep,
    Reset,
    Cluster(Next),
}

/// A message to handle here, with the partition it belongs to (none: no pattern matches
/// its name, or no shared store).
pub(super) struct Admitted {
    pub(super) route: Route,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) msg: async_nats::Message,
    pub(super) partition: Option<u32>,
    /// It waited for its partition to have an owner: its token fills in no record
    /// ([`crate::engine::Engine::handle_waited`]).
    pub(super) waited: bool,
}

impl Service {
    pub(super) async fn step(&mut self, step: Step) -> Result<(), ServiceError> {
        match step {
            Step::Connection(ev) => self.connection_event(ev).await?,
            Step::Reload(prepared) => {
                // How long requests could wait on the swap (its share of "no request
                // waiting", examples/reload_bench.rs), its writes to the store included.
                let started = std::time::Instant::now();
                let cpu = crate::clock::thread_cpu();
                self.apply(*prepared).await;
                self.after_step().await;
                let held_us = started.elapsed().as_micros() as u64;
                // Wall time includes whatever else the machine ran meanwhile; the
                // thread's CPU time is what the swap itself cost.
                let cpu_us = crate::clock::thread_cpu().saturating_sub(cpu).as_micros() as u64;
                tracing::debug!(held_us, cpu_us, "the reload's swap held the serving task");
            }
            Step::Cluster(next) => self.cluster_step(next).await,
            Step::Sweep => {
                let dropped = self.engine.sweep(&self.config);
                self.sweep_cold();
                self.after_step().await;
                if dropped > 0 {
                    self.metrics.expired(dropped);
                    self.update_stats();
                    tracing::debug!(dropped, "dropped idle or least recently used state");
                }
                self.end_tokens().await;
                self.expire_presence().await;
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

    /// Logs out the connections whose token has ended (a token event's `expires`), as
    /// their auth service would: `conn.<cid>.token` with a null token, applied when it
    /// comes back like any token event.
    async fn end_tokens(&mut self) {
        let now = self.engine.wall_secs();
        let ended = self.engine.ended_tokens(now, crate::engine::ENDS_PER_SWEEP);
        if ended.is_empty() {
            return;
        }
        tracing::debug!(
            count = ended.len(),
            "tokens ended: logging their connections out"
        );
        for cid in ended {
            let (subject, payload) =
                protocol::token_event(&cid, &serde_json::Value::Null, &Default::default());
            self.metrics.event(EventKind::Token);
            if let Err(e) = self.publish(subject, payload).await {
                tracing::error!(error = %e, "the logout of an ended token was not published; it is tried again in 5s");
            }
        }
    }

    /// Publishes the `remove` events of presence list members whose connections were
    /// not seen for the list's `ttl` (with the shared store, of the lists served here,
    /// once written).
    async fn expire_presence(&mut self) {
        if self.cluster.is_some() {
            self.presence_sweep_shared().await;
            return;
        }
        for (subject, payload) in self.engine.presence_sweep(&self.config) {
            self.metrics.event(EventKind::Change);
            if let Err(e) = self.publish(subject.clone(), payload).await {
                tracing::error!(error = %e, "a presence list's remove event was not published; its list is named in the next system.reset");
                let rid = subject
                    .strip_prefix("event.")
                    .and_then(crate::pattern::split_last);
                if let Some((rid, _)) = rid {
                    self.engine.owe_reset(&self.config, rid);
                }
            }
        }
    }

    /// Unsubscribes, answers what was already received, and flushes.
    pub(super) async fn drain(&mut self) -> Result<(), ServiceError> {
        for tagged in self.subs.iter_mut() {
            if let super::route::Source::Sub(sub) = &mut tagged.source {
                if let Err(e) = sub.drain().await {
                    tracing::warn!(error = %e, "drain failed");
                }
            }
        }
        self.ordered.close().await;
        while let Some(received) = self.subs.next().await {
            self.handle(received).await;
        }
        // Logins waiting for their token event's acknowledgement (handled above).
        while self.auth_answers.join_next().await.is_some() {}
        self.finish_writes().await;
        self.flush().await
    }

    /// Writes out everything buffered for the server.
    async fn flush(&self) -> Result<(), ServiceError> {
        self.client
            .flush()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))
    }

    pub(super) async fn publish(
        &self,
        subject: String,
        payload: bytes::Bytes,
    ) -> Result<(), ServiceError> {
        publish(&self.client, subject, payload).await
    }

    /// Makes sure the server has every subscription, then publishes `system.reset`
    /// naming every pattern: gateways re-fetch what they cached from an earlier run.
    /// With the shared store the ownership protocol decides instead (only an instance
    /// that finds no other one running resets every pattern), and the service is ready
    /// once it has seen the cluster.
    pub(super) async fn announce(&mut self) -> Result<(), ServiceError> {
        self.flush().await?;
        if self.cluster.is_some() {
            super::subscribe::sync_with_server(&self.client).await?;
            self.metrics.nats(true);
            return Ok(());
        }
        self.reset_all().await?;
        self.flush().await?;
        self.metrics.nats(true);
        self.metrics.set_ready(true);
        Ok(())
    }

    /// Publishes `system.reset` naming every pattern: at start and after a reconnect
    /// on one instance; with the shared store, when the protocol says so (the first
    /// instance of a cluster, or one that found no live owner).
    pub(super) async fn reset_all(&self) -> Result<(), ServiceError> {
        let patterns: Vec<String> = self
            .config
            .resources
            .iter()
            .map(|r| r.pattern.wildcard())
            .collect();
        let (subject, payload) = protocol::system_reset(&patterns, &patterns);
        self.publish(subject, payload).await?;
        self.metrics.event(EventKind::SystemReset);
        Ok(())
    }

    async fn connection_event(&mut self, ev: Event) -> Result<(), ServiceError> {
        match ev {
            Event::Connected if self.disconnected => {
                self.disconnected = false;
                self.metrics.reconnected();
                // async-nats resubscribes by itself; events may have been missed while
                // we were away, so gateways are told to re-fetch (with the shared
                // store, the ownership protocol decides what).
                tracing::info!("reconnected to NATS");
                if self.cluster.is_some() {
                    self.engine.invalidate_replies();
                    self.cluster_input(crate::ownership::Input::Reconnected)
                        .await;
                    self.metrics.set_ready(true);
                    self.metrics.nats(true);
                } else {
                    self.engine.reconnected();
                    self.announce().await?;
                }
            }
            Event::Disconnected => {
                self.disconnected = true;
                self.metrics.set_ready(false);
                self.metrics.nats(false);
                tracing::warn!("lost the NATS connection; reconnecting");
                let backlog_placed = self.handle_received().await;
                // Token events are being missed from now on.
                if self.cluster.is_some() {
                    self.cluster_input(crate::ownership::Input::Disconnected { backlog_placed })
                        .await;
                } else {
                    self.engine.reconnected();
                }
            }
            Event::SlowConsumer(sid) => {
                tracing::error!(
                    sid,
                    "NATS dropped messages for a slow subscription; requests went unanswered"
                );
                if self.cluster.is_some() {
                    self.cluster_input(crate::ownership::Input::Missed).await;
                }
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
    /// before the outage. Says whether it handled all of it (the connection was still
    /// down when nothing was left): then whatever arrives next came after the outage.
    async fn handle_received(&mut self) -> bool {
        loop {
            if self.client.connection_state() == State::Connected {
                return false;
            }
            let Some(Some(received)) = self.subs.next().now_or_never() else {
                return self.client.connection_state() != State::Connected;
            };
            self.handle(received).await;
        }
    }

    /// The next message of a burst, if one was received already and nothing else is
    /// waiting for the serving task: no connection event and no prepared reload (those
    /// come first, as between any two messages), and fewer than [`BURST`] handled since
    /// the timers were looked at. Taking it here skips polling every idle source of the
    /// serving loop per message. Polled with the task's own waker: when there is none,
    /// the task is woken for the next as usual.
    pub(super) async fn received_next(
        &mut self,
        handled: usize,
        reloads: &mpsc::Receiver<Prepared>,
    ) -> Option<Received> {
        let control = self.cluster.as_ref().is_some_and(|c| c.waiting());
        if handled >= BURST || !self.events.is_empty() || !reloads.is_empty() || control {
            return None;
        }
        match futures::poll!(self.subs.next()) {
            Poll::Ready(received) => received,
            Poll::Pending => None,
        }
    }

    pub(super) async fn handle(&mut self, (route, endpoint, mut msg): Received) {
        let mut hops = 0;
        let (route, endpoint) = match route {
            Route::Ordered => {
                if let Some(cluster) = &self.cluster {
                    if msg.subject.starts_with(cluster.probe_prefix()) {
                        let subject = msg.subject.clone();
                        self.probe(subject.as_str()).await;
                        return;
                    }
                    // A request nats-server mapped to its partition: served as if it had
                    // arrived on its own subject.
                    if let Some(original) = cluster.unmap(&msg.subject) {
                        msg.subject = original.to_string().into();
                    }
                }
                let Some(route) = Route::of_subject(&msg.subject, &self.config.api.prefix) else {
                    self.unexpected(&msg.subject, "a message");
                    return;
                };
                let endpoint = self.ordered_endpoint(route, &msg).unwrap_or(endpoint);
                (route, endpoint)
            }
            Route::Forwarded => {
                let Some((h, subject)) = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.unforward(&msg.subject))
                else {
                    self.unexpected(&msg.subject, "a forwarded message");
                    return;
                };
                let Some(route) = Route::of_subject(&subject, &self.config.api.prefix) else {
                    self.unexpected(&subject, "a forwarded message");
                    return;
                };
                hops = h;
                msg.subject = subject.into();
                (route, endpoint)
            }
            route => (route, endpoint),
        };
        // An auth request changes nothing here (its token event does): whoever
        // receives it answers.
        if self.cluster.is_some() && !matches!(route, Route::Auth | Route::ApiRevoke) {
            if route == Route::Token {
                if let Some(cid) = super::cluster::token_cid(route, &msg) {
                    let (cid, payload) = (cid.to_string(), msg.payload.clone());
                    self.presence_token(&cid, &payload).await;
                    self.reaccess_granted_here(&cid, &payload).await;
                }
            }
            self.place(route, endpoint, msg, hops).await;
        } else {
            self.serve(Admitted {
                route,
                endpoint,
                msg,
                partition: None,
                waited: false,
            })
            .await
        }
    }

    /// The endpoint counting a message of the ordered channel (a pattern's requests by
    /// the pattern their name matches; none when no pattern in force does).
    fn ordered_endpoint(&self, route: Route, msg: &async_nats::Message) -> Option<Arc<Endpoint>> {
        let subject = msg.subject.as_str();
        let rid = match route {
            Route::Get => subject.strip_prefix("get."),
            Route::Access => subject.strip_prefix("access."),
            Route::Call => subject
                .strip_prefix("call.")
                .and_then(crate::pattern::split_last)
                .map(|(rid, _)| rid),
            Route::Auth => {
                let (name, _) = subject.strip_prefix("auth.")?.rsplit_once('.')?;
                return self.ordered.auth_endpoint(route, name).cloned();
            }
            Route::ApiRevoke => {
                let prefix = &self.config.api.prefix;
                let name = subject
                    .strip_prefix(prefix.as_str())?
                    .strip_prefix(".revoke.")?;
                return self.ordered.auth_endpoint(route, name).cloned();
            }
            _ => None,
        };
        let pattern = match rid {
            Some(rid) => Some(self.config.resource_of(rid)?.pattern.as_str()),
            None => None,
        };
        self.ordered.endpoint(route, pattern).cloned()
    }

    /// Handles a message to the end: the engine's outcome (written to the shared store
    /// first, if there is one), its events, then its reply.
    pub(super) async fn serve(&mut self, admitted: Admitted) {
        let Admitted {
            route,
            endpoint,
            msg,
            partition,
            waited,
        } = admitted;
        let started = std::time::Instant::now();
        let subject = msg.subject.as_str();
        let Some(request) = route_request(route, subject, &msg.payload, &self.config.api.prefix)
        else {
            let subject = subject.to_string();
            self.unexpected(&subject, "a message");
            return;
        };
        // A connection past its refused logins gets no signature check.
        let requester = (route == Route::Auth)
            .then(|| protocol::requester(&msg.payload))
            .flatten();
        let limited = requester
            .as_deref()
            .is_some_and(|cid| !self.login_failures.allowed(cid, Instant::now()));
        let outcome = if limited {
            let e = protocol::ResError::TooManyAttempts(format!(
                "too many refused logins from this connection; try again in a minute (at most {} a minute)",
                self.login_failures.max()
            ));
            crate::engine::Outcome {
                status: Status::Error(e.code()),
                reply: Some(e.reply()),
                ..Default::default()
            }
        } else if waited {
            self.engine.handle_waited(&self.config, request)
        } else {
            self.engine.handle(&self.config, request)
        };
        if outcome.evicted > 0 {
            self.metrics.expired(outcome.evicted);
        }
        if let (Some(cid), Status::Error(protocol::INVALID_TOKEN)) = (&requester, outcome.status) {
            self.login_failures.failed(cid, Instant::now());
        }
        if outcome.status == Status::Unanswered && msg.reply.is_some() {
            if let Some(skipped) = self.unanswered.no_pattern.occurred(Instant::now()) {
                tracing::warn!(subject, config = %self.config.content_hash(), skipped, "no declared resource matches the name: not answered (the requester times out). A pattern a reload removed while the request was on its way, or instances running different configs; reported at most every 10s, `skipped` since the last line");
            }
        }
        self.update_stats();
        let counter = self
            .requests
            .counter(route.kind(), outcome.resource, outcome.status);
        let finished = Finished {
            route,
            endpoint: Some(endpoint),
            subject: msg.subject,
            reply_to: msg.reply,
            outcome,
            counter: Some(counter),
            started,
            partition,
        };
        if route == Route::Auth {
            if finished.outcome.status == Status::Error(protocol::INVALID_TOKEN) {
                let subject = finished.subject.as_str();
                if let Some((name, _)) = subject
                    .strip_prefix("auth.")
                    .and_then(crate::pattern::split_last)
                {
                    self.jwks.unknown_kid(&self.config, name);
                }
            }
            // Those done are reaped here, so the set holds only logins in flight.
            while self.auth_answers.try_join_next().is_some() {}
            let refused = finished.outcome.plan.as_ref().map(|plan| {
                let status = Status::Error(match **plan {
                    AuthPlan::Resume(_) => protocol::INVALID_RESUME_KEY,
                    AuthPlan::Recheck { .. } => protocol::INVALID_TOKEN,
                });
                self.requests.counter(route.kind(), None, status)
            });
            let plans = super::outcome::Plans {
                prefix: self.config.api.prefix.clone(),
                failures: self.resume_failures.clone(),
                refused,
            };
            let answer = finished.answer_auth(self.client.clone(), self.metrics.clone(), plans);
            self.auth_answers.spawn(answer);
            return;
        }
        self.submit(finished).await
    }

    /// Sets the state gauges, when the counts changed since they were last set.
    pub(super) fn update_stats(&mut self) {
        let store = self.engine.store();
        let held = (store.connections(), store.entries(), store.bytes());
        if held != self.held {
            self.held = held;
            self.metrics.state(held.0, held.1, held.2);
        }
    }
}

pub(super) async fn publish(
    client: &Client,
    subject: String,
    payload: bytes::Bytes,
) -> Result<(), ServiceError> {
    client
        .publish(subject, payload)
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))
}
