//! `connres test`: rule tests. A test file (`*.test.yaml`, beside the config by
//! default; `select.rs` decides which config each file tests) lists cases: a connection (cid and token) asks for a resource, and the case
//! says what access it must get, what a `set` must do and what the model must hold.
//! Each case runs through a real engine, without NATS. Failures name the rule that
//! decided, with its text and place; the report ends with the rules and fields no case
//! exercised.

mod parse;
mod select;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

pub use parse::{parse, CallExpect, Case, Suite};
pub use select::{assign, discover, load, Discovered, Run};

use crate::config::{Config, Resource, METHODS};
use crate::explain::{access, call, engine_with, model_of, name_hint, rule_model};
use crate::rule::RuleInput;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// Each failing case: its heading and what went wrong.
    pub failures: Vec<String>,
    /// Per resource, the rules and fields no case exercised.
    pub uncovered: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as printed.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let _ = writeln!(out, "{f}");
        }
        let _ = writeln!(
            out,
            "{} case(s) passed, {} failed",
            self.passed,
            self.failures.len()
        );
        if !self.uncovered.is_empty() {
            let _ = writeln!(out, "not exercised by any case:");
            for u in &self.uncovered {
                let _ = writeln!(out, "  {u}");
            }
        }
        out
    }
}

/// Runs every case of `suites` against `config` (named `config_path` in messages).
pub fn run(config: &Config, config_path: &str, suites: &[Suite]) -> Report {
    let mut report = Report::default();
    let mut exercised: BTreeSet<(String, String)> = BTreeSet::new();
    for suite in suites {
        for case in &suite.cases {
            let heading = format!("FAIL {}:{}: {}", suite.file, case.at, case.name);
            match run_case(config, config_path, case, &mut exercised) {
                Ok(()) => report.passed += 1,
                Err(problems) => report
                    .failures
                    .push(format!("{heading}\n{}", problems.join("\n"))),
            }
        }
    }
    for res in &config.resources {
        let pattern = res.pattern.as_str();
        let mut missing: Vec<String> = res
            .sites
            .0
            .iter()
            .filter(|(name, _)| name != "pattern")
            .filter(|(name, _)| !exercised.contains(&(pattern.to_string(), rule_key(name))))
            .map(|(name, site)| format!("rule {name} ({})", site.show(config_path)))
            .collect();
        let fields: Vec<&str> = res
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .filter(|f| !exercised.contains(&(pattern.to_string(), format!("field {f}"))))
            .collect();
        if !fields.is_empty() {
            missing.push(format!("field(s) {}", fields.join(", ")));
        }
        if !missing.is_empty() {
            report
                .uncovered
                .push(format!("{pattern}: {}", missing.join("; ")));
        }
    }
    report
}

fn rule_key(name: &str) -> String {
    format!("rule {name}")
}

