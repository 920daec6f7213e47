//! Units of state as the shared store keeps them: which partition a unit belongs to, its
//! key in the key-value bucket, and its value (JSON).
//!
//! Keys: `p.<partition>.c.<cid>` for a connection and `p.<partition>.s.<name>` for a
//! model without a cid, so one subject filter (`p.<partition>.>`) reads a partition.
//! A cid or name is kept as is where it is letters, digits, `-` and `_`; every other
//! byte is written `=XX` (hex), since bucket keys allow only those and `=`, `/`, `.`.
//!
//! Values: `{"token": …, "confirmed": true, "tokens": [digest, …], "token_values":
//! [digest, …], "models": [{"rid": …, "written": {…}}], "granted": […]}` for a connection
//! (`confirmed` only when its token came from a token event or a request, `tokens` the
//! digests of the last token events applied, `token_values` of the tokens they set;
//! records without `token_values`, from an earlier version, read as an empty log;
//! `"expires": <seconds since 1970>` when the token ends, `"tid"` its token ID,
//! `"resume": {"hash": hex, "until": seconds}` its resume key) and
//! `{"written": {…}}` for a model without a cid. A collection's items are kept as
//! `"items": […]` in place of `"written"`, in a model of a connection and in a unit of
//! its own alike. A presence list (a unit of its own: its name has no cid) is kept as
//! `{"members": [{"member": <value>, "conns": ["<cid>", …]}, …], "made_by": <template>}`,
//! its members in join order, each with the connections joined as it (sorted), and the
//! `member` template that made them; when each connection was last seen is not kept (a
//! new owner counts every connection as seen when it loads the list). The cached
//! replies are not kept. A connection's token is written as the canonical text it is
//! kept as ([`Token`]), never parsed for it.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{Connection, Model, Token, TokenLog, Unit, UnitKey, Written};

/// The partition of a unit: of its cid ([`partition_of_cid`]) or of its name
/// ([`partition_of_name`]). The same on every instance and every version: it decides
/// where data lives.
pub fn partition(key: &UnitKey, partitions: u32) -> u32 {
    match key {
        UnitKey::Connection(cid) => partition_of_cid(cid, partitions),
        UnitKey::Shared(rid) => partition_of_name(rid, partitions),
    }
}

pub use ownership::hash::{partition_of_cid, partition_of_name, stable_hash};

/// The bucket key of a unit in its partition.
pub fn key(partition: u32, unit: &UnitKey) -> String {
    let (kind, text) = match unit {
        UnitKey::Connection(cid) => ('c', cid),
        UnitKey::Shared(rid) => ('s', rid),
    };
    let mut out = format!("p.{partition}.{kind}.");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
    out
}

/// The subject filter, relative to the bucket, of every key of a partition.
pub fn partition_filter(partition: u32) -> String {
    format!("p.{partition}.>")
}

