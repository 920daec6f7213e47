//! The engine probes that `explain`, `ruletest` and `plan` share: a fresh engine with a
//! connection's token, a token event, an access request, a call, a backend write (a
//! set, a reset, a collection's add or remove) and the model or items served, each as
//! the gateway, the auth service or a backend would send it.

use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::{Engine, Request};

/// A fresh engine in which `cid` holds `token`, as after the auth service's token event.
pub(crate) fn engine_with(config: &Config, cid: &str, token: Option<&Value>) -> Engine {
    let mut engine = Engine::default();
    if token.is_some() {
        token_event(&mut engine, config, cid, token);
    }
    engine
}

/// The auth service's token event for `cid` (`None`: a logout).
pub(crate) fn token_event(engine: &mut Engine, config: &Config, cid: &str, token: Option<&Value>) {
    let payload = json!({ "token": token }).to_string();
    engine.handle(
        config,
        Request::Token {
            cid,
            payload: payload.as_bytes(),
        },
    );
}

/// A backend service's write through the API: a set of `values`, or a reset (`None`).
pub(crate) fn backend(
    engine: &mut Engine,
    config: &Config,
    rid: &str,
    values: Option<&Value>,
) -> Result<(), (String, String)> {
    let reply = match values {
        Some(values) => {
            let payload = json!({ "values": values }).to_string();
            let payload = payload.as_bytes();
            run(engine, config, Request::ApiSet { rid, payload })
        }
        None => run(
            engine,
            config,
            Request::ApiReset {
                rid,
                payload: b"{}",
            },
        ),
    };
    result(&reply)
}

/// A backend service's `add` or `remove` of a collection's item through the API, with
/// the payload a client's call has as params (`{"value", "idx"}`).
pub(crate) fn backend_edit(
    engine: &mut Engine,
    config: &Config,
    rid: &str,
    method: &str,
    params: &Value,
) -> Result<(), (String, String)> {
    let payload = params.to_string();
    let payload = payload.as_bytes();
    let request = match method {
        "add" => Request::ApiAdd { rid, payload },
        _ => Request::ApiRemove { rid, payload },
    };
    result(&run(engine, config, request))
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
    result(&reply)
}

/// A reply as a result; `Err` holds the RES error's code and message.
fn result(reply: &Value) -> Result<(), (String, String)> {
    match reply.get("error") {
        Some(e) => Err((
            e["code"].as_str().unwrap_or("").to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
        )),
        None => Ok(()),
    }
}

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

/// What a get serves: the model's values, or a collection's items.
pub(crate) fn model_of(engine: &mut Engine, config: &Config, rid: &str) -> Value {
    let reply = run(engine, config, Request::Get { rid });
    let result = &reply["result"];
    match result.get("collection") {
        Some(items) => items.clone(),
        None => result["model"].clone(),
    }
}

fn run(engine: &mut Engine, config: &Config, request: Request) -> Value {
    let outcome = engine.handle(config, request);
    outcome
        .reply
        .and_then(|r| serde_json::from_slice(&r).ok())
        .unwrap_or(Value::Null)
}
