//! Rechecks (`<prefix>.recheck.<name>.<cid>`, sent by the instance that received an
//! auth request of a `{ recheck: true }` method, as a gateway sends for each connection a
//! `system.tokenReset` names): the connection's owner verifies the JWT the connection
//! logged in with again, with the keys, clock, issuer and audience of now. Refused: the
//! connection is logged out (its models reset, a null token event) and the answer says
//! why. Accepted: the token is rebuilt from the claims (a token event when it changed).
//! A connection without a kept JWT (logged out, or logged in by another service) is
//! left as it is.

use bytes::Bytes;
use serde_json::Value;

use super::{check_cid, Engine, Events};
use crate::auth::request;
use crate::config::Config;
use crate::protocol::{self, ResError, TokenExtras};
use crate::store::{Store, Token};

impl<S: Store> Engine<S> {
    /// `None`: no auth entry has this name.
    pub(super) fn recheck(
        &mut self,
        config: &Config,
        name: &str,
        cid: &str,
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        let entry = config.auth.get(name)?;
        Some((|| {
            check_cid(cid)?;
            let Some(conn) = self.store.connection(cid) else {
                return Ok(protocol::null_reply());
            };
            let (Some(token), Some(jwt)) = (conn.token.clone(), conn.jwt()) else {
                return Ok(protocol::null_reply());
            };
            match request::verify(entry, jwt, self.clock.wall()) {
                Ok(login) => {
                    let expires = u32::try_from(login.expires.unwrap_or(0)).unwrap_or(0);
                    let unchanged = token == Token::new(&login.token)
                        && conn.tid() == login.tid.as_deref()
                        && conn.expires == expires;
                    if !unchanged {
                        let extras = TokenExtras {
                            tid: login.tid,
                            expires: login.expires,
                            resume: conn.resume().map(|r| (r.hash, r.until)),
                            jwt: login.jwt,
                        };
                        events.push(protocol::token_event(cid, &login.token, &extras));
                    }
                    Ok(protocol::null_reply())
                }
                Err(e) => {
                    tracing::debug!(auth = name, cid, error = %e, "a recheck logged a connection out");
                    self.set_token(config, cid, None, events);
                    events.push(protocol::token_event(
                        cid,
                        &Value::Null,
                        &TokenExtras::default(),
                    ));
                    Err(super::auth::res_error(e))
                }
            }
        })())
    }
}
