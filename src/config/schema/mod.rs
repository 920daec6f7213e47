//! The JSON Schema of the config file (`connres schema`, `connres.schema.json`), for
//! editors: completion, hover text and errors as you type.
//!
//! The compiler (`compile.rs`) reads the file from a positioned tree, not through
//! serde, so the types here exist only to describe the file: schemars derives the schema
//! from them and their doc comments become its descriptions (what an editor shows on
//! hover). They are never built. `tests.rs` keeps them and the compiler in step: the
//! keys of every mapping equal the compiler's key lists, the shipped and valid configs
//! validate, and broken ones do not.
//!
//! The schema is draft-07, the draft editors' YAML support reads best. It is a first
//! line of defence, not the judge: `connres check` also knows rules, templates,
//! overlaps and everything else that needs more than a schema.

// The types are only ever named in `into_root_schema_for`: nothing builds or reads them.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use super::nats::{
    DEFAULT_CONNECTION_NAME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_NATS_URL, DEFAULT_QUEUE_GROUP,
    DEFAULT_RECONNECT_MAX_DELAY,
};
use super::{
    DEFAULT_API_PREFIX, DEFAULT_IDLE_TTL, DEFAULT_MAX_ENTRIES, RESERVED_SUBJECT_ROOTS, VERSION,
};

#[cfg(test)]
mod tests;

/// The schema's title.
pub const TITLE: &str = "connres config";

/// The schema as JSON.
pub fn schema() -> Value {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<File>()
        .to_value();
    unwrap_descriptions(&mut schema);
    schema
}

/// Doc comments are wrapped at the source's width: editors show descriptions as they
/// are, so a line break within a paragraph becomes a space.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The schema as `connres schema` prints it and `connres.schema.json` holds it: pretty
/// JSON and a final newline.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema is JSON");
    text.push('\n');
    text
}

// ------------------------------------------------------------------------ the file

/// A connres config: the per-connection resources served to Resgate, and how connres
/// reaches NATS. A config may also be a directory of such files: `version` and each of
/// `nats`, `api` and `state` then go in one file, and resources may be in any.
/// Check a config with `connres check`.
#[derive(Default, JsonSchema)]
#[schemars(title = TITLE)]
#[serde(deny_unknown_fields, default)]
struct File {
    /// The version of this file format: 1. Required (in one file of a directory).
    version: Version,
    /// How connres connects to NATS. Flags and environment variables given to
    /// `connres serve` win over these settings; credentials given there replace the
    /// file's as a whole. Read at start: a reload keeps the running connection.
    nats: Nats,
    /// The backend write API: the subjects on which services set and reset values
    /// (`<prefix>.set.<resource>`, `<prefix>.reset.<resource>`).
    api: Api,
    /// How much per-connection state is kept. Takes effect on reload.
    state: State,
    /// The resources, by resource name pattern: dot-separated parts, each a literal or a
    /// `{capture}`, such as `session.user.{cid}`. `{cid}` captures the connection ID the
    /// gateway asks for. No two patterns may match the same resource name. Required (in
    /// at least one file of a directory).
    #[schemars(extend("propertyNames" = { "pattern": RESOURCE_PATTERN }))]
    resources: BTreeMap<String, Resource>,
}

// ------------------------------------------------------------------------ nats

