//! The fuzz target bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and
//! the bounded pass of the test suite (`tests/fuzz.rs`), which include this file with
//! `#[path]`. Each body takes arbitrary bytes and panics only when an invariant breaks.
//!
//! - [`config`]: the bytes as a config file. Loading never panics; an invalid file gives
//!   at least one error, each a `fuzz.yaml:<line>:<col>: <message>` line pointing into
//!   the file; a valid one summarises, diffs against itself as unchanged and serves a
//!   few requests for every resource with well-formed replies.
//! - [`request`]: the bytes as a script of requests, one a line, run in order against
//!   one engine (so state builds up) and a config compiled once: the shipped
//!   `resources.yaml`, or a fixture of `tests/config/valid` named by a first line
//!   `config chat` / `config profile`. Every reply and event must be well-formed RES.
//!
//! A request line is `KIND NAME [METHOD] [PAYLOAD]`, split on the first spaces:
//!
//! ```text
//! token c1 {"token":{"userId":1,"name":"Ann","role":"admin"}}
//! get session.user.c1
//! access session.prefs.c1 {"cid":"c1","token":null}
//! call session.prefs.c1 set {"cid":"c1","token":{},"params":{"theme":"dark"}}
//! set session.status.c1 {"values":{"cartItems":3}}
//! reset session.status.c1
//! ```
//!
//! `set` and `reset` are the backend write API; `token` names a cid, not a resource.
//! NAME and METHOD are percent-decoded (`%20` is a space), so any string can be named.
//! A line whose first word is no kind still runs: its first byte picks one.

#![allow(dead_code)]

use connres::config::Config;
use connres::engine::{Engine, Request};
use connres::pattern::Part;
use serde_json::Value;

/// At most this many requests run per input: enough to build up state, few enough to
/// keep every execution fast.
pub const MAX_REQUESTS: usize = 64;

/// The configs a request script can run against, compiled once per thread.
pub const CONFIGS: &[(&str, &str)] = &[
    ("resources", include_str!("../resources.yaml")),
    ("chat", include_str!("../tests/config/valid/chat.yaml")),
    (
        "profile",
        include_str!("../tests/config/valid/profile.yaml"),
    ),
];

thread_local! {
    static COMPILED: Vec<Config> = CONFIGS
        .iter()
        .map(|(name, text)| {
            Config::parse(name, text).unwrap_or_else(|e| panic!("config {name} is invalid: {e}"))
        })
        .collect();
}

/// The `config` target: arbitrary bytes as a config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("fuzz.yaml", text) {
        Ok(config) => check_valid_config(&config),
        Err(errors) => {
            assert!(
                !errors.errors.is_empty(),
                "an invalid config must name at least one error"
            );
            // YAML breaks lines at \n, \r\n and a lone \r. At an unexpected end of
            // file the position is on the line after the last break, and the YAML
            // scanner ends a file that lacks a final break with one of its own.
            let breaks = text.matches('\n').count() + text.matches('\r').count()
                - text.matches("\r\n").count();
            let unterminated = !text.ends_with(['\n', '\r']);
            let lines = breaks + 1 + usize::from(unterminated);
            for line in errors.lines() {
                check_error_line(&line, lines);
            }
        }
    }
}

/// Checks one error line: `fuzz.yaml:<line>:<col>: <message>`, 1 <= line <= `max_line`,
/// col >= 1, a non-empty message.
pub fn check_error_line(line: &str, max_line: usize) {
    let rest = line
        .strip_prefix("fuzz.yaml:")
        .unwrap_or_else(|| panic!("error line without the file name: {line:?}"));
    let mut parts = rest.splitn(3, ':');
    let num = |s: Option<&str>| -> usize {
        s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("error line without line:col: {line:?}"))
    };
    let (l, c) = (num(parts.next()), num(parts.next()));
    assert!(l >= 1 && c >= 1, "error position below 1:1: {line:?}");
    assert!(
        l <= max_line,
        "error line {l} past the end of the file ({max_line}): {line:?}"
    );
    let message = parts
        .next()
        .and_then(|m| m.strip_prefix(' '))
        .unwrap_or_else(|| panic!("error line without `: message`: {line:?}"));
    assert!(!message.trim().is_empty(), "empty error message: {line:?}");
}

