//! The `auth:` block: connres as the auth service of declared names. Each entry answers
//! RES auth requests `auth.<name>.<method>`: a method verifies a JWT found in the
//! request (its params, a header or a cookie) and sets the connection's token built from
//! its claims, or logs the connection out. Compiled here (keys read from the
//! environment or files, the verifier built once); `crate::auth` serves the requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::compile::{is_subject_token, Compiler};
use super::yaml::{Kind, Pos, Yaml};
use crate::auth::jwt::{Algorithm, KeyMaterial, Verifier};
use crate::template::{Template, CLAIMS_ROOTS};

pub(crate) const AUTH_KEYS: &[&str] = &["jwt", "token", "tid", "expire", "resume", "methods"];
pub(crate) const RESUME_KEYS: &[&str] = &["ttl"];
/// How long a resume key stays valid when `resume.ttl` does not say.
pub const DEFAULT_RESUME_TTL: Duration = Duration::from_secs(10 * 60);
/// The values of `expire`.
pub(crate) const EXPIRE: &[&str] = &["at_exp", "never"];
pub(crate) const JWT_KEYS: &[&str] = &[
    "algorithms",
    "secret",
    "public_key",
    "jwks",
    "issuer",
    "audience",
    "leeway",
];
pub(crate) const KEY_SOURCE_KEYS: &[&str] = &["env", "file", "url"];
pub(crate) const METHOD_KEYS: &[&str] = &["jwt", "logout", "resume"];

/// The declared auth names, in config order.
#[derive(Debug, Default)]
pub struct AuthSettings {
    pub names: Vec<Arc<AuthName>>,
}

impl AuthSettings {
    /// The entry answering `auth.<name>.*`.
    pub fn get(&self, name: &str) -> Option<&Arc<AuthName>> {
        self.names.iter().find(|a| a.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One entry of `auth:`: the name it answers for and its methods.
pub struct AuthName {
    pub name: String,
    /// How JWTs are verified (none: no method reads a JWT).
    pub jwt: Option<Jwt>,
    /// The connection token built from the claims.
    pub token: TokenShape,
    /// The token ID of the token events (`system.tokenReset`), from the claims.
    pub tid: Option<Template>,
    /// Whether a login's token ends when its JWT does (`expire: at_exp`, the default):
    /// the token event carries the JWT's `exp` as `expires`.
    pub expire_at_exp: bool,
    /// How long a resume key stays valid (`resume.ttl`); keys are issued only when a
    /// method resumes.
    pub resume_ttl: Duration,
    pub methods: Vec<Method>,
    /// Where the entry is written.
    pub pos: Pos,
}

impl fmt::Debug for AuthName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthName")
            .field("name", &self.name)
            .field("jwt", &self.jwt.as_ref().map(|j| &j.key_from))
            .field("methods", &self.methods)
            .finish()
    }
}

impl AuthName {
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// Whether logins answer a resume key (a method resumes).
    pub fn resumes(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m.action, MethodAction::Resume))
    }

    /// One line for `connres check`: never a key's value.
    pub fn describe(&self) -> String {
        let methods: Vec<String> = self.methods.iter().map(|m| m.describe()).collect();
        let jwt = match &self.jwt {
            Some(j) => format!(
                "JWT {} with {}; ",
                j.verifier
                    .algorithms()
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                j.key_from
            ),
            None => String::new(),
        };
        format!("auth `{}`: {jwt}methods {}", self.name, methods.join(", "))
    }
}

/// A JWT verifier and where its key came from (for `check`: `<secret>`, never the
/// value).
pub struct Jwt {
    pub verifier: Arc<Verifier>,
    pub key_from: String,
    /// A JWKS fetched from this URL (by the service), again on an unknown `kid`.
    pub jwks_url: Option<String>,
}

/// The connection token a verified JWT gives.
#[derive(Debug)]
pub enum TokenShape {
    /// The claims as they are.
    Claims,
    /// An object of these keys, each rendered from the claims (a missing claim gives
    /// null).
    Fields(Vec<(String, Template)>),
}

/// A method of an auth name.
#[derive(Debug)]
pub struct Method {
    pub name: String,
    pub action: MethodAction,
}

