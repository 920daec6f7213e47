//! Isolation property: under the shipped `resources.yaml`, a connection never reads or
//! writes another connection's model.
//!
//! Random sequences of token events, access and call requests, backend writes and gets,
//! over a few connections with look-alike IDs, run through one engine. Beside it runs a
//! shadow: per connection, its token and whether it is confirmed, the resources it is
//! known to hold, and the written values of its models. The shadow changes a model only
//! through its own connection's token, its own connection's calls and backend writes
//! to its names. Every reply, every event and every get must match the shadow, and
//! on top of that:
//!
//! - (a) an access by A to B's model never grants `get` or any `call`;
//! - (b) a call by A on B's model never succeeds and publishes nothing for B;
//! - (c) no access or call by A publishes any event for a model of another connection;
//! - (d) B's model, read by a get at any point and at the end, is the shadow's, which
//!   no operation of A changes.
//!
//! The `session.user` model is derived from the token alone; its expected values come
//! from a fresh engine that has seen only the owner's current token. The written
//! models (`session.prefs`, `session.status`) are computed by the shadow itself from
//! the field rules of the shipped file (which the test checks it matches).
//!
//! Needs no NATS. Deterministic by default; `PROPTEST_CASES` and `PROPTEST_RNG_SEED`
//! widen or vary the search.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use connres::config::Config;
use connres::engine::{Engine, Request};
use connres::field::Writable;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as PropConfig, RngSeed, TestRunner};
use serde_json::{json, Map, Value};

/// Connections that own models: look-alikes of each other (prefix, case, non-ASCII).
const OWNERS: &[&str] = &["c1", "c10", "C1", "c1-ü_Ω"];
/// Connections that make requests: the owners, and one that owns nothing.
const REQUESTERS: &[&str] = &["c1", "c10", "C1", "c1-ü_Ω", ""];
/// The shipped resources, by the middle part of their pattern `session.<kind>.{cid}`.
const KINDS: &[&str] = &["user", "prefs", "status"];
/// Names that no shipped pattern matches.
const UNMATCHED: &[&str] = &[
    "session.prefs",
    "session.user.c1.x",
    "session.other.c1",
    "session.user.",
    "session..c1",
    "user.c1",
];

fn shipped() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources.yaml");
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------ the shipped fields

/// A written field of the shipped file, as the shadow validates it.
struct FieldSpec {
    name: &'static str,
    ty: &'static str,
    default: Value,
    writable: bool,
    one_of: Option<Vec<Value>>,
    min: Option<f64>,
    max: Option<f64>,
    max_length: Option<usize>,
}

fn field(name: &'static str, ty: &'static str, default: Value, writable: bool) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        default,
        writable,
        one_of: None,
        min: None,
        max: None,
        max_length: None,
    }
}

/// The fields of `session.<kind>.{cid}`; `user` has only derived (`from`) fields.
fn fields(kind: &str) -> Vec<FieldSpec> {
    match kind {
        "prefs" => vec![
            FieldSpec {
                one_of: Some(vec![json!("light"), json!("dark")]),
                ..field("theme", "string", json!("light"), true)
            },
            FieldSpec {
                min: Some(8.0),
                max: Some(32.0),
                ..field("fontSize", "integer", json!(14), true)
            },
        ],
        "status" => vec![
            FieldSpec {
                min: Some(0.0),
                ..field("cartItems", "integer", json!(0), false)
            },
            FieldSpec {
                max_length: Some(200),
                ..field("notice", "string", Value::Null, false)
            },
        ],
        _ => Vec::new(),
    }
}

const DERIVED: &[&str] = &["id", "name", "role", "user"];

