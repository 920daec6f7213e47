//! Token records: `conn.<cid>.token` events are authoritative; a request's token only
//! fills in a record that is not confirmed. A token change recomputes the `from` fields
//! of the connection's models, resets written fields on logout and, on login, asks the
//! gateway to re-check access it computed without a token.

use serde_json::Value;

use super::{check_cid, push_change, Engine, Events};
use crate::config::Config;
use crate::protocol::{self, TokenEvent};
use crate::store::{token_digest, Store, Token};

impl<S: Store> Engine<S> {
    /// Applies a token event; says whether it was one (a malformed event is logged and
    /// ignored).
    pub(super) fn token_event(
        &mut self,
        config: &Config,
        cid: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> bool {
        if check_cid(cid).is_err() {
            self.warn("token-event/cid", |skipped| {
                let cid = crate::logs::excerpt(cid);
                tracing::warn!(%cid, skipped, "ignored a token event for `{cid}`, which is not a connection ID (reported at most every 10s, `skipped` since the last line)")
            });
            return false;
        }
        let max = config.state.max_token_bytes;
        let size = |event: &TokenEvent| event.token.as_ref().map_or(0, protocol::json_len);
        let parsed = protocol::parse::<TokenEvent>(payload, "token event");
        // The token's length: checked against the limit, and the size of its text.
        match parsed.map(|event| (size(&event), event)) {
            Ok((len, _)) if len > max => {
                self.warn("token-event/too-big", |skipped| {
                    tracing::warn!(cid, len, max, skipped, "ignored a conn.{cid}.token event whose token is over state.max_token_bytes (reported at most every 10s, `skipped` since the last line)")
                });
                false
            }
            Ok((len, event @ TokenEvent { token: Some(_), .. })) => {
                // What the event says beside the token (a logout says nothing of it).
                let logged_in = !matches!(event.token, Some(Value::Null));
                let (ends, tid, resume, jwt) = if logged_in {
                    (
                        event.expires_at().unwrap_or(0),
                        event.tid().map(str::to_string),
                        event.resume(),
                        event.jwt().map(str::to_string),
                    )
                } else {
                    (0, None, None, None)
                };
                let token = event.token.filter(|t| !t.is_null());
                let token = token.map(|t| Token::sized(&t, len));
                let logged = self
                    .log_tokens
                    .then(|| (token_digest(payload), token_value_digest(token.as_ref())));
                self.set_token(config, cid, token, events);
                self.store.update_existing(cid, self.now, |c| {
                    c.set_expires(ends);
                    c.set_session(tid.as_deref(), resume, jwt.as_deref());
                    if let Some((digest, value)) = logged {
                        c.log_token(digest);
                        c.log_token_value(value);
                    }
                });
                self.track_token_end(cid, ends);
                true
            }
            Ok((_, TokenEvent { token: None, .. })) => {
                self.warn("token-event/no-token", |skipped| {
                    tracing::warn!(cid, skipped, "ignored a conn.{cid}.token event without a `token` key (a logout sends \"token\": null; reported at most every 10s, `skipped` since the last line)")
                });
                false
            }
            Err(e) => {
                self.warn("token-event/malformed", |skipped| {
                    let error = crate::logs::excerpt(&e.to_string()).into_owned();
                    tracing::warn!(cid, error, skipped, "ignored a malformed conn.{cid}.token event (reported at most every 10s, `skipped` since the last line)")
                });
                false
            }
        }
    }

    /// A token event that the shared store's cut did not apply, not knowing whether the
    /// partition's previous owner had (the ownership protocol's `Dropped::Superseded`):
    /// its digest goes into the connection's token log as if applied, so no later owner
    /// applies it, and the record is left to be filled in again by the next request
    /// that carries the token. A malformed event changes nothing (it was never applied).
    pub fn supersede_token(&mut self, cid: &str, payload: &[u8]) {
        self.now = self.clock.now();
        let valid = check_cid(cid).is_ok()
            && matches!(
                protocol::parse::<TokenEvent>(payload, "token event"),
                Ok(TokenEvent { token: Some(_), .. })
            );
        if !valid {
            return;
        }
        let digest = ownership::hash::superseded(token_digest(payload));
        self.store.update_connection(cid, self.now, |c| {
            c.log_token(digest);
            c.confirmed = false;
        });
    }

    /// A token from an access or call request fills in a connection with no confirmed
    /// record only; confirmed records change by token events alone. `create`: whether
    /// the request may create a record (a denied request leaves nothing behind).
    pub(super) fn learn_token(
        &mut self,
        config: &Config,
        cid: &str,
        sent: Option<&Value>,
        create: bool,
        events: &mut Events,
    ) {
        if !self.learning {
            return;
        }
        match self.store.connection(cid) {
            Some(c) if c.confirmed => {
                self.store.touch_connection(cid, self.now);
                return;
            }
            None if !create => return,
            _ => {}
        }
        let sent = sent.map(Token::new);
        // A token a later token event replaced (a gateway that missed events).
        let digest = || token_value_digest(sent.as_ref());
        if self
            .store
            .connection(cid)
            .is_some_and(|c| c.replaced(digest()))
        {
            return;
        }
        self.set_token(config, cid, sent, events);
    }

    /// Replaces a connection's token and confirms its record: recomputes the `from`
    /// fields of its models, resets written fields on logout, and asks for re-access on
    /// login.
    pub(super) fn set_token(
        &mut self,
        config: &Config,
        cid: &str,
        token: Option<Token>,
        events: &mut Events,
    ) {
        let now = self.now;
        let Some(conn) = self.store.connection(cid) else {
            self.store.update_connection(cid, now, |c| {
                c.replace_token(token.clone());
                c.confirmed = true;
            });
            self.presence_token(config, cid, token.as_ref(), events);
            return;
        };
        let old = conn.token.clone();
        if old == token {
            self.store
                .update_connection(cid, now, |c| c.confirmed = true);
            return;
        }
        let models: Vec<String> = conn
            .models
            .iter()
            .map(|m| m.rid(cid).into_owned())
            .collect();
        let granted: Vec<String> = conn.granted().iter().map(|g| g.to_string()).collect();
        let mut owned = Vec::with_capacity(models.len());
        for rid in &models {
            if let Some((res, params)) = config.resolve(rid) {
                // A template reads a claim from the token's text.
                let before = self.values(res, rid, &params, old.as_ref().into());
                owned.push((res, rid.as_str(), params, before));
            }
        }
        let logout = old.is_some() && token.is_none();
        self.store.update_connection(cid, now, |c| {
            c.replace_token(token.clone());
            c.confirmed = true;
            if logout {
                for (res, rid, ..) in &owned {
                    if !res.reset_on_logout {
                        continue;
                    }
                    if res.follows_token() {
                        if let Some(m) = c.models.iter_mut().find(|m| m.is(rid, cid)) {
                            m.written_mut().clear();
                        }
                    } else {
                        // Only its written values made it worth remembering.
                        c.remove_model(cid, rid);
                    }
                }
            }
        });
        // Re-access: rules that read `model` whose model changed, and on login every
        // known resource whose rules read `token` (Resgate keeps access it computed
        // without a token).
        let mut reaccess: Vec<&str> = Vec::new();
        for (res, rid, params, before) in &owned {
            let after = self.values(res, rid, params, token.as_ref().into());
            if push_change(events, res, rid, before, &after) && res.access_reads_model() {
                reaccess.push(rid);
            }
        }
        if old.is_none() && token.is_some() {
            for rid in models.iter().chain(&granted) {
                let reads_token = config
                    .resource_of(rid)
                    .is_some_and(|res| res.access_reads_token());
                if reads_token && !reaccess.contains(&rid.as_str()) {
                    reaccess.push(rid);
                }
            }
        }
        events.extend(reaccess.into_iter().map(protocol::reaccess_event));
        self.presence_token(config, cid, token.as_ref(), events);
    }
}

/// The digest of a token as canonical JSON (`null` for none): what the shared store's
/// records log of each token event they apply, to compare with a request's token
/// whatever the spacing, key order or `tid` of the event that carried it.
fn token_value_digest(token: Option<&Token>) -> u32 {
    token_digest(token.map_or("null", Token::as_str).as_bytes())
}
