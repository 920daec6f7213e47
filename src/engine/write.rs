//! Writes: client `set`/`reset` calls and the backend API. A call is decided by its
//! access rule and, for each field a set writes, the field's `writable`; every value is
//! validated before any is applied; a change publishes one change event with only what
//! changed.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{check_cid, push_change, rule_said, Engine, Events};
use crate::config::{CallAccess, Config, Resource};
use crate::field::Writable;
use crate::pattern::{self, Params};
use crate::protocol::{self, ApiSetRequest, ResError, TokenOf};
use crate::rule::RuleInput;
use crate::store::{Store, Written};

/// Who is writing: clients may only write `writable` fields, and those with a
/// `writable` rule only when it allowed this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer<'a> {
    /// A client's set; the fields whose `writable` rule denied it.
    Client {
        denied: &'a [String],
    },
    Service,
}

impl<S: Store> Engine<S> {
    pub(super) fn call(
        &mut self,
        config: &Config,
        rid: &str,
        method: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Option<Result<Bytes, ResError>> {
        let (res, params) = match self.resolve(config, rid)? {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
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
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        // One parse; only a failed one asks what was wrong first.
        let head = protocol::call_head(payload);
        if head.is_err() && !protocol::is_json_object(payload) {
            return Err(ResError::InvalidParams(
                "call payload must be a JSON object".into(),
            ));
        }
        if !res.methods().contains(&method) {
            return Err(ResError::MethodNotFound(format!(
                "method `{method}` not found: {} serves {}",
                res.pattern,
                res.methods().join(" and ")
            )));
        }
        let req = head?;
        check_cid(&req.cid)?;
        // The token is built only when the requester's record is not confirmed: a
        // confirmed record's own token is what the rule sees.
        let confirmed = self.store.connection(&req.cid).is_some_and(|c| c.confirmed);
        let sent = match req.token.is_some() && !confirmed {
            true => protocol::parse::<TokenOf>(payload, "call request")?.token,
            false => None,
        };
        super::access::check_token_size(config, sent.as_ref())?;
        let sent = sent.as_ref().filter(|t| !t.is_null());
        // A call changes state, so its rules hold against the token the service knows
        // now: the confirmed record's, not a stale one the request may carry.
        let (allowed, denied) = {
            // Parsed only for a rule that reads more than whether there is one.
            let token = match res.access_reads_token_value() || res.has_writable_rules() {
                true => self.token_after_learning(&req.cid, sent),
                false => self
                    .has_token_after_learning(&req.cid, sent)
                    .then_some(Cow::Borrowed(&super::access::SOME_TOKEN)),
            };
            let model = res
                .call_reads_model(method)
                .then(|| self.model_for_rules(res, rid, params, &req.cid, sent));
            let values = res
                .rules_read_call_values()
                .then(|| res.call_values(method, req.params.as_ref()));
            let input = RuleInput {
                cid: &req.cid,
                token: token.as_deref(),
                params,
                query: req.query.as_deref(),
                model: model.as_ref(),
                values: values.as_ref(),
            };
            let allowed = res
                .access
                .call
                .rule(method)
                .is_some_and(|r| self.allows(r, res, method, &input));
            // Each field the set writes whose `writable` rule denies it (`collection`
            // when the collection's denies an add or remove).
            let checked = allowed && res.writes(method) && res.has_writable_rules();
            let denied: Vec<String> = match (&req.params, checked) {
                _ if !checked => Vec::new(),
                (_, true) if res.collection.is_some() => {
                    let rule = res.collection.as_ref().and_then(|c| c.writable.rule());
                    rule.filter(|r| !self.writable_allows(r, res, "collection", &input))
                        .map(|_| vec!["collection".to_string()])
                        .unwrap_or_default()
                }
                (Some(Value::Object(sent)), true) => sent
                    .keys()
                    .filter(|name| {
                        let rule = res.field(name).and_then(|f| f.writable.rule());
                        rule.is_some_and(|r| !self.writable_allows(r, res, name, &input))
                    })
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            (allowed, denied)
        };
        if !denied.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
            let rules: Vec<String> = denied
                .iter()
                .map(|name| match &res.collection {
                    Some(c) => rule_said(res, "collection.writable", c.writable.rule()),
                    None => {
                        let rule = res.field(name).and_then(|f| f.writable.rule());
                        rule_said(res, &format!("fields.{name}.writable"), rule)
                    }
                })
                .collect();
            self.denied_by = Some(rules.join("; "));
        }
        self.learn_token(config, &req.cid, sent, allowed, events);
        if !allowed {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let name = match &res.access.call {
                    CallAccess::All(_) => "call".to_string(),
                    _ => format!("call.{method}"),
                };
                let rule = rule_said(res, &name, res.access.call.rule(method));
                tracing::debug!(resource = %res.pattern, rid, method, cid = &*req.cid, rule, "call denied");
            }
            return Err(ResError::AccessDenied(format!(
                "access denied: {method} on {rid}"
            )));
        }
        if let Some(p) = &res.presence {
            let token = self
                .token_after_learning(&req.cid, sent)
                .map(Cow::into_owned);
            let query = req.query.as_deref();
            return self.presence_call(
                res,
                p,
                rid,
                params,
                method,
                &req.cid,
                token.as_ref(),
                query,
                events,
            );
        }
        if let Some(c) = &res.collection {
            let refused = match &c.writable {
                Writable::Never => Some("is not writable by clients (no `collection.writable`)"),
                Writable::When(_) if !denied.is_empty() => {
                    Some("is not writable for this call: its `writable` rule denies")
                }
                _ => None,
            };
            if let Some(why) = refused {
                return Err(ResError::AccessDenied(format!(
                    "access denied: {method} on {rid}: the collection {why}"
                )));
            }
            let (sent, max) = (req.params.as_ref(), config.state.max_value_bytes);
            self.edit_items(res, c, rid, method, sent, max, events)?;
            return Ok(protocol::null_reply());
        }
        if method == "reset" {
            self.reset(res, rid, events);
            return Ok(protocol::null_reply());
        }
        match &req.params {
            Some(Value::Object(values)) => {
                let writer = Writer::Client { denied: &denied };
                let max = config.state.max_value_bytes;
                self.write(res, rid, values, writer, max, events)?
            }
            _ => {
                return Err(ResError::InvalidParams(
                    "set needs params as an object of field names and values".into(),
                ))
            }
        }
        Ok(protocol::null_reply())
    }

    pub(super) fn api_set(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let (res, _) = self.api_resolve(config, rid)?;
        if res.collection.is_some() {
            return Err(ResError::InvalidParams(format!(
                "{} is a collection: its items are added and removed (add, remove), not set",
                res.pattern
            )));
        }
        let req: ApiSetRequest = protocol::parse(payload, "set request")?;
        let max = config.state.max_value_bytes;
        self.write(res, rid, &req.values, Writer::Service, max, events)?;
        Ok(protocol::null_reply())
    }

    pub(super) fn api_reset(
        &mut self,
        config: &Config,
        rid: &str,
        payload: &[u8],
        events: &mut Events,
    ) -> Result<Bytes, ResError> {
        let (res, _) = self.api_resolve(config, rid)?;
        if !payload.iter().all(u8::is_ascii_whitespace) && !protocol::is_json_object(payload) {
            return Err(ResError::InvalidParams(
                "reset request: the payload must be empty or a JSON object".into(),
            ));
        }
        if res.presence.is_some() {
            self.presence_reset(res, rid, events);
        } else {
            self.reset(res, rid, events);
        }
        Ok(protocol::null_reply())
    }

    /// Validates every value (none over `max_value`, `state.max_value_bytes`), then
    /// applies them all or none, and announces the change. Writing nothing creates
    /// nothing.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        res: &Resource,
        rid: &str,
        values: &Map<String, Value>,
        writer: Writer,
        max_value: usize,
        events: &mut Events,
    ) -> Result<(), ResError> {
        let mut accepted = Vec::with_capacity(values.len());
        let mut problems = Vec::new();
        for (name, wire) in values {
            let Some(field) = res.field(name) else {
                problems.push(format!("field `{name}` is not declared on {}", res.pattern));
                continue;
            };
            if let Some(t) = &field.source {
                problems.push(format!(
                    "field `{name}` is derived (from: {}) and cannot be written",
                    t.source()
                ));
                continue;
            }
            if let Writer::Client { denied } = writer {
                match &field.writable {
                    Writable::Never => {
                        problems.push(format!("field `{name}` is read-only (not writable: true)"));
                        continue;
                    }
                    Writable::When(_) if denied.contains(name) => {
                        problems.push(format!(
                            "field `{name}` is not writable for this call: its `writable` rule denies"
                        ));
                        continue;
                    }
                    _ => {}
                }
            }
            match field.from_wire(wire) {
                Ok(v) => match protocol::json_len(&v) {
                    len if len > max_value => problems.push(protocol::value_too_big(
                        &format!("the value of `{name}`"),
                        len,
                        max_value,
                    )),
                    _ => accepted.push((name.as_str(), v)),
                },
                Err(e) => problems.push(format!("field `{name}`: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(ResError::InvalidParams(problems.join("; ")));
        }
        if accepted.is_empty() {
            return Ok(());
        }
        self.change(res, rid, events, |written| {
            for (name, v) in accepted {
                written.insert(name, v);
            }
        });
        Ok(())
    }

    pub(super) fn reset(&mut self, res: &Resource, rid: &str, events: &mut Events) {
        if self.written(res, rid).is_some_and(|w| !w.is_empty()) {
            self.change(res, rid, events, Written::clear);
        } else {
            self.touch_model(res, rid);
        }
    }

    /// Applies a change to a model's written values and publishes what it changed.
    pub(super) fn change(
        &mut self,
        res: &Resource,
        rid: &str,
        events: &mut Events,
        apply: impl FnOnce(&mut Written),
    ) {
        let before = self.written_values(res, rid);
        self.update_written(res, rid, apply);
        let after = self.written_values(res, rid);
        // Access the gateway cached was computed from the old model.
        if push_change(events, res, rid, &before, &after) && res.access_reads_model() {
            events.push(protocol::reaccess_event(rid));
        }
    }
}

impl<S: Store> Engine<S> {
    /// A backend API name: a valid resource name (`system.invalidParams` otherwise) that
    /// a pattern matches (`system.notFound` otherwise).
    pub(super) fn api_resolve<'a>(
        &mut self,
        config: &'a Config,
        rid: &'a str,
    ) -> Result<(&'a std::sync::Arc<Resource>, Params<'a>), ResError> {
        if !pattern::is_resource_name(rid) {
            return Err(ResError::InvalidParams(format!(
                "`{rid}` is not a valid resource name (dot-separated non-empty parts without wildcards or whitespace)"
            )));
        }
        let found = config.position_of(rid).and_then(|at| {
            let res = &config.resources[at];
            Some((at, res, res.pattern.matches(rid)?))
        });
        let Some((at, res, params)) = found else {
            return Err(ResError::NotFound(format!(
                "no declared resource matches `{rid}`"
            )));
        };
        self.resolved = Some(at);
        Ok((res, params))
    }
}