/// The unit a bucket key names, if it is a unit's key.
pub fn parse_key(key: &str) -> Option<(u32, UnitKey)> {
    let mut parts = key.splitn(4, '.');
    if parts.next()? != "p" {
        return None;
    }
    let partition = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let text = decode(parts.next()?)?;
    let unit = match kind {
        "c" => UnitKey::Connection(text.into()),
        "s" => UnitKey::Shared(text.into()),
        _ => return None,
    };
    Some((partition, unit))
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A unit's stored value, serialized from the store's own data (nothing cloned: a
/// set's bucket write encodes the whole connection, on the owner's serving task).
pub fn encode(unit: UnitRef) -> Vec<u8> {
    let out = match unit {
        UnitRef::Connection(cid, c) => serde_json::to_vec(&StoredConnection {
            models: Models(cid, &c.models),
            granted: Granted(c.granted()),
            confirmed: c.confirmed,
            tokens: c.tokens().digests(),
            token_values: c.token_values().digests(),
            expires: c.expires,
            tid: c.tid(),
            resume: c.resume().map(|r| StoredResume {
                hash: crate::auth::resume::to_hex(&r.hash),
                until: r.until,
            }),
            jwt: c.jwt(),
        })
        .map(|rest| with_token(c.token.as_ref(), &rest)),
        UnitRef::Shared(w) => serde_json::to_vec(&StoredShared {
            written: WrittenMap(w),
            items: Items(w),
            members: Groups(w),
            made_by: match w {
                Written::Presence(m) => m.made_by(),
                _ => None,
            },
        }),
    };
    out.unwrap_or_default()
}

/// A connection's record: `"token"` (its text, or `null`) first, then the rest.
fn with_token(token: Option<&Token>, rest: &[u8]) -> Vec<u8> {
    let token = token.map_or("null", Token::as_str);
    let mut out = Vec::with_capacity(rest.len() + token.len() + 10);
    out.extend_from_slice(br#"{"token":"#);
    out.extend_from_slice(token.as_bytes());
    match rest.get(1..) {
        // `rest` is an object: `{"models":…}`.
        Some(fields) if fields != b"}" => {
            out.push(b',');
            out.extend_from_slice(fields);
        }
        _ => out.push(b'}'),
    }
    out
}

/// A connection as the bucket keeps it (see the module's head), but for its token,
/// which [`with_token`] puts first; [`decode_unit`] reads it back by key, so the order
/// of keys does not matter.
#[derive(Serialize)]
struct StoredConnection<'a> {
    models: Models<'a>,
    granted: Granted<'a>,
    #[serde(skip_serializing_if = "is_false")]
    confirmed: bool,
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    tokens: &'a [u32],
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    token_values: &'a [u32],
    #[serde(skip_serializing_if = "is_zero")]
    expires: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<StoredResume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<&'a str>,
}

#[derive(Serialize)]
struct StoredResume {
    hash: String,
    until: u32,
}

#[derive(Serialize)]
struct StoredShared<'a> {
    #[serde(skip_serializing_if = "WrittenMap::is_other")]
    written: WrittenMap<'a>,
    #[serde(skip_serializing_if = "Items::is_other")]
    items: Items<'a>,
    #[serde(skip_serializing_if = "Groups::is_other")]
    members: Groups<'a>,
    /// A presence list's `member` template ([`crate::presence::made_by`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    made_by: Option<&'a str>,
}

#[derive(Serialize)]
struct StoredModel<'a> {
    rid: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "WrittenMap::is_other")]
    written: WrittenMap<'a>,
    #[serde(skip_serializing_if = "Items::is_other")]
    items: Items<'a>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A connection's models: `[{"rid": ..., "written": {...}}]` (the connection's cid, then
/// its models).
struct Models<'a>(&'a str, &'a [Model]);

impl Serialize for Models<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.iter().map(|m| StoredModel {
            rid: m.rid(self.0),
            written: WrittenMap(m.written()),
            items: Items(m.written()),
        }))
    }
}

/// The names a connection was granted: `["public.board", ...]`.
struct Granted<'a>(&'a [Box<str>]);

impl Serialize for Granted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|g| &**g))
    }
}

/// Written values: `{"field": value, ...}`.
struct WrittenMap<'a>(&'a Written);

impl Serialize for WrittenMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl WrittenMap<'_> {
    /// Items or members: not field values.
    fn is_other(&self) -> bool {
        !matches!(self.0, Written::Fields(_))
    }
}

/// A collection's items: `[value, ...]`.
struct Items<'a>(&'a Written);

impl Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.items())
    }
}

impl Items<'_> {
    /// Field values or members: not a collection's items.
    fn is_other(&self) -> bool {
        !matches!(self.0, Written::Items(_))
    }
}

/// A presence list's members, each with its connections:
/// `[{"member": value, "conns": ["<cid>", ...]}, ...]`.
struct Groups<'a>(&'a Written);

#[derive(Serialize)]
struct StoredGroup<'a> {
    member: &'a Value,
    conns: Vec<&'a str>,
}

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Written::Presence(m) = self.0 else {
            return s.collect_seq(std::iter::empty::<StoredGroup>());
        };
        s.collect_seq(
            m.groups()
                .into_iter()
                .map(|(member, conns)| StoredGroup { member, conns }),
        )
    }
}

impl Groups<'_> {
    /// Field values or items: not a presence list.
    fn is_other(&self) -> bool {
        !matches!(self.0, Written::Presence(_))
    }
}

