//! A handled message on its way out: its events first, then its reply (or the
//! acknowledgement of a token event sent as a request), then the metrics of its
//! handling. With the shared store it may wait in the write pipeline first.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Subject};
use prometheus_client::metrics::counter::Counter;

use super::discovery::Endpoint;
use super::route::Route;
use crate::engine::{self, AuthPlan, Status};
use crate::metrics::{EventKind, Metrics};
use crate::protocol::{self, ResError};

/// What is left to do for a handled message.
pub(super) struct Finished {
    pub(super) route: Route,
    /// The endpoint it counts in; none for a step that is no message (with the shared
    /// store: a token event's step on presence lists, the ttl sweep of a list).
    pub(super) endpoint: Option<Arc<Endpoint>>,
    pub(super) subject: Subject,
    pub(super) reply_to: Option<Subject>,
    pub(super) outcome: engine::Outcome,
    /// The request series it counts in (of the config it was handled under); none for
    /// a step that is no message.
    pub(super) counter: Option<Counter>,
    pub(super) started: Instant,
    /// The shared store's partition of the message, if any.
    pub(super) partition: Option<u32>,
}

impl Finished {
    /// Publishes the events, then the reply; records the metrics.
    pub(super) async fn publish(self, client: &Client, metrics: &Metrics) {
        let Finished {
            route,
            endpoint,
            subject,
            reply_to,
            outcome,
            counter,
            started,
            ..
        } = self;
        let subject = subject.as_str();
        let status = outcome.status;
        let error = match status {
            Status::Error(_) => outcome.reply.clone(),
            _ => None,
        };
        for (event, payload) in outcome.events {
            metrics.event(if event.ends_with(".reaccess") {
                EventKind::Reaccess
            } else if event.starts_with("conn.") {
                EventKind::Token
            } else if event == "system.tokenReset" {
                EventKind::TokenReset
            } else {
                EventKind::Change
            });
            let len = payload.len();
            if let Err(e) = client.publish(event.clone(), payload).await {
                tracing::error!(subject = event, error = %e, len, "could not publish an event");
                if too_big(&e) {
                    reset_for(client, &event).await;
                }
            }
        }
        match (outcome.reply, reply_to) {
            (Some(body), Some(reply)) => {
                let len = body.len();
                if let Err(e) = client.publish(reply.clone(), body).await {
                    tracing::error!(subject, error = %e, len, "could not publish a reply");
                    if too_big(&e) {
                        let max = client.server_info().max_payload;
                        let answer = ResError::Internal(format!(
                            "the reply is {len} bytes, over the NATS server's max_payload ({max}): raise max_payload, or keep this resource smaller"
                        ));
                        if let Err(e) = client.publish(reply, answer.reply()).await {
                            tracing::error!(subject, error = %e, "could not publish the error of a reply over max_payload");
                        }
                    }
                }
            }
            (Some(_), None) => tracing::debug!(subject, "request without a reply subject"),
            // A token event sent as a request is acknowledged once its events are out,
            // so an auth service can answer the client's login after them (docs/behaviour.md,
            // "Tokens, login and logout").
            (None, Some(reply)) if route == Route::Token => {
                let ack = if status == Status::Ok {
                    protocol::null_reply()
                } else {
                    ResError::InvalidParams(
                        "not a token event (docs/behaviour.md, \"Tokens, login and logout\")"
                            .into(),
                    )
                    .reply()
                };
                if let Err(e) = client.publish(reply, ack).await {
                    tracing::error!(subject, error = %e, "could not acknowledge a token event");
                }
            }
            // No pattern matches the name: logged when handled (`serve.rs`).
            (None, _) => {}
        }
        let took = started.elapsed();
        if let (Some(counter), Some(endpoint)) = (counter, endpoint) {
            metrics.request(route.kind(), &counter, took);
            endpoint.record(took, error);
        }
    }
}

/// A publish refused because the message is over the server's max_payload.
fn too_big(e: &async_nats::PublishError) -> bool {
    e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded
}

