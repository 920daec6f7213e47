//! `connres explain`: what connres would answer one request, and why, without NATS.
//! The request runs through a real engine (with the token, when given, delivered first
//! as the auth service would), and every rule of the matched resource is shown with
//! its source and its result for these inputs.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::config::{CallAccess, Config, Resource};
use crate::engine::{Engine, Request};
use crate::rule::{Rule, RuleInput};

/// The request to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Get,
    Access,
    Call { method: String, params: Value },
}

#[derive(Debug, Clone)]
pub struct Question {
    pub action: Action,
    pub rid: String,
    pub cid: String,
    /// The connection's token; `None` is logged out.
    pub token: Option<Value>,
    pub query: Option<String>,
}

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    /// `hint`: "did you mean" the nearest name a pattern serves, or empty.
    #[error("no resource pattern matches `{rid}`: connres would not answer it (another service may){hint}")]
    NoPattern { rid: String, hint: String },
}

/// "; did you mean `NAME` (pattern `PATTERN`)?" for a name no pattern matches, when a
/// pattern serves a name near it; else empty.
pub(crate) fn name_hint(config: &Config, rid: &str) -> String {
    config
        .nearest(rid)
        .map(|(name, res)| format!("; did you mean `{name}` (pattern `{}`)?", res.pattern))
        .unwrap_or_default()
}

/// The explanation, as lines for a person.
pub fn explain(config: &Config, q: &Question) -> Result<String, ExplainError> {
    let (res, params) = config
        .resolve(&q.rid)
        .ok_or_else(|| ExplainError::NoPattern {
            rid: q.rid.clone(),
            hint: name_hint(config, &q.rid),
        })?;
    let mut out = String::new();
    let _ = writeln!(out, "resource   {}", q.rid);
    let _ = writeln!(out, "pattern    {}", res.pattern);
    let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    let _ = writeln!(
        out,
        "params     {}",
        if shown.is_empty() {
            "(none)".into()
        } else {
            shown.join(", ")
        }
    );
    let token = q.token.as_ref().filter(|t| !t.is_null());
    let _ = writeln!(
        out,
        "connection {} ({})",
        q.cid,
        token.map_or("logged out: no token".to_string(), |t| format!("token {t}"))
    );

    let mut engine = engine_with(config, &q.cid, token);
    // The model as rules see it, when they read it: the same values a get serves.
    let model = res
        .access_reads_model()
        .then(|| rule_model(&mut engine, config, &q.rid));
    let input = RuleInput {
        cid: &q.cid,
        token,
        params: &params,
        query: q.query.as_deref(),
        model: model.as_ref(),
    };
    rules(&mut out, res, &input);

    let access = access(
        &mut engine,
        config,
        &q.rid,
        &q.cid,
        token,
        q.query.as_deref(),
    );
    match &q.action {
        Action::Access => {
            let _ = writeln!(out, "access     {}", access.reply);
        }
        Action::Get if access.get => {
            let _ = writeln!(out, "get        granted; the model served:");
            let _ = writeln!(out, "           {}", model_of(&mut engine, config, &q.rid));
        }
        Action::Get => {
            let _ = writeln!(
                out,
                "get        denied: the gateway answers system.accessDenied"
            );
        }
        Action::Call { method, params } => {
            let verdict = if !access.allows(method) {
                "denied by the access rules: the gateway answers system.accessDenied".to_string()
            } else {
                match call(&mut engine, config, &q.rid, method, &q.cid, token, params) {
                    Err((code, message)) => format!("refused: {message} ({code})"),
                    Ok(()) => {
                        let after = model_of(&mut engine, config, &q.rid);
                        format!("granted and valid; the model after it:\n           {after}")
                    }
                }
            };
            let _ = writeln!(out, "call {method:<6}{verdict}");
        }
    }
    Ok(out)
}

/// A fresh engine in which `cid` holds `token`, as after the auth service's token event.
pub(crate) fn engine_with(config: &Config, cid: &str, token: Option<&Value>) -> Engine {
    let mut engine = Engine::default();
    if token.is_some() {
        let payload = json!({ "token": token }).to_string();
        engine.handle(
            config,
            Request::Token {
                cid,
                payload: payload.as_bytes(),
            },
        );
    }
    engine
}

