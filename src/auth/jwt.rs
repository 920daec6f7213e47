//! JWT verification: a [`Verifier`] made once from the configured algorithms, key
//! material (an HMAC secret, a PEM public key or a JWKS), issuer, audience and leeway,
//! then [`Verifier::verify`] per token at a given time; and finding a token in an
//! `Authorization` or `Cookie` header ([`from_authorization`], [`from_cookie`]).
//!
//! The only module naming `jsonwebtoken` (signatures, PEM and JWK parsing, `iss`/`aud`);
//! the algorithm, the key and the time are decided here:
//! - the header's `alg` must be one of the allowed algorithms (so `none`, and any
//!   algorithm not listed, is refused before a key is looked at), and the key's kind must
//!   serve it: an HMAC secret only HS256, an RSA key only RS256, a P-256 key only ES256,
//!   an Ed25519 key only EdDSA. A token signed HS256 with an RSA public key as its
//!   secret therefore fails both ways: HS256 not allowed, or not a secret's algorithm.
//!   A verifier refuses to be built with an allowed algorithm its key cannot serve.
//! - `exp` and `nbf` are checked against the `now` the caller passes (with the leeway),
//!   not the crate's clock, so the service and tests decide the time. `exp` is required
//!   unless [`Verifier::require_exp`] says otherwise.
//! - `iss` and `aud` are checked, and required, when configured, and ignored when not.
//!
//! Errors name what failed with a stable [`JwtError::code`]; no message contains the
//! token, a part of it or a secret.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// Longer tokens are refused before any decoding (a JWT from an identity provider is a
/// few hundred bytes to a few kilobytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The shortest HMAC secret accepted: 256 bits, the hash's output size, as RFC 7518
/// section 3.2 requires for HS256.
pub const MIN_SECRET_LEN: usize = 32;

/// A signature algorithm a verifier may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256: a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: an RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256: an EC public key.
    ES256,
    /// Ed25519: an OKP public key.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order the docs list them.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];

    /// The name as a JWT header's `alg` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The kind of key that verifies it.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::HS256 => KeyKind::Secret,
            Algorithm::RS256 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::P256,
            Algorithm::EdDSA => KeyKind::Ed25519,
        }
    }

    fn from_header(alg: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == alg)
    }

    fn to_crate(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that is not one of [`Algorithm::ALL`] (exact spelling).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown JWT algorithm {0:?} (expected one of HS256, RS256, ES256, EdDSA)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_header(s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// The kind of a verification key; each serves exactly one [`Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An HMAC secret (HS256).
    Secret,
    /// An RSA public key (RS256).
    Rsa,
    /// An EC public key on P-256 (ES256).
    P256,
    /// An Ed25519 public key (EdDSA).
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Secret => "a shared secret",
            KeyKind::Rsa => "an RSA public key",
            KeyKind::P256 => "a P-256 public key",
            KeyKind::Ed25519 => "an Ed25519 public key",
        })
    }
}

/// Where a verifier's keys come from (the texts themselves: reading files and URLs is
/// the caller's business).
pub enum KeyMaterial<'a> {
    /// An HMAC secret, as bytes (HS256).
    Secret(&'a [u8]),
    /// One public key in PEM (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`): RSA, P-256
    /// or Ed25519, whichever it is.
    PublicKeyPem(&'a str),
    /// A JWKS document (`{"keys": [...]}`): tokens name their key by `kid`.
    Jwks(&'a str),
    /// A JWKS fetched later ([`Verifier::set_jwks`]); until then no token verifies
    /// (`unknown_key`).
    JwksLater,
}

// No Debug on purpose beyond the kind: the secret must never print.
impl fmt::Debug for KeyMaterial<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyMaterial::Secret(_) => "Secret(<secret>)",
            KeyMaterial::PublicKeyPem(_) => "PublicKeyPem(..)",
            KeyMaterial::Jwks(_) => "Jwks(..)",
            KeyMaterial::JwksLater => "JwksLater",
        })
    }
}