/// A valid config: summary, self-diff, and a few requests for every resource.
fn check_valid_config(config: &Config) {
    let summary = connres::summary(config);
    assert!(summary.contains("resource(s)"));
    let same = connres::config::diff(config, config);
    assert!(
        same.added.is_empty()
            && same.removed.is_empty()
            && same.reset_resources.is_empty()
            && same.reset_access.is_empty(),
        "a config differs from itself: {same:?}"
    );
    COMPILED.with(|shipped| {
        let _ = connres::config::diff(&shipped[0], config);
        let _ = connres::config::diff(config, &shipped[0]);
    });
    let mut engine = Engine::default();
    let token = br#"{"token":{"userId":1,"name":"Ann","role":"admin","admin":true}}"#;
    run(
        &mut engine,
        config,
        Request::Token {
            cid: "c1",
            payload: token,
        },
    );
    for res in config.resources.iter().take(8) {
        // A name of the pattern: the connection c1 for `{cid}`, `x` for other captures.
        let rid: Vec<&str> = res
            .pattern
            .parts()
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Capture(n) if n == "cid" => "c1",
                Part::Capture(_) => "x",
            })
            .collect();
        let rid = rid.join(".");
        let defaults: serde_json::Map<String, Value> = res
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.default.clone()))
            .collect();
        let set = serde_json::json!({"cid": "c1", "token": {"userId": 1}, "params": defaults});
        let set = serde_json::to_vec(&set).unwrap_or_default();
        let values =
            serde_json::to_vec(&serde_json::json!({ "values": defaults })).unwrap_or_default();
        let access = br#"{"cid":"c1","token":{"userId":1},"query":"q=1"}"#;
        for request in [
            Request::Get { rid: &rid },
            Request::Access {
                rid: &rid,
                payload: access,
            },
            Request::Call {
                rid: &rid,
                method: "set",
                payload: &set,
            },
            Request::ApiSet {
                rid: &rid,
                payload: &values,
            },
            Request::Token {
                cid: "c1",
                payload: b"{\"token\":null}",
            },
            Request::Call {
                rid: &rid,
                method: "reset",
                payload: access,
            },
            Request::ApiReset {
                rid: &rid,
                payload: b"",
            },
            Request::Get { rid: &rid },
        ] {
            run(&mut engine, config, request);
        }
    }
}

/// The `request` target: arbitrary bytes as a script of requests.
pub fn request(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n').peekable();
    let mut which = 0;
    if let Some(first) = lines.peek() {
        if let Some(name) = first.strip_prefix(b"config ") {
            which = CONFIGS
                .iter()
                .position(|(n, _)| n.as_bytes() == name.trim_ascii())
                .unwrap_or(0);
            lines.next();
        }
    }
    COMPILED.with(|configs| {
        let config = &configs[which];
        let mut engine = Engine::default();
        for line in lines.take(MAX_REQUESTS) {
            let Some(line) = Line::parse(line) else {
                continue;
            };
            run(&mut engine, config, line.request());
        }
    });
}

/// One decoded request line; its strings are owned so that `Request` can borrow them.
struct Line<'a> {
    kind: usize,
    name: String,
    method: String,
    payload: &'a [u8],
}

const KINDS: &[&str] = &["get", "access", "call", "token", "set", "reset"];

impl<'a> Line<'a> {
    fn parse(line: &'a [u8]) -> Option<Line<'a>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let (word, rest) = split_word(line);
        let kind = KINDS
            .iter()
            .position(|k| k.as_bytes() == word)
            .unwrap_or(line[0] as usize % KINDS.len());
        let (name, rest) = split_word(rest);
        let (method, payload) = if KINDS[kind] == "call" {
            split_word(rest)
        } else {
            (&b""[..], rest)
        };
        Some(Line {
            kind,
            name: percent_decode(name),
            method: percent_decode(method),
            payload,
        })
    }

    fn request(&self) -> Request<'_> {
        let (rid, payload) = (self.name.as_str(), self.payload);
        match KINDS[self.kind] {
            "get" => Request::Get { rid },
            "access" => Request::Access { rid, payload },
            "call" => Request::Call {
                rid,
                method: &self.method,
                payload,
            },
            "token" => Request::Token { cid: rid, payload },
            "set" => Request::ApiSet { rid, payload },
            _ => Request::ApiReset { rid, payload },
        }
    }
}

/// Splits off the first space-separated word.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    }
}