/// An event over max_payload left gateways' copies of its resource behind: a
/// `system.reset` naming it makes them fetch it again (and that get says what is
/// wrong, if the resource is too big to send).
async fn reset_for(client: &Client, event: &str) {
    let Some(rid) = event
        .strip_prefix("event.")
        .and_then(|rest| rest.rsplit_once('.'))
        .map(|(rid, _)| rid.to_string())
    else {
        return;
    };
    let (subject, payload) = protocol::system_reset(std::slice::from_ref(&rid), &[]);
    if let Err(e) = client.publish(subject, payload).await {
        tracing::error!(rid, error = %e, "could not publish the system.reset of a resource whose event was over max_payload");
    }
}

/// What an auth answer needs for a resume or a recheck.
pub(super) struct Plans {
    /// The backend API's prefix (the takes', rechecks' and writes' subjects).
    pub(super) prefix: String,
    pub(super) failures: Arc<super::attempts::Attempts>,
    /// The series a refused plan counts in (a resume's key, a recheck's token).
    pub(super) refused: Option<Counter>,
}

/// How long an auth answer waits for connres to have applied its token event.
const AUTH_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Finished {
    /// Answers an auth request after its token event is applied: the token event goes
    /// out as a request, which the connection's owner (this instance, or another with
    /// the shared store) answers once it has published the events the token causes (the
    /// reaccess of resources whose rules read `token` among them). Only then does the
    /// client's login resolve, so a write it sends next finds the gateway's access
    /// already recomputed with the token. Runs beside the serving task, which must be
    /// free to apply the token event; the answer goes out whatever the acknowledgement
    /// (the gateways have the token event either way), with a warning when none came.
    pub(super) async fn answer_auth(self, client: Client, metrics: Arc<Metrics>, plans: Plans) {
        let Finished {
            route,
            endpoint,
            reply_to,
            mut outcome,
            mut counter,
            started,
            ..
        } = self;
        match outcome.plan.take().map(|p| *p) {
            Some(AuthPlan::Resume(plan)) => {
                let now = Instant::now();
                let result = if plans.failures.allowed(&plan.to, now) {
                    super::resume::carry_out(&client, &plans.prefix, &plan).await
                } else {
                    Err(ResError::TooManyAttempts(format!(
                        "too many failed resumes from this connection; try again in a minute (at most {} a minute)",
                        plans.failures.max()
                    )))
                };
                if let Err(e) = result {
                    if matches!(e, ResError::InvalidResumeKey(_)) {
                        plans.failures.failed(&plan.to, now);
                    }
                    tracing::debug!(cid = plan.to, error = %e, "a resume was refused");
                    outcome.status = Status::Error(e.code());
                    outcome.reply = Some(e.reply());
                    counter = plans.refused.or(counter);
                }
            }
            Some(AuthPlan::Recheck { name, cid }) => {
                let subject = format!("{}.recheck.{name}.{cid}", plans.prefix);
                let (status, reply) = super::recheck::relay(&client, subject).await;
                if status != Status::Ok {
                    outcome.status = status;
                    if status == Status::Error(protocol::INVALID_TOKEN) {
                        counter = plans.refused.or(counter);
                    }
                }
                outcome.reply = Some(reply);
            }
            None => {}
        }
        let error = match outcome.status {
            Status::Error(_) => outcome.reply.clone(),
            _ => None,
        };
        for (event, payload) in outcome.events {
            metrics.event(EventKind::Token);
            let acked = client.request(event.clone(), payload);
            match tokio::time::timeout(AUTH_ACK_WAIT, acked).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(subject = event, error = %e, "a login's token event was not acknowledged; answering the login anyway")
                }
                Err(_) => tracing::warn!(
                    subject = event,
                    "a login's token event was not acknowledged within 5s; answering the login anyway"
                ),
            }
        }
        if let (Some(body), Some(reply)) = (outcome.reply, reply_to) {
            if let Err(e) = client.publish(reply, body).await {
                tracing::error!(error = %e, "could not publish an auth reply");
            }
        }
        let took = started.elapsed();
        if let (Some(counter), Some(endpoint)) = (counter, endpoint) {
            metrics.request(route.kind(), &counter, took);
            endpoint.record(took, error);
        }
    }
}