impl Method {
    fn describe(&self) -> String {
        match &self.action {
            MethodAction::Jwt(places) => format!(
                "{} (JWT from {})",
                self.name,
                places
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            MethodAction::Logout => format!("{} (logout)", self.name),
            MethodAction::Resume => format!("{} (resume)", self.name),
        }
    }
}

/// What a method does.
#[derive(Debug)]
pub enum MethodAction {
    /// Verifies the first JWT found in these places, in order, and logs the connection
    /// in with it.
    Jwt(Vec<JwtPlace>),
    /// Clears the connection's token.
    Logout,
    /// Moves a session to this connection with a resume key.
    Resume,
}

/// Where a method looks for a JWT in an auth request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPlace {
    /// `params.<name>`: a string parameter.
    Param(String),
    /// `header.<Name>`: a header (a `Bearer ` prefix is removed).
    Header(String),
    /// `cookie.<name>`: a cookie of the `Cookie` header.
    Cookie(String),
}

impl fmt::Display for JwtPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtPlace::Param(n) => write!(f, "params.{n}"),
            JwtPlace::Header(n) => write!(f, "header.{n}"),
            JwtPlace::Cookie(n) => write!(f, "cookie.{n}"),
        }
    }
}

/// Bytes of a key read from the environment or a file, and where from; or a JWKS's URL
/// (fetched by the service).
struct KeyText {
    bytes: Vec<u8>,
    from: String,
    url: Option<String>,
}

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
            .any(|m| matches!(m.action, MethodAction::Jwt(_)));
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
                        Some(true) => actions.push((key.pos, MethodAction::Resume)),
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
                    format!("{mwhat} says nothing to do: give `jwt: <where>`, `logout: true` or `resume: true`"),
                ),
                0 => {}
                _ => self.error(
                    actions[1].0,
                    format!("{mwhat} does one thing: one of `jwt`, `logout` and `resume`"),
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

    fn jwt(&mut self, what: &str, node: &Yaml) -> Option<Jwt> {
        let what = format!("{what}: `jwt`");
        let entries = self.mapping(node, &what, JWT_KEYS)?;
        let mut algorithms: Vec<(Algorithm, Pos)> = Vec::new();
        let mut algorithms_given = false;
        let mut key: Option<(&str, KeyText, Pos)> = None;
        let (mut issuer, mut audience, mut leeway) = (None, None, Duration::ZERO);
        let mut failed = false;
        for (k, v) in entries {
            match k.name.as_str() {
                "algorithms" => {
                    algorithms_given = true;
                    let items: Vec<&Yaml> = match &v.kind {
                        Kind::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for item in items {
                        let Some(text) = self.string(item, &format!("{what}: `algorithms`")) else {
                            failed = true;
                            continue;
                        };
                        match text.parse::<Algorithm>() {
                            Ok(a) => algorithms.push((a, item.pos)),
                            Err(_) => {
                                failed = true;
                                self.error(
                                    item.pos,
                                    format!(
                                        "{what}: algorithm `{text}` is not supported; use {}",
                                        Algorithm::ALL.map(|a| a.name()).join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
                name @ ("secret" | "public_key" | "jwks") => {
                    if let Some((other, _, _)) = &key {
                        self.error(
                            k.pos,
                            format!("{what}: give one key: `{other}` is already given, so `{name}` cannot be"),
                        );
                        failed = true;
                        continue;
                    }
                    match self.key_text(&format!("{what}: `{name}`"), v) {
                        Some(text) => key = Some((name, text, v.pos)),
                        None => failed = true,
                    }
                }
                "issuer" => {
                    issuer = self
                        .string(v, &format!("{what}: `issuer`"))
                        .map(String::from)
                }
                "audience" => {
                    audience = self
                        .string(v, &format!("{what}: `audience`"))
                        .map(String::from)
                }
                _ => {
                    if let Some(d) = self.duration(v, &format!("{what}: `leeway`"), Duration::ZERO)
                    {
                        leeway = d;
                    }
                }
            }
        }
        if !algorithms_given {
            self.error(
                node.pos,
                format!("{what} needs `algorithms` (e.g. `[HS256]`): the algorithms a token may be signed with"),
            );
            return None;
        }
        let Some((kind, text, key_pos)) = key else {
            if !failed {
                self.error(
                    node.pos,
                    format!("{what} needs a key: `secret`, `public_key` or `jwks`"),
                );
            }
            return None;
        };
        if failed {
            return None;
        }
        let algs: Vec<Algorithm> = algorithms.iter().map(|(a, _)| *a).collect();
        let material = match kind {
            _ if text.url.is_some() => KeyMaterial::JwksLater,
            "secret" => KeyMaterial::Secret(&text.bytes),
            other => {
                let Ok(s) = std::str::from_utf8(&text.bytes) else {
                    self.error(
                        key_pos,
                        format!("{what}: `{other}` ({}) is not UTF-8 text", text.from),
                    );
                    return None;
                };
                if other == "public_key" {
                    KeyMaterial::PublicKeyPem(s)
                } else {
                    KeyMaterial::Jwks(s)
                }
            }
        };
        let verifier = match Verifier::new(&algs, material) {
            Ok(v) => v,
            Err(e) => {
                self.error(key_pos, format!("{what}: `{kind}` ({}): {e}", text.from));
                return None;
            }
        };
        let mut verifier = verifier.leeway(leeway);
        if let Some(i) = issuer {
            verifier = verifier.issuer(i);
        }
        if let Some(a) = audience {
            verifier = verifier.audience(a);
        }
        let key_from = match kind {
            "secret" => format!("secret <secret> from {}", text.from),
            "public_key" => format!("public key from {}", text.from),
            _ => format!("JWKS from {}", text.from),
        };
        Some(Jwt {
            verifier: Arc::new(verifier),
            key_from,
            jwks_url: text.url,
        })
    }

    /// A key's text from `{ env: NAME }` or `{ file: path }` (relative to the config's
    /// directory). A trailing newline of a file or variable is not part of the key.
    fn key_text(&mut self, what: &str, node: &Yaml) -> Option<KeyText> {
        if let Kind::Str(_) = node.kind {
            self.error(
                node.pos,
                format!("{what} is read from the environment or a file, never written in the config: write `{{ env: NAME }}` or `{{ file: path }}`"),
            );
            return None;
        }
        let entries = self.mapping(node, what, KEY_SOURCE_KEYS)?;
        let [(k, v)] = entries.as_slice() else {
            self.error(
                node.pos,
                format!("{what} needs exactly one of `env`, `file` or (a JWKS) `url`"),
            );
            return None;
        };
        let source = self.string(v, &format!("{what}: `{}`", k.name))?;
        if k.name == "url" {
            if !what.ends_with("`jwks`") {
                self.error(
                    k.pos,
                    format!("{what}: only a JWKS is fetched from a URL; give `env` or `file`"),
                );
                return None;
            }
            if let Err(e) = crate::auth::url::HttpUrl::parse(source) {
                self.error(v.pos, format!("{what}: {e}"));
                return None;
            }
            return Some(KeyText {
                bytes: Vec::new(),
                from: format!("URL {source}"),
                url: Some(source.to_string()),
            });
        }
        let (bytes, from) = if k.name == "env" {
            match std::env::var_os(source) {
                Some(value) => (
                    value.into_encoded_bytes(),
                    format!("environment variable {source}"),
                ),
                None => {
                    self.error(
                        v.pos,
                        format!("{what}: environment variable `{source}` is not set"),
                    );
                    return None;
                }
            }
        } else {
            let path = self.base.join(source);
            match read_key_file(&path) {
                Ok(bytes) => (bytes, format!("file {}", path.display())),
                Err(e) => {
                    self.error(
                        v.pos,
                        format!("{what}: cannot read `{}`: {e}", path.display()),
                    );
                    return None;
                }
            }
        };
        let mut bytes = bytes;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            self.error(v.pos, format!("{what}: {from} is empty"));
            return None;
        }
        Some(KeyText {
            bytes,
            from,
            url: None,
        })
    }
}

/// The most a key file may hold: a JWKS of many keys is a few tens of kilobytes.
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// Reads a key file: a regular file of at most [`MAX_KEY_FILE`] bytes.
fn read_key_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_KEY_FILE / 1024
        )));
    }
    Ok(bytes)
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