/// Why a verifier could not be built (a configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no JWT algorithm allowed")]
    NoAlgorithms,
    #[error("the JWT secret is {len} bytes long; HS256 needs at least {MIN_SECRET_LEN}")]
    ShortSecret { len: usize },
    #[error("the public key is not a PEM RSA, P-256 or Ed25519 public key")]
    BadPem,
    #[error("the public key is a private key; give its public key (`openssl pkey -pubout`)")]
    PrivateKeyPem,
    #[error("{alg} is allowed but the key is {kind}, which only serves {}", kind_alg(*.kind))]
    KeyMismatch { alg: Algorithm, kind: KeyKind },
    #[error("the JWKS is not a JSON object with a \"keys\" array")]
    BadJwks,
    #[error("key {index} of the JWKS is a shared secret (kty \"oct\"); a JWKS holds public keys, give a secret as `secret`")]
    SecretInJwks { index: usize },
    #[error("the JWKS has no key for the allowed algorithms ({skipped} key(s) skipped: unsupported type, curve, algorithm or use)")]
    NoUsableKey { skipped: usize },
}

fn kind_alg(kind: KeyKind) -> Algorithm {
    match kind {
        KeyKind::Secret => Algorithm::HS256,
        KeyKind::Rsa => Algorithm::RS256,
        KeyKind::P256 => Algorithm::ES256,
        KeyKind::Ed25519 => Algorithm::EdDSA,
    }
}

/// Why a token was refused. The message never contains the token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT: too long, not three dot-separated parts, bad base64url, a header or
    /// claims that are not a JSON object, or a time claim that is not a number.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not allowed, or its key does not serve it.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key of the JWKS matches the token's `kid`.
    #[error("no key for the token's kid")]
    UnknownKey,
    /// The signature does not verify with the key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing or does not name the configured audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim is missing (`exp`).
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
}

impl JwtError {
    /// A stable, documented code for replies, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtError::UnknownKey => "unknown_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim(_) => "missing_claim",
        }
    }
}

/// A key with what it may verify.
struct Key {
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one (then only that algorithm).
    alg: Option<Algorithm>,
    kid: Option<String>,
    key: DecodingKey,
}

enum Keys {
    One(Key),
    /// Replaced whole when a JWKS is fetched again ([`Verifier::set_jwks`]).
    Jwks(std::sync::RwLock<std::sync::Arc<Vec<Key>>>),
}

/// Verifies JWTs against one configuration. Cheap to share (`&self`), made once.
pub struct Verifier {
    /// Tokens refused for a `kid` the JWKS does not hold, since last asked
    /// ([`Verifier::take_unknown_kids`]): the JWKS may be fetched again.
    unknown_kids: std::sync::atomic::AtomicU64,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    require_exp: bool,
    /// The crate's validation, one per allowed algorithm (it wants the algorithms of one
    /// key family only).
    validations: Vec<(Algorithm, Validation)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .field(
                "keys",
                &match &self.keys {
                    Keys::One(k) => format!("one ({})", k.kind),
                    Keys::Jwks(ks) => format!(
                        "JWKS of {}",
                        ks.read().unwrap_or_else(|p| p.into_inner()).len()
                    ),
                },
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("require_exp", &self.require_exp)
            .finish()
    }
}

impl Verifier {
    /// A verifier allowing `algorithms` (duplicates ignored) with keys from `keys`; no
    /// issuer or audience check, no leeway, `exp` required.
    pub fn new(algorithms: &[Algorithm], keys: KeyMaterial<'_>) -> Result<Verifier, KeyError> {
        let mut algs: Vec<Algorithm> = Vec::new();
        for &a in algorithms {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        if algs.is_empty() {
            return Err(KeyError::NoAlgorithms);
        }
        let keys = match keys {
            KeyMaterial::Secret(secret) => {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(KeyError::ShortSecret { len: secret.len() });
                }
                let key = DecodingKey::from_secret(secret)
                    .map_err(|_| KeyError::ShortSecret { len: secret.len() })?;
                Keys::One(Key {
                    kind: KeyKind::Secret,
                    alg: None,
                    kid: None,
                    key,
                })
            }
            KeyMaterial::PublicKeyPem(pem) => Keys::One(pem_key(pem)?),
            KeyMaterial::Jwks(text) => Keys::Jwks(std::sync::RwLock::new(std::sync::Arc::new(
                jwks_keys(text, &algs)?,
            ))),
            KeyMaterial::JwksLater => Keys::Jwks(Default::default()),
        };
        if let Keys::One(key) = &keys {
            if let Some(&alg) = algs.iter().find(|a| a.key_kind() != key.kind) {
                return Err(KeyError::KeyMismatch {
                    alg,
                    kind: key.kind,
                });
            }
        }
        let mut v = Verifier {
            unknown_kids: Default::default(),
            algorithms: algs,
            keys,
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
            require_exp: true,
            validations: Vec::new(),
        };
        v.rebuild();
        Ok(v)
    }

