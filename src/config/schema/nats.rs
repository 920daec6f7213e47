//! The schema of the `nats:` block.

use schemars::{JsonSchema, Schema};
use serde_json::json;

use super::*;

/// How connres connects to NATS. At most one way to authenticate: `creds`, `nkey`,
/// `user` with `password`, `token`, or credentials in the URLs.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(transform = one_way_to_authenticate)]
pub(super) struct Nats {
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
