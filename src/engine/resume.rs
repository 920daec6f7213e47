//! Taking a session for a resume (`<prefix>.resume.<name>.<from>`, sent by the instance
//! answering the new connection's resume): the owner of connection `from` checks the
//! key against the one its record keeps (the hash, in constant time, and its end), and
//! on success hands over the token and the written values of the connection's models,
//! then clears them and logs `from` out, so a key works once and a copied key cannot
//! make two live sessions.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Engine, Events};
use crate::auth::resume;
use crate::config::Config;
use crate::field::ResValue;
use crate::protocol::{self, ResError, TokenExtras};
use crate::store::Store;

/// The payload of a take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Take {
    /// The presented key's secret, base64url (its hash travels in token events, so
    /// only the secret proves the key).
    secret: String,
    /// The connection that resumes (the models' names are given for it).
    to: String,
}

impl<S: Store> Engine<S> {
    /// `None`: no auth entry has this name.
    pub(super) fn resume_take(
        &mut self,
        config: &Config,
        name: &str,
        from: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        config.auth.get(name)?;
        Some(self.take(config, from, payload, events))
    }

    fn take(
        &mut self,
        config: &Config,
        from: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let take: Take = protocol::parse(payload, "resume")?;
        let given = resume::decode_secret(&take.secret)
            .map(|s| resume::hash(&s))
            .ok_or_else(|| {
                ResError::InvalidParams("resume: `secret` is not a key's secret".into())
            })?;
        super::check_cid(&take.to)?;
        let refused = || {
            ResError::InvalidResumeKey(
                "resume key not valid (used, expired, or its session ended)".into(),
            )
        };
        let now = self.wall_secs();
        let conn = self.store.connection(from).ok_or_else(refused)?;
        let (Some(token), Some(kept)) = (conn.token.clone(), conn.resume()) else {
            return Err(refused());
        };
        if !resume::matches(&kept.hash, &given) || kept.until < now {
            return Err(refused());
        }
        let extras = TokenExtras {
            tid: conn.tid().map(str::to_string),
            expires: (conn.expires != 0).then_some(u64::from(conn.expires)),
            resume: None,
            jwt: conn.jwt().map(str::to_string),
        };
        // The written values, under the new connection's names.
        let mut models = Map::new();
        let mut moved = Vec::new();
        for m in &conn.models {
            let old = m.rid(from);
            let (Some(res), false) = (config.resource_of(&old), m.written().is_empty()) else {
                continue;
            };
            let Some(rid) = res.pattern.with_cid(&old, &take.to) else {
                continue;
            };
            // A collection's items as the backend's adds take them (RES values), in order.
            let values = match &res.collection {
                Some(c) => Value::Array(
                    m.written()
                        .items()
                        .iter()
                        .map(|v| serde_json::to_value(ResValue(c.item.ty, v)).unwrap_or_default())
                        .collect(),
                ),
                None => Value::Object(
                    m.written()
                        .iter()
                        .map(|(f, v)| (f.to_string(), v.clone()))
                        .collect(),
                ),
            };
            models.insert(rid, values);
            moved.push(old.into_owned());
        }
        // The old connection keeps nothing: its models back to their defaults, then
        // logged out, in the gateways too.
        for rid in &moved {
            if let Some((res, _)) = config.resolve(rid) {
                self.reset(res, rid, events);
            }
        }
        self.set_token(config, from, None, events);
        events.push(protocol::token_event(
            from,
            &Value::Null,
            &TokenExtras::default(),
        ));
        Ok(protocol::taken_reply(&token.value(), &extras, &models))
    }
}