/// A stored presence list's members (`"members"`): every connection counts as seen at
/// tick 0 until its new owner says when it loaded it
/// ([`crate::presence::Members::seen_all`]).
fn decode_members(members: &Value) -> Result<Written, String> {
    let members = members.as_array().ok_or("`members` is not an array")?;
    let mut groups = Vec::with_capacity(members.len());
    for g in members {
        let member = g.get("member").ok_or("a member without `member`")?;
        if !member.is_string() {
            return Err("a `member` that is not a string".into());
        }
        let conns = g
            .get("conns")
            .and_then(Value::as_array)
            .ok_or("a member without `conns`")?
            .iter()
            .map(|c| {
                c.as_str()
                    .map(Box::from)
                    .ok_or("a cid that is not a string")
            })
            .collect::<Result<Vec<Box<str>>, _>>()?;
        groups.push((member.clone(), conns));
    }
    Ok(Written::Presence(Box::new(
        crate::presence::Members::from_groups(groups, 0),
    )))
}

/// A unit to encode, borrowed from the store.
#[derive(Debug, Clone, Copy)]
pub enum UnitRef<'a> {
    /// A connection, and its cid.
    Connection(&'a str, &'a Connection),
    Shared(&'a Written),
}

/// Reads a unit's stored value.
pub fn decode_unit(key: &UnitKey, value: &[u8]) -> Result<Unit, String> {
    let value: Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    // `items` (a collection's) or `written` (a model's) of a stored model.
    let written = |m: &Value| -> Result<Written, String> {
        if let Some(members) = m.get("members") {
            let mut list = decode_members(members)?;
            if let Some(by) = m.get("made_by").and_then(Value::as_str) {
                list.members_mut().set_made_by(by);
            }
            return Ok(list);
        }
        if let Some(items) = m.get("items") {
            let items = items.as_array().ok_or("`items` is not an array")?;
            return Ok(Written::Items(items.clone()));
        }
        let mut out = Written::default();
        match m.get("written") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (f, v) in map {
                    out.insert(f, v.clone());
                }
            }
            Some(_) => return Err("`written` is not an object".into()),
        }
        Ok(out)
    };
    Ok(match key {
        UnitKey::Shared(_) => Unit::Shared(written(&value)?),
        UnitKey::Connection(cid) => {
            let token = match value.get("token") {
                None | Some(Value::Null) => None,
                Some(t) => Some(Token::new(t)),
            };
            let mut models = Vec::new();
            for m in value
                .get("models")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let rid = m
                    .get("rid")
                    .and_then(Value::as_str)
                    .ok_or("a model without `rid`")?;
                let mut model = Model::new(rid, cid);
                *model.written_mut() = written(m)?;
                models.push(model);
            }
            let granted = value
                .get("granted")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(Box::from)
                .collect();
            let log = |key: &str| {
                TokenLog::from_digests(
                    value
                        .get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .map(|d| d as u32),
                )
            };
            let tokens = log("tokens");
            let token_values = log("token_values");
            let mut c = Connection {
                token,
                confirmed: value.get("confirmed") == Some(&Value::Bool(true)),
                models,
                expires: value
                    .get("expires")
                    .and_then(Value::as_u64)
                    .and_then(|e| u32::try_from(e).ok())
                    .unwrap_or(0),
                session: session(&value),
                ..Connection::default()
            };
            c.set_logs(granted, tokens, token_values);
            Unit::Connection(c)
        }
    })
}