/// What an access request answers.
pub(crate) struct AccessReply {
    pub get: bool,
    /// `*`, a comma-separated list of methods, or empty.
    pub call: String,
    /// The reply's `result`.
    pub reply: Value,
}

impl AccessReply {
    pub fn allows(&self, method: &str) -> bool {
        self.call == "*" || self.call.split(',').any(|m| m == method)
    }
}

/// The access request the gateway would send for `cid`.
pub(crate) fn access(
    engine: &mut Engine,
    config: &Config,
    rid: &str,
    cid: &str,
    token: Option<&Value>,
    query: Option<&str>,
) -> AccessReply {
    let request = json!({ "cid": cid, "token": token, "query": query }).to_string();
    let reply = run(
        engine,
        config,
        Request::Access {
            rid,
            payload: request.as_bytes(),
        },
    );
    let result = reply["result"].clone();
    AccessReply {
        get: result["get"] == json!(true),
        call: result["call"].as_str().unwrap_or("").to_string(),
        reply: result,
    }
}

/// A call as the gateway would send it; `Err` holds the RES error's code and message.
pub(crate) fn call(
    engine: &mut Engine,
    config: &Config,
    rid: &str,
    method: &str,
    cid: &str,
    token: Option<&Value>,
    params: &Value,
) -> Result<(), (String, String)> {
    let payload = json!({ "cid": cid, "token": token, "params": params }).to_string();
    let reply = run(
        engine,
        config,
        Request::Call {
            rid,
            method,
            payload: payload.as_bytes(),
        },
    );
    match reply.get("error") {
        Some(e) => Err((
            e["code"].as_str().unwrap_or("").to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
        )),
        None => Ok(()),
    }
}

/// Every rule of the resource with its result for `input`.
fn rules(out: &mut String, res: &Resource, input: &RuleInput) {
    let _ = writeln!(out, "rules");
    let mut line = |what: &str, rule: Option<&Rule>| {
        let (source, result) = match rule {
            Some(r) => (
                r.source().to_string(),
                match r.eval(input) {
                    Ok(true) => "granted".to_string(),
                    Ok(false) => "denied".to_string(),
                    Err(e) => format!("error, so denied: {e}"),
                },
            ),
            None => ("(no rule)".to_string(), "denied".to_string()),
        };
        let _ = writeln!(out, "  {what:<11} {source}\n  {:<11} -> {result}", "");
    };
    line("get", res.access.get.as_ref());
    match &res.access.call {
        CallAccess::Deny => line("call", None),
        CallAccess::All(rule) => line("call", Some(rule)),
        CallAccess::Methods(rules) => {
            for (method, rule) in rules {
                line(&format!("call.{method}"), Some(rule));
            }
        }
    }
}

/// The model a get of `rid` would serve, as JSON values.
/// The model as rules read it: stored values, as the engine binds them (a `ref` is the
/// name it points to, a `data` field its value), not the wire's `{"rid": ...}` and
/// `{"data": ...}`.
pub(crate) fn rule_model(engine: &mut Engine, config: &Config, rid: &str) -> Value {
    match model_of(engine, config, rid) {
        Value::Object(fields) => fields
            .into_iter()
            .map(|(name, value)| match value {
                Value::Object(wrapped)
                    if wrapped.len() == 1
                        && (wrapped.contains_key("rid") || wrapped.contains_key("data")) =>
                {
                    (
                        name,
                        wrapped.into_iter().next().map_or(Value::Null, |(_, v)| v),
                    )
                }
                other => (name, other),
            })
            .collect(),
        other => other,
    }
}

pub(crate) fn model_of(engine: &mut Engine, config: &Config, rid: &str) -> Value {
    let reply = run(engine, config, Request::Get { rid });
    reply["result"]["model"].clone()
}

