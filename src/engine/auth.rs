//! Auth requests of the names the `auth:` block declares: the answer comes from
//! `crate::auth::request` (no state is read or changed here); the outcome is the token
//! event, then the reply. The token event reaches this service again like one from any
//! auth service, and is applied then, in its place among the connection's messages
//! (with the shared store, by the connection's owner).

use bytes::Bytes;
use serde_json::Value;

use super::{Engine, Events};
use crate::auth::request::{self, Answer, AuthError};
use crate::auth::resume;
use crate::config::{AuthName, Config, MethodAction};
use crate::protocol::{self, ResError, TokenExtras};
use crate::store::Store;

/// A resume for the service to carry out, beside the serving task: the session of
/// connection `from` is taken from its owner (`<prefix>.resume.<name>.<from>`, which
/// checks the key), then given to connection `to` (its token event, then its written
/// models through the backend API), and only then is the client answered with `key`,
/// the new connection's resume key.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePlan {
    pub name: String,
    pub from: String,
    pub to: String,
    /// The presented key's secret.
    pub secret: [u8; resume::SECRET_LEN],
    /// The new connection's key, and what its token event keeps of it.
    pub key: String,
    pub kept: ([u8; 32], u32),
}

/// What the service carries out, beside the serving task, before it answers an auth
/// request.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthPlan {
    Resume(ResumePlan),
    /// Asks connection `cid`'s owner (`<prefix>.recheck.<name>.<cid>`) to verify the
    /// JWT it keeps again, and relays its answer.
    Recheck {
        name: String,
        cid: String,
    },
}

impl<S: Store> Engine<S> {
    /// `None`: no auth entry has this name (another service may answer it).
    pub(super) fn auth(
        &mut self,
        config: &Config,
        name: &str,
        method: &str,
        payload: &[u8],
        events: &mut Events,
        plan: &mut Option<Box<AuthPlan>>,
    ) -> Option<Result<Bytes, ResError>> {
        let entry = config.auth.get(name)?;
        let wall = self.clock.wall();
        Some(match request::answer(entry, method, payload, wall) {
            Ok(Answer::Login { cid, login }) => {
                tracing::debug!(auth = name, cid, tid = login.tid, "a login");
                let issued = entry.resumes().then(|| self.resume_key(entry, &cid));
                let extras = TokenExtras {
                    tid: login.tid,
                    expires: login.expires,
                    resume: issued.as_ref().map(|(_, kept)| *kept),
                    jwt: login.jwt,
                };
                events.push(protocol::token_event(&cid, &login.token, &extras));
                Ok(match issued {
                    Some((key, _)) => protocol::resume_reply(&key),
                    None => protocol::null_reply(),
                })
            }
            Ok(Answer::Logout { cid }) => {
                let logout = TokenExtras::default();
                events.push(protocol::token_event(&cid, &Value::Null, &logout));
                Ok(protocol::null_reply())
            }
            Ok(Answer::Resume { cid, from, secret }) => {
                let (key, kept) = self.resume_key(entry, &cid);
                *plan = Some(Box::new(AuthPlan::Resume(ResumePlan {
                    name: name.to_string(),
                    from,
                    to: cid,
                    secret,
                    key: key.clone(),
                    kept,
                })));
                Ok(protocol::resume_reply(&key))
            }
            Ok(Answer::Recheck { cid }) => {
                *plan = Some(Box::new(AuthPlan::Recheck {
                    name: name.to_string(),
                    cid,
                }));
                Ok(protocol::null_reply())
            }
            Err(e) => Err(res_error(e)),
        })
    }

    /// A new resume key of connection `cid`, and what its token event keeps of it.
    fn resume_key(&self, entry: &AuthName, cid: &str) -> (String, ([u8; 32], u32)) {
        let mut secret = [0u8; resume::SECRET_LEN];
        // The OS's random source failing is not something to go on without.
        getrandom::fill(&mut secret).expect("the OS random source works");
        let issued = resume::issue(cid, &secret);
        let ttl = u32::try_from(entry.resume_ttl.as_secs()).unwrap_or(u32::MAX);
        let until = self.wall_secs().saturating_add(ttl);
        (issued.key, (issued.hash, until))
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
            let mut request: protocol::RevokeRequest = protocol::parse(payload, "revoke")?;
            let Some(logout) = entry
                .methods
                .iter()
                .find(|m| matches!(m.action, MethodAction::Logout))
            else {
                return Err(ResError::InvalidParams(format!(
                    "auth `{name}` has no logout method (`{{ logout: true }}`) for the gateways to call"
                )));
            };
            if let Some(claims) = request.claims.take() {
                request.tids.push(
                    request::tid_of_claims(entry, claims)
                        .map_err(|m| ResError::InvalidParams(format!("revoke: {m}")))?,
                );
            }
            if request.tids.is_empty() || request.tids.len() > MAX_REVOKED_TIDS {
                return Err(ResError::InvalidParams(format!(
                    "revoke: `tids` must name 1 to {MAX_REVOKED_TIDS} token IDs, or `claims` make one"
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

pub(super) fn res_error(e: AuthError) -> ResError {
    match e.reason() {
        Some(reason) => ResError::InvalidToken {
            reason,
            message: e.to_string(),
        },
        None => match e {
            AuthError::NoMethod { .. } => ResError::MethodNotFound(e.to_string()),
            AuthError::ResumeKey(m) => ResError::InvalidResumeKey(m.into()),
            _ => ResError::InvalidParams(e.to_string()),
        },
    }
}
