//! Compiling a resource's rules (its access rules, and its fields' `writable` rules):
//! CEL compiled once per source, the captures they read, what a rule of a get may not
//! read, and the static checks against the resource's fields.

use super::{Compiler, ACCESS_KEYS};
use crate::config::yaml::{Kind, Pos, Yaml};
use crate::config::{Access, CallAccess, Site};
use crate::pattern::Pattern;
use crate::rule::{Rule, Schema};

/// What a rule decides: a get, or a call (an access rule of a call, or a `writable`
/// rule, which may read the call's `values` and `fields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleOf {
    Get,
    Call,
}

impl Compiler {
    /// Every `params.<name>` read must be a capture of the pattern.
    pub(super) fn check_params(
        &mut self,
        pattern: &Pattern,
        read: &[String],
        pos: Pos,
        what: &str,
    ) {
        for name in read {
            if !pattern.captures().any(|c| c == name) {
                let captures: Vec<String> =
                    pattern.captures().map(|c| format!("params.{c}")).collect();
                let known = if captures.is_empty() {
                    "it has no captures".to_string()
                } else {
                    format!("it has {}", captures.join(", "))
                };
                self.error(
                    pos,
                    format!("{what} reads `params.{name}`, but resource `{pattern}` has no `{{{name}}}` capture ({known})"),
                );
            }
        }
    }

    pub(super) fn access(&mut self, pattern: &Pattern, node: &Yaml, schema: &Schema) -> Access {
        let mut access = Access::default();
        for (key, value) in self
            .mapping(node, "`access`", ACCESS_KEYS)
            .unwrap_or_default()
        {
            if key.name == "get" {
                let on = RuleOf::Get;
                access.get = self.rule(pattern, value, "`access.get`", "get", schema, on);
                continue;
            }
            access.call = match &value.kind {
                Kind::Map(_) => {
                    let methods = self
                        .mapping(value, "`access.call`", self.methods)
                        .unwrap_or_default();
                    let rules = methods
                        .into_iter()
                        .filter_map(|(m, v)| {
                            let site = format!("call.{}", m.name);
                            let what = format!("`access.{site}`");
                            let rule = self.rule(pattern, v, &what, &site, schema, RuleOf::Call)?;
                            Some((m.name.clone(), rule))
                        })
                        .collect();
                    CallAccess::Methods(rules)
                }
                _ => self
                    .rule(
                        pattern,
                        value,
                        "`access.call`",
                        "call",
                        schema,
                        RuleOf::Call,
                    )
                    .map_or(CallAccess::Deny, CallAccess::All),
            };
        }
        access
    }

    /// A rule at `node`, named `what` in messages and `site` among the resource's
    /// sites; `on` says what it decides, and so whether it may read a call's values.
    pub(super) fn rule(
        &mut self,
        pattern: &Pattern,
        node: &Yaml,
        what: &str,
        site: &str,
        schema: &Schema,
        on: RuleOf,
    ) -> Option<Rule> {
        let rule = self.compile_rule(node, what)?;
        let before = self.errors.len();
        self.check_params(pattern, rule.params_read(), node.pos, what);
        let call_variables = rule.call_variables_read();
        if on == RuleOf::Get && !call_variables.is_empty() {
            let read: Vec<String> = call_variables.iter().map(|v| format!("`{v}`")).collect();
            self.error(
                node.pos,
                format!("{what} reads {}, which only the rules of a call can read (`access.call`, a field's `writable`): a get writes nothing", read.join(" and ")),
            );
        }
        let collection = self.methods == crate::collection::METHODS;
        for problem in rule.check(schema) {
            if collection && problem.starts_with("`model.") {
                continue; // Said once below.
            }
            self.error(node.pos, format!("{what}: {problem}"));
        }
        if collection && rule.reads_model() {
            self.error(
                node.pos,
                format!("{what} reads `model`, but a collection has no fields to read: its rules read `values.value` and `values.idx` of a call"),
            );
        }
        self.sites.push((
            site.to_string(),
            Site {
                file: self.file.clone(),
                pos: node.pos,
            },
        ));
        (self.errors.len() == before).then_some(rule)
    }

    fn compile_rule(&mut self, node: &Yaml, what: &str) -> Option<Rule> {
        let source = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(b) => b.to_string(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be a CEL expression string, not {}",
                        node.type_name()
                    ),
                );
                return None;
            }
        };
        if let Some(rule) = self.rules.get(&source) {
            return Some(rule.clone());
        }
        Rule::compile_for(&source, self.input_items)
            .inspect(|rule| {
                self.rules.insert(source.clone(), rule.clone());
            })
            .map_err(|e| {
                let at = e
                    .pos
                    .map(|(l, c)| format!(" (rule line {l}, column {c})"))
                    .unwrap_or_default();
                self.error(node.pos, format!("{what}: {}{at}", e.message));
            })
            .ok()
    }
}
