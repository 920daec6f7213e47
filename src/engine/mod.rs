//! The engine: serves one request or event against one config snapshot and the store,
//! and says what to publish. Pure: no NATS, callable from unit tests; time comes from
//! an injected [`Clock`] and only decides expiry. The caller publishes `events` in order
//! and then `reply`, all before it handles the next message, which keeps every change
//! event ahead of the replies that reflect it.
//!
//! Submodules by concern: `get` (gets and the cached replies), `access` (access requests), `token` (token records, login and
//! logout), `write` (calls and the backend API), `expiry` (idle expiry, the size bound
//! and the resets they owe gateways), `migrate` (state across a reload).

mod access;
mod auth;
mod collection;
mod expiry;
mod get;
mod migrate;
mod presence;
mod recheck;
mod resume;
mod token;
mod token_end;
mod warn;
mod write;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;

use crate::clock::{Clock, Tick};
use crate::config::{Config, Resource};
use crate::field::json_eq;
use crate::pattern::{self, Params};
use crate::protocol::{self, Changes, ResError};
use crate::rule::{Rule, RuleInput};
use crate::store::{MemoryStore, Store, Written};
use crate::template::TokenIn;

pub use auth::{AuthPlan, ResumePlan};
use expiry::ResetQueue;
pub use expiry::{ResetBatch, RESET_BATCH};
use get::model_values;
pub use migrate::{fit_unit, invalidated_patterns, DroppedValues};
pub use token_end::ENDS_PER_SWEEP;
use warn::WarnLimiter;

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
    /// `<prefix>.add.<rid>`: an item added to a collection.
    ApiAdd { rid: &'a str, payload: &'a [u8] },
    /// `<prefix>.remove.<rid>`: an item removed from a collection.
    ApiRemove { rid: &'a str, payload: &'a [u8] },
    /// `auth.<name>.<method>`: a name of the `auth:` block.
    Auth {
        name: &'a str,
        method: &'a str,
        payload: &'a [u8],
    },
    /// `<prefix>.revoke.<name>`: log out every connection whose token has one of the
    /// token IDs.
    Revoke { name: &'a str, payload: &'a [u8] },
    /// `<prefix>.resume.<name>.<from>`: take connection `from`'s session for a resume.
    ResumeTake {
        name: &'a str,
        from: &'a str,
        payload: &'a [u8],
    },
    /// `<prefix>.recheck.<name>.<cid>`: verify again the JWT connection `cid` logged in
    /// with; log it out when it is refused.
    Recheck { name: &'a str, cid: &'a str },
}

impl Request<'_> {
    /// The payload the message carries, for those that carry one.
    pub fn payload(&self) -> Option<&[u8]> {
        match *self {
            Request::Get { .. } | Request::Recheck { .. } => None,
            Request::Access { payload, .. }
            | Request::Call { payload, .. }
            | Request::Token { payload, .. }
            | Request::ApiSet { payload, .. }
            | Request::ApiReset { payload, .. }
            | Request::ApiAdd { payload, .. }
            | Request::ApiRemove { payload, .. }
            | Request::Auth { payload, .. }
            | Request::Revoke { payload, .. }
            | Request::ResumeTake { payload, .. } => Some(payload),
        }
    }
}

/// What handling a message produced: events to publish first, then the reply (none for
/// events, and none for a name no pattern matches: another service may own it).
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<(String, Bytes)>,
    pub reply: Option<Bytes>,
    /// How it went, for metrics.
    pub status: Status,
    /// The resource the message's name matched: its position in the config's
    /// resources ([`Config::position_of`]); none for token events and names no pattern
    /// matches.
    pub resource: Option<usize>,
    /// What the service carries out before it sends an auth request's reply: a resume,
    /// or a recheck by the connection's owner.
    pub plan: Option<Box<AuthPlan>>,
    /// Units the size bounds dropped after the message (`state.max_entries`,
    /// `state.max_bytes`), for `connres_expired_total`.
    pub evicted: usize,
}

/// How handling a message went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A result reply, or an event applied.
    #[default]
    Ok,
    /// An error reply with this RES error code.
    Error(&'static str),
    /// A request no pattern matches: not answered.
    Unanswered,
    /// A malformed event: logged and ignored.
    Ignored,
}

