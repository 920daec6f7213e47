//! A handled message on its way out: its events first, then its reply (or the
//! acknowledgement of a token event sent as a request), then the metrics of its
//! handling. With the shared store it may wait in the write pipeline first.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Subject};
use prometheus_client::metrics::counter::Counter;

use super::discovery::Endpoint;
use super::route::Route;
use crate::engine::{self, Status};
use crate::metrics::{EventKind, Metrics};
use crate::protocol::{self, ResError};

/// What is left to do for a handled message.
pub(super) struct Finished {
    pub(super) route: Route,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) subject: Subject,
    pub(super) reply_to: Option<Subject>,
    pub(super) outcome: engine::Outcome,
    /// The request series it counts in (of the config it was handled under).
    pub(super) counter: Counter,
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
            } else {
                EventKind::Change
            });
            if let Err(e) = client.publish(event.clone(), payload).await {
                tracing::error!(subject = event, error = %e, "could not publish an event");
            }
        }
        match (outcome.reply, reply_to) {
            (Some(body), Some(reply)) => {
                if let Err(e) = client.publish(reply, body).await {
                    tracing::error!(subject, error = %e, "could not publish a reply");
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
        metrics.request(route.kind(), &counter, took);
        endpoint.record(took, error);
    }
}
