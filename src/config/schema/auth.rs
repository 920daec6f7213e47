//! The schema of the `auth:` block.

use schemars::JsonSchema;

use super::*;

/// One auth name: connres answers the auth requests `auth.<name>.<method>` for the
/// methods listed (`client.authenticate('<name>', '<method>', params)`, and Resgate's
/// `--wsheadauth`/`--headauth <name>.<method>`).
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct AuthName {
    /// How JWTs are verified. Required when a method reads a JWT.
    jwt: Jwt,
    /// The connection token a verified JWT gives: an object whose values are
    /// templates over `claims` (`"{{claims.sub}}"`; a single path keeps the claim's
    /// type, a missing claim gives null). Without it, the token is the claims as they
    /// are.
    token: BTreeMap<String, Text>,
    /// The token ID sent with the token event (`tid`), a template over `claims`, such
    /// as `"{{claims.sub}}"`.
    tid: Text,
    /// `at_exp` (the default): a login's token ends when its JWT expires, and connres
    /// then logs the connection out live. `never`: it stays until a logout.
    #[schemars(extend("default" = "at_exp"))]
    expire: Expire,
    /// Resume keys (with a `{ resume: true }` method): how long a key stays valid.
    resume: ResumeSettings,
    /// The methods, by name (one subject token each). Required.
    methods: BTreeMap<String, Method>,
}

/// How a JWT is verified: its algorithm must be one of `algorithms` and match the
/// key (one of `secret`, `public_key`, `jwks`); `exp` is required and checked, `nbf`
/// when present, `iss` and `aud` when configured.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Jwt {
    /// The algorithms a token may be signed with. Required.
    algorithms: Algorithms,
    /// An HMAC secret of at least 32 bytes (HS256), from the environment or a file.
    secret: KeySource,
    /// A PEM public key (RS256, ES256 with P-256, EdDSA with Ed25519), from the
    /// environment or a file.
    public_key: KeySource,
    /// A JWKS document (`{"keys": [...]}`), from the environment or a file; tokens name
    /// their key by `kid`.
    jwks: KeySource,
    /// The required `iss` claim.
    issuer: Text,
    /// An audience the `aud` claim must name.
    audience: Text,
    /// Clock skew allowed on `exp` and `nbf`: a duration such as 30s.
    #[schemars(extend("default" = "0s"))]
    leeway: Duration,
}

/// Where a key is read from: never the file itself.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub(super) struct KeySource {
    /// An environment variable holding the key.
    env: Text,
    /// A file holding the key, relative to this file's directory.
    file: Text,
    /// For `jwks` only: an https:// URL (http:// on a loopback host) it is fetched from,
    /// at start, every 10 minutes, and again (at most every 30s) when a token names a
    /// key it does not hold.
    url: Text,
}

/// What a method does: one of `jwt`, `logout`, `resume` and `recheck`.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub(super) struct Method {
    /// Log in with a JWT found at this place, or the first of these places that holds
    /// one: `params.<name>`, `header.<Name>` (a `Bearer ` prefix is removed;
    /// `Authorization` must be a bearer token) or `cookie.<name>`.
    jwt: JwtPlaces,
    /// `true`: log the connection out (its token becomes null).
    logout: Flag,
    /// `true`: move a session to this connection with the resume key a login (or an
    /// earlier resume) answered, given as `params.key`.
    resume: Flag,
    /// `true`: verify the JWT the connection logged in with again (keys, time, issuer,
    /// audience as they are now) and log the connection out when it is refused; name
    /// it in a `system.tokenReset`. Logins then keep their JWT.
    recheck: Flag,
}

/// Resume keys.
#[derive(Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ResumeSettings {
    /// How long a key stays valid after it is issued: a duration of at least 1s.
    #[schemars(extend("default" = "10m"))]
    ttl: Duration,
}