/// The events of one message, in publishing order.
type Events = Vec<(String, Bytes)>;

/// The generic connection-resource engine.
pub struct Engine<S: Store = MemoryStore> {
    store: S,
    clock: Clock,
    /// The clock read once per message: every touch of one message has the same time.
    now: Tick,
    /// Names of dropped state that gateways may still cache, waiting to be named in a
    /// `system.reset`.
    resets: ResetQueue,
    /// When tokens end ([`token_end`]).
    ends: token_end::TokenEnds,
    /// Which presence lists each connection joined ([`presence`]).
    presence: presence::PresenceIndex,
    warnings: Mutex<WarnLimiter>,
    /// What cached get replies are stamped with; it changes when the config in force
    /// changes and after a reconnect, so no reply made before is served after.
    stamp: u64,
    /// The config the stamp was made for ([`Config::id`]).
    config_id: u64,
    /// Whether each connection keeps the digests of its last token events (the shared
    /// store: see [`crate::store::TokenLog`]).
    log_tokens: bool,
    /// The shared store: `state.max_entries` and `state.max_bytes` are kept by the
    /// service, which moves units past them out of memory without dropping them
    /// ([`Engine::bound_elsewhere`]).
    bound_elsewhere: bool,
    /// The shared store: a token event changes no presence list as it is applied; the
    /// service applies it to each list's partition ([`Engine::presence_apart`]).
    presence_apart: bool,
    /// Cleared while a request that waited is handled ([`Engine::handle_waited`]):
    /// its token fills in no record.
    learning: bool,
    /// The resource the message being handled matched ([`Outcome::resource`]).
    resolved: Option<usize>,
    /// The rules that refused the message being handled, when `debug` is logged and
    /// the error does not say them ([`refused`]).
    denied_by: Option<String>,
}

