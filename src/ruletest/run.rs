//! Running one case, step by step, on a [`Session`], and comparing what each step gave
//! with what it expects. A failed expectation names the rule that decided it, with its
//! place in the config, its text and its result for the step's inputs.

use std::collections::BTreeSet;

use serde_json::Value;

use super::session::{Outcome, Session};
use super::{Action, CallExpect, Case, Step};
use crate::config::{Config, Resource};
use crate::explain::name_hint;
use crate::pattern::Params;
use crate::rule::RuleInput;

/// What a run of cases exercised: (pattern, `rule NAME` or `field NAME`).
pub(super) type Exercised = BTreeSet<(String, String)>;

/// Where the case is and what the config is called, for messages.
pub(super) struct Names<'a> {
    pub config_path: &'a str,
    pub file: &'a str,
}

/// Runs one case; `Err` lists what did not hold.
pub(super) fn case(
    config: &Config,
    names: &Names,
    case: &Case,
    exercised: &mut Exercised,
) -> Result<(), Vec<String>> {
    let mut session = Session::start(config, case);
    let mut problems = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let Some((res, params)) = config.resolve(&step.resource) else {
            let problem = format!(
                "  no resource pattern matches `{}`{}",
                step.resource,
                name_hint(config, &step.resource)
            );
            problems.extend(in_step(case, i, step, names, vec![problem]));
            break;
        };
        // A case without steps always asks for access first, as it always has.
        let ask = step.expect.looks() || (!case.sequence && i == 0);
        let mut run = StepRun {
            session: &mut session,
            res,
            params: &params,
            step,
            names,
            exercised,
            problems: Vec::new(),
        };
        run.act();
        if ask {
            run.look();
        }
        let found = run.problems;
        problems.extend(in_step(case, i, step, names, found));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A step's problems as reported: as they are for a case without steps, else under a
/// line naming the step.
fn in_step(
    case: &Case,
    i: usize,
    step: &Step,
    names: &Names,
    problems: Vec<String>,
) -> Vec<String> {
    if !case.sequence || problems.is_empty() {
        return problems;
    }
    let action = step.action.as_ref().map_or("check".into(), Action::show);
    let mut out = vec![format!(
        "  step {} at {}:{}: {action}",
        i + 1,
        names.file,
        step.at
    )];
    out.extend(problems.iter().map(|p| {
        p.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }));
    out
}

/// One step under way.
struct StepRun<'a, 's, 'c> {
    session: &'s mut Session<'c>,
    res: &'c Resource,
    params: &'a Params<'c>,
    step: &'a Step,
    names: &'a Names<'a>,
    exercised: &'a mut Exercised,
    problems: Vec<String>,
}