/// The shadow must describe the file it runs against: check it once.
fn check_shipped_matches_the_shadow(config: &Config) {
    for kind in KINDS {
        let name = format!("session.{kind}.c1");
        let (res, _) = config
            .resolve(&name)
            .unwrap_or_else(|| panic!("resources.yaml has no session.{kind}.{{cid}}"));
        let names: Vec<&str> = res.fields.iter().map(|f| f.name.as_str()).collect();
        let spec = fields(kind);
        if *kind == "user" {
            assert_eq!(names, DERIVED);
            assert!(res.fields.iter().all(|f| f.source.is_some()));
            assert!(res.reset_on_logout);
            continue;
        }
        let expected: Vec<&str> = spec.iter().map(|f| f.name).collect();
        assert_eq!(names, expected, "fields of session.{kind}");
        for (f, s) in res.fields.iter().zip(&spec) {
            assert_eq!(f.ty.name(), s.ty, "{kind}.{}", s.name);
            assert_eq!(f.default, s.default, "{kind}.{}", s.name);
            let writable = match s.writable {
                true => Writable::Always,
                false => Writable::Never,
            };
            assert_eq!(f.writable, writable, "{kind}.{}", s.name);
            assert!(f.source.is_none(), "{kind}.{}", s.name);
            let c = &f.constraints;
            assert_eq!(c.one_of, s.one_of, "{kind}.{}", s.name);
            assert_eq!((c.min, c.max), (s.min, s.max), "{kind}.{}", s.name);
            assert_eq!(c.max_length, s.max_length, "{kind}.{}", s.name);
            assert!(c.pattern.is_none(), "{kind}.{}", s.name);
        }
        assert_eq!(res.reset_on_logout, *kind != "prefs", "reset of {kind}");
    }
    assert_eq!(
        config.resources.len(),
        3,
        "resources.yaml has other resources"
    );
}

/// JSON equality where numbers compare by value (7 equals 7.0), as the engine compares.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A client or service value for a written field, converted and checked like the
/// engine does for the shipped types (string, integer), or the reason it is refused.
fn from_wire(f: &FieldSpec, wire: &Value) -> Result<Value, String> {
    let value = match wire {
        Value::Null => return Ok(Value::Null),
        Value::Object(_) | Value::Array(_) => return Err("object or array".into()),
        Value::Number(n) if f.ty == "integer" && n.as_i64().is_none() && n.as_u64().is_none() => {
            match n.as_f64() {
                Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => json!(x as i64),
                _ => return Err("not an integer".into()),
            }
        }
        v => v.clone(),
    };
    let type_ok = match f.ty {
        "string" => value.is_string(),
        _ => value.is_i64() || value.is_u64(),
    };
    if !type_ok {
        return Err("wrong type".into());
    }
    if let Some(options) = &f.one_of {
        if !options.iter().any(|o| same(o, &value)) {
            return Err("not in enum".into());
        }
    }
    if let Some(n) = value.as_f64() {
        if f.min.is_some_and(|m| n < m) || f.max.is_some_and(|m| n > m) {
            return Err("out of range".into());
        }
    }
    if let (Some(s), Some(max)) = (value.as_str(), f.max_length) {
        if s.chars().count() > max {
            return Err("too long".into());
        }
    }
    Ok(value)
}

// ------------------------------------------------------------------ operations

/// A token as a request or event carries it: `None` leaves the key out.
type Token = Option<Value>;

#[derive(Debug, Clone)]
enum Op {
    /// `conn.<cid>.token` with `{"token": ...}` (`{}` when `None`), or a garbage payload.
    Token {
        cid: &'static str,
        token: Token,
        garbage: Option<&'static str>,
    },
    /// `access.session.<kind>.<owner>` by `by`.
    Access {
        by: &'static str,
        kind: &'static str,
        owner: &'static str,
        token: Token,
        query: bool,
        garbage: Option<&'static str>,
    },
    /// `call.session.<kind>.<owner>.<method>` by `by`.
    Call {
        by: &'static str,
        kind: &'static str,
        owner: &'static str,
        method: &'static str,
        token: Token,
        params: Option<Value>,
        garbage: Option<&'static str>,
    },
    /// `connres.set.session.<kind>.<owner>`
    ApiSet {
        kind: &'static str,
        owner: &'static str,
        values: Value,
        garbage: Option<&'static str>,
    },
    /// `connres.reset.session.<kind>.<owner>`
    ApiReset {
        kind: &'static str,
        owner: &'static str,
        payload: &'static str,
    },
    /// `get.session.<kind>.<owner>`
    Get {
        kind: &'static str,
        owner: &'static str,
    },
    /// A request of any kind for a name no pattern matches.
    Unmatched {
        by: &'static str,
        name: &'static str,
        what: &'static str,
    },
}

fn wire_values() -> Vec<Value> {
    vec![
        json!(null),
        json!("light"),
        json!("dark"),
        json!("blue"),
        json!(""),
        json!("hello"),
        json!("x".repeat(200)),
        json!("é".repeat(201)),
        json!(0),
        json!(-1),
        json!(3),
        json!(7),
        json!(8),
        json!(14.0),
        json!(20),
        json!(32),
        json!(33),
        json!(2.5),
        json!(-0.0),
        json!(1e300),
        json!(u64::MAX),
        json!(true),
        json!("14"),
        json!([1]),
        json!({"x": 1}),
        json!({"action": "delete"}),
        json!({"rid": "a.b"}),
    ]
}