/// Runs one case; `Err` lists what did not hold.
fn run_case(
    config: &Config,
    config_path: &str,
    case: &Case,
    exercised: &mut BTreeSet<(String, String)>,
) -> Result<(), Vec<String>> {
    let Some((res, params)) = config.resolve(&case.resource) else {
        return Err(vec![format!(
            "  no resource pattern matches `{}`{}",
            case.resource,
            name_hint(config, &case.resource)
        )]);
    };
    let pattern = res.pattern.to_string();
    let mut mark = |what: String| {
        exercised.insert((pattern.clone(), what));
    };
    let token = case.token.as_ref();
    let mut engine = engine_with(config, &case.cid, token);
    let model_for_rules = res
        .call_reads_model("set")
        .then(|| rule_model(&mut engine, config, &case.resource));
    let mut input = RuleInput {
        cid: &case.cid,
        token,
        params: &params,
        query: case.query.as_deref(),
        model: model_for_rules.as_ref(),
        values: None,
    };
    let granted = access(
        &mut engine,
        config,
        &case.resource,
        &case.cid,
        token,
        case.query.as_deref(),
    );
    let mut problems = Vec::new();
    let mut expect =
        |what: &str, rule: &str, expected: bool, got: bool, problems: &mut Vec<String>| {
            mark(rule_key(rule));
            if expected != got {
                problems.push(format!(
                    "  {what}: expected {}, got {}\n{}",
                    word(expected),
                    word(got),
                    why(res, rule, &input, config_path)
                ));
            }
        };
    if let Some(get) = case.get {
        expect("get", "get", get, granted.get, &mut problems);
    }
    let methods: Vec<(String, bool)> = match &case.call {
        None => Vec::new(),
        Some(CallExpect::All(b)) => METHODS.iter().map(|m| (m.to_string(), *b)).collect(),
        Some(CallExpect::Methods(m)) => m.clone(),
    };
    for (method, expected) in &methods {
        let rule = rule_name(res, method);
        expect(
            &format!("call.{method}"),
            &rule,
            *expected,
            granted.allows(method),
            &mut problems,
        );
    }
    let set_values = case.set.as_ref().map(|v| res.call_values("set", Some(v)));
    input.values = set_values.as_ref();
    if let Some(values) = &case.set {
        mark(rule_key(&rule_name(res, "set")));
        for field in values.as_object().into_iter().flat_map(|m| m.keys()) {
            mark(format!("field {field}"));
            if res
                .field(field)
                .is_some_and(|f| f.writable.rule().is_some())
            {
                mark(rule_key(&format!("fields.{field}.writable")));
            }
        }
        let outcome = if !granted.allows("set") {
            "denied".to_string()
        } else {
            match call(
                &mut engine,
                config,
                &case.resource,
                "set",
                &case.cid,
                token,
                values,
            ) {
                Ok(()) => "ok".to_string(),
                Err((code, message)) => format!("{code}: {message}"),
            }
        };
        let expected = case.outcome.as_deref().unwrap_or("ok");
        // `denied`: by the gateway's access answer, or by connres's own check of the
        // call (a rule over the call's values).
        let expected_code = match expected {
            "invalid" => "system.invalidParams",
            "denied" => "system.accessDenied",
            other => other,
        };
        let matches = outcome == expected || outcome.split(':').next() == Some(expected_code);
        if !matches {
            let mut problem = format!("  set: expected {expected}, got {outcome}");
            let denied = outcome == "denied" || outcome.starts_with("system.accessDenied:");
            if denied || expected == "denied" {
                let _ = write!(
                    problem,
                    "\n{}",
                    why(res, &rule_name(res, "set"), &input, config_path)
                );
            }
            // The `writable` rules of the fields it writes, which decide too.
            for field in values.as_object().into_iter().flat_map(|m| m.keys()) {
                if res
                    .field(field)
                    .is_some_and(|f| f.writable.rule().is_some())
                {
                    let name = format!("fields.{field}.writable");
                    let _ = write!(problem, "\n{}", why(res, &name, &input, config_path));
                }
            }
            problems.push(problem);
        }
    }
    if let Some(expected) = &case.model {
        let model = model_of(&mut engine, config, &case.resource);
        for (field, want) in expected {
            mark(format!("field {field}"));
            let got = model.get(field).unwrap_or(&Value::Null);
            if res.field(field).is_none() {
                let names: Vec<&str> = res.fields.iter().map(|f| f.name.as_str()).collect();
                let hint = crate::config::suggestion(field, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.push(format!(
                    "  model.{field}: not a field of `{}`{hint}",
                    res.pattern
                ));
            } else if got != want {
                problems.push(format!("  model.{field}: expected {want}, got {got}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn word(granted: bool) -> &'static str {
    if granted {
        "granted"
    } else {
        "denied"
    }
}

/// The site name of the rule that decides `method`.
fn rule_name(res: &Resource, method: &str) -> String {
    let specific = format!("call.{method}");
    if res.sites.get(&specific).is_some() {
        specific
    } else {
        "call".to_string()
    }
}

/// The rule behind a decision: its place, text and result.
fn why(res: &Resource, name: &str, input: &RuleInput, config_path: &str) -> String {
    let writable = |n: &str| {
        let field = n.strip_prefix("fields.")?.strip_suffix(".writable")?;
        res.field(field)?.writable.rule()
    };
    let rule = match name {
        "get" => res.access.get.as_ref(),
        "call" => res
            .access
            .call
            .rule("*")
            .or_else(|| res.access.call.rule("")),
        n if n.starts_with("fields.") => writable(n),
        n => n
            .strip_prefix("call.")
            .and_then(|m| res.access.call.rule(m)),
    };
    match (rule, res.sites.get(name)) {
        (Some(rule), Some(site)) => {
            let result = match rule.eval(input) {
                Ok(b) => word(b).to_string(),
                Err(e) => format!("error, so denied: {e}"),
            };
            format!(
                "    rule {name} at {}: {} -> {result}",
                site.show(config_path),
                rule.source()
            )
        }
        _ => format!("    no `{name}` rule in `{}`: denied", res.pattern),
    }
}
