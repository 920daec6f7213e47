//! Compiling the `auth:` block ([`super::super::auth`]): entries, their JWT verifier
//! (keys read from the environment or files, or a JWKS URL to fetch), token and `tid`
//! templates over `claims`, and methods, every error with its position.

use std::sync::Arc;
use std::time::Duration;

use super::is_subject_token;
use super::Compiler;
use crate::config::auth::{
    AuthName, AuthSettings, JwtPlace, Method, MethodAction, TokenShape, AUTH_KEYS,
    DEFAULT_RESUME_TTL, EXPIRE, METHOD_KEYS, RESUME_KEYS,
};
use crate::config::yaml::{Kind, Pos, Yaml};
use crate::template::{Template, CLAIMS_ROOTS};

impl Compiler {
    /// Compiles `auth:`: a mapping of names to their entries.
    pub(super) fn auth(&mut self, node: &Yaml) -> AuthSettings {
        let mut out = AuthSettings::default();
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`auth` must be a mapping of auth names (answering `auth.<name>.<method>`), not {}",
                    node.type_name()
                ),
            );
            return out;
        };
        for (key, value) in entries {
            if key.name.is_empty() || !key.name.split('.').all(is_subject_token) {
                self.error(
                    key.pos,
                    format!(
                        "auth name `{}` must be a resource name (dot-separated parts without spaces or wildcards)",
                        key.name
                    ),
                );
                continue;
            }
            if let Some(entry) = self.auth_name(&key.name, key.pos, value) {
                out.names.push(Arc::new(entry));
            }
        }
        out
    }

    fn auth_name(&mut self, name: &str, pos: Pos, node: &Yaml) -> Option<AuthName> {
        let what = format!("auth `{name}`");
        let entries = self.mapping(node, &what, AUTH_KEYS)?;
        let mut jwt = None;
        let mut jwt_given = false;
        let mut token = TokenShape::Claims;
        let mut tid = None;
        let mut expire_at_exp = true;
        let mut resume_ttl = DEFAULT_RESUME_TTL;
        let mut methods = Vec::new();
        let mut methods_pos = None;
        for (key, value) in entries {
            match key.name.as_str() {
                "jwt" => {
                    jwt_given = true;
                    jwt = self.jwt(&what, value);
                }
                "token" => {
                    let Some(fields) = self.mapping_any(value, &format!("{what}: `token`")) else {
                        continue;
                    };
                    let mut out = Vec::new();
                    for (k, v) in fields {
                        let Some(text) = self.string(v, &format!("{what}: `token.{k}`")) else {
                            continue;
                        };
                        if let Some(t) =
                            self.claims_template(&format!("{what}: `token.{k}`"), text, v.pos)
                        {
                            out.push((k.to_string(), t));
                        }
                    }
                    token = TokenShape::Fields(out);
                }
                "expire" => match self.string(value, &format!("{what}: `expire`")) {
                    Some(s) if EXPIRE.contains(&s) => expire_at_exp = s == "at_exp",
                    Some(s) => self.error(
                        value.pos,
                        format!("{what}: `expire` must be `at_exp` (the token ends when the JWT does) or `never`, not `{s}`"),
                    ),
                    None => {}
                },
                "resume" => {
                    for (_, v) in self
                        .mapping(value, &format!("{what}: `resume`"), RESUME_KEYS)
                        .unwrap_or_default()
                    {
                        let min = Duration::from_secs(1);
                        if let Some(d) = self.duration(v, &format!("{what}: `resume.ttl`"), min) {
                            resume_ttl = d;
                        }
                    }
                }
                "tid" => {
                    if let Some(text) = self.string(value, &format!("{what}: `tid`")) {
                        tid = self.claims_template(&format!("{what}: `tid`"), text, value.pos);
                    }
                }
                _ => {
                    methods_pos = Some(key.pos);
                    methods = self.methods(&what, value);
                }
            }
        }
        let reads_jwt = methods
            .iter()
            .any(|m| matches!(m.action, MethodAction::Jwt(_) | MethodAction::Recheck));
        if reads_jwt && jwt.is_none() && !jwt_given {
            self.error(
                methods_pos.unwrap_or(pos),
                format!(
                    "{what} has a method reading a JWT but no `jwt:` block saying how to verify it"
                ),
            );
        }
        if methods_pos.is_none() {
            self.error(
                pos,
                format!("{what} has no `methods:` (e.g. `login: {{ jwt: params.token }}`)"),
            );
        }
        Some(AuthName {
            name: name.to_string(),
            jwt,
            token,
            tid,
            expire_at_exp,
            resume_ttl,
            methods,
            pos,
        })
    }

    /// The keys and values of a mapping whose keys are free (names the user chooses).
    fn mapping_any<'y>(&mut self, node: &'y Yaml, what: &str) -> Option<Vec<(&'y str, &'y Yaml)>> {
        match &node.kind {
            Kind::Map(entries) => Some(entries.iter().map(|(k, v)| (k.name.as_str(), v)).collect()),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a mapping, not {}", node.type_name()),
                );
                None
            }
        }
    }

    fn claims_template(&mut self, what: &str, text: &str, pos: Pos) -> Option<Template> {
        match Template::compile_reading(text, CLAIMS_ROOTS) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(pos, format!("{what}: {}", e.message));
                None
            }
        }
    }

    fn methods(&mut self, what: &str, node: &Yaml) -> Vec<Method> {
        let mut out = Vec::new();
        let Some(entries) = self.mapping_any(node, &format!("{what}: `methods`")) else {
            return out;
        };
        for (name, value) in entries {
            if !is_subject_token(name) {
                self.error(
                    value.pos,
                    format!("method name `{name}` must be one subject token (no dots, spaces or wildcards)"),
                );
                continue;
            }
            let mwhat = format!("{what}: method `{name}`");
            let Some(keys) = self.mapping(value, &mwhat, METHOD_KEYS) else {
                continue;
            };
            let mut actions = Vec::new();
            let given = keys.len();
            for (key, v) in keys {
                match key.name.as_str() {
                    "jwt" => {
                        if let Some(places) = self.jwt_places(&mwhat, v) {
                            actions.push((key.pos, MethodAction::Jwt(places)));
                        }
                    }
                    flag => match self.boolean(v, &format!("{mwhat}: `{flag}`")) {
                        Some(true) if flag == "logout" => {
                            actions.push((key.pos, MethodAction::Logout))
                        }
                        Some(true) if flag == "resume" => {
                            actions.push((key.pos, MethodAction::Resume))
                        }
                        Some(true) => actions.push((key.pos, MethodAction::Recheck)),
                        Some(false) => self.error(
                            v.pos,
                            format!("{mwhat}: `{flag}: false` does nothing; remove it"),
                        ),
                        None => {}
                    },
                }
            }
            match actions.len() {
                1 => out.push(Method {
                    name: name.to_string(),
                    action: actions.remove(0).1,
                }),
                0 if given == 0 => self.error(
                    value.pos,
                    format!("{mwhat} says nothing to do: give `jwt: <where>`, `logout: true`, `resume: true` or `recheck: true`"),
                ),
                0 => {}
                _ => self.error(
                    actions[1].0,
                    format!("{mwhat} does one thing: one of `jwt`, `logout`, `resume` and `recheck`"),
                ),
            }
        }
        out
    }

    fn jwt_places(&mut self, what: &str, node: &Yaml) -> Option<Vec<JwtPlace>> {
        let items: Vec<&Yaml> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        if items.is_empty() {
            self.error(
                node.pos,
                format!("{what}: `jwt` lists no place to find the JWT"),
            );
            return None;
        }
        let mut out = Vec::new();
        for item in items {
            let text = self.string(item, &format!("{what}: `jwt`"))?;
            let place = match text.split_once('.') {
                Some(("params", n)) if is_subject_token(n) => JwtPlace::Param(n.into()),
                Some(("header", n)) if is_header_name(n) => JwtPlace::Header(n.into()),
                Some(("cookie", n)) if is_cookie_name(n) => JwtPlace::Cookie(n.into()),
                _ => {
                    self.error(
                        item.pos,
                        format!(
                            "{what}: `{text}` is not a place for a JWT: write `params.<name>`, `header.<Name>` or `cookie.<name>`"
                        ),
                    );
                    return None;
                }
            };
            out.push(place);
        }
        Some(out)
    }
}

/// An HTTP header name: a token of letters, digits and `-`.
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A cookie name: printable ASCII without separators.
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c))
}
