//! Compiling a resource's access rules: CEL compiled once per source, the captures
//! they read, and the static checks against the resource's fields.

use super::{Compiler, ACCESS_KEYS};
use crate::config::yaml::{Kind, Pos, Yaml};
use crate::config::{Access, CallAccess, Site, METHODS};
use crate::pattern::Pattern;
use crate::rule::{Rule, Schema};

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
                access.get = self.rule(pattern, value, "`access.get`", schema);
                continue;
            }
            access.call = match &value.kind {
                Kind::Map(_) => {
                    let methods = self
                        .mapping(value, "`access.call`", METHODS)
                        .unwrap_or_default();
                    let rules = methods
                        .into_iter()
                        .filter_map(|(m, v)| {
                            let rule = self.rule(
                                pattern,
                                v,
                                &format!("`access.call.{}`", m.name),
                                schema,
                            )?;
                            Some((m.name.clone(), rule))
                        })
                        .collect();
                    CallAccess::Methods(rules)
                }
                _ => self
                    .rule(pattern, value, "`access.call`", schema)
                    .map_or(CallAccess::Deny, CallAccess::All),
            };
        }
        access
    }

    fn rule(
        &mut self,
        pattern: &Pattern,
        node: &Yaml,
        what: &str,
        schema: &Schema,
    ) -> Option<Rule> {
        let rule = self.compile_rule(node, what)?;
        let before = self.errors.len();
        self.check_params(pattern, rule.params_read(), node.pos, what);
        for problem in rule.check(schema) {
            self.error(node.pos, format!("{what}: {problem}"));
        }
        let name = what.trim_matches('`').trim_start_matches("access.");
        self.sites.push((
            name.to_string(),
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
        Rule::compile(&source)
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
