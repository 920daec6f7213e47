//! The RES wire format: typed views of inbound request payloads, and the encoders for
//! replies, events and system resets. The one place where errors become RES error codes.

use std::borrow::Cow;

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use serde_json::Value;

use crate::field::{FieldDef, ResValue};

mod auth;
mod scan;

pub use auth::{
    resume_reply, taken_reply, token_event, token_reset, RevokeRequest, Taken, TokenExtras,
};

/// A RES error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidParams(String),
    #[error("{0}")]
    MethodNotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Internal(String),
    /// An auth request's token was missing or refused: `reason` says why (documented
    /// codes), the message in words. Never the token itself.
    #[error("{message}")]
    InvalidToken {
        reason: &'static str,
        message: String,
    },
    /// A resume key that is missing, malformed, used, expired or not the connection's.
    #[error("{0}")]
    InvalidResumeKey(String),
    /// Too many failed attempts from one connection.
    #[error("{0}")]
    TooManyAttempts(String),
}

/// The error code of a refused resume key.
pub const INVALID_RESUME_KEY: &str = "connres.invalidResumeKey";
/// The error code of a connection past its failed attempts.
pub const TOO_MANY_ATTEMPTS: &str = "connres.tooManyAttempts";

/// The error code of a refused auth token (not a `system.` code: RES reserves those).
pub const INVALID_TOKEN: &str = "connres.invalidToken";

impl ResError {
    /// The RES error code.
    pub fn code(&self) -> &'static str {
        match self {
            ResError::NotFound(_) => "system.notFound",
            ResError::InvalidParams(_) => "system.invalidParams",
            ResError::MethodNotFound(_) => "system.methodNotFound",
            ResError::AccessDenied(_) => "system.accessDenied",
            ResError::Internal(_) => "system.internalError",
            ResError::InvalidToken { .. } => INVALID_TOKEN,
            ResError::InvalidResumeKey(_) => INVALID_RESUME_KEY,
            ResError::TooManyAttempts(_) => TOO_MANY_ATTEMPTS,
        }
    }

    /// `{"error": {"code": ..., "message": ...}}`
    pub fn reply(&self) -> Bytes {
        #[derive(serde::Serialize)]
        struct Data {
            reason: &'static str,
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            code: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<Data>,
        }
        #[derive(serde::Serialize)]
        struct Reply<'a> {
            error: Body<'a>,
        }
        to_bytes(&Reply {
            error: Body {
                code: self.code(),
                message: self.to_string(),
                data: match self {
                    ResError::InvalidToken { reason, .. } => Some(Data { reason }),
                    _ => None,
                },
            },
        })
    }
}

/// The payload of an `access.<rid>` request.
#[derive(Debug, Deserialize)]
pub struct AccessRequest<'a> {
    #[serde(borrow)]
    pub cid: Cow<'a, str>,
    #[serde(default)]
    pub token: Option<Value>,
    #[serde(default, borrow)]
    pub query: Option<Cow<'a, str>>,
}

/// An access request's payload read without building its token: whether it carries
/// one (not null) is all most requests need. It accepts and refuses exactly what
/// [`AccessRequest`] does, with the same errors.
#[derive(Debug, Deserialize)]
pub struct AccessHead<'a> {
    #[serde(borrow)]
    pub cid: Cow<'a, str>,
    #[serde(default)]
    pub token: Option<Skip>,
    #[serde(default, borrow)]
    pub query: Option<Cow<'a, str>>,
}

/// Reads an access request's head: the usual payload by a hand-written scan, anything
/// else (escapes, unusual numbers, deep nesting, every malformed payload) by serde, so
/// results and error messages are exactly [`parse`]'s.
pub fn access_head(payload: &[u8]) -> Result<AccessHead<'_>, ResError> {
    match scan::access_head(payload) {
        Some(head) => Ok(head),
        None => parse(payload, "access request"),
    }
}

