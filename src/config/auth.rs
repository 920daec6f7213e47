//! The `auth:` block: connres as the auth service of declared names. Each entry answers
//! RES auth requests `auth.<name>.<method>`: a method verifies a JWT found in the
//! request (its params, a header or a cookie) and sets the connection's token built from
//! its claims, logs the connection out, or resumes a session. The compiled types;
//! `compile/auth.rs` compiles them (keys read from the environment or files, the
//! verifier built once); `crate::auth` serves the requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::yaml::Pos;
use crate::auth::jwt::Verifier;
use crate::template::Template;

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
pub(crate) const METHOD_KEYS: &[&str] = &["jwt", "logout", "resume", "recheck"];

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

    /// Whether logins keep their JWT, for a method that checks it again (`recheck`).
    pub fn keeps_jwt(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m.action, MethodAction::Recheck))
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
            MethodAction::Recheck => format!("{} (recheck)", self.name),
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
    /// Verifies the JWT the connection logged in with again, with the keys and clock of
    /// now, and logs the connection out when it is refused (what a `system.tokenReset`
    /// naming this method does for every connection of its token IDs).
    Recheck,
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
