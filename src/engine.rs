//! The engine: serves one request or event against one config snapshot and the store,
//! and says what to publish. Pure: no NATS, no clock in the result, callable from unit
//! tests. The caller publishes `events` in order and then `reply`, all before it handles
//! the next message, which keeps every change event ahead of the replies that reflect it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::{CallAccess, Config, Resource, METHODS};
use crate::field::json_eq;
use crate::pattern::Params;
use crate::protocol::{
    self, AccessRequest, ApiSetRequest, CallRequest, Changes, ModelView, ResError, TokenEvent,
};
use crate::rule::{Rule, RuleInput};
use crate::store::{MemoryStore, Store};
use crate::template::TemplateInput;

/// One inbound message, already routed by its subject.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `get.<rid>`
    Get { rid: &'a str },
    /// `access.<rid>`
    Access { rid: &'a str, payload: &'a [u8] },
    /// `call.<rid>.<method>`
    Call {
        rid: &'a str,
        method: &'a str,
        payload: &'a [u8],
    },
    /// `conn.<cid>.token`
    Token { cid: &'a str, payload: &'a [u8] },
    /// `<prefix>.set.<rid>`
    ApiSet { rid: &'a str, payload: &'a [u8] },
    /// `<prefix>.reset.<rid>`
    ApiReset { rid: &'a str, payload: &'a [u8] },
}

/// What handling a message produced: events to publish first, then the reply (none for
/// events, and none for a name no pattern matches: another service may own it).
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<(String, Bytes)>,
    pub reply: Option<Bytes>,
}

/// Who is writing: clients may only write `writable` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Client,
    Service,
}

/// The generic connection-resource engine.
pub struct Engine<S: Store = MemoryStore> {
    store: S,
    warnings: Mutex<WarnLimiter>,
}

impl Default for Engine<MemoryStore> {
    fn default() -> Self {
        Engine::new(MemoryStore::default())
    }
}