impl Default for Engine<MemoryStore> {
    fn default() -> Self {
        Engine::new(MemoryStore::default(), Clock::system())
    }
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, clock: Clock) -> Self {
        Engine {
            store,
            now: clock.now(),
            clock,
            resets: ResetQueue::default(),
            ends: token_end::TokenEnds::default(),
            presence: presence::PresenceIndex::default(),
            warnings: Mutex::new(WarnLimiter::default()),
            stamp: 0,
            config_id: 0,
            log_tokens: false,
            bound_elsewhere: false,
            presence_apart: false,
            learning: true,
            resolved: None,
            denied_by: None,
        }
    }

    /// Keeps each connection's token log (the shared store).
    pub fn log_tokens(&mut self) {
        self.log_tokens = true;
    }

    /// Leaves `state.max_entries` and `state.max_bytes` to the caller (the shared
    /// store, where a unit past them leaves memory and stays in the bucket): handling
    /// and sweeps drop nothing for them.
    pub fn bound_elsewhere(&mut self) {
        self.bound_elsewhere = true;
    }

    /// With the shared store: a token event changes no presence list as it is
    /// applied (the list may be in another partition, whose owner publishes its events
    /// in that partition's order); the service applies it to the lists of each
    /// partition it serves ([`Engine::presence_token_event`]).
    pub fn presence_apart(&mut self) {
        self.presence_apart = true;
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to load or drop units kept elsewhere (the shared store).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The clock's time now.
    pub fn now(&self) -> Tick {
        self.clock.now()
    }

    /// Handles a request that waited (the shared store held it while its partition had
    /// no owner): as [`Engine::handle`], except that the token it carries, which may be
    /// older than token events handled since, fills in no connection's record; rules
    /// still see it where the record is not confirmed.
    pub fn handle_waited(&mut self, config: &Config, request: Request) -> Outcome {
        self.learning = false;
        let outcome = self.handle(config, request);
        self.learning = true;
        outcome
    }

    /// Handles one message against one config snapshot.
    pub fn handle(&mut self, config: &Config, request: Request) -> Outcome {
        self.now = self.clock.now();
        if config.id() != self.config_id {
            self.config_id = config.id();
            self.stamp += 1;
        }
        let mut out = Outcome::default();
        self.resolved = None;
        self.denied_by = None;
        let oversized = self.oversized(config, &request, &mut out);
        let reply = match request {
            _ if oversized.is_some() => oversized.flatten().map(Err),
            Request::Get { rid } => self.get(config, rid),
            Request::Access { rid, payload } => self.access(config, rid, payload, &mut out.events),
            Request::Call {
                rid,
                method,
                payload,
            } => self.call(config, rid, method, payload, &mut out.events),
            Request::Token { cid, payload } => {
                if !self.token_event(config, cid, payload, &mut out.events) {
                    out.status = Status::Ignored;
                }
                None
            }
            Request::ApiSet { rid, payload } => {
                Some(self.api_set(config, rid, payload, &mut out.events))
            }
            Request::ApiReset { rid, payload } => {
                Some(self.api_reset(config, rid, payload, &mut out.events))
            }
            Request::ApiAdd { rid, payload } => {
                Some(self.api_items(config, rid, "add", payload, &mut out.events))
            }
            Request::ApiRemove { rid, payload } => {
                Some(self.api_items(config, rid, "remove", payload, &mut out.events))
            }
            Request::Auth {
                name,
                method,
                payload,
            } => self.auth(
                config,
                name,
                method,
                payload,
                &mut out.events,
                &mut out.plan,
            ),
            Request::Revoke { name, payload } => {
                self.revoke(config, name, payload, &mut out.events)
            }
            Request::ResumeTake {
                name,
                from,
                payload,
            } => self.resume_take(config, name, from, payload, &mut out.events),
            Request::Recheck { name, cid } => self.recheck(config, name, cid, &mut out.events),
        };
        out.resource = self.resolved;
        out.reply = match reply {
            Some(Ok(body)) => Some(body),
            Some(Err(e)) => {
                out.status = Status::Error(e.code());
                refused(config, &request, out.resource, &e, self.denied_by.take());
                Some(e.reply())
            }
            None if matches!(request, Request::Token { .. }) => None,
            None => {
                out.status = Status::Unanswered;
                None
            }
        };
        out.evicted = self.enforce_bound(config, expiry::BOUND_BUDGET_PER_MESSAGE);
        out
    }

    /// A message whose payload is over the most connres reads
    /// ([`crate::config::StateSettings::max_payload_bytes`]), refused before it is
    /// parsed: `Some(Some(error))` for a request connres answers, `Some(None)` for one
    /// it does not (a token event, which is ignored and counted, or a name no pattern
    /// matches); `None` for a message that is not too big.
    fn oversized(
        &mut self,
        config: &Config,
        request: &Request,
        out: &mut Outcome,
    ) -> Option<Option<ResError>> {
        let len = request.payload().map_or(0, <[u8]>::len);
        let max = config.state.max_payload_bytes();
        if len <= max {
            return None;
        }
        let ours = match *request {
            Request::Token { .. } => {
                out.status = Status::Ignored;
                self.warn("token/oversized", |skipped| {
                    tracing::warn!(len, max, skipped, "ignored a conn.{{cid}}.token event over the most connres reads (twice state.max_token_bytes plus 256 KiB, or twice state.max_value_bytes when more), unread (reported at most every 10s, `skipped` since the last line)")
                });
                return Some(None);
            }
            Request::Access { rid, .. }
            | Request::Call { rid, .. }
            | Request::ApiSet { rid, .. }
            | Request::ApiReset { rid, .. }
            | Request::ApiAdd { rid, .. }
            | Request::ApiRemove { rid, .. } => {
                self.resolved = config.position_of(rid);
                self.resolved.is_some()
            }
            Request::Auth { name, .. }
            | Request::Revoke { name, .. }
            | Request::ResumeTake { name, .. } => config.auth.get(name).is_some(),
            Request::Get { .. } | Request::Recheck { .. } => true,
        };
        Some(ours.then(|| protocol::payload_too_big(len, max)))
    }

    /// After a (re)connect to NATS: token events may have been missed, so every record
    /// is filled in again from the next request that carries its token.
    pub fn reconnected(&mut self) {
        self.store.unconfirm_all();
        self.stamp += 1;
    }

    /// No cached get reply made before is served after (events may have been missed;
    /// with the shared store, which token records to doubt is decided per partition).
    pub fn invalidate_replies(&mut self) {
        self.stamp += 1;
    }

    /// Touches the unit a model's state lives in, if it has one.
    fn touch_model(&mut self, res: &Resource, rid: &str) {
        match res.pattern.cid_of(rid) {
            Some(cid) => self.store.touch_connection(cid, self.now),
            None => self.store.touch_shared(rid, self.now),
        };
    }

    /// The written values of a model, if it has any.
    fn written(&self, res: &Resource, rid: &str) -> Option<&Written> {
        match res.pattern.cid_of(rid) {
            Some(cid) => Some(self.store.connection(cid)?.model(cid, rid)?.written()),
            None => self.store.shared(rid),
        }
    }

    /// Changes a model's written values (created when missing). A model of a connection
    /// left with nothing written is forgotten unless it follows the token.
    fn update_written(&mut self, res: &Resource, rid: &str, change: impl FnOnce(&mut Written)) {
        let now = self.now;
        match res.pattern.cid_of(rid) {
            Some(cid) => self.store.update_connection(cid, now, |c| {
                change(c.model_mut(cid, rid).written_mut());
                let empty = c.model(cid, rid).is_some_and(|m| m.written().is_empty());
                if !res.follows_token() && empty {
                    c.remove_model(cid, rid);
                }
            }),
            None => self.store.update_shared(rid, now, change),
        }
    }

    /// The model's current values, field by field (a collection's items), as stored
    /// values.
    fn values(&self, res: &Resource, rid: &str, params: &Params, token: TokenIn) -> Vec<Value> {
        let written = self.written(res, rid);
        model_values(res, rid, params, token, written, &self.warnings)
    }

    /// What a write can change of a model's values, field by field: the written ones,
    /// or their defaults (a collection's items). A field made by a template (`from`)
    /// follows the token and the name, which no write changes: null here, before and
    /// after alike, so a change never names it and its template is not rendered.
    fn written_values(&self, res: &Resource, rid: &str) -> Vec<Value> {
        let written = self.written(res, rid);
        if res.collection.is_some() {
            return get::items(written);
        }
        res.fields
            .iter()
            .map(|f| match &f.source {
                Some(_) => Value::Null,
                None => get::written_or_default(f, written),
            })
            .collect()
    }

    /// Evaluates an access rule; an error denies and is logged (rate-limited per rule).
    fn allows(&self, rule: &Rule, res: &Resource, what: &str, input: &RuleInput) -> bool {
        match rule.eval(input) {
            Ok(b) => b,
            Err(e) => {
                self.warn(&format!("{}/{what}", res.pattern), |skipped| {
                    let error = crate::logs::excerpt(&e.to_string()).into_owned();
                    tracing::warn!(resource = %res.pattern, rule = rule.source(), error, skipped, "access rule `{what}` failed; denied (reported at most every 10s, `skipped` since the last line)")
                });
                false
            }
        }
    }

    /// Evaluates a field's `writable` rule; as [`Engine::allows`], an error denies and is
    /// logged.
    fn writable_allows(&self, rule: &Rule, res: &Resource, field: &str, input: &RuleInput) -> bool {
        match rule.eval(input) {
            Ok(b) => b,
            Err(e) => {
                self.warn(&format!("{}/fields.{field}.writable", res.pattern), |skipped| {
                    let error = crate::logs::excerpt(&e.to_string()).into_owned();
                    tracing::warn!(resource = %res.pattern, field, rule = rule.source(), error, skipped, "`writable` rule of field `{field}` failed; denied (reported at most every 10s, `skipped` since the last line)")
                });
                false
            }
        }
    }

    fn warn(&self, key: &str, log: impl FnOnce(u64)) {
        warn(&self.warnings, key, log);
    }
}

