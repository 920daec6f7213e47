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

mod report;

pub(super) use report::rule_key;
use report::{
    items_problem, join_rule, model_problem, not_a_method, rule_name, why, word, wrong_shape,
    PRESENCE_JOIN,
};

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
            Some(
                action @ (Action::Reset
                | Action::Add(_)
                | Action::Remove(_)
                | Action::Join
                | Action::Leave
                | Action::Ping),
            ) => {
                let method = action.key();
                self.mark(rule_key(&rule_name(res, method)));
                let collection = res.collection.as_ref();
                if res.writes(method) && collection.is_some_and(|c| c.writable.rule().is_some()) {
                    self.mark(rule_key("collection.writable"));
                }
                if method == "join" && join_rule(res).is_some() {
                    self.mark(rule_key(PRESENCE_JOIN));
                }
            }
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
    /// denied or had to be, for a set the `writable` rules of the fields it writes, for
    /// a collection's add or remove the collection's `writable` rule, and for a
    /// presence list's join its `presence.join` rule.
    fn why_outcome(
        &self,
        action: &Action,
        outcome: &Outcome,
        expected: &str,
        model: Option<&Value>,
    ) -> Vec<String> {
        let Some(method) = action.method() else {
            return Vec::new();
        };
        let sent = action.params();
        let sent = sent.as_ref();
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
        let collection = self.res.collection.as_ref();
        if self.res.writes(method) && collection.is_some_and(|c| c.writable.rule().is_some()) {
            lines.push(why(self.res, "collection.writable", &input, config_path));
        }
        // A presence list's `join` rule decides once the call rule granted, over no
        // values.
        let join_decides =
            *outcome != Outcome::Denied && (outcome.denied() || expected == "denied");
        if method == "join" && join_decides && join_rule(self.res).is_some() {
            input.values = None;
            lines.push(why(self.res, PRESENCE_JOIN, &input, config_path));
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

    /// What a client of the step's connection sees: the access answer, then the model
    /// or the collection's items.
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
        let rid = self.step.resource.as_str();
        let mut unknown = Vec::new();
        for (method, expected) in methods {
            if !res.methods().contains(&method.as_str()) {
                let at = expect.at("call");
                unknown.push(not_a_method(res, rid, &method, self.names, at));
                continue;
            }
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
        problems.extend(unknown);
        let names = self.names;
        let shape = |key: &str| wrong_shape(res, rid, key, names, expect.at(key));
        match (&expect.model, &res.collection) {
            (Some(_), Some(_)) => problems.push(shape("model")),
            (Some(expected), None) => {
                let got = self.session.model(rid);
                for (field, want) in expected {
                    self.mark(format!("field {field}"));
                    problems.extend(model_problem(res, field, want, &got));
                }
            }
            (None, _) => {}
        }
        match (&expect.items, &res.collection) {
            (Some(_), None) => problems.push(shape("items")),
            (Some(expected), Some(_)) => {
                let got = self.session.model(rid);
                problems.extend(items_problem(expected, &got));
            }
            (None, _) => {}
        }
        self.problems.extend(problems);
    }
}
