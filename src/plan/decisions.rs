//! The access decisions of the rule tests' cases, under the old config and the new.
//! A case whose resource only one of them serves belongs to a resource added or
//! removed; only a case served by both can change a decision.

use crate::config::{Config, METHODS};
use crate::explain::{access, engine_with};
use crate::ruletest::{Case, Suite};

/// The rule tests' cases, by what the reload does to them; each a line of the plan.
#[derive(Debug, Default)]
pub(super) struct CaseChanges {
    /// Served by both configs, with a decision that differs.
    pub changed: Vec<String>,
    /// Served by the new config only: its resource is added.
    pub added: Vec<String>,
    /// Served by the old config only: its resource is removed.
    pub removed: Vec<String>,
}

/// Runs each case's access request against both configs.
pub(super) fn decision_changes(old: &Config, new: &Config, suites: &[Suite]) -> CaseChanges {
    let mut out = CaseChanges::default();
    for suite in suites {
        for case in &suite.cases {
            let at = format!("  {}:{}: {}:", suite.file, case.at, case.name);
            let served = |(pattern, d): &Served, was: &str| {
                let shown: Vec<String> = d.iter().map(|(what, d)| format!("{what} {d}")).collect();
                format!(
                    "{at} {} ({pattern}) {was}{}",
                    case.resource,
                    shown.join(", ")
                )
            };
            match (decisions(old, case), decisions(new, case)) {
                (None, None) => {}
                (None, Some(b)) => out.added.push(served(&b, "")),
                (Some(a), None) => out.removed.push(served(&a, "was ")),
                (Some((_, a)), Some((_, b))) if a != b => {
                    let changes: Vec<String> = a
                        .iter()
                        .zip(&b)
                        .filter(|(x, y)| x != y)
                        .map(|((what, x), (_, y))| format!("{what} {x} -> {y}"))
                        .collect();
                    out.changed.push(format!("{at} {}", changes.join(", ")));
                }
                (Some(_), Some(_)) => {}
            }
        }
    }
    out
}

/// The pattern serving a case's resource, and its decisions.
type Served = (String, Vec<(String, &'static str)>);

/// `get` and each call method, granted or denied; `None` when no pattern serves the
/// case's resource.
fn decisions(config: &Config, case: &Case) -> Option<Served> {
    let (res, _) = config.resolve(&case.resource)?;
    let (cid, token, query) = (&case.cid, case.token.as_ref(), case.query.as_deref());
    let mut engine = engine_with(config, cid, token);
    let reply = access(&mut engine, config, &case.resource, cid, token, query);
    let word = |b: bool| if b { "granted" } else { "denied" };
    let mut out = vec![("get".to_string(), word(reply.get))];
    for m in METHODS {
        out.push((format!("call.{m}"), word(reply.allows(m))));
    }
    Some((res.pattern.to_string(), out))
}