fn warn(warnings: &Mutex<WarnLimiter>, key: &str, log: impl FnOnce(u64)) {
    warnings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .warn(key, log);
}

/// A rule for the log: its name in the resource (`get`, `call`, `call.<method>`,
/// `fields.<name>.writable`), where it is written and its text; or that there is none,
/// which denies.
fn rule_said(res: &Resource, name: &str, rule: Option<&Rule>) -> String {
    let Some(rule) = rule else {
        return format!("no `{name}` rule (denied by default)");
    };
    match res.sites.get(name) {
        Some(site) => match &site.file {
            Some(file) => format!("{name} at {file}:{}: {}", site.pos, rule.source()),
            None => format!("{name} at line {}: {}", site.pos, rule.source()),
        },
        None => format!("{name}: {}", rule.source()),
    }
}

/// A request answered with an error, at `debug` with what decided it: the request,
/// the pattern its name matched, the error the requester received and, for a set
/// that `writable` rules refused, those rules. Denied calls are logged where their
/// rule is known ([`Engine::call`]), not here.
fn refused(
    config: &Config,
    request: &Request,
    resource: Option<usize>,
    error: &ResError,
    denied_by: Option<String>,
) {
    if matches!(error, ResError::AccessDenied(_)) || !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let pattern = resource
        .and_then(|i| config.resources.get(i))
        .map_or("-", |r| r.pattern.as_str());
    let (kind, rid, method) = match *request {
        Request::Get { rid } => ("get", rid, ""),
        Request::Access { rid, .. } => ("access", rid, ""),
        Request::Call { rid, method, .. } => ("call", rid, method),
        Request::ApiSet { rid, .. } => ("api", rid, "set"),
        Request::ApiReset { rid, .. } => ("api", rid, "reset"),
        Request::ApiAdd { rid, .. } => ("api", rid, "add"),
        Request::ApiRemove { rid, .. } => ("api", rid, "remove"),
        Request::Auth { name, method, .. } => ("auth", name, method),
        Request::Revoke { name, .. } => ("auth", name, "revoke"),
        Request::ResumeTake { name, .. } => ("auth", name, "take"),
        Request::Recheck { name, .. } => ("auth", name, "recheck"),
        Request::Token { .. } => return,
    };
    tracing::debug!(
        kind,
        resource = %pattern,
        rid,
        method,
        code = error.code(),
        error = %error,
        denied_by = denied_by.as_deref(),
        "request refused"
    );
}