const FIELD_NAMES: &[&str] = &[
    "theme",
    "fontSize",
    "cartItems",
    "notice",
    "id",
    "name",
    "role",
    "user",
    "nope",
];

/// One entry of a write: a field of the written resource or any name, and a value
/// that field accepts or any value.
type Entry = (bool, usize, bool, usize);

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec((any::<bool>(), 0..16usize, any::<bool>(), 0..64usize), 0..3)
}

/// Values each written field of the shipped file accepts.
fn good_values(field: &str) -> Vec<Value> {
    match field {
        "theme" => vec![json!("light"), json!("dark"), json!(null)],
        "fontSize" => vec![json!(8), json!(14.0), json!(20), json!(32), json!(null)],
        "cartItems" => vec![
            json!(0),
            json!(3),
            json!(-0.0),
            json!(u64::MAX),
            json!(null),
        ],
        _ => vec![
            json!(""),
            json!("hello"),
            json!("x".repeat(200)),
            json!(null),
        ],
    }
}

/// The `{field: value}` object of a write to a resource of `kind`.
fn values_for(kind: &str, entries: &[Entry]) -> Value {
    let specs = fields(kind);
    let mut out = Map::new();
    for &(own_field, name, good, value) in entries {
        let name = if own_field && !specs.is_empty() {
            specs[name % specs.len()].name
        } else {
            FIELD_NAMES[name % FIELD_NAMES.len()]
        };
        let pool = if good {
            good_values(name)
        } else {
            wire_values()
        };
        out.insert(name.to_string(), pool[value % pool.len()].clone());
    }
    Value::Object(out)
}

/// The `params` of a call: a write object, absent, or not an object.
#[derive(Debug, Clone)]
enum Params {
    Values(Vec<Entry>),
    Absent,
    Raw(Value),
}

fn params() -> impl Strategy<Value = Params> {
    prop_oneof![
        6 => entries().prop_map(Params::Values),
        1 => Just(Params::Absent),
        1 => select(vec![json!(null), json!([1]), json!("x")]).prop_map(Params::Raw),
    ]
}

fn token_object() -> impl Strategy<Value = Value> {
    let ids = vec![
        json!(0),
        json!(1),
        json!(2),
        json!("1"),
        json!("a b"),
        json!(1.5),
        json!(true),
        json!(null),
        json!(-3),
        json!(u64::MAX),
    ];
    let names = vec![
        json!("Ann"),
        json!("Bo"),
        json!(""),
        json!(7),
        json!(null),
        json!({"first": "A"}),
    ];
    let roles = vec![
        json!("admin"),
        json!("user"),
        json!("guest"),
        json!("boss"),
        json!(1),
        json!(null),
    ];
    (
        proptest::option::of(select(ids)),
        proptest::option::of(select(names)),
        proptest::option::of(select(roles)),
        any::<bool>(),
    )
        .prop_map(|(id, name, role, extra)| {
            let mut t = Map::new();
            for (k, v) in [("userId", id), ("name", name), ("role", role)] {
                if let Some(v) = v {
                    t.insert(k.to_string(), v);
                }
            }
            if extra {
                t.insert("cid".to_string(), json!("c1"));
            }
            Value::Object(t)
        })
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        2 => Just(None),
        2 => Just(Some(Value::Null)),
        6 => token_object().prop_map(Some),
        1 => select(vec![json!(5), json!("tok"), json!([1]), json!(true)]).prop_map(Some),
    ]
}

fn garbage(options: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![9 => Just(None), 1 => select(options).prop_map(Some)]
}

const BAD_TOKEN_EVENTS: &[&str] = &["", "[]", "{", "null", "5", "{\"token\":"];
const BAD_REQUESTS: &[&str] = &[
    "",
    "[]",
    "{",
    "null",
    "{}",
    "{\"cid\":5}",
    "{\"token\":{\"userId\":1}}",
    "{\"cid\":\"c1\",\"query\":5}",
];
const BAD_API_SETS: &[&str] = &[
    "",
    "{}",
    "[]",
    "{\"values\":[]}",
    "{\"values\":{},\"x\":1}",
    "{\"values\":{\"cartItems\":1}",
];
const API_RESETS: &[&str] = &["", "  ", "{}", "{\"a\":1}", "[]", "x", "null", "{"];

