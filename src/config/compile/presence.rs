//! Compiling a presence list (`presence:`): its `member` template, `join` rule, `ttl`
//! and `max_members`.

use std::time::Duration;

use super::access::RuleOf;
use super::{Compiler, PRESENCE_KEYS};
use crate::config::yaml::{Kind, Pos, Yaml};
use crate::pattern::Pattern;
use crate::presence::{PresenceDef, DEFAULT_MAX_MEMBERS, DEFAULT_TTL, MAX_MEMBERS_LIMIT};
use crate::rule::Schema;
use crate::template::Template;

impl Compiler {
    /// The presence list, when it has no error.
    pub(super) fn presence(
        &mut self,
        pattern: &Pattern,
        at: Pos,
        node: &Yaml,
    ) -> Option<PresenceDef> {
        let entries = self.mapping(node, "`presence`", PRESENCE_KEYS)?;
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.name == k)
                .map(|(_, v)| *v)
        };
        let before = self.errors.len();
        if pattern.has_cid() {
            self.error(
                at,
                format!("a presence list is shared by the connections that join it: its pattern `{pattern}` must not have a `{{cid}}` capture"),
            );
        }
        let member = match get("member") {
            None => {
                self.error(
                    at,
                    "`presence` needs a `member`: a template giving what a connection is a member as, e.g. `member: \"{{token.name}}\"` or `member: { ref: \"users.user.{{token.userId}}\" }`",
                );
                None
            }
            Some(m) => self.member(pattern, m),
        };
        let join = get("join").and_then(|j| {
            let schema = Schema::default();
            self.rule(
                pattern,
                j,
                "`presence.join`",
                "presence.join",
                &schema,
                RuleOf::Call,
            )
        });
        let ttl = match get("ttl") {
            None => Some(DEFAULT_TTL),
            Some(t) => self.duration(t, "`presence.ttl`", Duration::from_secs(1)),
        };
        let max_members = match get("max_members") {
            None => DEFAULT_MAX_MEMBERS,
            Some(n) => match n.kind {
                Kind::Int(i) if (1..=MAX_MEMBERS_LIMIT as i64).contains(&i) => i as usize,
                _ => {
                    self.error(
                        n.pos,
                        format!("`presence.max_members` must be a whole number from 1 to {MAX_MEMBERS_LIMIT}"),
                    );
                    0
                }
            },
        };
        if self.errors.len() > before {
            return None;
        }
        let (member, is_ref) = member?;
        Some(PresenceDef {
            made_by: crate::presence::made_by(&member, is_ref),
            member,
            is_ref,
            join,
            ttl: ttl?,
            max_members,
        })
    }

    /// `member:`: a template (a string member), or `{ ref: <template> }` (a reference).
    fn member(&mut self, pattern: &Pattern, node: &Yaml) -> Option<(Template, bool)> {
        let (text_node, is_ref) = match &node.kind {
            Kind::Map(entries) => match entries.as_slice() {
                [(k, v)] if k.name == "ref" => (v, true),
                _ => {
                    self.error(
                        node.pos,
                        "`presence.member` is a template, or `{ ref: <template> }` for a reference",
                    );
                    return None;
                }
            },
            _ => (node, false),
        };
        let text = self.string(text_node, "`presence.member`")?;
        match Template::compile(text) {
            Ok(t) => {
                self.check_params(pattern, t.params_read(), text_node.pos, "`presence.member`");
                Some((t, is_ref))
            }
            Err(e) => {
                let at = e
                    .pos
                    .map(|(l, c)| format!(" (template line {l}, column {c})"))
                    .unwrap_or_default();
                self.error(
                    text_node.pos,
                    format!("`presence.member`: {}{at}", e.message),
                );
                None
            }
        }
    }
}
