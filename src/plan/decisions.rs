//! The decisions of the rule tests' cases, under the old config and the new: the access
//! answers and the outcomes of the clients' calls, as each case runs (a case with
//! `steps` runs them all, through a session of its own under each config). A case whose
//! resource only one of them serves belongs to a resource added or removed; only a case
//! served by both can change a decision.

use crate::config::Config;
use crate::ruletest::{Action, Case, Session, Suite};

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

/// Runs each case under both configs.
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
                    out.changed
                        .push(format!("{at} {}", compare(&a, &b).join(", ")));
                }
                (Some(_), Some(_)) => {}
            }
        }
    }
    out
}

/// `what A -> B` for each decision that differs, in order. A decision only one side
/// has is a method only one of them serves (a resource that turns from a model into a
/// collection, or back, has other methods): `(no such method)` stands for it.
fn compare(a: &[(String, String)], b: &[(String, String)]) -> Vec<String> {
    const NONE: &str = "(no such method)";
    let find = |list: &[(String, String)], what: &str| {
        list.iter()
            .find(|(w, _)| w == what)
            .map_or(NONE.to_string(), |(_, d)| d.clone())
    };
    let old = a.iter().map(|(what, x)| (what, x.clone(), find(b, what)));
    let new = b
        .iter()
        .filter(|(what, _)| !a.iter().any(|(w, _)| w == what))
        .map(|(what, y)| (what, NONE.to_string(), y.clone()));
    old.chain(new)
        .filter(|(_, x, y)| x != y)
        .map(|(what, x, y)| format!("{what} {x} -> {y}"))
        .collect()
}

/// The pattern serving a case's resource, and its decisions in order.
type Served = (String, Vec<(String, String)>);

/// Runs a case: `get` and each call method, granted or denied, where the case asks
/// for access (a case without steps: its one access request; a step: where it expects
/// `get` or `call`), and the outcome of each call a client makes (`ok`, `denied`,
/// `invalid`, or another error's code). `None` when no pattern serves the case's
/// resource.
fn decisions(config: &Config, case: &Case) -> Option<Served> {
    let (res, _) = config.resolve(&case.resource)?;
    let word = |b: bool| if b { "granted" } else { "denied" };
    let mut session = Session::start(config, case);
    let mut out = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let label = |what: &str| match case.sequence {
            true => format!("step {} {what}", i + 1),
            false => what.to_string(),
        };
        let acted = session.act(step);
        let method = step.action.as_ref().and_then(Action::method);
        if let (Some(outcome), Some(method)) = (acted.outcome, method) {
            out.push((label(method), outcome.word().to_string()));
        }
        let asks = match case.sequence {
            true => step.expect.get.is_some() || step.expect.call.is_some(),
            false => i == 0,
        };
        if !asks {
            continue;
        }
        let Some(reply) = session.ask(step) else {
            out.push((label("access"), "unserved".to_string()));
            continue;
        };
        out.push((label("get"), word(reply.get).to_string()));
        for m in res.methods() {
            out.push((
                label(&format!("call.{m}")),
                word(reply.allows(m)).to_string(),
            ));
        }
    }
    Some((res.pattern.to_string(), out))
}