fn run(engine: &mut Engine, config: &Config, request: Request) -> Value {
    let outcome = engine.handle(config, request);
    outcome
        .reply
        .and_then(|r| serde_json::from_slice(&r).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Config {
        Config::parse("resources.yaml", include_str!("../resources.yaml")).unwrap()
    }

    fn ask(action: Action, rid: &str, cid: &str, token: Option<Value>) -> String {
        let q = Question {
            action,
            rid: rid.into(),
            cid: cid.into(),
            token,
            query: None,
        };
        explain(&shipped(), &q).unwrap()
    }

    #[test]
    fn a_get_shows_the_rules_and_the_model() {
        let out = ask(
            Action::Get,
            "session.user.c1",
            "c1",
            Some(json!({"userId": 42, "name": "Ann", "role": "admin"})),
        );
        assert!(out.contains("pattern    session.user.{cid}"), "{out}");
        assert!(out.contains("params     cid = \"c1\""), "{out}");
        assert!(
            out.contains("get         cid == params.cid\n              -> granted"),
            "{out}"
        );
        assert!(out.contains("\"name\":\"Ann\""), "{out}");
        let other = ask(Action::Get, "session.user.c1", "c2", None);
        assert!(
            other.contains("-> denied") && other.contains("get        denied"),
            "{other}"
        );
    }

    #[test]
    fn a_call_says_whether_it_is_allowed_and_valid() {
        let token = Some(json!({"userId": 42}));
        let set = |params: Value| Action::Call {
            method: "set".into(),
            params,
        };
        let ok = ask(
            set(json!({"theme": "dark"})),
            "session.prefs.c1",
            "c1",
            token.clone(),
        );
        assert!(
            ok.contains("granted and valid") && ok.contains("\"theme\":\"dark\""),
            "{ok}"
        );
        let bad = ask(
            set(json!({"fontSize": 99})),
            "session.prefs.c1",
            "c1",
            token,
        );
        assert!(
            bad.contains("refused:") && bad.contains("system.invalidParams"),
            "{bad}"
        );
        let out = ask(
            set(json!({"theme": "dark"})),
            "session.prefs.c1",
            "c1",
            None,
        );
        assert!(out.contains("denied by the access rules"), "{out}");
    }

    #[test]
    fn rules_see_the_model_as_the_engine_binds_it() {
        let config = Config::parse(
            "r.yaml",
            "version: 1\nresources:\n  a.{cid}:\n    fields:\n      home: { type: ref, from: \"users.user.{{token.id}}\" }\n      tags: { type: data, default: [x] }\n    access:\n      get: model.home == 'users.user.1' && model.tags[0] == 'x'\n",
        )
        .unwrap();
        let q = Question {
            action: Action::Get,
            rid: "a.c1".into(),
            cid: "c1".into(),
            token: Some(json!({"id": 1})),
            query: None,
        };
        let out = explain(&config, &q).unwrap();
        assert!(
            out.contains("-> granted") && out.contains("get        granted"),
            "{out}"
        );
    }

    #[test]
    fn a_name_no_pattern_matches_is_an_error() {
        let q = Question {
            action: Action::Get,
            rid: "nope.x".into(),
            cid: "c1".into(),
            token: None,
            query: None,
        };
        let err = explain(&shipped(), &q).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no resource pattern matches `nope.x`: connres would not answer it (another service may)"
        );
    }

    #[test]
    fn a_misspelt_name_gets_the_nearest_name_a_pattern_serves() {
        let config = Config::parse(
            "r.yaml",
            "version: 1\nresources:\n  shop.cart.{cid}: {}\n  store.{shop}.info: {}\n  session.user.{cid}: {}\n",
        )
        .unwrap();
        let ask = |rid: &str| {
            let q = Question {
                action: Action::Get,
                rid: rid.into(),
                cid: "c1".into(),
                token: None,
                query: None,
            };
            explain(&config, &q).unwrap_err().to_string()
        };
        assert_eq!(
            ask("shop.kart.c1"),
            "no resource pattern matches `shop.kart.c1`: connres would not answer it (another service may); did you mean `shop.cart.c1` (pattern `shop.cart.{cid}`)?"
        );
        assert!(
            ask("store.acme.inf")
                .ends_with("; did you mean `store.acme.info` (pattern `store.{shop}.info`)?"),
            "{}",
            ask("store.acme.inf")
        );
        assert!(
            ask("sesion.user.c7")
                .ends_with("did you mean `session.user.c7` (pattern `session.user.{cid}`)?"),
            "{}",
            ask("sesion.user.c7")
        );
        // Nothing near, or not as many parts as any pattern: no suggestion.
        assert!(ask("orders.list.c1").ends_with("(another service may)"));
        assert!(ask("shop.cart").ends_with("(another service may)"));
    }
}
