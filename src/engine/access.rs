//! Access requests: `access.get` and `access.call` are evaluated with the token the
//! gateway sent, since the gateway caches its answer per token. A granted request
//! remembers what a later login must ask the gateway to re-check; a denied one leaves
//! nothing behind.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use super::{check_cid, rule_said, Engine, Events};
use crate::config::{CallAccess, Config, Resource};
use crate::pattern::Params;
use crate::protocol::{self, ResError, TokenOf};
use crate::rule::RuleInput;
use crate::store::Store;
use crate::template::TokenIn;

/// Stands for a token that nothing reads but for whether there is one: the rules that
/// read it are native, the requester's record is confirmed (it is not learned) and no
/// rule reads the model.
pub(super) static SOME_TOKEN: Value = Value::Bool(true);

impl<S: Store> Engine<S> {
    pub(super) fn access(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        let (res, params) = match self.resolve(config, rid)? {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        Some(self.access_checked(config, res, rid, &params, payload, events))
    }

    fn access_checked(
        &mut self,
        config: &Config,
        res: &Resource,
        rid: &str,
        params: &Params,
        payload: &[u8],
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let req = protocol::access_head(payload)?;
        check_cid(&req.cid)?;
        // The token is built only when something reads it: a record it fills in, a
        // rule evaluated with CEL, or the model a rule reads. Native rules only ask
        // whether there is one.
        let confirmed = self.store.connection(&req.cid).is_some_and(|c| c.confirmed);
        let needed = req.token.is_some()
            && (!confirmed || res.access_reads_token_value() || res.access_reads_model());
        let sent = match needed {
            true => protocol::parse::<TokenOf>(payload, "access request")?.token,
            false => None,
        };
        check_token_size(config, sent.as_ref())?;
        let token = match (needed, &req.token) {
            (true, _) => sent.as_ref().filter(|t| !t.is_null()),
            (false, Some(_)) => Some(&SOME_TOKEN),
            (false, None) => None,
        };
        let model = self.rule_model(res, rid, params, &req.cid, token);
        let input = RuleInput {
            cid: &req.cid,
            token,
            params,
            query: req.query.as_deref(),
            model: model.as_ref(),
            values: None,
        };
        let get = res
            .access
            .get
            .as_ref()
            .is_some_and(|r| self.allows(r, res, "get", &input));
        let call = match &res.access.call {
            CallAccess::Deny => None,
            CallAccess::All(rule) => self
                .allows(rule, res, "call", &input)
                .then(|| "*".to_string()),
            CallAccess::Methods(rules) => {
                let granted: Vec<&str> = rules
                    .iter()
                    .filter(|(m, r)| self.allows(r, res, m, &input))
                    .map(|(m, _)| m.as_str())
                    .collect();
                (!granted.is_empty()).then(|| granted.join(","))
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            denials(res, rid, &req.cid, get, call.as_deref());
        }
        let granted = get || call.is_some();
        self.learn_token(config, &req.cid, token, granted, events);
        if granted {
            self.remember_access(res, rid, &req.cid);
        }
        Ok(protocol::access_reply(get, call.as_deref()))
    }

    /// The gateway now caches this access for the requester: a login must re-ask it when
    /// the rules read the token, and the requester's own model must get the events of its
    /// token changes.
    fn remember_access(&mut self, res: &Resource, rid: &str, requester: &str) {
        let now = self.now;
        if res.pattern.cid_of(rid) == Some(requester) {
            if res.follows_token() {
                self.store.update_connection(requester, now, |c| {
                    c.model_mut(requester, rid);
                });
            }
            return;
        }
        // Another connection's model, or one without a cid, is in use too.
        self.touch_model(res, rid);
        if res.access_reads_token() {
            self.store
                .update_connection(requester, now, |c| c.grant(rid));
        }
    }

    /// The token a requester's record holds once this request's token is learned: the
    /// confirmed one if there is one (parsed), else the one the request carries.
    pub(super) fn token_after_learning<'a>(
        &self,
        cid: &str,
        sent: Option<&'a Value>,
    ) -> Option<Cow<'a, Value>> {
        match self.store.connection(cid) {
            Some(c) if c.confirmed => c.token.as_ref().map(|t| Cow::Owned(t.value())),
            _ => sent.map(Cow::Borrowed),
        }
    }

    /// Whether the requester's record holds a token once this request's token is
    /// learned (nothing parsed: what a native rule reads).
    pub(super) fn has_token_after_learning(&self, cid: &str, sent: Option<&Value>) -> bool {
        match self.store.connection(cid) {
            Some(c) if c.confirmed => c.token.is_some(),
            _ => sent.is_some(),
        }
    }

    /// The model as plain JSON, when an access rule of its resource reads `model`
    /// (see [`Engine::model_for_rules`]).
    pub(super) fn rule_model(
        &self,
        res: &Resource,
        rid: &str,
        params: &Params,
        requester: &str,
        sent: Option<&Value>,
    ) -> Option<Value> {
        res.access_reads_model()
            .then(|| self.model_for_rules(res, rid, params, requester, sent))
    }

    /// The model as plain JSON, as rules read it. It is rendered with the token it will
    /// have once this request is handled: for the requester's own model, the
    /// requester's after learning (`sent` is the token the request carries), else the
    /// owner's stored token.
    pub(super) fn model_for_rules(
        &self,
        res: &Resource,
        rid: &str,
        params: &Params,
        requester: &str,
        sent: Option<&Value>,
    ) -> Value {
        let token = match res.pattern.cid_of(rid) {
            Some(owner) if owner == requester => match self.store.connection(requester) {
                Some(c) if c.confirmed => c.token.as_ref().into(),
                _ => sent.into(),
            },
            Some(owner) => self
                .store
                .connection(owner)
                .and_then(|c| c.token.as_ref())
                .into(),
            None => TokenIn::None,
        };
        let values = self.values(res, rid, params, token);
        Value::Object(
            res.fields
                .iter()
                .map(|f| f.name.clone())
                .zip(values)
                .collect(),
        )
    }
}

/// An access request that denied something its resource declares (or a read, which
/// every resource may grant), at `debug`, with each rule that denied.
fn denials(res: &Resource, rid: &str, cid: &str, get: bool, call: Option<&str>) {
    let mut denied = Vec::new();
    if !get {
        denied.push(rule_said(res, "get", res.access.get.as_ref()));
    }
    match &res.access.call {
        CallAccess::Deny => {}
        CallAccess::All(rule) if call.is_none() => denied.push(rule_said(res, "call", Some(rule))),
        CallAccess::All(_) => {}
        CallAccess::Methods(rules) => {
            let granted = |m: &str| call.is_some_and(|c| c.split(',').any(|g| g == m));
            for (method, rule) in rules.iter().filter(|(m, _)| !granted(m)) {
                denied.push(rule_said(res, &format!("call.{method}"), Some(rule)));
            }
        }
    }
    if denied.is_empty() {
        return;
    }
    tracing::debug!(
        resource = %res.pattern,
        rid,
        cid,
        get,
        call = call.unwrap_or(""),
        denied_by = denied.join("; "),
        "{}",
        if get || call.is_some() {
            "access partly denied"
        } else {
            "access denied"
        }
    );
}

/// A token from a request over `state.max_token_bytes` is refused before anything reads
/// or keeps it.
pub(super) fn check_token_size(config: &Config, token: Option<&Value>) -> Result<(), ResError> {
    let max = config.state.max_token_bytes;
    match token.map(protocol::json_len) {
        Some(len) if len > max => Err(protocol::token_too_big(len, max)),
        _ => Ok(()),
    }
}
