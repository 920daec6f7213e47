//! `connres plan OLD NEW`: what a reload from one config to another would do, before
//! anyone applies it, as Terraform's `plan` shows a change: patterns added and removed,
//! fields, collections and presence lists changed (`shape.rs`), rules changed, settings that apply at
//! once or only on restart, the exact `system.reset` it would publish, and the
//! decisions that change for the cases of the rule tests: access answers and the
//! outcomes of clients' calls (`decisions.rs`).

use std::fmt::Write as _;

use crate::config::{diff, Config, ConfigDiff, Resource};
use crate::ruletest::Suite;

mod decisions;
mod shape;

use decisions::decision_changes;
use shape::{collection_changes, field_changes, presence_changes};

/// How a plan ends, for CI jobs to gate on (the process exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing a gateway or client would notice (descriptions, comments, order).
    NoChange = 0,
    /// The reload changes what is served or published, but no tested decision.
    Changes = 2,
    /// A decision of a rule-test case changes (an access answer, or the outcome of a
    /// client's call) on a resource that the old config served and the new one serves
    /// (a case of a resource added or removed is a change).
    DecisionsChange = 3,
}

/// The plan, as text, and its verdict.
pub struct Plan {
    pub text: String,
    pub verdict: Verdict,
}

/// Compares `old` and `new`; `suites` are the rule tests whose decisions to compare.
pub fn plan(old: &Config, new: &Config, suites: &[Suite]) -> Plan {
    let d = diff(old, new);
    let mut out = String::new();
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    // A collection or a presence list says so: what it holds comes and goes with it.
    let shown = |c: &Config, patterns: &[String]| -> Vec<String> {
        patterns
            .iter()
            .map(|p| match c.resource(p) {
                Some(r) if r.presence.is_some() => format!("{p} (presence list)"),
                Some(r) if r.collection.is_some() => format!("{p} (collection)"),
                _ => p.clone(),
            })
            .collect()
    };
    let _ = writeln!(out, "patterns added:   {}", list(&shown(new, &d.added)));
    let _ = writeln!(out, "patterns removed: {}", list(&shown(old, &d.removed)));

    let mut changed = !d.added.is_empty() || !d.removed.is_empty();
    let mut fields = Vec::new();
    let mut collections = Vec::new();
    let mut presence = Vec::new();
    let mut rules = Vec::new();
    for o in &old.resources {
        let Some(n) = new.resource(o.pattern.as_str()) else {
            continue;
        };
        let f = field_changes(o, n);
        if !f.is_empty() {
            fields.push(format!("  {}: {}", o.pattern, f.join("; ")));
        }
        let c = collection_changes(o, n);
        if !c.is_empty() {
            collections.push(format!("  {}: {}", o.pattern, c.join("; ")));
        }
        let p = presence_changes(o, n);
        if !p.is_empty() {
            presence.push(format!("  {}: {}", o.pattern, p.join("; ")));
        }
        rules.extend(
            rule_changes(o, n)
                .into_iter()
                .map(|r| format!("  {}: {r}", o.pattern)),
        );
    }
    changed |=
        !fields.is_empty() || !collections.is_empty() || !presence.is_empty() || !rules.is_empty();
    section(&mut out, "fields changed:", &fields);
    section(&mut out, "collections changed:", &collections);
    section(&mut out, "presence lists changed:", &presence);
    section(&mut out, "access rules changed:", &rules);

    let mut settings = Vec::new();
    let bounds = |c: &Config| {
        let s = &c.state;
        (
            s.idle_ttl,
            s.max_entries,
            s.max_bytes,
            s.max_value_bytes,
            s.max_token_bytes,
        )
    };
    if bounds(old) != bounds(new) {
        let mut line = format!(
            "  state: idle_ttl {} -> {}, max_entries {} -> {}, max_bytes {} -> {}",
            humantime::format_duration(old.state.idle_ttl),
            humantime::format_duration(new.state.idle_ttl),
            old.state.max_entries,
            new.state.max_entries,
            old.state.max_bytes,
            new.state.max_bytes
        );
        // The per-value and per-token limits only when they change.
        for (name, o, n) in [
            (
                "max_value_bytes",
                old.state.max_value_bytes,
                new.state.max_value_bytes,
            ),
            (
                "max_token_bytes",
                old.state.max_token_bytes,
                new.state.max_token_bytes,
            ),
        ] {
            if o != n {
                let _ = write!(line, ", {name} {o} -> {n}");
            }
        }
        settings.push(format!("{line} (applies at once)"));
    }
    if old.state.store != new.state.store {
        settings.push(format!(
            "  state.store: {} -> {} (takes effect on restart only)",
            old.state.store.describe(),
            new.state.store.describe()
        ));
    }
    if old.nats != new.nats {
        settings.push("  nats: changed (takes effect on restart only)".to_string());
    }
    if old.api != new.api {
        settings.push(format!(
            "  api.prefix: {} -> {} (takes effect on restart only)",
            old.api.prefix, new.api.prefix
        ));
    }
    changed |= !settings.is_empty();
    section(&mut out, "settings changed:", &settings);

    resets(&mut out, &d);
    changed |= !d.needs_no_reset();

    let cases = decision_changes(old, new, suites);
    if !suites.is_empty() {
        section(
            &mut out,
            "tested requests of added resources (served from now on):",
            &cases.added,
        );
        section(
            &mut out,
            "tested requests of removed resources (no longer served):",
            &cases.removed,
        );
        let files: Vec<&str> = suites.iter().map(|s| s.file.as_str()).collect();
        let heading = format!(
            "decisions that change for the rule tests ({}):",
            files.join(", ")
        );
        if cases.changed.is_empty() {
            let _ = writeln!(out, "{heading} none");
        } else {
            section(&mut out, &heading, &cases.changed);
        }
    }
    // Cases of added or removed resources are not decisions changed: nobody was served
    // before, or nobody is after; the patterns added and removed say so (exit 2).
    let verdict = if !cases.changed.is_empty() {
        Verdict::DecisionsChange
    } else if changed {
        Verdict::Changes
    } else {
        Verdict::NoChange
    };
    let _ = writeln!(
        out,
        "{}",
        match verdict {
            Verdict::NoChange => "no change a gateway or client would notice",
            Verdict::Changes => "the reload changes what is served (exit 2)",
            Verdict::DecisionsChange => "the reload changes tested decisions (exit 3)",
        }
    );
    Plan { text: out, verdict }
}