/// Reads a call request's head as [`access_head`] reads an access request's: the usual
/// payload by the scan (its `params` by serde, from their own bytes), anything else by
/// serde, so results and error messages are exactly [`parse`]'s.
pub fn call_head(payload: &[u8]) -> Result<CallHead<'_>, ResError> {
    match scan::call_head(payload) {
        Some(head) => Ok(head),
        None => parse(payload, "call request"),
    }
}

/// The requester's cid in an access or call payload, if it names one (which units a
/// request reads, known before it is handled).
pub fn requester(payload: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Requester<'a> {
        #[serde(borrow)]
        cid: Cow<'a, str>,
    }
    match scan::access_head(payload) {
        Some(head) => Some(head.cid),
        None => serde_json::from_slice::<Requester>(payload)
            .ok()
            .map(|r| r.cid),
    }
}

/// A call request's payload read without building its token (see [`AccessHead`]).
#[derive(Debug, Deserialize)]
pub struct CallHead<'a> {
    #[serde(borrow)]
    pub cid: Cow<'a, str>,
    #[serde(default)]
    pub token: Option<Skip>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default, borrow)]
    pub query: Option<Cow<'a, str>>,
}

/// The token of a request payload already checked by its head (such as [`AccessHead`]).
#[derive(Debug, Deserialize)]
pub struct TokenOf {
    #[serde(default)]
    pub token: Option<Value>,
}

/// A JSON value read through and dropped: checked as a [`Value`] would be (the same
/// nesting limit, the same errors), without building anything.
#[derive(Debug)]
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> serde::de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// The payload of a `call.<rid>.<method>` request.
#[derive(Debug, Deserialize)]
pub struct CallRequest<'a> {
    #[serde(borrow)]
    pub cid: Cow<'a, str>,
    #[serde(default)]
    pub token: Option<Value>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default, borrow)]
    pub query: Option<Cow<'a, str>>,
}

/// The payload of a `conn.<cid>.token` event. `token` is `None` when the key is
/// missing (a malformed event) and `Some(Value::Null)` for a logout. `expires`, which
/// RES does not define (Resgate ignores it), is when the token ends, in seconds since
/// 1970: then connres logs the connection out ([`TokenEvent::expires_at`]).
#[derive(Debug, Deserialize)]
pub struct TokenEvent {
    #[serde(default, deserialize_with = "present")]
    pub token: Option<Value>,
    #[serde(default)]
    pub expires: Option<Value>,
    /// The token ID (RES: for `system.tokenReset`).
    #[serde(default)]
    pub tid: Option<Value>,
    /// The connection's resume key, as connres keeps it (`{"hash": hex, "until":
    /// seconds since 1970}`); not RES: connres's logins set it.
    #[serde(default)]
    pub resume: Option<Value>,
    /// The JWT the connection logged in with (not RES: connres's logins set it for a
    /// `recheck` method).
    #[serde(default)]
    pub jwt: Option<Value>,
}

impl TokenEvent {
    /// The JWT kept for a recheck, when it is a string of a JWT's size.
    pub fn jwt(&self) -> Option<&str> {
        self.jwt
            .as_ref()?
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= crate::auth::jwt::MAX_TOKEN_LEN)
    }

    /// The token ID, when it is a string.
    pub fn tid(&self) -> Option<&str> {
        self.tid
            .as_ref()?
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= 256)
    }

    /// The resume key's hash and end, when well formed.
    pub fn resume(&self) -> Option<([u8; 32], u32)> {
        let r = self.resume.as_ref()?;
        let hash = crate::auth::resume::from_hex(r.get("hash")?.as_str()?)?;
        let until = u32::try_from(r.get("until")?.as_u64()?).ok()?;
        Some((hash, until))
    }

    /// `expires` as seconds since 1970, when it is a whole number that fits (else the
    /// token does not end).
    pub fn expires_at(&self) -> Option<u32> {
        let e = self.expires.as_ref()?.as_u64()?;
        u32::try_from(e).ok().filter(|e| *e > 0)
    }
}