impl StepRun<'_, '_, '_> {
    fn mark(&mut self, what: String) {
        let pattern = self.res.pattern.to_string();
        self.exercised.insert((pattern, what));
    }

    /// The rule inputs of the step's connection, now.
    fn input<'i>(&'i self, model: Option<&'i Value>) -> RuleInput<'i> {
        RuleInput {
            cid: &self.step.cid,
            token: self.session.token(&self.step.cid),
            params: self.params,
            query: self.session.query(),
            model,
            values: None,
        }
    }

    /// Does the step's action and compares its outcome.
    fn act(&mut self) {
        let (res, step) = (self.res, self.step);
        match &step.action {
            Some(Action::Set(values)) => {
                self.mark(rule_key(&rule_name(res, "set")));
                for field in values.as_object().into_iter().flat_map(|m| m.keys()) {
                    self.mark(format!("field {field}"));
                    if res
                        .field(field)
                        .is_some_and(|f| f.writable.rule().is_some())
                    {
                        self.mark(rule_key(&format!("fields.{field}.writable")));
                    }
                }
            }
            Some(Action::Reset) => self.mark(rule_key(&rule_name(res, "reset"))),
            Some(Action::BackendSet(values)) => {
                for field in values.keys() {
                    self.mark(format!("field {field}"));
                }
            }
            _ => {}
        }
        let acted = self.session.act(step);
        let Some(outcome) = acted.outcome else {
            return;
        };
        let action = step.action.as_ref().expect("an outcome is an action's");
        let expected = step.expect.outcome.as_deref().unwrap_or("ok");
        let mut problems = Vec::new();
        if !outcome.is(expected) {
            let mut problem = format!("  {}: expected {expected}, got {outcome}", action.key());
            for line in self.why_outcome(action, &outcome, expected, acted.model_before.as_ref()) {
                problem.push('\n');
                problem.push_str(&line);
            }
            problems.push(problem);
        }
        if let Some(text) = &step.expect.error {
            if !outcome.message().is_some_and(|m| m.contains(text.as_str())) {
                problems.push(format!(
                    "  error: expected a message containing {text:?}, got {outcome}"
                ));
            }
        }
        self.problems.extend(problems);
    }

    /// The rules behind an unexpected outcome of a call: its access rule when it was
    /// denied or had to be, and for a set, the `writable` rules of the fields it writes.
    fn why_outcome(
        &self,
        action: &Action,
        outcome: &Outcome,
        expected: &str,
        model: Option<&Value>,
    ) -> Vec<String> {
        let (method, sent) = match action {
            Action::Set(values) => ("set", Some(values)),
            Action::Reset => ("reset", None),
            _ => return Vec::new(),
        };
        let values = self.res.call_values(method, sent);
        let mut input = self.input(model);
        // The gateway's access answer is for a call that writes nothing.
        input.values = (*outcome != Outcome::Denied).then_some(&values);
        let config_path = self.names.config_path;
        let mut lines = Vec::new();
        if outcome.denied() || expected == "denied" {
            lines.push(why(
                self.res,
                &rule_name(self.res, method),
                &input,
                config_path,
            ));
        }
        for field in sent
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            if self
                .res
                .field(field)
                .is_some_and(|f| f.writable.rule().is_some())
            {
                let name = format!("fields.{field}.writable");
                lines.push(why(self.res, &name, &input, config_path));
            }
        }
        lines
    }

    /// What a client of the step's connection sees: the access answer, then the model.
    fn look(&mut self) {
        let Some(granted) = self.session.ask(self.step) else {
            return;
        };
        let (res, expect) = (self.res, &self.step.expect);
        let model = self.session.rules_model(&self.step.resource, "get");
        let mut checks: Vec<(String, String, bool, bool)> = Vec::new();
        if let Some(get) = expect.get {
            checks.push(("get".into(), "get".into(), get, granted.get));
        }
        let methods: Vec<(String, bool)> = match &expect.call {
            None => Vec::new(),
            Some(CallExpect::All(b)) => res.methods().iter().map(|m| (m.to_string(), *b)).collect(),
            Some(CallExpect::Methods(m)) => m.clone(),
        };
        for (method, expected) in methods {
            let rule = rule_name(res, &method);
            checks.push((
                format!("call.{method}"),
                rule,
                expected,
                granted.allows(&method),
            ));
        }
        let mut problems = Vec::new();
        for (what, rule, expected, got) in checks {
            self.mark(rule_key(&rule));
            if expected != got {
                problems.push(format!(
                    "  {what}: expected {}, got {}\n{}",
                    word(expected),
                    word(got),
                    why(
                        res,
                        &rule,
                        &self.input(model.as_ref()),
                        self.names.config_path
                    )
                ));
            }
        }
        if let Some(expected) = &expect.model {
            let got = self.session.model(&self.step.resource);
            for (field, want) in expected {
                self.mark(format!("field {field}"));
                problems.extend(model_problem(res, field, want, &got));
            }
        }
        self.problems.extend(problems);
    }
}

/// What is wrong with `model.<field>`, if anything.
fn model_problem(res: &Resource, field: &str, want: &Value, model: &Value) -> Option<String> {
    if res.field(field).is_none() {
        let names: Vec<&str> = res.fields.iter().map(|f| f.name.as_str()).collect();
        let hint = crate::config::suggestion(field, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Some(format!(
            "  model.{field}: not a field of `{}`{hint}",
            res.pattern
        ));
    }
    let got = model.get(field).unwrap_or(&Value::Null);
    (got != want).then(|| format!("  model.{field}: expected {want}, got {got}"))
}

pub(super) fn rule_key(name: &str) -> String {
    format!("rule {name}")
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
