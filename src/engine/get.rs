//! Gets: a model's values (rendered from the token and captures, written, or their
//! defaults) and its encoded reply, kept per remembered model until what it was built
//! from changes.

use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;

use super::warn::WarnLimiter;
use super::{warn, Engine};
use crate::config::{Config, Resource};
use crate::field::FieldDef;
use crate::pattern::Params;
use crate::protocol::{self, ModelView, ResError};
use crate::store::{Connection, Model, Store, Token, Written};
use crate::template::{TemplateInput, TokenIn};

impl<S: Store> Engine<S> {
    /// A get. A remembered model of a connection keeps its encoded reply from its
    /// second get until its written values, its connection's token or the config change
    /// (see [`ReplyCache`](crate::store::ReplyCache)): a repeated get is a match, a
    /// lookup and a reference count.
    pub(super) fn get(&mut self, config: &Config, rid: &str) -> Option<Result<Bytes, ResError>> {
        let res = match self.resolve_resource(config, rid)? {
            Ok(res) => res,
            Err(e) => return Some(Err(e)),
        };
        // The captures, only for a reply that is not cached.
        let params = || res.pattern.matches(rid).unwrap_or_default();
        let (now, stamp, warnings) = (self.now, self.stamp, &self.warnings);
        let reply = |model: Option<&mut Model>, token: Option<&Token>| {
            if let Some(cached) = model.as_ref().and_then(|m| m.reply(stamp)) {
                return cached.clone();
            }
            let written = model.as_ref().map(|m| m.written());
            // A cached reply never reads the token; a template reads a claim from its
            // text.
            let values = model_values(res, rid, &params(), token.into(), written, warnings);
            let body = reply_of(res, &values);
            let Some(m) = model else { return body };
            if !m.keep_reply(stamp) {
                return body;
            }
            // Kept for long: an allocation of its exact size, no shared header.
            let kept = Bytes::copy_from_slice(&body);
            m.set_reply(stamp, kept.clone());
            kept
        };
        let body = match res.pattern.cid_of(rid) {
            // A token change must reach the gateway that now caches this model, so it
            // is remembered.
            Some(cid) if res.fields_read_token() => self.store.update_connection(cid, now, |c| {
                let (model, token) = c.model_with_token(cid, rid);
                reply(Some(model), token)
            }),
            Some(cid) => self
                .store
                .update_existing(cid, now, |c| {
                    let Connection { token, models, .. } = c;
                    let model = models.iter_mut().find(|m| m.is(rid, cid));
                    reply(model, token.as_ref())
                })
                .unwrap_or_else(|| reply(None, None)),
            None => {
                self.store.touch_shared(rid, now);
                let written = self.store.shared(rid);
                let values = model_values(res, rid, &params(), TokenIn::None, written, warnings);
                reply_of(res, &values)
            }
        };
        Some(Ok(body))
    }
}

/// The get reply of a model's values (a collection's items).
fn reply_of(res: &Resource, values: &[Value]) -> Bytes {
    match &res.collection {
        Some(c) => protocol::collection_reply(&c.item, values),
        None => protocol::model_reply(&ModelView {
            fields: &res.fields,
            values,
        }),
    }
}

/// A model's values, field by field, as stored values: `from` fields rendered from the
/// token and captures, the others written or their default. A collection's are its
/// items.
pub(super) fn model_values(
    res: &Resource,
    rid: &str,
    params: &Params,
    token: TokenIn,
    written: Option<&Written>,
    warnings: &Mutex<WarnLimiter>,
) -> Vec<Value> {
    if res.collection.is_some() {
        return items(written);
    }
    let input = TemplateInput {
        cid: res.pattern.cid_of(rid),
        token,
        params,
        claims: None,
        value: None,
    };
    res.fields
        .iter()
        .map(|f| match &f.source {
            Some(t) => match t.render(&input).map(|v| f.from_rendered(v)) {
                None => f.default.clone(),
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    warn(warnings, &format!("{}/{}", res.pattern, f.name), |skipped| {
                        let e = crate::logs::excerpt(&e).into_owned();
                        tracing::warn!(resource = %res.pattern, field = %f.name, rid, skipped, "from template value {e}; the field takes its default (reported at most every 10s, `skipped` since the last line)")
                    });
                    f.default.clone()
                }
            },
            None => written_or_default(f, written),
        })
        .collect()
}

/// A collection's items, as stored.
pub(super) fn items(written: Option<&Written>) -> Vec<Value> {
    written.map_or_else(Vec::new, |w| w.items().to_vec())
}

/// A field that is not made by a template: its written value, or its default.
pub(super) fn written_or_default(f: &FieldDef, written: Option<&Written>) -> Value {
    written
        .and_then(|w| w.get(&f.name))
        .cloned()
        .unwrap_or_else(|| f.default.clone())
}