/// `%XX` to the byte XX; anything else as is; then UTF-8, lossily.
fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (
            s[i],
            s.get(i + 1).copied().and_then(hex),
            s.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Handles one request and checks everything it produced.
pub fn run(engine: &mut Engine, config: &Config, request: Request) {
    let outcome = engine.handle(config, request);
    for (subject, payload) in &outcome.events {
        check_event(config, subject, payload);
    }
    let reply = outcome.reply.as_deref();
    let resolves = |rid: &str| config.resolve(rid).is_some();
    match request {
        Request::Token { .. } => assert!(reply.is_none(), "a token event got a reply"),
        Request::ApiSet { .. }
        | Request::ApiReset { .. }
        | Request::ApiAdd { .. }
        | Request::ApiRemove { .. } => {
            let reply = reply.expect("a backend write got no reply");
            check_reply(reply);
        }
        Request::Auth { name, .. }
        | Request::Revoke { name, .. }
        | Request::ResumeTake { name, .. }
        | Request::Recheck { name, .. } => assert_eq!(
            reply.is_some(),
            config.auth.get(name).is_some(),
            "an auth request must be answered exactly when its name is declared"
        ),
        Request::Get { rid } | Request::Access { rid, .. } | Request::Call { rid, .. } => {
            assert_eq!(
                reply.is_some(),
                resolves(rid),
                "a request for {rid:?} must be answered exactly when a pattern matches it"
            );
            if reply.is_none() {
                assert!(outcome.events.is_empty(), "events for an unmatched name");
            }
        }
    }
    let Some(reply) = reply else {
        return;
    };
    let reply = check_reply(reply);
    let Some(result) = reply.get("result") else {
        return;
    };
    match request {
        Request::Get { rid } => {
            let (res, _) = config.resolve(rid).expect("a get answered for no pattern");
            if let Some(c) = &res.collection {
                let items = result
                    .get("collection")
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("a collection's get without items: {result}"));
                assert!(items.len() <= c.max_items, "{result}");
                return;
            }
            let model = result
                .get("model")
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("a get result without a model: {result}"));
            assert_eq!(result.as_object().map(|o| o.len()), Some(1), "{result}");
            let names: Vec<&str> = model.keys().map(String::as_str).collect();
            let mut declared: Vec<&str> = res.fields.iter().map(|f| f.name.as_str()).collect();
            declared.sort_unstable();
            let mut names = names;
            names.sort_unstable();
            assert_eq!(
                names, declared,
                "a model must have exactly its declared fields"
            );
        }
        Request::Access { rid, .. } => {
            let (res, _) = config
                .resolve(rid)
                .expect("an access answered for no pattern");
            let obj = result
                .as_object()
                .unwrap_or_else(|| panic!("an access result is not an object: {result}"));
            assert!(obj.get("get").is_some_and(Value::is_boolean), "{result}");
            assert!(obj.keys().all(|k| k == "get" || k == "call"), "{result}");
            if let Some(call) = obj.get("call") {
                let call = call.as_str().unwrap_or_else(|| panic!("{result}"));
                assert!(
                    call == "*" || call.split(',').all(|m| res.methods().contains(&m)),
                    "{result}"
                );
            }
        }
        Request::Call { .. }
        | Request::ApiSet { .. }
        | Request::ApiReset { .. }
        | Request::ApiAdd { .. }
        | Request::ApiRemove { .. }
        | Request::Revoke { .. }
        | Request::Recheck { .. } => {
            assert!(result.is_null(), "a write result must be null: {result}")
        }
        Request::Token { .. } | Request::Auth { .. } | Request::ResumeTake { .. } => {}
    }
}

/// A reply is a JSON object that is exactly `{"result": ...}` or
/// `{"error": {"code": "system.<...>", "message": "..."}}`; returns it parsed.
pub fn check_reply(reply: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(reply).unwrap_or_else(|e| {
        panic!(
            "a reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(reply)
        )
    });
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("a reply is not an object: {value}"));
    assert_eq!(obj.len(), 1, "a reply must have one key: {value}");
    if obj.contains_key("result") {
        return value;
    }
    let error = obj
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("a reply is neither result nor error: {value}"));
    assert_eq!(
        error.len(),
        2,
        "an error must be exactly code and message: {value}"
    );
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        code.len() > "system.".len() && code.starts_with("system."),
        "an error code must be system.<...>: {value}"
    );
    assert!(
        error.get("message").is_some_and(Value::is_string),
        "an error message must be a string: {value}"
    );
    value
}

/// An event is `event.<rid>.change` with `{"values": {...}}` (at least one field) or
/// `event.<rid>.reaccess` with no payload, for a name some pattern matches.
pub fn check_event(config: &Config, subject: &str, payload: &[u8]) {
    let (rid, kind) = subject
        .strip_prefix("event.")
        .and_then(|s| s.rsplit_once('.'))
        .unwrap_or_else(|| panic!("not an event subject: {subject:?}"));
    let (res, _) = config
        .resolve(rid)
        .unwrap_or_else(|| panic!("an event for a name no pattern matches: {subject:?}"));
    match kind {
        "reaccess" => assert!(payload.is_empty(), "a reaccess event with a payload"),
        "change" => {
            let value: Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
                panic!(
                    "{subject}: payload is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(payload)
                )
            });
            let values = value
                .get("values")
                .and_then(Value::as_object)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("{subject}: no changed values: {value}"));
            assert_eq!(value.as_object().map(|o| o.len()), Some(1), "{value}");
            for name in values.keys() {
                assert!(
                    res.field(name).is_some(),
                    "{subject}: undeclared field {name}"
                );
            }
        }
        "add" | "remove" => {
            assert!(
                res.collection.is_some(),
                "{subject}: an {kind} event of a model"
            );
            let value: Value = serde_json::from_slice(payload)
                .unwrap_or_else(|e| panic!("{subject}: payload is not JSON ({e})"));
            assert!(value.get("idx").is_some_and(Value::is_u64), "{value}");
            let keys = if kind == "add" { 2 } else { 1 };
            assert_eq!(value.as_object().map(|o| o.len()), Some(keys), "{value}");
        }
        _ => panic!("an event that is neither change, add, remove nor reaccess: {subject:?}"),
    }
}
