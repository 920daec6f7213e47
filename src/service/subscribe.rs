//! The service's subscriptions of their own: the get and access subscriptions of each
//! pattern (reads; the state-changing subjects go into the ordered channel, `ordered`)
//! and the forwarding subscription of the shared store, each with the endpoint that
//! counts what it receives; ending those of removed patterns; and the round trip that
//! makes sure the server has them all.

use std::sync::Arc;

use async_nats::Client;
use futures::stream::StreamExt;

use super::discovery::Endpoint;
use super::route::{Route, Source, Tagged};
use super::serve::publish;
use super::{Service, ServiceError, SYNC_TIMEOUT};
use crate::config::Config;

impl Service {
    /// Ends the subscriptions of the given patterns (their streams then finish).
    pub(super) async fn unsubscribe_patterns(&mut self, patterns: &[String]) {
        for tagged in self.subs.iter_mut() {
            if tagged
                .pattern
                .as_ref()
                .is_some_and(|p| patterns.contains(p))
            {
                if let Source::Sub(sub) = &mut tagged.source {
                    if let Err(e) = sub.unsubscribe().await {
                        tracing::warn!(error = %e, "unsubscribe failed");
                    }
                }
            }
        }
        self.ordered.unsubscribe_patterns(patterns).await;
    }
}

/// The get and access subscriptions of one pattern.
pub(super) async fn subscribe_pattern(
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
        subscribe(client, Route::Access, p, format!("access.{w}"), group).await?,
    ])
}

/// The subscription other instances forward this instance's messages on.
pub(super) async fn subscribe_forwarded(
    client: &Client,
    subject: &str,
) -> Result<Tagged, ServiceError> {
    subscribe(client, Route::Forwarded, None, subject.to_string(), None).await
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
        source: Source::Sub(sub),
    })
}

/// Waits until the server has processed everything sent so far on this connection,
/// subscriptions included: a message to ourselves makes the round trip after them.
/// (`flush` only empties the socket buffer.)
pub(super) async fn sync_with_server(client: &Client) -> Result<(), ServiceError> {
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