    /// Requires `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Verifier {
        self.issuer = Some(issuer.into());
        self.rebuild();
        self
    }

    /// Requires `aud` (a string, or an array of them) to name `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Verifier {
        self.audience = Some(audience.into());
        self.rebuild();
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (whole seconds; less is rounded down).
    pub fn leeway(mut self, leeway: Duration) -> Verifier {
        self.leeway = leeway;
        self
    }

    /// Whether a token without `exp` is refused (the default) or never expires.
    pub fn require_exp(mut self, required: bool) -> Verifier {
        self.require_exp = required;
        self
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// How many tokens named a key the JWKS does not hold since the last call.
    pub fn take_unknown_kids(&self) -> u64 {
        self.unknown_kids
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the keys of a JWKS verifier with those of `text` (a JWKS fetched again);
    /// returns the `kid`s it holds now (`-` for a key without one). On an error, or for
    /// a verifier of one key, the keys stay as they were.
    pub fn set_jwks(&self, text: &str) -> Result<Vec<String>, KeyError> {
        let Keys::Jwks(lock) = &self.keys else {
            return Err(KeyError::BadJwks);
        };
        let keys = jwks_keys(text, &self.algorithms)?;
        let kids = keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
            .collect();
        *lock.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(keys);
        Ok(kids)
    }

    fn rebuild(&mut self) {
        self.validations = self
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg.to_crate());
                // Time is ours (the caller's `now`); iss and aud are the crate's, required
                // when configured.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.leeway = 0;
                v.required_spec_claims = HashSet::new();
                if let Some(iss) = &self.issuer {
                    v.set_issuer(&[iss]);
                    v.required_spec_claims.insert("iss".to_owned());
                }
                match &self.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        v.required_spec_claims.insert("aud".to_owned());
                    }
                    None => v.validate_aud = false,
                }
                (alg, v)
            })
            .collect();
    }

    /// Verifies `token` at `now`: its shape, algorithm, key, signature, `exp`/`nbf`, and
    /// `iss`/`aud` when configured. Returns its claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three parts separated by dots"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|_| JwtError::Malformed("header is not a JSON object with a string alg"))?;
        let alg = Algorithm::from_header(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(JwtError::AlgorithmNotAllowed)?;
        let jwks = match &self.keys {
            Keys::Jwks(lock) => Some(lock.read().unwrap_or_else(|p| p.into_inner()).clone()),
            Keys::One(_) => None,
        };
        let key = self
            .key_for(jwks.as_deref(), alg, header.kid.as_deref())
            .inspect_err(|e| {
                if *e == JwtError::UnknownKey {
                    self.unknown_kids
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })?;
        let validation = &self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .expect("a validation per allowed algorithm")
            .1;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| map_error(e.kind()))?
            .claims;
        self.check_times(&claims, now)?;
        Ok(claims)
    }

    /// The key for a token: the one key, or by `kid` from `jwks` (the JWKS as it is
    /// now).
    fn key_for<'k>(
        &'k self,
        jwks: Option<&'k Vec<Key>>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<&'k Key, JwtError> {
        let serves = |k: &&Key| k.kind == alg.key_kind() && k.alg.is_none_or(|a| a == alg);
        match (&self.keys, jwks) {
            (Keys::One(key), _) => Some(key)
                .filter(serves)
                .ok_or(JwtError::AlgorithmNotAllowed),
            (Keys::Jwks(_), None) => Err(JwtError::UnknownKey),
            (Keys::Jwks(_), Some(keys)) => match kid {
                Some(kid) => {
                    let mut named = keys
                        .iter()
                        .filter(|k| k.kid.as_deref() == Some(kid))
                        .peekable();
                    if named.peek().is_none() {
                        return Err(JwtError::UnknownKey);
                    }
                    named.find(serves).ok_or(JwtError::AlgorithmNotAllowed)
                }
                // Without a kid, only when one key could serve the algorithm.
                None => {
                    let mut fit = keys.iter().filter(serves);
                    match (fit.next(), fit.next()) {
                        (Some(key), None) => Ok(key),
                        _ => Err(JwtError::UnknownKey),
                    }
                }
            },
        }
    }

    fn check_times(&self, claims: &Claims, now: SystemTime) -> Result<(), JwtError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as f64;
        let leeway = self.leeway.as_secs() as f64;
        match numeric_date(claims, "exp")? {
            // RFC 7519 4.1.4: valid only before exp.
            Some(exp) if now >= exp + leeway => return Err(JwtError::Expired),
            Some(_) => {}
            None if self.require_exp => return Err(JwtError::MissingClaim("exp")),
            None => {}
        }
        // 4.1.5: not valid before nbf.
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now + leeway < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn numeric_date(claims: &Claims, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if t.is_finite() => Ok(Some(t)),
            _ => Err(JwtError::Malformed(time_claim_message(name))),
        },
        Some(_) => Err(JwtError::Malformed(time_claim_message(name))),
    }
}

