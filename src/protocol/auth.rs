//! The wire shapes of sessions (the `auth:` block): what connres's token events carry
//! beside the token, a login's and a resume's answers, the take of a resume, and a
//! revocation's request and `system.tokenReset`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::{result_reply, to_bytes};

/// What a token event says beside the token (see [`TokenEvent`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenExtras {
    pub tid: Option<String>,
    /// When the token ends, in seconds since 1970.
    pub expires: Option<u64>,
    /// The resume key's hash and end.
    pub resume: Option<([u8; 32], u32)>,
    /// The JWT the connection logged in with, kept for a `recheck` method.
    pub jwt: Option<String>,
}

/// A `conn.<cid>.token` event: `{"token": ..., "tid": ..., "expires": ..., "resume":
/// ..., "jwt": ...}` (a logout: a null token and nothing else; see [`TokenEvent`]).
pub fn token_event(cid: &str, token: &Value, extras: &TokenExtras) -> (String, Bytes) {
    #[derive(serde::Serialize)]
    struct Resume {
        hash: String,
        until: u32,
    }
    #[derive(serde::Serialize)]
    struct Event<'a> {
        token: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        tid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
        #[serde(skip_serializing_if = "Option::is_none")]
        jwt: Option<&'a str>,
    }
    let event = Event {
        token,
        tid: extras.tid.as_deref(),
        expires: extras.expires,
        resume: extras.resume.map(|(hash, until)| Resume {
            hash: crate::auth::resume::to_hex(&hash),
            until,
        }),
        jwt: extras.jwt.as_deref(),
    };
    (format!("conn.{cid}.token"), to_bytes(&event))
}

/// `{"result": {"resume": key}}`: a login's or resume's answer with the connection's
/// resume key.
pub fn resume_reply(key: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Result<'a> {
        resume: &'a str,
    }
    result_reply(&Result { resume: key })
}

/// The answer to a take of a resume: `{"result": {"token": ..., "tid": ...,
/// "expires": ..., "jwt": ..., "models": {rid: {field: value}}}}`, a collection's
/// items as `rid: [item, ...]` (RES values, in order).
pub fn taken_reply(
    token: &Value,
    extras: &TokenExtras,
    models: &serde_json::Map<String, Value>,
) -> Bytes {
    #[derive(serde::Serialize)]
    struct Taken<'a> {
        token: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        tid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        jwt: Option<&'a str>,
        models: &'a serde_json::Map<String, Value>,
    }
    result_reply(&Taken {
        token,
        tid: extras.tid.as_deref(),
        expires: extras.expires,
        jwt: extras.jwt.as_deref(),
        models,
    })
}

/// What a take of a resume answers (see [`taken_reply`]).
#[derive(Debug, Deserialize)]
pub struct Taken {
    pub token: Value,
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub expires: Option<u64>,
    #[serde(default)]
    pub jwt: Option<String>,
    #[serde(default)]
    pub models: serde_json::Map<String, Value>,
}

/// `system.tokenReset`: gateways send an auth request to `subject` for each connection
/// whose token has one of `tids`.
pub fn token_reset(tids: &[String], subject: &str) -> (String, Bytes) {
    #[derive(serde::Serialize)]
    struct Reset<'a> {
        tids: &'a [String],
        subject: &'a str,
    }
    (
        "system.tokenReset".to_string(),
        to_bytes(&Reset { tids, subject }),
    )
}

/// The payload of a backend `<prefix>.revoke.<name>` request: token IDs, or claims
/// from which the name's `tid` template makes one (`{"claims": {"sub": "42"}}`), or
/// both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub tids: Vec<String>,
    #[serde(default)]
    pub claims: Option<serde_json::Map<String, Value>>,
}
