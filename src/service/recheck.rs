//! Rechecks, relayed beside the serving task: an auth request of a `{ recheck: true }`
//! method reaches any instance; the connection's owner, which keeps its JWT, verifies it
//! (`<prefix>.recheck.<name>.<cid>`, [`crate::engine`]'s `recheck`) and publishes the
//! token event; its answer is the client's.

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;

use crate::engine::Status;
use crate::protocol::{self, ResError};

/// How long the owner's answer is waited for.
const WAIT: Duration = Duration::from_secs(5);

/// Asks the owner on `subject`; its answer, and how it went (for metrics).
pub(super) async fn relay(client: &Client, subject: String) -> (Status, Bytes) {
    let sent = client.request(subject.clone(), Bytes::new());
    let e = match tokio::time::timeout(WAIT, sent).await {
        Ok(Ok(msg)) => return (status_of(&msg.payload), msg.payload),
        Ok(Err(e)) => ResError::Internal(format!("recheck: {subject}: {e}")),
        Err(_) => ResError::Internal(format!("recheck: {subject} was not answered within 5s")),
    };
    tracing::warn!(error = %e, "a recheck was not answered by the connection's owner");
    (Status::Error(e.code()), e.reply())
}

/// The status of an owner's answer: its error code when it is one connres sends.
fn status_of(reply: &[u8]) -> Status {
    #[derive(serde::Deserialize)]
    struct Reply {
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    match serde_json::from_slice::<Reply>(reply) {
        Ok(Reply { error: None }) => Status::Ok,
        Ok(Reply { error: Some(c) }) if c.code == protocol::INVALID_TOKEN => {
            Status::Error(protocol::INVALID_TOKEN)
        }
        _ => Status::Error(ResError::Internal(String::new()).code()),
    }
}
