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
use serde_json::Value;

use super::nats::{
    DEFAULT_CONNECTION_NAME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_NATS_URL, DEFAULT_QUEUE_GROUP,
    DEFAULT_RECONNECT_MAX_DELAY,
};
use super::{
    DEFAULT_API_PREFIX, DEFAULT_BUCKET, DEFAULT_IDLE_TTL, DEFAULT_LEASE, DEFAULT_MAX_ENTRIES,
    DEFAULT_PARTITIONS, RESERVED_SUBJECT_ROOTS, VERSION,
};
use super::{MAX_PARTITIONS, STORES};

mod auth;
mod nats;
mod resource;
#[cfg(test)]
mod tests;

use auth::AuthName;
use nats::Nats;
use resource::Resource;

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
    /// Auth names connres answers (`auth.<name>.<method>`): logins with a JWT and
    /// logouts, with no auth service to write. Takes effect on reload.
    #[schemars(extend("propertyNames" = { "pattern": SUBJECT_PATTERN }))]
    auth: BTreeMap<String, AuthName>,
    /// The resources, by resource name pattern: dot-separated parts, each a literal or a
    /// `{capture}`, such as `session.user.{cid}`. `{cid}` captures the connection ID the
    /// gateway asks for. No two patterns may match the same resource name. Required (in
    /// at least one file of a directory).
    #[schemars(extend("propertyNames" = { "pattern": RESOURCE_PATTERN }))]
    resources: BTreeMap<String, Resource>,
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
    /// The largest token a connection may have, in bytes of JSON (1 to 1048576): a
    /// token event with a larger one is ignored, and a request carrying one is refused.
    #[schemars(extend("default" = crate::config::state::DEFAULT_MAX_TOKEN_BYTES, "maximum" = crate::config::state::MAX_TOKEN_BYTES_LIMIT))]
    max_token_bytes: Count,
    /// The largest value a write may store, in bytes of JSON (1 to 1048576): a
    /// field's value or a collection's item set or added by a client or the backend
    /// over it is refused with system.invalidParams.
    #[schemars(extend("default" = crate::config::state::DEFAULT_MAX_VALUE_BYTES, "maximum" = crate::config::state::MAX_VALUE_BYTES_LIMIT))]
    max_value_bytes: Count,
    /// The most bytes of state kept in memory (tokens and written values as JSON,
    /// cached replies, and a fixed cost per connection); past it, the least recently
    /// touched connection goes first, as past `max_entries`. A whole number of bytes.
    #[schemars(extend("default" = crate::config::state::DEFAULT_MAX_BYTES))]
    max_bytes: Count,
    /// Where state lives: `memory` (this process; one instance per NATS cluster) or
    /// `nats` (a JetStream key-value bucket shared by every instance using it, one
    /// owner per partition). Takes effect on restart.
    #[schemars(extend("default" = "memory"))]
    store: StoreKind,
    /// With `store: nats`: the key-value bucket, created if missing.
    #[schemars(extend("default" = DEFAULT_BUCKET))]
    bucket: Bucket,
    /// With `store: nats`: copies of the bucket the NATS cluster keeps, used when
    /// creating it (1 to 5).
    #[schemars(extend("default" = 1))]
    replicas: Replicas,
    /// With `store: nats`: connections hash into this many partitions by cid (models
    /// without `{cid}` by name); each partition has one owner. Fixed for a bucket.
    #[schemars(extend("default" = DEFAULT_PARTITIONS))]
    partitions: Partitions,
    /// With `store: nats`: how long an owner holds a partition without renewing: a
    /// duration of at least 1s. A takeover after a crash takes about this long.
    #[schemars(extend("default" = duration_text(DEFAULT_LEASE)))]
    lease: Duration,
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
leaf!(StoreKind, json_schema!({ "enum": STORES }));
leaf!(
    Bucket,
    json_schema!({ "type": "string", "pattern": "^[A-Za-z0-9_-]+$" })
);
leaf!(
    MaxItems,
    json_schema!({ "type": "integer", "minimum": 1, "maximum": crate::collection::MAX_ITEMS_LIMIT, "default": crate::collection::DEFAULT_MAX_ITEMS })
);
leaf!(
    MaxMembers,
    json_schema!({ "type": "integer", "minimum": 1, "maximum": crate::presence::MAX_MEMBERS_LIMIT, "default": crate::presence::DEFAULT_MAX_MEMBERS })
);
leaf!(
    Replicas,
    json_schema!({ "type": "integer", "minimum": 1, "maximum": 5 })
);
leaf!(
    Partitions,
    json_schema!({ "type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS })
);
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

leaf!(
    Algorithms,
    json_schema!({
        "anyOf": [
            { "enum": ["HS256", "RS256", "ES256", "EdDSA"] },
            {
                "type": "array",
                "items": { "enum": ["HS256", "RS256", "ES256", "EdDSA"] },
                "minItems": 1
            }
        ]
    })
);
leaf!(Expire, json_schema!({ "enum": ["at_exp", "never"] }));
leaf!(JwtPlaces, {
    let place = r"^(params\.[^\s.*>]+|header\.[A-Za-z0-9-]+|cookie\.[!-~]+)$";
    json_schema!({
        "anyOf": [
            { "type": "string", "pattern": place },
            { "type": "array", "items": { "type": "string", "pattern": place }, "minItems": 1 }
        ]
    })
});

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
