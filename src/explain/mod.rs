//! `connres explain`: what connres would answer one request, and why, without NATS.
//! The request runs through a real engine (with the token, when given, delivered first
//! as the auth service would), and every rule of the matched resource is shown with
//! its source and its result for these inputs (for a set, the `writable` rules of the
//! fields it writes too). `probe.rs` holds the engine probes
//! that `ruletest` and `plan` share.

mod probe;

use std::fmt::Write as _;

use serde_json::Value;

pub(crate) use probe::{
    access, backend, backend_edit, call, engine_with, model_of, rule_model, token_event,
    AccessReply,
};

use crate::config::{CallAccess, Config, Resource};
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
        .call_reads_model("set")
        .then(|| rule_model(&mut engine, config, &q.rid));
    // What the call writes, as its rules read it; no call, none.
    let values = match &q.action {
        Action::Call { method, params } => Some(res.call_values(method, Some(params))),
        _ => None,
    };
    let input = RuleInput {
        cid: &q.cid,
        token,
        params: &params,
        query: q.query.as_deref(),
        model: model.as_ref(),
        values: values.as_ref(),
    };
    rules(&mut out, res, &input);
    if let Action::Call { method, params } = &q.action {
        if method == "set" {
            writable_rules(&mut out, res, params, &input);
        }
    }

    let access = access(
        &mut engine,
        config,
        &q.rid,
        &q.cid,
        token,
        q.query.as_deref(),
    );
    let noun = match config.resolve(&q.rid) {
        Some((res, _)) if res.collection.is_some() => "collection",
        _ => "model",
    };
    match &q.action {
        Action::Access => {
            let _ = writeln!(out, "access     {}", access.reply);
        }
        Action::Get if access.get => {
            let _ = writeln!(out, "get        granted; the {noun} served:");
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
                        format!("granted and valid; the {noun} after it:\n           {after}")
                    }
                }
            };
            let _ = writeln!(out, "call {method:<6}{verdict}");
        }
    }
    Ok(out)
}

/// A rule's line: its name, source and result for `input`.
fn rule_line(out: &mut String, what: &str, rule: Option<&Rule>, input: &RuleInput) {
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
}

/// The `writable` rules of the fields a set writes (`params`), with their results.
fn writable_rules(out: &mut String, res: &Resource, params: &Value, input: &RuleInput) {
    for name in params.as_object().into_iter().flat_map(|p| p.keys()) {
        if let Some(rule) = res.field(name).and_then(|f| f.writable.rule()) {
            rule_line(out, &format!("fields.{name}.writable"), Some(rule), input);
        }
    }
}

/// Every rule of the resource with its result for `input`.
fn rules(out: &mut String, res: &Resource, input: &RuleInput) {
    let _ = writeln!(out, "rules");
    let mut line = |what: &str, rule: Option<&Rule>| rule_line(out, what, rule, input);
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

#[cfg(test)]
mod tests;