fn time_claim_message(name: &str) -> &'static str {
    if name == "exp" {
        "exp is not a number"
    } else {
        "nbf is not a number"
    }
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidToken => JwtError::Malformed("not a JWS compact serialization"),
        ErrorKind::Base64(_) => JwtError::Malformed("a part is not base64url"),
        ErrorKind::Json(_) => JwtError::Malformed("header or claims are not the expected JSON"),
        ErrorKind::Utf8(_) => JwtError::Malformed("not UTF-8"),
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::AlgorithmNotAllowed,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "iss" => {
            JwtError::WrongIssuer
        }
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "aud" => {
            JwtError::WrongAudience
        }
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        // A key the crate could not use, or anything newer: refused as unverified.
        _ => JwtError::BadSignature,
    }
}

fn pem_key(pem: &str) -> Result<Key, KeyError> {
    if pem.contains("PRIVATE KEY-----") {
        return Err(KeyError::PrivateKeyPem);
    }
    let pem = pem.as_bytes();
    let (kind, key) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (KeyKind::Rsa, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (KeyKind::P256, k)
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (KeyKind::Ed25519, k)
    } else {
        return Err(KeyError::BadPem);
    };
    let key = Key {
        kind,
        alg: None,
        kid: None,
        key,
    };
    if !usable(&key) {
        return Err(KeyError::BadPem);
    }
    Ok(key)
}

/// Whether the crypto backend takes the key (EC and Ed keys are parsed when a verifier
/// is made; a wrong curve or length fails here rather than on every token).
fn usable(key: &Key) -> bool {
    let alg = key.alg.unwrap_or(kind_alg(key.kind));
    jsonwebtoken::crypto::verify("AA", b"", &key.key, alg.to_crate()).is_ok()
}

fn jwks_keys(text: &str, algorithms: &[Algorithm]) -> Result<Vec<Key>, KeyError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_str(text).map_err(|_| KeyError::BadJwks)?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for (index, value) in set.keys.into_iter().enumerate() {
        if value.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(KeyError::SecretInJwks { index });
        }
        match jwk_key(value) {
            Some(key) if algorithms.contains(&key.alg.unwrap_or(kind_alg(key.kind))) => {
                keys.push(key)
            }
            _ => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoUsableKey { skipped });
    }
    Ok(keys)
}

/// One JWK as a key, or `None` when it cannot serve one of our algorithms (another
/// type, curve, algorithm or use, or fields that do not parse).
fn jwk_key(value: Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyKind::P256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
    };
    if alg.is_some_and(|a| a.key_kind() != kind) {
        return None;
    }
    let key = Key {
        kind,
        alg,
        kid: jwk.common.key_id.clone(),
        key: DecodingKey::from_jwk(&jwk).ok()?,
    };
    usable(&key).then_some(key)
}

/// The token of an `Authorization` header value: `Bearer <token>`, the scheme in any
/// case. `None` for another scheme or an empty token.
pub fn from_authorization(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty() && !token.contains([' ', '\t'])).then_some(token)
}

/// The value of the cookie `name` in a `Cookie` header value (`a=1; b=2`): the first
/// one of that name (names are case-sensitive), without surrounding double quotes.
/// `None` when absent or empty.
pub fn from_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then_some(v)
    })
}
