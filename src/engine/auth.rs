//! Auth requests of the names the `auth:` block declares: the answer comes from
//! `crate::auth::request` (no state is read or changed here); the outcome is the token
//! event, then the reply. The token event reaches this service again like one from any
//! auth service, and is applied then, in its place among the connection's messages
//! (with the shared store, by the connection's owner).

use bytes::Bytes;

use super::{Engine, Events};
use crate::auth::request::{self, Answer, AuthError};
use crate::config::{Config, MethodAction};
use crate::protocol::{self, ResError};
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// `None`: no auth entry has this name (another service may answer it).
    pub(super) fn auth(
        &mut self,
        config: &Config,
        name: &str,
        method: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        let entry = config.auth.get(name)?;
        Some(
            match request::answer(entry, method, payload, self.clock.wall()) {
                Ok(Answer::Login {
                    cid,
                    token,
                    tid,
                    expires,
                }) => {
                    events.push(protocol::token_event(&cid, &token, tid.as_deref(), expires));
                    Ok(protocol::null_reply())
                }
                Ok(Answer::Logout { cid }) => {
                    events.push(protocol::token_event(
                        &cid,
                        &serde_json::Value::Null,
                        None,
                        None,
                    ));
                    Ok(protocol::null_reply())
                }
                Err(e) => Err(res_error(e)),
            },
        )
    }
}

/// The most token IDs one revocation names.
pub const MAX_REVOKED_TIDS: usize = 1_000;

impl<S: Store> Engine<S> {
    /// A revocation of the backend: `system.tokenReset` naming the token IDs, with the
    /// name's logout method as its subject, so each gateway sends that logout for every
    /// connection whose token has one of them (the gateways know which do, whichever
    /// instance holds the connection). `None`: no auth entry has this name.
    pub(super) fn revoke(
        &mut self,
        config: &Config,
        name: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        let entry = config.auth.get(name)?;
        Some((|| {
            let request: protocol::RevokeRequest = protocol::parse(payload, "revoke")?;
            let Some(logout) = entry
                .methods
                .iter()
                .find(|m| matches!(m.action, MethodAction::Logout))
            else {
                return Err(ResError::InvalidParams(format!(
                    "auth `{name}` has no logout method (`{{ logout: true }}`) for the gateways to call"
                )));
            };
            if request.tids.is_empty() || request.tids.len() > MAX_REVOKED_TIDS {
                return Err(ResError::InvalidParams(format!(
                    "revoke: `tids` must name 1 to {MAX_REVOKED_TIDS} token IDs"
                )));
            }
            if request.tids.iter().any(|t| t.is_empty() || t.len() > 256) {
                return Err(ResError::InvalidParams(
                    "revoke: a token ID must be 1 to 256 bytes".into(),
                ));
            }
            let subject = format!("auth.{name}.{}", logout.name);
            events.push(protocol::token_reset(&request.tids, &subject));
            Ok(protocol::null_reply())
        })())
    }
}

fn res_error(e: AuthError) -> ResError {
    match e.reason() {
        Some(reason) => ResError::InvalidToken {
            reason,
            message: e.to_string(),
        },
        None => match e {
            AuthError::NoMethod { .. } => ResError::MethodNotFound(e.to_string()),
            _ => ResError::InvalidParams(e.to_string()),
        },
    }
}