impl<S: Store> Engine<S> {
    pub fn new(store: S) -> Self {
        Engine {
            store,
            warnings: Mutex::new(WarnLimiter::default()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one message against one config snapshot.
    pub fn handle(&mut self, config: &Config, request: Request) -> Outcome {
        let mut out = Outcome::default();
        let reply = match request {
            Request::Get { rid } => self.get(config, rid).map(Ok),
            Request::Access { rid, payload } => self.access(config, rid, payload, &mut out.events),
            Request::Call {
                rid,
                method,
                payload,
            } => self.call(config, rid, method, payload, &mut out.events),
            Request::Token { cid, payload } => {
                self.token_event(config, cid, payload, &mut out.events);
                None
            }
            Request::ApiSet { rid, payload } => {
                Some(self.api_set(config, rid, payload, &mut out.events))
            }
            Request::ApiReset { rid, payload } => {
                Some(self.api_reset(config, rid, payload, &mut out.events))
            }
        };
        out.reply = reply.map(|r| r.unwrap_or_else(|e| e.reply()));
        out
    }

    /// After a (re)connect to NATS: token events may have been missed, so every record
    /// is filled in again from the next request that carries its token.
    pub fn reconnected(&mut self) {
        self.store.unconfirm_all();
    }

    fn get(&mut self, config: &Config, rid: &str) -> Option<Bytes> {
        let (res, params) = config.resolve(rid)?;
        self.remember(res, rid);
        let values = self.values(res, rid, &params, self.token_of(res, rid).as_deref());
        Some(protocol::model_reply(&ModelView {
            fields: &res.fields,
            values: &values,
        }))
    }

    fn access(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) -> Option<Result<Bytes, ResError>> {
        let (res, params) = config.resolve(rid)?;
        let req: AccessRequest = match protocol::parse(payload, "access request") {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        self.learn_token(config, &req.cid, req.token.as_ref(), events);
        // The gateway caches this access for the requester: its login must re-ask it.
        self.know(&req.cid, rid);
        let model = self.model_json(res, rid, &params);
        let input = RuleInput {
            cid: &req.cid,
            token: req.token.as_ref(),
            params: &params,
            query: req.query.as_deref(),
            model: model.as_ref(),
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
        Some(Ok(protocol::access_reply(get, call.as_deref())))
    }

    fn call(
        &mut self,
        config: &Config,
        rid: &str,
        method: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) -> Option<Result<Bytes, ResError>> {
        let (res, params) = config.resolve(rid)?;
        Some(self.call_checked(config, res, rid, &params, method, payload, events))
    }

    #[allow(clippy::too_many_arguments)]
    fn call_checked(
        &mut self,
        config: &Config,
        res: &Resource,
        rid: &str,
        params: &Params,
        method: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) -> Result<Bytes, ResError> {
        if !protocol::is_json_object(payload) {
            return Err(ResError::InvalidParams(
                "call payload must be a JSON object".into(),
            ));
        }
        if !METHODS.contains(&method) {
            return Err(ResError::MethodNotFound(format!(
                "method `{method}` not found: {} serves {}",
                res.pattern,
                METHODS.join(" and ")
            )));
        }
        let req: CallRequest = protocol::parse(payload, "call request")?;
        self.learn_token(config, &req.cid, req.token.as_ref(), events);
        let model = self.model_json(res, rid, params);
        let input = RuleInput {
            cid: &req.cid,
            token: req.token.as_ref(),
            params,
            query: req.query.as_deref(),
            model: model.as_ref(),
        };
        let allowed = res
            .access
            .call
            .rule(method)
            .is_some_and(|r| self.allows(r, res, method, &input));
        if !allowed {
            return Err(ResError::AccessDenied(format!(
                "access denied: {method} on {rid}"
            )));
        }
        if method == "reset" {
            self.reset(res, rid, params, events);
            return Ok(protocol::null_reply());
        }
        match &req.params {
            Some(Value::Object(values)) => {
                self.write(res, rid, params, values, Writer::Client, events)?
            }
            _ => {
                return Err(ResError::InvalidParams(
                    "set needs params as an object of field names and values".into(),
                ))
            }
        }
        Ok(protocol::null_reply())
    }

    fn api_set(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) -> Result<Bytes, ResError> {
        let (res, params) = resolve_or_not_found(config, rid)?;
        let req: ApiSetRequest = protocol::parse(payload, "set request")?;
        self.write(res, rid, &params, &req.values, Writer::Service, events)?;
        Ok(protocol::null_reply())
    }

    fn api_reset(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) -> Result<Bytes, ResError> {
        let (res, params) = resolve_or_not_found(config, rid)?;
        if !payload.iter().all(u8::is_ascii_whitespace) && !protocol::is_json_object(payload) {
            return Err(ResError::InvalidParams(
                "reset request: the payload must be empty or a JSON object".into(),
            ));
        }
        self.reset(res, rid, &params, events);
        Ok(protocol::null_reply())
    }

    fn token_event(
        &mut self,
        config: &Config,
        cid: &str,
        payload: &[u8],
        events: &mut Vec<(String, Bytes)>,
    ) {
        match protocol::parse::<TokenEvent>(payload, "token event") {
            Ok(ev) => self.set_token(
                config,
                cid,
                ev.token.filter(|t| !t.is_null()).map(Arc::new),
                events,
            ),
            Err(e) => tracing::warn!(cid, error = %e, "ignored a malformed conn.{cid}.token event"),
        }
    }

    /// Validates every value, then applies them all or none, and announces the change.
    fn write(
        &mut self,
        res: &Resource,
        rid: &str,
        params: &Params,
        values: &Map<String, Value>,
        writer: Writer,
        events: &mut Vec<(String, Bytes)>,
    ) -> Result<(), ResError> {
        let mut accepted = Vec::with_capacity(values.len());
        let mut problems = Vec::new();
        for (name, wire) in values {
            let Some(field) = res.field(name) else {
                problems.push(format!("field `{name}` is not declared on {}", res.pattern));
                continue;
            };
            if field.source.is_some() {
                problems.push(format!(
                    "field `{name}` is derived (from: {}) and cannot be written",
                    field.source.as_ref().map_or("", |t| t.source())
                ));
                continue;
            }
            if writer == Writer::Client && !field.writable {
                problems.push(format!("field `{name}` is read-only (not writable: true)"));
                continue;
            }
            match field.from_wire(wire) {
                Ok(v) => accepted.push((name.clone(), v)),
                Err(e) => problems.push(format!("field `{name}`: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(ResError::InvalidParams(problems.join("; ")));
        }
        self.change(res, rid, params, events, |model| {
            for (name, v) in accepted {
                model.written.insert(name, v);
            }
        });
        Ok(())
    }

    fn reset(
        &mut self,
        res: &Resource,
        rid: &str,
        params: &Params,
        events: &mut Vec<(String, Bytes)>,
    ) {
        if self.store.model(rid).is_some_and(|m| !m.written.is_empty()) {
            self.change(res, rid, params, events, |model| model.written.clear());
        }
    }

    /// Applies a change to a model's written values and publishes what it changed.
    fn change(
        &mut self,
        res: &Resource,
        rid: &str,
        params: &Params,
        events: &mut Vec<(String, Bytes)>,
        apply: impl FnOnce(&mut crate::store::ModelState),
    ) {
        self.remember(res, rid);
        let token = self.token_of(res, rid);
        let before = self.values(res, rid, params, token.as_deref());
        apply(self.store.model_mut(rid));
        let after = self.values(res, rid, params, token.as_deref());
        // Access the gateway cached was computed from the old model.
        if push_change(events, res, rid, &before, &after) && res.access_reads_model() {
            events.push(protocol::reaccess_event(rid));
        }
    }

    /// A token from an access or call request fills in a connection with no confirmed
    /// record only; confirmed records change by token events alone.
    fn learn_token(
        &mut self,
        config: &Config,
        cid: &str,
        token: Option<&Value>,
        events: &mut Vec<(String, Bytes)>,
    ) {
        if self.store.connection(cid).is_some_and(|c| c.confirmed) {
            return;
        }
        let token = token.filter(|t| !t.is_null()).cloned().map(Arc::new);
        self.set_token(config, cid, token, events);
    }

    /// Replaces a connection's token: recomputes the `from` fields of its models, resets
    /// written fields on logout, and asks for re-access on login.
    fn set_token(
        &mut self,
        config: &Config,
        cid: &str,
        token: Option<Arc<Value>>,
        events: &mut Vec<(String, Bytes)>,
    ) {
        let conn = self.store.connection_mut(cid);
        conn.confirmed = true;
        let old = conn.token.clone();
        if old == token {
            return;
        }
        let rids: Vec<String> = conn.rids.iter().cloned().collect();
        let mut owned = Vec::new();
        for rid in &rids {
            if let Some((res, params)) = config.resolve(rid) {
                if res.pattern.cid_of(rid) == Some(cid) {
                    let before = self.values(res, rid, &params, old.as_deref());
                    owned.push((res, rid, params, before));
                }
            }
        }
        self.store.connection_mut(cid).token = token.clone();
        let logout = old.is_some() && token.is_none();
        // Re-access: rules that read `model` whose model changed, and on login every
        // known resource whose rules read `token` (Resgate keeps access it computed
        // without a token).
        let mut reaccess: Vec<&str> = Vec::new();
        for (res, rid, params, before) in owned {
            if logout && res.reset_on_logout {
                self.store.model_mut(rid).written.clear();
            }
            let after = self.values(res, rid, &params, token.as_deref());
            if push_change(events, res, rid, &before, &after) && res.access_reads_model() {
                reaccess.push(rid);
            }
        }
        if old.is_none() && token.is_some() {
            for rid in &rids {
                let reads_token = config
                    .resolve(rid)
                    .is_some_and(|(res, _)| res.access_reads_token());
                if reads_token && !reaccess.contains(&rid.as_str()) {
                    reaccess.push(rid);
                }
            }
        }
        events.extend(reaccess.into_iter().map(protocol::reaccess_event));
    }

    /// Records that the gateway may now hold this model for its connection.
    fn remember(&mut self, res: &Resource, rid: &str) {
        if let Some(cid) = res.pattern.cid_of(rid) {
            self.know(cid, rid);
        }
    }

    /// Adds a resource to a connection's known resources.
    fn know(&mut self, cid: &str, rid: &str) {
        if !self
            .store
            .connection(cid)
            .is_some_and(|c| c.rids.contains(rid))
        {
            self.store.connection_mut(cid).rids.insert(rid.to_string());
        }
    }

    fn token_of(&self, res: &Resource, rid: &str) -> Option<Arc<Value>> {
        let cid = res.pattern.cid_of(rid)?;
        self.store.connection(cid)?.token.clone()
    }

    /// The model's current values, field by field, as stored values.
    fn values(
        &self,
        res: &Resource,
        rid: &str,
        params: &Params,
        token: Option<&Value>,
    ) -> Vec<Value> {
        let written = self.store.model(rid).map(|m| &m.written);
        let input = TemplateInput {
            cid: res.pattern.cid_of(rid),
            token,
            params,
        };
        res.fields
            .iter()
            .map(|f| match &f.source {
                Some(t) => match t.render(&input).map(|v| f.from_rendered(v)) {
                    None => f.default.clone(),
                    Some(Ok(v)) => v,
                    Some(Err(e)) => {
                        let key = format!("{}/{}", res.pattern, f.name);
                        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).warn(&key, || {
                            tracing::warn!(resource = %res.pattern, field = %f.name, rid, "from template value {e}; the field takes its default")
                        });
                        f.default.clone()
                    }
                },
                None => written
                    .and_then(|w| w.get(&f.name))
                    .cloned()
                    .unwrap_or_else(|| f.default.clone()),
            })
            .collect()
    }

    /// The model as plain JSON, for rules that read `model`.
    fn model_json(&self, res: &Resource, rid: &str, params: &Params) -> Option<Value> {
        if !res.access_reads_model() {
            return None;
        }
        let values = self.values(res, rid, params, self.token_of(res, rid).as_deref());
        Some(Value::Object(
            res.fields
                .iter()
                .map(|f| f.name.clone())
                .zip(values)
                .collect(),
        ))
    }

    /// Evaluates a rule; an error denies and is logged (rate-limited per rule).
    fn allows(&self, rule: &Rule, res: &Resource, what: &str, input: &RuleInput) -> bool {
        match rule.eval(input) {
            Ok(b) => b,
            Err(e) => {
                let key = format!("{}/{what}", res.pattern);
                self.warnings.lock().unwrap_or_else(|e| e.into_inner()).warn(&key, || {
                    tracing::warn!(resource = %res.pattern, rule = rule.source(), error = %e, "access rule `{what}` failed; denied")
                });
                false
            }
        }
    }
}

fn resolve_or_not_found<'a>(
    config: &'a Config,
    rid: &'a str,
) -> Result<(&'a Arc<Resource>, Params<'a>), ResError> {
    config
        .resolve(rid)
        .ok_or_else(|| ResError::NotFound(format!("no declared resource matches `{rid}`")))
}

/// Publishes the change event of a model, if anything changed, and says whether it did.
fn push_change(
    events: &mut Vec<(String, Bytes)>,
    res: &Resource,
    rid: &str,
    before: &[Value],
    after: &[Value],
) -> bool {
    let changed: Vec<usize> = (0..after.len())
        .filter(|&i| !json_eq(&before[i], &after[i]))
        .collect();
    if changed.is_empty() {
        return false;
    }
    events.push(protocol::change_event(
        rid,
        &Changes {
            fields: &res.fields,
            values: after,
            changed: &changed,
        },
    ));
    true
}

/// Logs a given warning at most once per interval, so a broken rule or template under
/// load does not flood the log.
#[derive(Default)]
struct WarnLimiter {
    last: HashMap<String, Instant>,
}

impl WarnLimiter {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn warn(&mut self, key: &str, log: impl FnOnce()) {
        let now = Instant::now();
        match self.last.get_mut(key) {
            Some(at) if now.duration_since(*at) < Self::INTERVAL => {}
            Some(at) => {
                *at = now;
                log();
            }
            None => {
                self.last.insert(key.to_string(), now);
                log();
            }
        }
    }
}

mod migrate;

#[cfg(test)]
mod tests;
