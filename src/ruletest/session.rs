//! A case run on a real engine, without NATS: its connections' tokens delivered as the
//! auth service would, their requests sent as the gateway would (with the token the
//! gateway knows), backend writes through the API, and time on a manual clock, so that
//! waiting runs the expiry sweep (and the presence lists' `ttl` sweep) without waiting.
//! `plan` runs cases this way too.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use super::{Action, Case, Step};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::explain::{
    access, backend, backend_edit, call, model_of, rule_model, token_event, AccessReply,
};
use crate::store::MemoryStore;

/// How a step's action was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The gateway's access answer does not grant the method: the call never reaches
    /// connres, and the gateway answers `system.accessDenied` itself.
    Denied,
    /// A RES error: its code and message.
    Error(String, String),
    /// No pattern of the config matches the resource: nobody answers.
    Unserved,
}

impl Outcome {
    /// True when the outcome is what `expected` names: `ok`, `denied` (by the gateway
    /// or by connres), `invalid`, a RES error code, or the whole `code: message`. No
    /// expectation names an unserved resource: a case stops at it.
    pub fn is(&self, expected: &str) -> bool {
        match self {
            Outcome::Ok => expected == "ok",
            Outcome::Denied => expected == "denied",
            Outcome::Unserved => false,
            Outcome::Error(code, _) => {
                let named = match expected {
                    "invalid" => "system.invalidParams",
                    "denied" => "system.accessDenied",
                    other => other,
                };
                code == named || self.to_string() == expected
            }
        }
    }

    /// True for a denial, by the gateway or by connres.
    pub fn denied(&self) -> bool {
        self.is("denied")
    }

    /// The error message, for an error.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Error(_, message) => Some(message),
            _ => None,
        }
    }

    /// A word for `plan`: `ok`, `denied`, `invalid`, the code of another error.
    pub fn word(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Unserved => "unserved",
            Outcome::Error(code, _) if code == "system.accessDenied" => "denied",
            Outcome::Error(code, _) if code == "system.invalidParams" => "invalid",
            Outcome::Error(code, _) => code,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Error(code, message) => write!(f, "{code}: {message}"),
            other => f.write_str(other.word()),
        }
    }
}

/// What a step's action did.
#[derive(Debug, Default)]
pub struct Acted {
    /// How a call or a backend write was answered.
    pub outcome: Option<Outcome>,
    /// For a call, the model its rules read (when they read it), as it was before the
    /// call.
    pub model_before: Option<Value>,
}

/// The engine and what the gateway knows of each connection.
pub struct Session<'c> {
    config: &'c Config,
    engine: Engine,
    clock: Clock,
    /// Each connection's token as the gateway knows it (absent: logged out).
    tokens: HashMap<String, Value>,
    query: Option<String>,
}

impl<'c> Session<'c> {
    /// A fresh engine, the case's connection holding the case's token.
    pub fn start(config: &'c Config, case: &Case) -> Session<'c> {
        let clock = Clock::manual();
        let mut session = Session {
            config,
            engine: Engine::new(MemoryStore::default(), clock.clone()),
            clock,
            tokens: HashMap::new(),
            query: case.query.clone(),
        };
        if let Some(token) = &case.token {
            session.set_token(&case.cid, Some(token.clone()));
        }
        session
    }

    /// The token the gateway knows for `cid`.
    pub fn token(&self, cid: &str) -> Option<&Value> {
        self.tokens.get(cid)
    }

    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    fn set_token(&mut self, cid: &str, token: Option<Value>) {
        token_event(&mut self.engine, self.config, cid, token.as_ref());
        match token {
            Some(t) => self.tokens.insert(cid.to_string(), t),
            None => self.tokens.remove(cid),
        };
    }

    /// Does what the step does, if anything.
    pub fn act(&mut self, step: &Step) -> Acted {
        let Some(action) = &step.action else {
            return Acted::default();
        };
        let served = self.config.resolve(&step.resource).is_some();
        let outcome = |r: Result<(), (String, String)>| match r {
            Ok(()) => Outcome::Ok,
            Err((code, message)) => Outcome::Error(code, message),
        };
        let (rid, cid) = (step.resource.as_str(), step.cid.as_str());
        match action {
            Action::Token(token) => {
                self.set_token(cid, token.clone());
                Acted::default()
            }
            Action::Wait(d) => {
                self.clock.advance(*d);
                // As the service's sweep: idle state first, then presence lists'
                // connections not seen for their `ttl`.
                while self.engine.sweep(self.config) > 0 {}
                self.engine.presence_sweep(self.config);
                Acted::default()
            }
            _ if !served => Acted {
                outcome: Some(Outcome::Unserved),
                model_before: None,
            },
            Action::BackendSet(values) => {
                let values = Value::Object(values.clone());
                let r = backend(&mut self.engine, self.config, rid, Some(&values));
                Acted {
                    outcome: Some(outcome(r)),
                    model_before: None,
                }
            }
            Action::BackendReset => {
                let r = backend(&mut self.engine, self.config, rid, None);
                Acted {
                    outcome: Some(outcome(r)),
                    model_before: None,
                }
            }
            Action::BackendAdd(params) | Action::BackendRemove(params) => {
                let method = match action {
                    Action::BackendAdd(_) => "add",
                    _ => "remove",
                };
                let params = Value::Object(params.clone());
                let r = backend_edit(&mut self.engine, self.config, rid, method, &params);
                Acted {
                    outcome: Some(outcome(r)),
                    model_before: None,
                }
            }
            Action::Set(_)
            | Action::Reset
            | Action::Add(_)
            | Action::Remove(_)
            | Action::Join
            | Action::Leave
            | Action::Ping => {
                let method = action.method().expect("a client's call");
                let params = action.params().unwrap_or(Value::Null);
                // As the gateway: the call only if its access answer grants the method.
                let granted = self.ask(step).is_some_and(|a| a.allows(method));
                let model_before = self.rules_model(rid, method);
                if !granted {
                    return Acted {
                        outcome: Some(Outcome::Denied),
                        model_before,
                    };
                }
                let token = self.tokens.get(cid);
                let r = call(
                    &mut self.engine,
                    self.config,
                    rid,
                    method,
                    cid,
                    token,
                    &params,
                );
                Acted {
                    outcome: Some(outcome(r)),
                    model_before,
                }
            }
        }
    }

    /// The access request the gateway sends for the step's connection and resource;
    /// `None` when no pattern serves it.
    pub fn ask(&mut self, step: &Step) -> Option<AccessReply> {
        self.config.resolve(&step.resource)?;
        let token = self.tokens.get(&step.cid);
        let (rid, cid, query) = (&step.resource, &step.cid, self.query.as_deref());
        Some(access(
            &mut self.engine,
            self.config,
            rid,
            cid,
            token,
            query,
        ))
    }

    /// The model a get serves, as on the wire (a collection's items).
    pub fn model(&mut self, rid: &str) -> Value {
        model_of(&mut self.engine, self.config, rid)
    }

    /// The model as the rules of `method` read it, when they read it.
    pub fn rules_model(&mut self, rid: &str, method: &str) -> Option<Value> {
        let (res, _) = self.config.resolve(rid)?;
        res.call_reads_model(method)
            .then(|| rule_model(&mut self.engine, self.config, rid))
    }
}