/// Reads a key that is present, even as `null`, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The payload of a backend `<prefix>.set.<rid>` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSetRequest {
    pub values: serde_json::Map<String, Value>,
}

/// Parses a request payload, answering `system.invalidParams` when it is not the
/// expected JSON object.
pub fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8], what: &str) -> Result<T, ResError> {
    if payload.is_empty() {
        return Err(ResError::InvalidParams(format!(
            "{what}: empty payload, expected a JSON object"
        )));
    }
    // serde reads a struct from a JSON array too (`[cid, token]`); RES payloads are
    // objects only.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ResError::InvalidParams(format!(
            "{what}: expected a JSON object"
        )));
    }
    serde_json::from_slice(payload).map_err(|e| ResError::InvalidParams(format!("{what}: {e}")))
}

/// True when the payload is a JSON object (checked before anything else in a call).
pub fn is_json_object(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
        && payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A model as RES values, field by field.
pub struct ModelView<'a> {
    pub fields: &'a [FieldDef],
    pub values: &'a [Value],
}

impl Serialize for ModelView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (f, v) in self.fields.iter().zip(self.values) {
            map.serialize_entry(&f.name, &ResValue(f.ty, v))?;
        }
        map.end()
    }
}

/// The changed fields of a model, for a change event.
pub struct Changes<'a> {
    pub fields: &'a [FieldDef],
    pub values: &'a [Value],
    pub changed: &'a [usize],
}

impl Serialize for Changes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.changed.len()))?;
        for &i in self.changed {
            let f = &self.fields[i];
            map.serialize_entry(&f.name, &ResValue(f.ty, &self.values[i]))?;
        }
        map.end()
    }
}

/// `{"result": {"model": {...}}}`
pub fn model_reply(model: &ModelView) -> Bytes {
    #[derive(serde::Serialize)]
    struct Result<'a, 'b> {
        model: &'a ModelView<'b>,
    }
    result_reply(&Result { model })
}

/// `{"result": {"get": ..., "call": ...}}`
pub fn access_reply(get: bool, call: Option<&str>) -> Bytes {
    // The usual answers, encoded once.
    match (get, call) {
        (true, None) => return Bytes::from_static(br#"{"result":{"get":true}}"#),
        (false, None) => return Bytes::from_static(br#"{"result":{"get":false}}"#),
        (true, Some("*")) => return Bytes::from_static(br#"{"result":{"get":true,"call":"*"}}"#),
        (false, Some("*")) => return Bytes::from_static(br#"{"result":{"get":false,"call":"*"}}"#),
        _ => {}
    }
    #[derive(serde::Serialize)]
    struct Result<'a> {
        get: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<&'a str>,
    }
    result_reply(&Result { get, call })
}

/// `{"result": null}`
pub fn null_reply() -> Bytes {
    Bytes::from_static(b"{\"result\":null}")
}

pub(crate) fn result_reply<T: Serialize>(result: &T) -> Bytes {
    #[derive(serde::Serialize)]
    struct Reply<'a, T> {
        result: &'a T,
    }
    to_bytes(&Reply { result })
}

/// `event.<rid>.change` with `{"values": {...}}`.
pub fn change_event(rid: &str, changes: &Changes) -> (String, Bytes) {
    #[derive(serde::Serialize)]
    struct Event<'a, 'b> {
        values: &'a Changes<'b>,
    }
    (
        event_subject(rid, "change"),
        to_bytes(&Event { values: changes }),
    )
}

/// `{"result": {"collection": [...]}}`
pub fn collection_reply(item: &FieldDef, items: &[Value]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Result<'a> {
        collection: crate::collection::ItemsView<'a>,
    }
    result_reply(&Result {
        collection: crate::collection::ItemsView { item, items },
    })
}

/// `event.<rid>.add` with `{"value": ..., "idx": n}`.
pub fn add_event(rid: &str, item: &FieldDef, value: &Value, idx: usize) -> (String, Bytes) {
    (
        event_subject(rid, "add"),
        to_bytes(&crate::collection::AddEvent { item, value, idx }),
    )
}

/// `event.<rid>.remove` with `{"idx": n}`.
pub fn remove_event(rid: &str, idx: usize) -> (String, Bytes) {
    #[derive(serde::Serialize)]
    struct Event {
        idx: usize,
    }
    (event_subject(rid, "remove"), to_bytes(&Event { idx }))
}

/// `event.<rid>.reaccess`, no payload.
pub fn reaccess_event(rid: &str) -> (String, Bytes) {
    (event_subject(rid, "reaccess"), Bytes::new())
}

/// `event.<rid>.<event>`, in one allocation of its size (no formatting machinery).
fn event_subject(rid: &str, event: &str) -> String {
    let mut subject = String::with_capacity("event..".len() + rid.len() + event.len());
    subject.push_str("event.");
    subject.push_str(rid);
    subject.push('.');
    subject.push_str(event);
    subject
}

/// `system.reset` with gateway patterns.
pub fn system_reset(resources: &[String], access: &[String]) -> (String, Bytes) {
    #[derive(serde::Serialize)]
    struct Reset<'a> {
        resources: &'a [String],
        access: &'a [String],
    }
    (
        "system.reset".to_string(),
        to_bytes(&Reset { resources, access }),
    )
}

