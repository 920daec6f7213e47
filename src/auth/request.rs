//! Answering an auth request (`auth.<name>.<method>`) of a declared auth name: finding
//! the JWT where the method looks for it, verifying it, and building the connection's
//! token and token ID from its claims; or a logout. Pure: the caller gives the time and
//! publishes what comes out (the token event first, then the reply).

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwt::{self, JwtError};
use crate::config::{AuthName, JwtPlace, MethodAction, TokenShape};
use crate::template::TemplateInput;

/// The payload of an auth request, as far as connres reads it.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    pub cid: String,
    #[serde(default)]
    pub params: Option<Value>,
    /// Canonical header names to their values (as the gateway sends them).
    #[serde(default)]
    pub header: Option<HashMap<String, Vec<String>>>,
}

/// What an auth request does to its connection.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Logged in: the connection's new token, its token ID, and when it ends (the
    /// JWT's `exp`, with `expire: at_exp`).
    Login { cid: String, login: Verified },
    /// Logged out: the connection's token is cleared.
    Logout { cid: String },
    /// Connection `cid`'s JWT is to be verified again, by its owner (which keeps it).
    Recheck { cid: String },
    /// Connection `cid` resumes the session of connection `from` with its resume key's
    /// secret (checked by `from`'s owner).
    Resume {
        cid: String,
        from: String,
        secret: [u8; super::resume::SECRET_LEN],
    },
}

/// What a verified JWT gives its connection: the token, its token ID, when it ends (the
/// JWT's `exp`, with `expire: at_exp`), and the JWT itself when a `recheck` method
/// needs it kept.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub token: Value,
    pub tid: Option<String>,
    pub expires: Option<u64>,
    pub jwt: Option<String>,
}

/// Verifies `jwt` as `entry` does now (keys, time, issuer, audience) and builds what
/// its connection gets: a login, or the recheck of a JWT kept.
pub fn verify(entry: &AuthName, jwt: &str, now: SystemTime) -> Result<Verified, AuthError> {
    let Some(verifier) = &entry.jwt else {
        // The compiler refuses such a config; never log in without verifying.
        return Err(AuthError::Missing("a method without a verifier".into()));
    };
    let claims = Value::Object(verifier.verifier.verify(jwt, now)?);
    let expires = entry
        .expire_at_exp
        .then(|| claims.get("exp").and_then(exp_seconds))
        .flatten();
    Ok(Verified {
        token: build_token(&entry.token, &claims),
        tid: tid(entry, &claims),
        expires,
        jwt: entry.keeps_jwt().then(|| jwt.to_string()),
    })
}

/// Why an auth request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The name declares no such method.
    #[error("auth `{name}` has no method `{method}`")]
    NoMethod { name: String, method: String },
    /// The payload is not an auth request.
    #[error("{0}")]
    Malformed(String),
    /// None of the method's places holds a JWT.
    #[error("no token found in {0}")]
    Missing(String),
    /// The JWT was refused.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// No resume key, or not one (wrong shape, or the connection's own).
    #[error("{0}")]
    ResumeKey(&'static str),
}

impl AuthError {
    /// The documented reason of a refused token (the `reason` of the error's data).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing(_) => Some("missing"),
            AuthError::Jwt(e) => Some(e.code()),
            AuthError::NoMethod { .. } | AuthError::Malformed(_) | AuthError::ResumeKey(_) => None,
        }
    }
}

/// Answers `method` of `entry` for a request with `payload`, at `now`.
pub fn answer(
    entry: &AuthName,
    method: &str,
    payload: &[u8],
    now: SystemTime,
) -> Result<Answer, AuthError> {
    let Some(m) = entry.method(method) else {
        return Err(AuthError::NoMethod {
            name: entry.name.clone(),
            method: method.to_string(),
        });
    };
    let request: AuthRequest = parse(payload)?;
    if !valid_cid(&request.cid) {
        return Err(AuthError::Malformed(format!(
            "auth request: `cid` must be a connection ID, not {:?}",
            request.cid.chars().take(40).collect::<String>()
        )));
    }
    match &m.action {
        MethodAction::Logout => Ok(Answer::Logout { cid: request.cid }),
        MethodAction::Recheck => Ok(Answer::Recheck { cid: request.cid }),
        MethodAction::Resume => {
            let key = match request.params.as_ref().and_then(|p| p.get("key")) {
                Some(Value::String(k)) => k,
                _ => return Err(AuthError::ResumeKey("no resume key in params.key")),
            };
            let Some((from, secret)) = super::resume::parse(key) else {
                return Err(AuthError::ResumeKey("resume key not valid"));
            };
            if from == request.cid || !valid_cid(from) {
                return Err(AuthError::ResumeKey("resume key not valid"));
            }
            Ok(Answer::Resume {
                from: from.to_string(),
                cid: request.cid,
                secret,
            })
        }
        MethodAction::Jwt(places) => {
            let Some(found) = places.iter().find_map(|p| find(&request, p)) else {
                let wheres: Vec<String> = places.iter().map(|p| p.to_string()).collect();
                return Err(AuthError::Missing(wheres.join(" or ")));
            };
            Ok(Answer::Login {
                login: verify(entry, found, now)?,
                cid: request.cid,
            })
        }
    }
}