/// How connres connects to NATS. At most one way to authenticate: `creds`, `nkey`,
/// `user` with `password`, `token`, or credentials in the URLs.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(transform = one_way_to_authenticate)]
struct Nats {
    /// The NATS server URLs: one string (several separated by commas) or a list.
    /// Schemes nats://, tls://, ws:// and wss://; a URL may carry `user:password@` or
    /// `token@`.
    #[schemars(extend("default" = DEFAULT_NATS_URL))]
    url: Urls,
    /// The queue group of the request subscriptions: instances in one group share the
    /// requests. One NATS subject token.
    #[schemars(extend("default" = DEFAULT_QUEUE_GROUP))]
    queue_group: SubjectToken,
    /// The connection name the NATS server shows (`nats server report connections`,
    /// monitoring).
    #[schemars(extend("default" = DEFAULT_CONNECTION_NAME))]
    name: Text,
    /// A credentials file (`.creds`: user JWT and NKey seed), relative to this file's
    /// directory.
    creds: Text,
    /// A file holding an NKey user seed (`SU...`), relative to this file's directory.
    nkey: Text,
    /// The user name; needs `password`.
    user: Text,
    /// The password of `user`. Better kept out of the file: `NATS_PASSWORD`.
    password: Text,
    /// An authentication token. Better kept out of the file: `NATS_TOKEN`.
    token: Text,
    /// TLS to the server. Any of it makes TLS required, as does a tls:// URL.
    tls: Tls,
    /// What connres does when the connection drops.
    reconnect: Reconnect,
    /// How long one connection attempt may take: a duration such as 5s or 500ms.
    #[schemars(extend("default" = duration_text(DEFAULT_CONNECT_TIMEOUT)))]
    connect_timeout: Duration,
}

/// The ways to authenticate to NATS (each a set of keys given together).
const AUTH_WAYS: &[&[&str]] = &[&["creds"], &["nkey"], &["user", "password"], &["token"]];

/// One way to authenticate: the keys of every other way are not allowed beside one, and
/// `user` and `password` go together.
fn one_way_to_authenticate(schema: &mut Schema) {
    let all_of: Vec<Value> = AUTH_WAYS
        .iter()
        .map(|way| {
            let others: serde_json::Map<String, Value> = AUTH_WAYS
                .iter()
                .filter(|other| other != &way)
                .flat_map(|other| other.iter())
                .map(|key| (key.to_string(), Value::Bool(false)))
                .collect();
            json!({ "if": { "required": [way[0]] }, "then": { "properties": others } })
        })
        .collect();
    schema.insert("allOf".into(), Value::Array(all_of));
    schema.insert(
        "dependencies".into(),
        json!({ "user": ["password"], "password": ["user"] }),
    );
}

/// TLS to the NATS server.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("dependencies" = { "cert": ["key"], "key": ["cert"] }))]
struct Tls {
    /// A PEM file of the CA(s) that signed the server's certificate, relative to this
    /// file's directory. The system's roots when not given.
    ca: Text,
    /// A PEM client certificate, for servers that verify clients; needs `key`.
    cert: Text,
    /// The PEM key of `cert`.
    key: Text,
    /// The TLS handshake before anything else (nats-server `handshake_first`).
    #[schemars(extend("default" = false))]
    first: Flag,
}

/// What connres does when the NATS connection drops.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Reconnect {
    /// Give up (and exit with an error) after this many failed attempts in a row. Left
    /// out, connres tries forever.
    max_attempts: Count,
    /// The longest wait between two attempts (the waits double up to it): a duration
    /// such as 4s.
    #[schemars(extend("default" = duration_text(DEFAULT_RECONNECT_MAX_DELAY)))]
    max_delay: Duration,
}

// ------------------------------------------------------------------------ api, state

/// The backend write API.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Api {
    /// The subject prefix of the write API: services request `<prefix>.set.<resource>`
    /// and `<prefix>.reset.<resource>`. A NATS subject that does not start with a
    /// subject root RES or NATS uses (get, access, call, auth, event, conn, system,
    /// _INBOX).
    #[schemars(extend("default" = DEFAULT_API_PREFIX))]
    prefix: ApiPrefix,
}

/// How much per-connection state is kept.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct State {
    /// A connection (or a model without `{cid}`) untouched this long is dropped: a
    /// duration of at least 1s, such as 30m or 24h.
    #[schemars(extend("default" = duration_text(DEFAULT_IDLE_TTL)))]
    idle_ttl: Duration,
    /// The most models kept; past it, the least recently touched connection goes first.
    #[schemars(extend("default" = DEFAULT_MAX_ENTRIES))]
    max_entries: Count,
}