/// The owner of the model a request names: its requester's own half the time (when the
/// requester owns models), another connection's otherwise.
fn pick(by: &'static str, other: &'static str, own: bool) -> &'static str {
    if own && OWNERS.contains(&by) {
        by
    } else {
        other
    }
}

fn op() -> impl Strategy<Value = Op> {
    let owner = || select(OWNERS);
    let owner_of = || (select(OWNERS), any::<bool>());
    let by = || select(REQUESTERS);
    let kind = || select(KINDS);
    prop_oneof![
        3 => (select(OWNERS), token(), garbage(BAD_TOKEN_EVENTS))
            .prop_map(|(cid, token, garbage)| Op::Token { cid, token, garbage }),
        3 => (by(), kind(), owner_of(), token(), any::<bool>(), garbage(BAD_REQUESTS))
            .prop_map(|(by, kind, (owner, own), token, query, garbage)| Op::Access {
                by, kind, owner: pick(by, owner, own), token, query, garbage,
            }),
        5 => (
            by(),
            kind(),
            owner_of(),
            select(&["set", "set", "set", "reset", "delete", ""][..]),
            token(),
            params(),
            garbage(BAD_REQUESTS),
        )
            .prop_map(|(by, kind, (owner, own), method, token, params, garbage)| Op::Call {
                by,
                kind,
                owner: pick(by, owner, own),
                method,
                token,
                params: match params {
                    Params::Values(e) => Some(values_for(kind, &e)),
                    Params::Absent => None,
                    Params::Raw(v) => Some(v),
                },
                garbage,
            }),
        3 => (kind(), owner(), entries(), garbage(BAD_API_SETS))
            .prop_map(|(kind, owner, e, garbage)| Op::ApiSet {
                kind, owner, values: values_for(kind, &e), garbage,
            }),
        1 => (kind(), owner(), select(API_RESETS))
            .prop_map(|(kind, owner, payload)| Op::ApiReset { kind, owner, payload }),
        2 => (kind(), owner()).prop_map(|(kind, owner)| Op::Get { kind, owner }),
        1 => (by(), select(UNMATCHED), select(&["get", "access", "call", "set", "reset"][..]))
            .prop_map(|(by, name, what)| Op::Unmatched { by, name, what }),
    ]
}

// ------------------------------------------------------------------ the shadow

#[derive(Default, Clone)]
struct Conn {
    /// The token in force; `None` is logged out.
    token: Option<Value>,
    confirmed: bool,
    /// Resources the gateway may hold for this connection (their change and reaccess
    /// events are published).
    known: BTreeSet<String>,
}

/// What the engine should hold, computed without it.
struct Shadow<'c> {
    config: &'c Config,
    conns: HashMap<String, Conn>,
    /// Written values by resource ID.
    written: HashMap<String, Map<String, Value>>,
    /// `session.user` models by (cid, token): from an engine that saw only that token.
    users: HashMap<(String, String), Value>,
}

/// The events one operation should publish: subject -> payload (`Null` for reaccess).
type Events = BTreeMap<String, Value>;

fn rid(kind: &str, owner: &str) -> String {
    format!("session.{kind}.{owner}")
}

/// The kind and owner of a shipped resource ID.
fn parts(rid: &str) -> (&str, &str) {
    let mut it = rid.splitn(3, '.');
    let (_, kind, owner) = (it.next(), it.next(), it.next());
    (kind.unwrap_or_default(), owner.unwrap_or_default())
}

impl<'c> Shadow<'c> {
    fn new(config: &'c Config) -> Self {
        Shadow {
            config,
            conns: HashMap::new(),
            written: HashMap::new(),
            users: HashMap::new(),
        }
    }

    fn conn(&mut self, cid: &str) -> &mut Conn {
        self.conns.entry(cid.to_string()).or_default()
    }

    fn token_of(&self, cid: &str) -> Option<Value> {
        self.conns.get(cid).and_then(|c| c.token.clone())
    }

    /// A model as the wire shows it, for its owner's current token (or `token`).
    fn model_with(&mut self, rid: &str, token: Option<Value>) -> Value {
        let (kind, owner) = parts(rid);
        if kind == "user" {
            let key = (
                owner.to_string(),
                token.as_ref().map_or(String::new(), Value::to_string),
            );
            if let Some(m) = self.users.get(&key) {
                return m.clone();
            }
            let mut fresh = Engine::default();
            if let Some(t) = &token {
                let payload = json!({ "token": t }).to_string();
                fresh.handle(
                    self.config,
                    Request::Token {
                        cid: owner,
                        payload: payload.as_bytes(),
                    },
                );
            }
            let reply = fresh.handle(self.config, Request::Get { rid });
            let model = parse(reply.reply.as_deref())["result"]["model"].clone();
            assert!(model.is_object(), "reference get of {rid}: {model}");
            self.users.insert(key, model.clone());
            return model;
        }
        let written = self.written.get(rid);
        Value::Object(
            fields(kind)
                .into_iter()
                .map(|f| {
                    let v = written
                        .and_then(|w| w.get(f.name))
                        .cloned()
                        .unwrap_or(f.default);
                    (f.name.to_string(), v)
                })
                .collect(),
        )
    }

