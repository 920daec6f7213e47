//! The service's subscriptions of their own, beside the ordered channel (`ordered`,
//! which has every request subject): the forwarding subscription of the shared store,
//! with the endpoint that counts what it receives; ending those of removed patterns; and
//! the round trip that makes sure the server has them all.

use std::sync::Arc;

use async_nats::Client;
use futures::stream::StreamExt;

use super::discovery::Endpoint;
use super::route::{Route, Source, Tagged};
use super::serve::publish;
use super::{Service, ServiceError, SYNC_TIMEOUT};

impl Service {
    /// Ends the subscriptions of the given patterns.
    pub(super) async fn unsubscribe_patterns(&mut self, patterns: &[String]) {
        self.ordered.unsubscribe_patterns(patterns).await;
    }
}

/// The subscription other instances forward this instance's messages on: not in the
/// ordered channel (forwarded messages are read with no order promised; the protocol
/// places them as late), in a channel of its own.
pub(super) async fn subscribe_forwarded(
    client: &Client,
    subject: &str,
) -> Result<Tagged, ServiceError> {
    let sub = client
        .subscribe(subject.to_string())
        .await
        .map_err(|source| ServiceError::Subscribe {
            subject: subject.to_string(),
            source,
        })?;
    let endpoint = Endpoint::new(Route::Forwarded, None, subject, None);
    Ok(Tagged {
        route: Route::Forwarded,
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
