//! Auth requests of the names the `auth:` block declares: the answer comes from
//! `crate::auth::request` (no state is read or changed here); the outcome is the token
//! event, then the reply. The token event reaches this service again like one from any
//! auth service, and is applied then, in its place among the connection's messages
//! (with the shared store, by the connection's owner).

use bytes::Bytes;

use super::{Engine, Events};
use crate::auth::request::{self, Answer, AuthError};
use crate::config::Config;
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