fn section(out: &mut String, heading: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{heading}");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// The `system.reset` the reload would publish, exactly as the service builds it.
fn resets(out: &mut String, d: &ConfigDiff) {
    if d.needs_no_reset() {
        let _ = writeln!(out, "system.reset:     none");
        return;
    }
    let (_, payload) = crate::protocol::system_reset(&d.reset_resources, &d.reset_access);
    let _ = writeln!(
        out,
        "system.reset:     {}",
        String::from_utf8_lossy(&payload)
    );
}

/// Each rule whose text changed: `get`, `call`, `call.<method>`.
fn rule_changes(o: &Resource, n: &Resource) -> Vec<String> {
    let mut names: Vec<String> = vec!["get".into()];
    for m in o.methods().iter().chain(n.methods()) {
        let name = format!("call.{m}");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let text = |r: &Resource, name: &str| {
        let rule = match name.strip_prefix("call.") {
            Some(m) => r.access.call.rule(m),
            None => r.access.get.as_ref(),
        };
        rule.map_or("(no rule: deny)".to_string(), |r| {
            format!("`{}`", r.source())
        })
    };
    names
        .iter()
        .filter_map(|name| {
            let (a, b) = (text(o, name), text(n, name));
            (a != b).then(|| format!("{name} {a} -> {b}"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
