//! Resumes, carried out beside the serving task once the engine has checked the
//! request's shape ([`crate::engine::ResumePlan`]): the old connection's session is
//! taken from its owner, which checks the key, then given to the new connection (its
//! token event, then its written models through the backend API, each applied before
//! the next goes out), and only then is the client answered. Failed attempts are
//! limited per connection (`attempts.rs`).

use std::time::Duration;

use async_nats::Client;
use serde_json::{json, Value};

use crate::engine::ResumePlan;
use crate::protocol::{self, ResError, Taken, TokenExtras};

/// How long each step waits for its answer.
const STEP_WAIT: Duration = Duration::from_secs(5);

/// Carries a resume out; the error is the client's answer.
pub(super) async fn carry_out(
    client: &Client,
    prefix: &str,
    plan: &ResumePlan,
) -> Result<(), ResError> {
    let secret = crate::auth::resume::encode_secret(&plan.secret);
    let take = json!({"secret": secret, "to": plan.to});
    let subject = format!("{prefix}.resume.{}.{}", plan.name, plan.from);
    let reply = request(client, subject, take.to_string()).await?;
    let reply: Value = serde_json::from_slice(&reply)
        .map_err(|_| ResError::Internal("the resume's take was not answered in JSON".into()))?;
    if let Some(error) = reply.get("error") {
        let message = error["message"]
            .as_str()
            .unwrap_or("resume refused")
            .to_string();
        return Err(match error["code"].as_str() {
            Some(protocol::INVALID_RESUME_KEY) => ResError::InvalidResumeKey(message),
            _ => ResError::Internal(message),
        });
    }
    let taken: Taken = serde_json::from_value(reply["result"].clone())
        .map_err(|e| ResError::Internal(format!("the resume's take answered {e}")))?;
    let extras = TokenExtras {
        tid: taken.tid,
        expires: taken.expires,
        resume: Some(plan.kept),
        jwt: taken.jwt,
    };
    let (subject, payload) = protocol::token_event(&plan.to, &taken.token, &extras);
    request(client, subject, payload).await?;
    for (rid, values) in taken.models {
        // A collection's items are added one by one, in order; a model's values set.
        let writes = match values {
            Value::Array(items) => items
                .into_iter()
                .map(|value| (format!("{prefix}.add.{rid}"), json!({ "value": value })))
                .collect(),
            values => vec![(format!("{prefix}.set.{rid}"), json!({ "values": values }))],
        };
        for (subject, body) in writes {
            let reply = request(client, subject, body.to_string()).await;
            let refused = reply.as_ref().ok().and_then(|r| {
                let reply: Value = serde_json::from_slice(r).ok()?;
                Some(reply.get("error")?.to_string())
            });
            if let Some(e) = reply.err().map(|e| e.to_string()).or(refused) {
                tracing::warn!(rid, error = %e, "a resumed model's values were not written");
            }
        }
    }
    Ok(())
}

async fn request(
    client: &Client,
    subject: String,
    payload: impl Into<bytes::Bytes>,
) -> Result<bytes::Bytes, ResError> {
    let sent = client.request(subject.clone(), payload.into());
    match tokio::time::timeout(STEP_WAIT, sent).await {
        Ok(Ok(msg)) => Ok(msg.payload),
        Ok(Err(e)) => Err(ResError::Internal(format!("resume: {subject}: {e}"))),
        Err(_) => Err(ResError::Internal(format!(
            "resume: {subject} was not answered within 5s"
        ))),
    }
}