/// The token ID the name's `tid` template makes of `claims`, if it makes one.
fn tid(entry: &AuthName, claims: &Value) -> Option<String> {
    match entry.tid.as_ref()?.render(&claims_input(claims))? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The token ID a login with `claims` gets: what a revocation by claims
/// (`{"claims": {"sub": "42"}}`) selects. Every claim the `tid` template reads must be
/// given (strict: a missing one makes no token ID, rather than a wrong one).
pub fn tid_of_claims(entry: &AuthName, claims: Map<String, Value>) -> Result<String, String> {
    let Some(template) = &entry.tid else {
        return Err(format!(
            "auth `{}` has no `tid`: its tokens cannot be selected by claims",
            entry.name
        ));
    };
    tid(entry, &Value::Object(claims)).ok_or_else(|| {
        format!(
            "the claims given do not make a token ID: `tid: {}` reads a claim that is missing or null",
            template.source()
        )
    })
}

/// A JWT's `exp` as whole seconds (a fraction is rounded down: the verifier accepted
/// the token until then).
fn exp_seconds(exp: &Value) -> Option<u64> {
    exp.as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn parse(payload: &[u8]) -> Result<AuthRequest, AuthError> {
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AuthError::Malformed(
            "auth request: expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(payload).map_err(|e| AuthError::Malformed(format!("auth request: {e}")))
}

/// What the gateway sends as a cid: a non-empty subject token.
fn valid_cid(cid: &str) -> bool {
    !cid.is_empty()
        && cid.len() <= 256
        && !cid
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

fn claims_input(claims: &Value) -> TemplateInput<'_> {
    TemplateInput {
        cid: None,
        token: crate::template::TokenIn::None,
        params: &[],
        claims: Some(claims),
        value: None,
    }
}

/// The connection token of verified claims.
fn build_token(shape: &TokenShape, claims: &Value) -> Value {
    match shape {
        TokenShape::Claims => claims.clone(),
        TokenShape::Fields(fields) => {
            let input = claims_input(claims);
            let map: Map<String, Value> = fields
                .iter()
                .map(|(k, t)| (k.clone(), t.render(&input).unwrap_or(Value::Null)))
                .collect();
            Value::Object(map)
        }
    }
}

/// The JWT at one place of a request, if it holds one.
fn find<'r>(request: &'r AuthRequest, place: &JwtPlace) -> Option<&'r str> {
    let header = |name: &str| {
        request
            .header
            .as_ref()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    };
    let found = match place {
        JwtPlace::Param(name) => match request.params.as_ref()?.get(name)? {
            Value::String(s) => s.trim(),
            _ => return None,
        },
        JwtPlace::Header(name) => {
            let value = header(name)?;
            match jwt::from_authorization(value) {
                Some(t) => t,
                // Only a bearer token in `Authorization`; another header as it is.
                None if name.eq_ignore_ascii_case("authorization") => return None,
                None => value.trim(),
            }
        }
        JwtPlace::Cookie(name) => request
            .header
            .as_ref()?
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, values)| values)
            .find_map(|v| jwt::from_cookie(v, name))?,
    };
    (!found.is_empty()).then_some(found)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    const SECRET: &[u8] = b"a unit test secret, thirty-two bytes or more";
    const NOW: u64 = 1_800_000_000;

    /// An auth entry named `s` verifying HS256 with [`SECRET`], and `extra` keys.
    fn entry(extra: &str) -> std::sync::Arc<AuthName> {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let yaml = format!(
            "version: 1\nauth:\n  s:\n    jwt: {{ algorithms: [HS256], secret: {{ file: {} }} }}\n{extra}    methods:\n      login: {{ jwt: [params.token, header.X-Token, header.Authorization, cookie.sid] }}\n      out: {{ logout: true }}\nresources: {{}}\n",
            secret.display()
        );
        let config = Config::parse("a.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        config.auth.get("s").unwrap().clone()
    }

    fn jwt(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn login(entry: &AuthName, request: Value) -> Result<Answer, AuthError> {
        answer(entry, "login", request.to_string().as_bytes(), at())
    }

    #[test]
    fn without_a_token_shape_the_token_is_the_claims_and_no_tid() {
        let claims = json!({"sub": "u1", "exp": NOW + 60, "roles": ["a"]});
        let got = login(
            &entry(""),
            json!({"cid": "c1", "params": {"token": jwt(claims.clone())}}),
        );
        assert_eq!(
            got,
            Ok(Answer::Login {
                cid: "c1".into(),
                login: Verified {
                    token: claims,
                    tid: None,
                    expires: Some(NOW + 60),
                    jwt: None
                }
            })
        );
    }

    #[test]
    fn a_token_shape_renders_each_key_and_a_missing_claim_is_null() {
        let e = entry("    token: { id: \"{{claims.sub}}\", name: \"{{claims.name}}\", tag: \"u-{{claims.sub}}\" }\n    tid: \"{{claims.sub}}\"\n    expire: never\n");
        let got = login(
            &e,
            json!({"cid": "c1", "params": {"token": jwt(json!({"sub": 7, "exp": NOW + 60}))}}),
        );
        assert_eq!(
            got,
            Ok(Answer::Login {
                cid: "c1".into(),
                login: Verified {
                    token: json!({"id": 7, "name": null, "tag": "u-7"}),
                    tid: Some("7".into()),
                    expires: None,
                    jwt: None
                }
            })
        );
    }

    #[test]
    fn a_revocation_by_claims_selects_the_tid_a_login_with_them_gets() {
        let e = entry("    tid: \"{{claims.tenant}}/{{claims.sub}}\"\n");
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            tid_of_claims(&e, claims(json!({"sub": 42, "tenant": "t1", "x": [1]}))),
            Ok("t1/42".to_string())
        );
        // The same tid as a login with those claims gets.
        let logged_in = login(
            &e,
            json!({"cid": "c1", "params": {"token": jwt(json!({"sub": 42, "tenant": "t1", "exp": NOW + 60}))}}),
        );
        assert!(
            matches!(logged_in, Ok(Answer::Login { login: Verified { tid: Some(t), .. }, .. }) if t == "t1/42")
        );
        // A claim the template reads is missing: no token ID rather than `t1/`.
        let missing = tid_of_claims(&e, claims(json!({"tenant": "t1"}))).unwrap_err();
        assert!(
            missing.contains("{{claims.tenant}}/{{claims.sub}}"),
            "{missing}"
        );
        // A name without a tid cannot select by claims.
        assert!(tid_of_claims(&entry(""), claims(json!({"sub": 1}))).is_err());
    }

    #[test]
    fn the_first_place_holding_a_token_is_used() {
        let e = entry("");
        let good = jwt(json!({"sub": 1, "exp": NOW + 60}));
        let ok = |header: Value, params: Value| {
            login(&e, json!({"cid": "c1", "params": params, "header": header})).map(|_| ())
        };
        // A parameter that is not a string holds no token; the header is next.
        assert_eq!(ok(json!({"X-Token": [good]}), json!({"token": 5})), Ok(()));
        // Header names in any case.
        assert_eq!(ok(json!({"x-token": [good]}), Value::Null), Ok(()));
        assert_eq!(
            ok(
                json!({"Authorization": [format!("bearer {good}")]}),
                Value::Null
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                json!({"Cookie": ["a=1", format!("sid={good}; b=2")]}),
                Value::Null
            ),
            Ok(())
        );
        // `Authorization` must be a bearer token.
        assert_eq!(
            ok(json!({"Authorization": [good]}), Value::Null),
            Err(AuthError::Missing(
                "params.token or header.X-Token or header.Authorization or cookie.sid".into()
            ))
        );
        // The first place wins, even when a later one holds a valid token.
        let expired = jwt(json!({"sub": 1, "exp": NOW - 60}));
        assert_eq!(
            ok(
                json!({"Cookie": [format!("sid={good}")]}),
                json!({"token": expired})
            ),
            Err(AuthError::Jwt(JwtError::Expired))
        );
    }

    #[test]
    fn malformed_requests_and_unknown_methods_are_refused() {
        let e = entry("");
        let err = |method: &str, payload: &[u8]| answer(&e, method, payload, at()).unwrap_err();
        assert!(matches!(err("nope", b"{}"), AuthError::NoMethod { .. }));
        for payload in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"cid": 5}"#,
            br#"{"params": {}}"#,
        ] {
            assert!(
                matches!(err("out", payload), AuthError::Malformed(_)),
                "{payload:?}"
            );
        }
        for cid in ["", "a.b", "a*", "a b", "a\u{0}"] {
            let payload = json!({ "cid": cid }).to_string();
            assert!(
                matches!(err("out", payload.as_bytes()), AuthError::Malformed(_)),
                "{cid:?}"
            );
        }
        assert_eq!(
            answer(&e, "out", br#"{"cid":"c9","token":{"a":1}}"#, at()),
            Ok(Answer::Logout { cid: "c9".into() })
        );
        assert_eq!(err("login", br#"{"cid":"c1"}"#).reason(), Some("missing"));
    }
}