impl<S: Store> Engine<S> {
    /// The resource a name belongs to and its captures. `None` when no pattern matches
    /// (the name is not ours: no reply); `Err` when a pattern matches but the name is not
    /// a valid resource name (a wildcard or whitespace in a capture:
    /// `system.invalidParams`; the literal parts matched the pattern's, which are valid).
    fn resolve<'a>(
        &mut self,
        config: &'a Config,
        rid: &'a str,
    ) -> Option<Result<(&'a Arc<Resource>, Params<'a>), ResError>> {
        Some(
            self.resolve_resource(config, rid)?
                .map(|res| (res, res.pattern.matches(rid).unwrap_or_default())),
        )
    }

    /// [`Engine::resolve`] without the captures, so without allocating. Remembers the
    /// resource for the outcome ([`Outcome::resource`]).
    fn resolve_resource<'a>(
        &mut self,
        config: &'a Config,
        rid: &str,
    ) -> Option<Result<&'a Arc<Resource>, ResError>> {
        let at = config.position_of(rid)?;
        self.resolved = Some(at);
        let res = &config.resources[at];
        // A plain name (the usual case) is settled by one pass over its bytes.
        Some(
            if pattern::is_plain_name(rid) || res.pattern.captured(rid).all(pattern::is_name_part) {
                Ok(res)
            } else {
                Err(ResError::InvalidParams(format!(
                "`{rid}` is not a valid resource name (dot-separated parts without wildcards or whitespace)"
            )))
            },
        )
    }
}

/// Checks that a cid from a payload or subject is a connection ID: one non-empty name
/// part, no wildcards or whitespace.
fn check_cid(cid: &str) -> Result<(), ResError> {
    if pattern::is_name_part(cid) {
        Ok(())
    } else {
        Err(ResError::InvalidParams(format!(
            "`{cid}` is not a connection ID"
        )))
    }
}

/// Publishes the change event of a model (the `add` and `remove` events of a
/// collection), if anything changed, and says whether it did.
fn push_change(
    events: &mut Events,
    res: &Resource,
    rid: &str,
    before: &[Value],
    after: &[Value],
) -> bool {
    if let Some(c) = &res.collection {
        return collection::push_edits(events, c, rid, before, after);
    }
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

#[cfg(test)]
mod tests;
