//! The access decisions of the rule tests' cases, under the old config and the new.

use serde_json::Value;

use crate::config::{Config, METHODS};
use crate::explain::{access, engine_with};
use crate::ruletest::Suite;

/// Runs each case's access request against both configs.
pub(super) fn decision_changes(old: &Config, new: &Config, suites: &[Suite]) -> Vec<String> {
    let mut out = Vec::new();
    for suite in suites {
        for case in &suite.cases {
            let a = decisions(
                old,
                &case.resource,
                &case.cid,
                case.token.as_ref(),
                case.query.as_deref(),
            );
            let b = decisions(
                new,
                &case.resource,
                &case.cid,
                case.token.as_ref(),
                case.query.as_deref(),
            );
            if a != b {
                let changes: Vec<String> = a
                    .iter()
                    .zip(&b)
                    .filter(|(x, y)| x != y)
                    .map(|((what, x), (_, y))| format!("{what} {x} -> {y}"))
                    .collect();
                out.push(format!(
                    "  {}:{}: {}: {}",
                    suite.file,
                    case.at,
                    case.name,
                    changes.join(", ")
                ));
            }
        }
    }
    out
}

/// `get` and each call method, granted or denied (or unserved: no pattern).
fn decisions(
    config: &Config,
    rid: &str,
    cid: &str,
    token: Option<&Value>,
    query: Option<&str>,
) -> Vec<(String, &'static str)> {
    let mut names = vec!["get".to_string()];
    names.extend(METHODS.iter().map(|m| format!("call.{m}")));
    if config.resolve(rid).is_none() {
        return names.into_iter().map(|n| (n, "unserved")).collect();
    }
    let mut engine = engine_with(config, cid, token);
    let reply = access(&mut engine, config, rid, cid, token, query);
    let word = |b: bool| if b { "granted" } else { "denied" };
    let mut out = vec![(names[0].clone(), word(reply.get))];
    for m in METHODS {
        out.push((format!("call.{m}"), word(reply.allows(m))));
    }
    out
}