/// What a stored connection says of its session (`tid`, `resume`, `jwt`), if anything.
fn session(value: &Value) -> Option<Box<super::Session>> {
    let session = super::Session {
        tid: value.get("tid").and_then(Value::as_str).map(Box::from),
        resume: value.get("resume").and_then(|r| {
            let hash = crate::auth::resume::from_hex(r.get("hash")?.as_str()?)?;
            let until = u32::try_from(r.get("until")?.as_u64()?).ok()?;
            Some(super::ResumeKept { hash, until })
        }),
        jwt: value.get("jwt").and_then(Value::as_str).map(Box::from),
    };
    (session != super::Session::default()).then(|| Box::new(session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_round_trip_and_stay_within_the_bucket_alphabet() {
        for (unit, text) in [
            (UnitKey::Connection("c1-x_Y".into()), "p.7.c.c1-x_Y"),
            (
                UnitKey::Shared("public.board".into()),
                "p.7.s.public=2Eboard",
            ),
            (UnitKey::Connection("é=.".into()), "p.7.c.=C3=A9=3D=2E"),
        ] {
            let k = key(7, &unit);
            assert_eq!(k, text);
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)));
            assert_eq!(parse_key(&k), Some((7, unit)));
        }
        assert_eq!(parse_key("lease.3"), None);
        assert_eq!(parse_key("p.x.c.a"), None);
        assert_eq!(parse_key("p.1.c.=Z1"), None);
    }

    #[test]
    fn a_connection_is_stored_as_the_format_says() {
        let mut c = Connection {
            token: Some(Token::new(&json!({"userId": 7}))),
            expires: 1_800_000_000,
            ..Connection::default()
        };
        c.model_mut("c1", "session.prefs.c1")
            .written_mut()
            .insert("theme", json!("dark"));
        c.model_mut("c1", "session.recent.c1")
            .written_mut()
            .items_mut()
            .extend([json!("a"), json!("b")]);
        c.grant("public.board");
        c.log_token(5);
        let stored: Value = serde_json::from_slice(&encode(UnitRef::Connection("c1", &c))).unwrap();
        assert_eq!(
            stored,
            json!({
                "token": {"userId": 7},
                "models": [
                    {"rid": "session.prefs.c1", "written": {"theme": "dark"}},
                    {"rid": "session.recent.c1", "items": ["a", "b"]},
                ],
                "granted": ["public.board"],
                "tokens": [5],
                "expires": 1_800_000_000u32,
            })
        );
        let logged_out = Connection::default();
        let stored: Value =
            serde_json::from_slice(&encode(UnitRef::Connection("c1", &logged_out))).unwrap();
        assert_eq!(stored, json!({"token": null, "models": [], "granted": []}));
        let mut w = Written::default();
        w.insert("title", json!("hi"));
        let stored: Value = serde_json::from_slice(&encode(UnitRef::Shared(&w))).unwrap();
        assert_eq!(stored, json!({"written": {"title": "hi"}}));
        let items = Written::Items(vec![json!(1), json!(2)]);
        let stored: Value = serde_json::from_slice(&encode(UnitRef::Shared(&items))).unwrap();
        assert_eq!(stored, json!({"items": [1, 2]}));
        let key = UnitKey::Shared("public.list".into());
        assert_eq!(
            decode_unit(&key, &encode(UnitRef::Shared(&items))),
            Ok(Unit::Shared(items))
        );
    }

    #[test]
    fn connections_round_trip_with_their_token_log_and_without_cached_replies() {
        let mut c = Connection {
            token: Some(Token::new(&json!({"userId": 7}))),
            confirmed: true,
            expires: 1_800_000_000,
            session: Some(Box::new(crate::store::Session {
                tid: Some("u7".into()),
                resume: Some(crate::store::ResumeKept {
                    hash: [3; 32],
                    until: 1_800_000_600,
                }),
                jwt: Some("a.b.c".into()),
            })),
            ..Connection::default()
        };
        c.model_mut("c1", "session.prefs.c1")
            .written_mut()
            .insert("theme", json!("dark"));
        c.model_mut("c1", "session.user.c1")
            .set_reply(1, bytes::Bytes::from_static(b"x"));
        *c.model_mut("c1", "session.recent.c1").written_mut() = Written::Items(vec![json!("a")]);
        c.grant("public.board");
        c.log_token(7);
        c.log_token(4_000_000_000);
        c.log_token_value(9);
        let key = UnitKey::Connection("c1".into());
        let Unit::Connection(back) =
            decode_unit(&key, &encode(UnitRef::Connection("c1", &c))).unwrap()
        else {
            panic!("not a connection")
        };
        assert!(!back.model("c1", "session.user.c1").unwrap().has_reply());
        assert_eq!(back.tokens().digests(), &[7, 4_000_000_000]);
        assert_eq!(back.token_values().digests(), &[9]);
        assert_eq!(back.expires, 1_800_000_000, "when the token ends");
        assert_eq!(back, c);
        c.confirmed = false;
        let Unit::Connection(back) =
            decode_unit(&key, &encode(UnitRef::Connection("c1", &c))).unwrap()
        else {
            panic!("not a connection")
        };
        assert!(!back.confirmed, "a record loaded as it was");
    }

    #[test]
    fn a_record_the_parsed_token_version_wrote_loads() {
        // Written by 513a2c2 (the token kept parsed), keys as its map ordered them.
        let old = br#"{"token":{"name":"Ann","role":"admin","userId":7},"models":[{"rid":"session.prefs.c1","written":{"theme":"dark"}}],"granted":[],"confirmed":true,"tokens":[5]}"#;
        let key = UnitKey::Connection("c1".into());
        let Unit::Connection(back) = decode_unit(&key, old).unwrap() else {
            panic!("not a connection")
        };
        let token = back.token.as_ref().unwrap();
        assert_eq!(
            token.as_str(),
            r#"{"name":"Ann","role":"admin","userId":7}"#
        );
        assert_eq!(token.claim("userId"), Some(json!(7)));
        assert!(back.confirmed);
        // Written again, it is the same record.
        let again: Value =
            serde_json::from_slice(&encode(UnitRef::Connection("c1", &back))).unwrap();
        assert_eq!(again, serde_json::from_slice::<Value>(old).unwrap());
    }

    #[test]
    fn the_token_log_keeps_the_last_distinct_digests() {
        let mut log = TokenLog::default();
        assert!(log.push(1));
        assert!(!log.push(1), "a repeat of the last is not added");
        assert!(log.push(2));
        assert!(log.push(1));
        assert_eq!(log.digests(), &[1, 2, 1]);
        for d in 10..40 {
            log.push(d);
        }
        assert_eq!(log.digests().len(), crate::store::TOKEN_LOG);
        assert_eq!(*log.digests().last().unwrap(), 39);
    }

    #[test]
    fn a_presence_list_is_stored_as_its_members_with_their_connections() {
        let mut w = Written::default();
        let m = w.members_mut();
        m.join("c2", json!("ann"), 5, 10).unwrap();
        m.join("c9", json!("bob"), 6, 10).unwrap();
        m.join("c1", json!("ann"), 7, 10).unwrap();
        let stored: Value = serde_json::from_slice(&encode(UnitRef::Shared(&w))).unwrap();
        assert_eq!(
            stored,
            json!({"members": [
                {"member": "ann", "conns": ["c1", "c2"]},
                {"member": "bob", "conns": ["c9"]},
            ]})
        );
        // With the template that made its members, kept beside them.
        w.members_mut().set_made_by("{{token.name}}");
        let stored: Value = serde_json::from_slice(&encode(UnitRef::Shared(&w))).unwrap();
        assert_eq!(stored["made_by"], json!("{{token.name}}"));
        // Read back, every connection is seen at 0 until its loader says when it
        // loaded it; otherwise the same list.
        let key = UnitKey::Shared("chat.room.r1.members".into());
        let Unit::Shared(Written::Presence(mut back)) =
            decode_unit(&key, &encode(UnitRef::Shared(&w))).unwrap()
        else {
            panic!("not a presence list")
        };
        assert_eq!(back.oldest(), Some(0));
        back.seen_all(7);
        let Written::Presence(m) = &mut w else {
            unreachable!()
        };
        m.seen_all(7);
        assert_eq!(*back, **m);
        for bad in [
            r#"{"members": 3}"#,
            r#"{"members": [{"conns": ["c1"]}]}"#,
            r#"{"members": [{"member": "ann"}]}"#,
            r#"{"members": [{"member": 5, "conns": ["c1"]}]}"#,
            r#"{"members": [{"member": "ann", "conns": [1]}]}"#,
        ] {
            assert!(decode_unit(&key, bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn shared_models_round_trip_and_bad_values_are_errors() {
        let mut w = Written::default();
        w.insert("n", json!(3));
        let key = UnitKey::Shared("public.board".into());
        assert_eq!(
            decode_unit(&key, &encode(UnitRef::Shared(&w))).unwrap(),
            Unit::Shared(w)
        );
        assert!(decode_unit(&key, b"nope").is_err());
        assert!(decode_unit(&key, br#"{"written": 3}"#).is_err());
    }
}