    fn model(&mut self, rid: &str) -> Value {
        let token = self.token_of(parts(rid).1);
        self.model_with(rid, token)
    }

    /// The change event between two views of a model, if any field differs.
    fn push_change(events: &mut Events, rid: &str, before: &Value, after: &Value) {
        let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
        let changed: Map<String, Value> = a
            .iter()
            .filter(|(k, v)| !b.get(*k).is_some_and(|w| same(v, w)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            events.insert(format!("event.{rid}.change"), json!({ "values": changed }));
        }
    }

    /// A token event, or a token learned from a request for an unconfirmed record.
    fn set_token(&mut self, cid: &str, token: Option<Value>, events: &mut Events) {
        let conn = self.conn(cid);
        conn.confirmed = true;
        if conn.token == token {
            return;
        }
        let old = conn.token.clone();
        let known: Vec<String> = conn.known.iter().cloned().collect();
        let owned: Vec<String> = known
            .iter()
            .filter(|r| parts(r).1 == cid)
            .cloned()
            .collect();
        let before: Vec<Value> = owned
            .iter()
            .map(|r| self.model_with(r, old.clone()))
            .collect();
        self.conn(cid).token = token.clone();
        let logout = old.is_some() && token.is_none();
        for (r, before) in owned.iter().zip(before) {
            if logout && parts(r).0 != "prefs" {
                self.written.remove(r);
            }
            let after = self.model(r);
            Self::push_change(events, r, &before, &after);
        }
        // Only session.prefs has rules that read `token` (its set rule).
        if old.is_none() && token.is_some() {
            for r in known.iter().filter(|r| parts(r).0 == "prefs") {
                events.insert(format!("event.{r}.reaccess"), Value::Null);
            }
        }
    }

    /// A request's token fills in a record that is not confirmed; only a granted
    /// request (`create`) may create one.
    fn learn(&mut self, cid: &str, token: &Token, create: bool, events: &mut Events) {
        match self.conns.get(cid) {
            Some(c) if c.confirmed => {}
            None if !create => {}
            _ => {
                let token = token.clone().filter(|t| !t.is_null());
                self.set_token(cid, token, events);
            }
        }
    }

    /// The token a call's rule sees: the confirmed record's, else the request's.
    fn call_token(&self, cid: &str, token: &Token) -> Token {
        match self.conns.get(cid) {
            Some(c) if c.confirmed => c.token.clone(),
            _ => token.clone().filter(|t| !t.is_null()),
        }
    }

    /// Remembers that a gateway may hold a model whose values or access follow the
    /// token (in the shipped file: `session.user`'s fields, `session.prefs`'s `set`
    /// rule); nothing else needs remembering.
    fn remember(&mut self, rid: &str) {
        if parts(rid).0 == "status" {
            return;
        }
        let owner = parts(rid).1.to_string();
        self.conn(&owner).known.insert(rid.to_string());
    }

    /// Applies a change to a model's written values and announces it.
    fn change(
        &mut self,
        rid: &str,
        events: &mut Events,
        apply: impl FnOnce(&mut Map<String, Value>),
    ) {
        // A model with written values is remembered in its connection's record.
        self.conn(parts(rid).1).known.insert(rid.to_string());
        let before = self.model(rid);
        apply(self.written.entry(rid.to_string()).or_default());
        let after = self.model(rid);
        Self::push_change(events, rid, &before, &after);
    }

    /// Validates a write: every field must be declared, not derived, writable for
    /// clients, and its value must convert and satisfy the constraints.
    fn validate(
        kind: &str,
        values: &Map<String, Value>,
        client: bool,
    ) -> Option<Vec<(String, Value)>> {
        let specs = fields(kind);
        let mut accepted = Vec::new();
        let mut ok = true;
        for (name, wire) in values {
            match specs.iter().find(|f| f.name == name) {
                Some(f) if !client || f.writable => match from_wire(f, wire) {
                    Ok(v) => accepted.push((name.clone(), v)),
                    Err(_) => ok = false,
                },
                _ => ok = false,
            }
        }
        ok.then_some(accepted)
    }

    fn reset(&mut self, rid: &str, events: &mut Events) {
        if self.written.get(rid).is_some_and(|w| !w.is_empty()) {
            self.change(rid, events, Map::clear);
        }
    }
}

fn parse(reply: Option<&[u8]>) -> Value {
    let bytes = reply.expect("a reply was expected");
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// The error code of a reply, or `None` for a result.
fn error_code(reply: &Value) -> Option<&str> {
    reply
        .get("error")
        .map(|e| e["code"].as_str().expect("an error code"))
}

fn payload_of(mut fields: Map<String, Value>, token: &Token) -> String {
    if let Some(t) = token {
        fields.insert("token".into(), t.clone());
    }
    Value::Object(fields).to_string()
}

/// What an access or call rule sees of a request's token: null, a value (an object),
/// or one whose comparison with null this shadow does not model (a number, string...).
#[derive(Debug, PartialEq)]
enum Seen {
    Null,
    Object,
    Other,
}

fn seen(token: &Token) -> Seen {
    match token {
        None | Some(Value::Null) => Seen::Null,
        Some(Value::Object(_)) => Seen::Object,
        Some(_) => Seen::Other,
    }
}

// ------------------------------------------------------------------ one run

struct Run<'c> {
    engine: Engine,
    shadow: Shadow<'c>,
    config: &'c Config,
}

impl<'c> Run<'c> {
    /// Runs one operation through the engine and the shadow and compares them.
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut expected = Events::new();
        // Who the operation acts for, for (c): access and call act for their requester.
        let mut acting: Option<&str> = None;
        let outcome = match op {
            Op::Token {
                cid,
                token,
                garbage,
            } => {
                let payload = garbage.map_or_else(|| payload_of(Map::new(), token), str::to_string);
                let out = self.engine.handle(
                    self.config,
                    Request::Token {
                        cid,
                        payload: payload.as_bytes(),
                    },
                );
                prop_assert!(out.reply.is_none(), "a token event got a reply");
                // An event without a `token` key (`{}`) is malformed and ignored; a null
                // token is a logout.
                if let (None, Some(t)) = (garbage, token) {
                    let t = Some(t.clone()).filter(|t| !t.is_null());
                    self.shadow.set_token(cid, t, &mut expected);
                }
                // A token event touches its own models' values only.
                for (subject, _) in &out.events {
                    if subject.ends_with(".change") {
                        let rid = subject
                            .trim_start_matches("event.")
                            .trim_end_matches(".change");
                        prop_assert_eq!(parts(rid).1, *cid, "token of {} changed {}", cid, subject);
                    }
                }
                out
            }
            Op::Access {
                by,
                kind,
                owner,
                token,
                query,
                garbage,
            } => {
                acting = Some(by);
                let r = rid(kind, owner);
                let mut fields = Map::new();
                fields.insert("cid".into(), json!(by));
                if *query {
                    fields.insert("query".into(), json!("q=1"));
                }
                let payload = garbage.map_or_else(|| payload_of(fields, token), str::to_string);
                let out = self.engine.handle(
                    self.config,
                    Request::Access {
                        rid: &r,
                        payload: payload.as_bytes(),
                    },
                );
                let reply = parse(out.reply.as_deref());
                if garbage.is_some() || by.is_empty() {
                    prop_assert_eq!(error_code(&reply), Some("system.invalidParams"));
                } else {
                    let own = by == owner;
                    // Every shipped `get` rule is `cid == params.cid`: granted when own.
                    self.shadow.learn(by, token, own, &mut expected);
                    if own {
                        self.shadow.remember(&r);
                    }
                    let result = &reply["result"];
                    prop_assert!(error_code(&reply).is_none(), "access failed: {}", reply);
                    // (a) another connection's model: no get, no call.
                    if !own {
                        prop_assert_eq!(
                            &reply,
                            &json!({"result": {"get": false}}),
                            "access by {:?} to {}",
                            by,
                            r
                        );
                    }
                    prop_assert_eq!(&result["get"], &json!(own));
                    let granted: BTreeSet<&str> = result
                        .get("call")
                        .and_then(Value::as_str)
                        .map(|c| c.split(',').collect())
                        .unwrap_or_default();
                    let mut want = BTreeSet::new();
                    if *kind == "prefs" && own {
                        want.insert("reset");
                        match seen(token) {
                            Seen::Object => {
                                want.insert("set");
                            }
                            Seen::Other if granted.contains("set") => {
                                want.insert("set");
                            }
                            _ => {}
                        }
                    }
                    prop_assert_eq!(granted, want, "access reply {}", reply);
                }
                out
            }
            Op::Call {
                by,
                kind,
                owner,
                method,
                token,
                params,
                garbage,
            } => {
                acting = Some(by);
                let r = rid(kind, owner);
                let mut fields = Map::new();
                fields.insert("cid".into(), json!(by));
                if let Some(p) = params {
                    fields.insert("params".into(), p.clone());
                }
                let payload = garbage.map_or_else(|| payload_of(fields, token), str::to_string);
                let out = self.engine.handle(
                    self.config,
                    Request::Call {
                        rid: &r,
                        method,
                        payload: payload.as_bytes(),
                    },
                );
                let reply = parse(out.reply.as_deref());
                let code = error_code(&reply);
                let own = by == owner;
                // (b) a call on another connection's model never succeeds.
                if !own {
                    prop_assert!(
                        code.is_some(),
                        "call by {:?} on {} succeeded: {}",
                        by,
                        r,
                        reply
                    );
                }
                let is_object = garbage
                    .is_none_or(|g| g.starts_with('{') && serde_json::from_str::<Value>(g).is_ok());
                if !is_object {
                    prop_assert_eq!(code, Some("system.invalidParams"));
                } else if *method != "set" && *method != "reset" {
                    prop_assert_eq!(code, Some("system.methodNotFound"));
                } else if garbage.is_some() || by.is_empty() {
                    prop_assert_eq!(code, Some("system.invalidParams"));
                } else {
                    // A call's rule holds against the confirmed token, if any.
                    let token_seen = self.shadow.call_token(by, token);
                    let allowed = match (*kind, *method) {
                        ("prefs", "reset") => own,
                        ("prefs", "set") => {
                            own && match seen(&token_seen) {
                                Seen::Object => true,
                                Seen::Null => false,
                                Seen::Other => code != Some("system.accessDenied"),
                            }
                        }
                        _ => false,
                    };
                    self.shadow.learn(by, token, allowed, &mut expected);
                    if !allowed {
                        prop_assert_eq!(code, Some("system.accessDenied"), "call {} {}", r, reply);
                    } else if *method == "reset" {
                        prop_assert_eq!(&reply, &json!({"result": null}));
                        self.shadow.reset(&r, &mut expected);
                    } else {
                        let valid = match params {
                            Some(Value::Object(values)) => Shadow::validate(kind, values, true),
                            _ => None,
                        };
                        match valid {
                            Some(accepted) => {
                                prop_assert_eq!(
                                    &reply,
                                    &json!({"result": null}),
                                    "set {} {}",
                                    r,
                                    payload
                                );
                                // Writing nothing stores nothing.
                                if !accepted.is_empty() {
                                    self.shadow
                                        .change(&r, &mut expected, |w| w.extend(accepted));
                                }
                            }
                            None => prop_assert_eq!(
                                code,
                                Some("system.invalidParams"),
                                "set {} {}",
                                r,
                                payload
                            ),
                        }
                    }
                }
                out
            }
            Op::ApiSet {
                kind,
                owner,
                values,
                garbage,
            } => {
                let r = rid(kind, owner);
                let payload =
                    garbage.map_or_else(|| json!({ "values": values }).to_string(), str::to_string);
                let out = self.engine.handle(
                    self.config,
                    Request::ApiSet {
                        rid: &r,
                        payload: payload.as_bytes(),
                    },
                );
                let reply = parse(out.reply.as_deref());
                let valid = match (garbage, values) {
                    (None, Value::Object(values)) => Shadow::validate(kind, values, false),
                    _ => None,
                };
                match valid {
                    Some(accepted) => {
                        prop_assert_eq!(
                            &reply,
                            &json!({"result": null}),
                            "api set {} {}",
                            r,
                            payload
                        );
                        if !accepted.is_empty() {
                            self.shadow
                                .change(&r, &mut expected, |w| w.extend(accepted));
                        }
                    }
                    None => prop_assert_eq!(
                        error_code(&reply),
                        Some("system.invalidParams"),
                        "api set {} {}",
                        r,
                        payload
                    ),
                }
                out
            }
            Op::ApiReset {
                kind,
                owner,
                payload,
            } => {
                let r = rid(kind, owner);
                let out = self.engine.handle(
                    self.config,
                    Request::ApiReset {
                        rid: &r,
                        payload: payload.as_bytes(),
                    },
                );
                let reply = parse(out.reply.as_deref());
                let ok = payload.trim().is_empty()
                    || (payload.starts_with('{') && serde_json::from_str::<Value>(payload).is_ok());
                if ok {
                    prop_assert_eq!(&reply, &json!({"result": null}));
                    self.shadow.reset(&r, &mut expected);
                } else {
                    prop_assert_eq!(error_code(&reply), Some("system.invalidParams"));
                }
                out
            }
            Op::Get { kind, owner } => {
                let r = rid(kind, owner);
                let out = self.engine.handle(self.config, Request::Get { rid: &r });
                let reply = parse(out.reply.as_deref());
                // A get remembers a model whose values follow the token (its change
                // events are owed); access is remembered by the access request.
                if *kind == "user" {
                    self.shadow.remember(&r);
                }
                // (d) the model is exactly the shadow's.
                let want = self.shadow.model(&r);
                prop_assert!(
                    same(&reply["result"]["model"], &want),
                    "get {}: engine {} but shadow {}",
                    r,
                    reply,
                    want
                );
                out
            }
            Op::Unmatched { by, name, what } => {
                let access = json!({"cid": by, "token": {"userId": 1}}).to_string();
                let call = json!({"cid": by, "token": {"userId": 1}, "params": {"theme": "dark"}})
                    .to_string();
                let request = match *what {
                    "get" => Request::Get { rid: name },
                    "access" => Request::Access {
                        rid: name,
                        payload: access.as_bytes(),
                    },
                    "call" => Request::Call {
                        rid: name,
                        method: "set",
                        payload: call.as_bytes(),
                    },
                    "set" => Request::ApiSet {
                        rid: name,
                        payload: b"{\"values\":{}}",
                    },
                    _ => Request::ApiReset {
                        rid: name,
                        payload: b"",
                    },
                };
                let out = self.engine.handle(self.config, request);
                match *what {
                    "set" | "reset" => {
                        // An invalid name is refused before any pattern is looked for.
                        let valid = name.split('.').all(|p| !p.is_empty());
                        let want = if valid {
                            "system.notFound"
                        } else {
                            "system.invalidParams"
                        };
                        let reply = parse(out.reply.as_deref());
                        prop_assert_eq!(error_code(&reply), Some(want));
                    }
                    _ => prop_assert!(out.reply.is_none(), "{} {} was answered", what, name),
                }
                out
            }
        };
        let mut got = Events::new();
        for (subject, payload) in &outcome.events {
            let value = if payload.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(payload).unwrap_or_else(|e| panic!("{subject}: {e}"))
            };
            prop_assert!(
                got.insert(subject.clone(), value).is_none(),
                "{} published twice",
                subject
            );
            // (b), (c): what a connection does publishes nothing for another's models.
            if let Some(by) = acting {
                let r = subject.trim_start_matches("event.");
                let r = r.rsplit_once('.').map_or(r, |(r, _)| r);
                prop_assert_eq!(parts(r).1, by, "{:?} by {:?} published {}", op, by, subject);
            }
        }
        prop_assert!(
            got.len() == expected.len()
                && got
                    .iter()
                    .zip(&expected)
                    .all(|((s, v), (t, w))| s == t && same(v, w)),
            "events of {:?}:\n engine {:?}\n shadow {:?}",
            op,
            got,
            expected
        );
        Ok(())
    }

    /// (d) at the end: every model of every owner is the shadow's.
    fn check_all(&mut self) -> Result<(), TestCaseError> {
        for owner in OWNERS {
            for kind in KINDS {
                self.step(&Op::Get { kind, owner })?;
            }
        }
        Ok(())
    }
}

fn runner() -> TestRunner {
    let mut config = PropConfig {
        failure_persistence: None,
        ..PropConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 500;
    }
    if config.rng_seed == RngSeed::Random && std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x1507_a710);
    }
    TestRunner::new(config)
}

#[test]
fn shipped_config_is_what_the_shadow_models() {
    check_shipped_matches_the_shadow(&shipped());
}

#[test]
fn a_connection_never_reads_or_writes_another_connections_model() {
    let config = shipped();
    check_shipped_matches_the_shadow(&config);
    let strategy = proptest::collection::vec(op(), 1..40);
    let result = runner().run(&strategy, |ops| {
        let mut run = Run {
            engine: Engine::default(),
            shadow: Shadow::new(&config),
            config: &config,
        };
        for op in &ops {
            run.step(op)?;
        }
        run.check_all()
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