// ------------------------------------------------------------------------ resources

/// A per-connection resource: a RES model whose fields are derived from the
/// connection's token, written by the client or by backend services.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Resource {
    /// What the resource is, for people reading the file and `connres check`.
    description: Text,
    /// The model's fields, by name.
    #[schemars(extend("propertyNames" = { "minLength": 1 }))]
    fields: BTreeMap<String, Field>,
    /// When the resource's values are reset.
    reset: Reset,
    /// Who may get the resource and call its methods. A rule left out denies.
    access: Access,
}

/// When a resource's values are reset.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Reset {
    /// Reset the written values to their defaults when the connection logs out (its
    /// token becomes null). false keeps them, e.g. for display preferences.
    #[schemars(extend("default" = true))]
    on_logout: Flag,
}

/// Who may get a resource and call its methods: CEL rules over `cid` (the connection
/// ID), `token` (the connection's token, null when logged out), `params` (the pattern's
/// captures), `query` and `model` (the model's values). A rule left out denies.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Access {
    /// Who may get the resource (and receive its events).
    get: Rule,
    /// Who may call its methods: one rule for all of them, or a rule per method
    /// (a method left out is denied).
    call: Call,
}

/// The call rules: one rule for every method, or a rule per method.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Call {
    /// One rule for `set` and `reset`.
    All(Rule),
    /// A rule per method.
    Methods(CallRules),
}

impl Default for Call {
    fn default() -> Self {
        Call::All(Rule)
    }
}

/// A rule per call method; a method left out is denied.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct CallRules {
    /// Who may set the resource's writable fields (`call.<resource>.set`).
    set: Rule,
    /// Who may reset the resource's values to their defaults (`call.<resource>.reset`).
    reset: Rule,
}

// ------------------------------------------------------------------------ fields

/// A field of the model: its type, where its value comes from and what values it takes.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = constraints_by_type)]
struct Field {
    /// The field's type.
    r#type: FieldType,
    /// What the field holds, for people reading the file.
    #[serde(default)]
    description: Text,
    /// The value while nothing is written (and after a reset); null when left out. A
    /// valid value of the field; a data field takes any JSON.
    #[serde(default)]
    default: AnyValue,
    /// Derive the value from a template (handlebars) over `token`, `params` and `cid`,
    /// e.g. `"{{token.userId}}"` or `"users.user.{{token.userId}}"`. A derived field is
    /// not writable.
    #[serde(default)]
    from: Text,
    /// The only values the field takes (string, integer, number and boolean fields).
    #[serde(default)]
    #[schemars(length(min = 1))]
    r#enum: Vec<AnyValue>,
    /// The smallest value (integer and number fields).
    #[serde(default)]
    min: Number,
    /// The largest value (integer and number fields).
    #[serde(default)]
    max: Number,
    /// The most characters (string fields).
    #[serde(default)]
    max_length: Whole,
    /// A regular expression the value must match (string fields), e.g. `"^[a-z]+$"`.
    #[serde(default)]
    pattern: Text,
    /// Clients may set the field (`call.<resource>.set`) and services write it through the
    /// write API.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    writable: Flag,
}

/// A field's type.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum FieldType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// A reference to another resource, written as its resource name (on the wire,
    /// `{"rid": ...}`).
    Ref,
    /// Any JSON value, sent as RES data (`{"data": ...}`).
    Data,
}