/// How many bytes `value` takes as compact JSON, counted without making the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The error of a request whose token is over `state.max_token_bytes`.
pub fn token_too_big(len: usize, max: usize) -> ResError {
    ResError::InvalidParams(format!(
        "the token is {len} bytes of JSON, over state.max_token_bytes ({max})"
    ))
}

/// The error of a request over the most connres reads, refused unread.
pub fn payload_too_big(len: usize, max: usize) -> ResError {
    ResError::InvalidParams(format!(
        "the request is {len} bytes, over the most connres reads ({max}: twice state.max_token_bytes plus 256 KiB, or twice state.max_value_bytes when more); nothing of it was read"
    ))
}

/// Why a write of a value over `state.max_value_bytes` is refused; `what` names the
/// value (``the value of `bio` ``, `the item`).
pub fn value_too_big(what: &str, len: usize, max: usize) -> String {
    format!("{what} is {len} bytes of JSON, over state.max_value_bytes ({max})")
}

pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing these types into a Vec cannot fail: all keys are strings.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_replies_carry_codes() {
        let r = ResError::AccessDenied("no".into()).reply();
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "system.accessDenied", "message": "no"}})
        );
    }

    #[test]
    fn parses_access_payloads() {
        let p = br#"{"cid":"c1","token":{"a":1},"query":"x=1","isHttp":false}"#;
        let r: AccessRequest = parse(p, "access").unwrap();
        assert_eq!(r.cid, "c1");
        assert_eq!(r.token, Some(json!({"a": 1})));
        assert_eq!(r.query.as_deref(), Some("x=1"));
        let r: AccessRequest = parse(br#"{"cid":"c1","token":null}"#, "access").unwrap();
        assert_eq!(r.token, None);
        assert!(parse::<AccessRequest>(b"", "access").is_err());
        assert!(parse::<AccessRequest>(b"{}", "access").is_err());
        assert!(parse::<AccessRequest>(b"[1]", "access").is_err());
        assert!(parse::<AccessRequest>(br#"["c1", {"a": 1}]"#, "access").is_err());
        assert!(parse::<TokenEvent>(b"[1]", "token").is_err());
        let missing: TokenEvent = parse(br#"{"tid":"t1"}"#, "token").unwrap();
        assert_eq!(missing.token, None);
        let logout: TokenEvent = parse(br#"{"token":null}"#, "token").unwrap();
        assert_eq!(logout.token, Some(Value::Null));
    }

    #[test]
    fn json_object_check() {
        assert!(is_json_object(b" {\"a\":1}"));
        assert!(!is_json_object(b"[1]"));
        assert!(!is_json_object(b""));
        assert!(!is_json_object(b"{bad"));
    }

    #[test]
    fn the_access_head_accepts_and_refuses_what_the_request_does() {
        let deep = format!(
            r#"{{"cid":"c1","token":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for p in [
            r#"{"cid":"c1","token":{"a":[1,{"b":null}],"c":"\u00e9"},"query":"x=1","isHttp":false}"#,
            r#"{"cid":"c1","token":null}"#,
            r#"{"cid":"c1"}"#,
            r#"{"cid":"c1","token":{"a":}"#,
            r#"{"cid":"c1","token":"\ud800"}"#,
            r#"{"token":{}}"#,
            r#"{"cid":1}"#,
            deep.as_str(),
        ] {
            let full = parse::<AccessRequest>(p.as_bytes(), "access request");
            let head = parse::<AccessHead>(p.as_bytes(), "access request");
            match (&full, &head) {
                (Ok(f), Ok(h)) => {
                    assert_eq!(f.cid, h.cid);
                    assert_eq!(f.query, h.query);
                    assert_eq!(f.token.is_some(), h.token.is_some(), "{p}");
                    let t: TokenOf = parse(p.as_bytes(), "access request").unwrap();
                    assert_eq!(t.token, f.token);
                }
                (Err(f), Err(h)) => assert_eq!(f, h, "{p}"),
                _ => panic!("{p}: {full:?} but {head:?}"),
            }
        }
    }

    #[test]
    fn the_call_head_accepts_and_refuses_what_the_request_does() {
        let deep = format!(
            r#"{{"cid":"c1","token":{}1{}}}"#,
            "{\"a\":".repeat(150),
            "}".repeat(150)
        );
        for p in [
            r#"{"cid":"c1","token":{"a":[1,{"b":null}]},"params":{"theme":"dark"},"query":"q"}"#,
            r#"{"cid":"c1","token":null,"params":null}"#,
            r#"{"cid":"c1","params":[1]}"#,
            r#"{"cid":"c1","token":[1,}"#,
            r#"{"params":{}}"#,
            r#"[1]"#,
            "",
            deep.as_str(),
        ] {
            let full = parse::<CallRequest>(p.as_bytes(), "call request");
            let head = parse::<CallHead>(p.as_bytes(), "call request");
            match (&full, &head) {
                (Ok(f), Ok(h)) => {
                    assert_eq!((&f.cid, &f.params, &f.query), (&h.cid, &h.params, &h.query));
                    assert_eq!(f.token.is_some(), h.token.is_some(), "{p}");
                    let t: TokenOf = parse(p.as_bytes(), "call request").unwrap();
                    assert_eq!(t.token, f.token);
                }
                (Err(f), Err(h)) => assert_eq!(f, h, "{p}"),
                _ => panic!("{p}: {full:?} but {head:?}"),
            }
        }
    }

    #[test]
    fn event_subjects() {
        let changes = Changes {
            fields: &[],
            values: &[],
            changed: &[],
        };
        let (subject, payload) = change_event("session.user.c1", &changes);
        assert_eq!(subject, "event.session.user.c1.change");
        assert_eq!(&payload[..], br#"{"values":{}}"#);
        assert_eq!(reaccess_event("a.b").0, "event.a.b.reaccess");
    }

    #[test]
    fn access_reply_shape() {
        let v: Value = serde_json::from_slice(&access_reply(true, Some("*"))).unwrap();
        assert_eq!(v, json!({"result": {"get": true, "call": "*"}}));
        let v: Value = serde_json::from_slice(&access_reply(false, None)).unwrap();
        assert_eq!(v, json!({"result": {"get": false}}));
        for get in [true, false] {
            for call in [None, Some("*"), Some("set"), Some("set,reset")] {
                let v: Value = serde_json::from_slice(&access_reply(get, call)).unwrap();
                let mut want = json!({"result": {"get": get}});
                if let Some(c) = call {
                    want["result"]["call"] = json!(c);
                }
                assert_eq!(v, want);
            }
        }
    }
}