/// Which constraints a field's type allows, and that a derived field is not writable.
fn constraints_by_type(schema: &mut Schema) {
    let forbid = |keys: &[&str]| {
        let properties: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), Value::Bool(false)))
            .collect();
        json!({ "properties": properties })
    };
    let type_is = |names: &[&str]| json!({ "properties": { "type": { "enum": names } }, "required": ["type"] });
    schema.insert(
        "allOf".into(),
        json!([
            { "if": type_is(&["integer", "number"]), "else": forbid(&["min", "max"]) },
            { "if": type_is(&["string"]), "else": forbid(&["max_length", "pattern"]) },
            { "if": type_is(&["ref", "data"]), "then": forbid(&["enum"]) },
            {
                "if": { "properties": { "writable": { "const": true } }, "required": ["writable"] },
                "then": forbid(&["from"])
            }
        ]),
    );
}

// ------------------------------------------------------------------------ leaves

/// Implements `JsonSchema` for a type that stands for one kind of value, inlined where
/// it is used.
macro_rules! leaf {
    ($name:ident, $schema:expr) => {
        #[derive(Default)]
        struct $name;

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

leaf!(Text, json_schema!({ "type": "string" }));
leaf!(Flag, json_schema!({ "type": "boolean" }));
leaf!(Number, json_schema!({ "type": "number" }));
leaf!(Whole, json_schema!({ "type": "integer", "minimum": 0 }));
leaf!(Count, json_schema!({ "type": "integer", "minimum": 1 }));
leaf!(AnyValue, json_schema!(true));
leaf!(
    Version,
    json_schema!({ "type": "integer", "const": VERSION })
);
leaf!(
    Duration,
    json_schema!({ "type": "string", "pattern": DURATION_PATTERN })
);
leaf!(
    SubjectToken,
    json_schema!({ "type": "string", "pattern": SUBJECT_TOKEN_PATTERN })
);
leaf!(
    Urls,
    json_schema!({
        "anyOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" }, "minItems": 1 }
        ]
    })
);
leaf!(ApiPrefix, {
    let reserved = format!(r"^({})(\.|$)", RESERVED_SUBJECT_ROOTS.join("|"));
    json_schema!({
        "type": "string",
        "pattern": SUBJECT_PATTERN,
        "not": { "pattern": reserved }
    })
});

/// An access rule: a CEL expression that grants when true, or a YAML boolean.
#[derive(Default)]
struct Rule;

const RULE: &str = "An access rule: a CEL expression over `cid`, `token`, `params`, `query` \
    and `model` that grants when true, e.g. `cid == params.cid && token != null`. A YAML \
    boolean is the constant rule: true grants always, false never.";

impl JsonSchema for Rule {
    fn schema_name() -> Cow<'static, str> {
        "Rule".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": RULE,
            "type": ["string", "boolean"]
        })
    }
}

/// A duration as the compiler reads it (humantime): numbers with units, such as `500ms`,
/// `30s`, `1.5h`, `1h 30m` or `24h`. A bare number (no unit) is refused.
const DURATION_PATTERN: &str =
    r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+)*\s*$";

/// One NATS subject token: no whitespace, dots or wildcards.
const SUBJECT_TOKEN_PATTERN: &str = r"^[^\s.*>]+$";

/// A NATS subject without wildcards: dot-separated tokens.
const SUBJECT_PATTERN: &str = r"^[^\s.*>]+(\.[^\s.*>]+)*$";

/// A resource name pattern: dot-separated parts, each a `{capture}` (a name of letters,
/// digits and `_`, not starting with a digit) or a literal without whitespace,
/// wildcards, `?` or braces.
const RESOURCE_PATTERN: &str =
    r"^(\{[A-Za-z_][A-Za-z0-9_]*\}|[^\s.*>?{}]+)(\.(\{[A-Za-z_][A-Za-z0-9_]*\}|[^\s.*>?{}]+))*$";

/// A default duration as a person writes it: in the largest unit that divides it.
fn duration_text(d: StdDuration) -> String {
    let ms = d.as_millis();
    [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .iter()
        .find(|(unit, _)| ms > 0 && ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, name)| format!("{}{name}", ms / unit),
        )
}
