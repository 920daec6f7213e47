//! JWT verification: each algorithm, wrong keys, `alg: none`, algorithm confusion,
//! times, issuer and audience, malformed tokens, JWKS key selection, and that no error
//! shows the token or the secret. Keys: `tests/fixtures/jwt/` (test keys only).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use super::jwt::{
    from_authorization, from_cookie, Algorithm, Claims, JwtError, KeyError, KeyMaterial, Verifier,
};

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes, for HS256";
const OTHER_SECRET: &[u8] = b"another test secret, also thirty-two bytes or more";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/jwt/", $name))
    };
}

const RSA_KEY: &str = fixture!("rsa.key.pem");
const RSA_PUB: &str = fixture!("rsa.pub.pem");
const RSA2_KEY: &str = fixture!("rsa-2.key.pem");
const RSA2_PUB: &str = fixture!("rsa-2.pub.pem");
const EC_KEY: &str = fixture!("ec.key.pem");
const EC_PUB: &str = fixture!("ec.pub.pem");
const EC2_KEY: &str = fixture!("ec-2.key.pem");
const ED_KEY: &str = fixture!("ed25519.key.pem");
const ED_PUB: &str = fixture!("ed25519.pub.pem");
const ED2_KEY: &str = fixture!("ed25519-2.key.pem");

/// The tests' "now": 2027-01-15.
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn signing_key(alg: Algorithm, second: bool) -> EncodingKey {
    match (alg, second) {
        (Algorithm::HS256, false) => EncodingKey::from_secret(SECRET).unwrap(),
        (Algorithm::HS256, true) => EncodingKey::from_secret(OTHER_SECRET).unwrap(),
        (Algorithm::RS256, false) => EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
        (Algorithm::RS256, true) => EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).unwrap(),
        (Algorithm::ES256, false) => EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap(),
        (Algorithm::ES256, true) => EncodingKey::from_ec_pem(EC2_KEY.as_bytes()).unwrap(),
        (Algorithm::EdDSA, false) => EncodingKey::from_ed_pem(ED_KEY.as_bytes()).unwrap(),
        (Algorithm::EdDSA, true) => EncodingKey::from_ed_pem(ED2_KEY.as_bytes()).unwrap(),
    }
}

fn crate_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    alg.name().parse().unwrap()
}

fn sign_with(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(crate_alg(alg));
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    sign_with(alg, None, claims, &signing_key(alg, false))
}

fn claims() -> Value {
    json!({ "sub": "42", "name": "Ada", "role": "admin", "exp": NOW + 3600 })
}

fn verifier(alg: Algorithm) -> Verifier {
    let keys = match alg {
        Algorithm::HS256 => KeyMaterial::Secret(SECRET),
        Algorithm::RS256 => KeyMaterial::PublicKeyPem(RSA_PUB),
        Algorithm::ES256 => KeyMaterial::PublicKeyPem(EC_PUB),
        Algorithm::EdDSA => KeyMaterial::PublicKeyPem(ED_PUB),
    };
    Verifier::new(&[alg], keys).unwrap()
}

fn as_map(v: Value) -> Claims {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// A JWKS of the public keys, `kid`s: rsa, rsa-2, ec, ed.
fn jwks() -> String {
    let jwk = |alg: Algorithm, second: bool, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(&signing_key(alg, second), crate_alg(alg)).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).unwrap()
    };
    json!({ "keys": [
        jwk(Algorithm::RS256, false, "rsa"),
        jwk(Algorithm::RS256, true, "rsa-2"),
        jwk(Algorithm::ES256, false, "ec"),
        jwk(Algorithm::EdDSA, false, "ed"),
    ]})
    .to_string()
}

fn code(r: Result<Claims, JwtError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// base64url of a JSON value, for hand-made tokens.
fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn each_algorithm_verifies_a_good_token() {
    for alg in Algorithm::ALL {
        let token = sign(alg, &claims());
        let got = verifier(alg)
            .verify(&token, now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(got, as_map(claims()), "{alg}");
    }
}

#[test]
fn each_public_key_algorithm_verifies_through_a_jwks_by_kid() {
    let jwks = jwks();
    let all = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    let v = Verifier::new(&all, KeyMaterial::Jwks(&jwks)).unwrap();
    for (alg, second, kid) in [
        (Algorithm::RS256, false, "rsa"),
        (Algorithm::RS256, true, "rsa-2"),
        (Algorithm::ES256, false, "ec"),
        (Algorithm::EdDSA, false, "ed"),
    ] {
        let token = sign_with(alg, Some(kid), &claims(), &signing_key(alg, second));
        assert_eq!(code(v.verify(&token, now())), "ok", "{kid}");
    }
    // The kid picks the key: rsa-2's token named as rsa does not verify.
    let token = sign_with(
        Algorithm::RS256,
        Some("rsa"),
        &claims(),
        &signing_key(Algorithm::RS256, true),
    );
    assert_eq!(code(v.verify(&token, now())), "bad_signature");
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    for alg in Algorithm::ALL {
        let token = sign_with(alg, None, &claims(), &signing_key(alg, true));
        assert_eq!(
            code(verifier(alg).verify(&token, now())),
            "bad_signature",
            "{alg}"
        );
    }
    // The other way round: the right token, the other public key.
    let v = Verifier::new(&[Algorithm::RS256], KeyMaterial::PublicKeyPem(RSA2_PUB)).unwrap();
    assert_eq!(
        code(v.verify(&sign(Algorithm::RS256, &claims()), now())),
        "bad_signature"
    );
    // A tampered payload under the right key's signature.
    let token = sign(Algorithm::HS256, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = json!({ "sub": "1", "role": "admin", "exp": NOW + 3600 });
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
    assert_eq!(
        code(verifier(Algorithm::HS256).verify(&tampered, now())),
        "bad_signature"
    );
}

#[test]
fn alg_none_is_refused_whatever_is_allowed() {
    let keys = jwks();
    let verifiers = [
        verifier(Algorithm::HS256),
        verifier(Algorithm::RS256),
        Verifier::new(
            &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            KeyMaterial::Jwks(&keys),
        )
        .unwrap(),
    ];
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let body = b64(&claims());
        for token in [
            format!("{}.{body}.", b64(&json!({ "alg": alg, "typ": "JWT" }))),
            format!("{}.{body}.", b64(&json!({ "alg": alg, "kid": "rsa" }))),
        ] {
            for v in &verifiers {
                assert_eq!(
                    code(v.verify(&token, now())),
                    "algorithm_not_allowed",
                    "{alg:?}"
                );
            }
        }
    }
    // Algorithms the crate knows but we do not allow (HS512, PS256, ...) too.
    let token = format!(
        "{}.{}.AAAA",
        b64(&json!({ "alg": "HS512" })),
        b64(&claims())
    );
    assert_eq!(
        code(verifier(Algorithm::HS256).verify(&token, now())),
        "algorithm_not_allowed"
    );
}

#[test]
fn hs_rs_confusion_is_refused() {
    // The attacker signs HS256 with the RSA public key (which is public) as the secret.
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let public = match alg {
            Algorithm::RS256 => RSA_PUB,
            Algorithm::ES256 => EC_PUB,
            _ => ED_PUB,
        };
        let key = EncodingKey::from_secret(public.as_bytes()).unwrap();
        let token = sign_with(Algorithm::HS256, None, &claims(), &key);
        assert_eq!(
            code(verifier(alg).verify(&token, now())),
            "algorithm_not_allowed",
            "{alg}"
        );
    }
    let key = EncodingKey::from_secret(RSA_PUB.as_bytes()).unwrap();
    let token = sign_with(Algorithm::HS256, None, &claims(), &key);
    assert_eq!(
        code(verifier(Algorithm::RS256).verify(&token, now())),
        "algorithm_not_allowed"
    );
    // A PEM key cannot be configured with HS256 allowed beside its own algorithm...
    assert_eq!(
        Verifier::new(
            &[Algorithm::RS256, Algorithm::HS256],
            KeyMaterial::PublicKeyPem(RSA_PUB)
        )
        .unwrap_err(),
        KeyError::KeyMismatch {
            alg: Algorithm::HS256,
            kind: super::jwt::KeyKind::Rsa
        }
    );
    // ...nor a secret with RS256 (not even the PEM text as a "secret").
    assert!(matches!(
        Verifier::new(&[Algorithm::RS256], KeyMaterial::Secret(RSA_PUB.as_bytes())),
        Err(KeyError::KeyMismatch {
            alg: Algorithm::RS256,
            ..
        })
    ));
    // In a JWKS, HS256 named at an RSA key's kid finds no key for HS256: the JWKS
    // cannot even be configured with HS256 to begin with (no secret in a JWKS), and an
    // RS256-only verifier refuses the algorithm.
    let keys = jwks();
    let v = Verifier::new(&[Algorithm::RS256], KeyMaterial::Jwks(&keys)).unwrap();
    let token = sign_with(Algorithm::HS256, Some("rsa"), &claims(), &key);
    assert_eq!(code(v.verify(&token, now())), "algorithm_not_allowed");
    // ES256 at the RSA key's kid: allowed algorithm, wrong kind of key.
    let v = Verifier::new(
        &[Algorithm::RS256, Algorithm::ES256],
        KeyMaterial::Jwks(&keys),
    )
    .unwrap();
    let token = sign_with(
        Algorithm::ES256,
        Some("rsa"),
        &claims(),
        &signing_key(Algorithm::ES256, false),
    );
    assert_eq!(code(v.verify(&token, now())), "algorithm_not_allowed");
}

#[test]
fn expiry_counts_the_leeway() {
    let v = verifier(Algorithm::HS256);
    let at = |exp: u64| sign(Algorithm::HS256, &json!({ "sub": "42", "exp": exp }));
    assert_eq!(code(v.verify(&at(NOW - 10), now())), "expired");
    // Valid only before exp (RFC 7519 4.1.4).
    assert_eq!(code(v.verify(&at(NOW), now())), "expired");
    assert_eq!(code(v.verify(&at(NOW + 1), now())), "ok");
    let v = v.leeway(Duration::from_secs(30));
    assert_eq!(code(v.verify(&at(NOW - 10), now())), "ok");
    assert_eq!(code(v.verify(&at(NOW - 29), now())), "ok");
    assert_eq!(code(v.verify(&at(NOW - 30), now())), "expired");
    // The time is the caller's: the same token verifies earlier.
    let earlier = now() - Duration::from_secs(60);
    assert_eq!(
        code(verifier(Algorithm::HS256).verify(&at(NOW - 10), earlier)),
        "ok"
    );
}

#[test]
fn exp_is_required_unless_told_and_must_be_a_number() {
    let token = sign(Algorithm::HS256, &json!({ "sub": "42" }));
    let r = verifier(Algorithm::HS256).verify(&token, now());
    assert_eq!(r, Err(JwtError::MissingClaim("exp")));
    assert_eq!(
        code(
            verifier(Algorithm::HS256)
                .require_exp(false)
                .verify(&token, now())
        ),
        "ok"
    );
    for exp in [json!("1900000000"), json!(null), json!([1]), json!(true)] {
        let token = sign(Algorithm::HS256, &json!({ "sub": "42", "exp": exp }));
        assert_eq!(
            code(verifier(Algorithm::HS256).verify(&token, now())),
            "malformed",
            "{exp}"
        );
    }
    // A fractional NumericDate is a number.
    let token = sign(Algorithm::HS256, &json!({ "exp": NOW as f64 + 0.5 }));
    assert_eq!(code(verifier(Algorithm::HS256).verify(&token, now())), "ok");
}

#[test]
fn not_yet_valid_counts_the_leeway() {
    let at = |nbf: Value| sign(Algorithm::ES256, &json!({ "exp": NOW + 3600, "nbf": nbf }));
    let v = verifier(Algorithm::ES256);
    assert_eq!(code(v.verify(&at(json!(NOW + 60)), now())), "not_yet_valid");
    assert_eq!(code(v.verify(&at(json!(NOW)), now())), "ok");
    assert_eq!(code(v.verify(&at(json!("soon")), now())), "malformed");
    let v = v.leeway(Duration::from_secs(60));
    assert_eq!(code(v.verify(&at(json!(NOW + 60)), now())), "ok");
    assert_eq!(code(v.verify(&at(json!(NOW + 61)), now())), "not_yet_valid");
}

#[test]
fn issuer_is_checked_and_required_when_configured() {
    let iss = "https://id.example.test";
    let with = |iss: Value| sign(Algorithm::RS256, &json!({ "exp": NOW + 60, "iss": iss }));
    let v = verifier(Algorithm::RS256).issuer(iss);
    assert_eq!(code(v.verify(&with(json!(iss)), now())), "ok");
    assert_eq!(
        code(v.verify(&with(json!("https://evil.example.test")), now())),
        "wrong_issuer"
    );
    assert_eq!(code(v.verify(&with(json!(42)), now())), "wrong_issuer");
    let without = sign(Algorithm::RS256, &json!({ "exp": NOW + 60 }));
    assert_eq!(code(v.verify(&without, now())), "wrong_issuer");
    // Not configured: not checked.
    let v = verifier(Algorithm::RS256);
    assert_eq!(
        code(v.verify(&with(json!("https://evil.example.test")), now())),
        "ok"
    );
    assert_eq!(code(v.verify(&without, now())), "ok");
}

#[test]
fn audience_is_checked_and_required_when_configured() {
    let with = |aud: Value| sign(Algorithm::EdDSA, &json!({ "exp": NOW + 60, "aud": aud }));
    let v = verifier(Algorithm::EdDSA).audience("connres");
    assert_eq!(code(v.verify(&with(json!("connres")), now())), "ok");
    assert_eq!(
        code(v.verify(&with(json!(["other", "connres"])), now())),
        "ok"
    );
    assert_eq!(
        code(v.verify(&with(json!("other")), now())),
        "wrong_audience"
    );
    assert_eq!(
        code(v.verify(&with(json!(["other"])), now())),
        "wrong_audience"
    );
    assert_eq!(code(v.verify(&with(json!([])), now())), "wrong_audience");
    assert_eq!(code(v.verify(&with(json!(7)), now())), "wrong_audience");
    let without = sign(Algorithm::EdDSA, &json!({ "exp": NOW + 60 }));
    assert_eq!(code(v.verify(&without, now())), "wrong_audience");
    // Not configured: not checked.
    assert_eq!(
        code(verifier(Algorithm::EdDSA).verify(&with(json!("other")), now())),
        "ok"
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let v = verifier(Algorithm::HS256);
    let good = sign(Algorithm::HS256, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let header = b64(&json!({ "alg": "HS256" }));
    // A correct HS256 signature over a bad payload: the payload is what fails.
    let signed = |payload: &str| {
        let message = format!("{header}.{payload}");
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{sig}")
    };
    let cases = [
        String::new(),
        "abc".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{good}."),
        // Bad base64url: in the header, the payload, the signature.
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.%%%", parts[0], parts[1]),
        // Header not JSON, not an object, or without a string alg.
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("hello"),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", b64(&json!(["HS256"])), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            b64(&json!({ "typ": "JWT" })),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", b64(&json!({ "alg": 256 })), parts[1], parts[2]),
        // Claims not base64url, not JSON, not an object (signed correctly).
        signed("!!!"),
        signed(&URL_SAFE_NO_PAD.encode("not json")),
        signed(&b64(&json!([1, 2]))),
        signed(&b64(&json!("sub"))),
        // Over the length bound.
        format!(
            "{}.{}.{}",
            parts[0],
            "A".repeat(super::jwt::MAX_TOKEN_LEN),
            parts[2]
        ),
    ];
    for token in &cases {
        let r = v.verify(token, now());
        assert_eq!(code(r.clone()), "malformed", "{token:.60}: {r:?}");
    }
}

#[test]
fn jwks_keys_are_selected_by_kid() {
    let keys = jwks();
    let v = Verifier::new(&[Algorithm::RS256], KeyMaterial::Jwks(&keys)).unwrap();
    let key = signing_key(Algorithm::RS256, false);
    let unknown = sign_with(Algorithm::RS256, Some("gone"), &claims(), &key);
    assert_eq!(v.verify(&unknown, now()), Err(JwtError::UnknownKey));
    // No kid: two RSA keys could serve RS256, so none is guessed.
    let no_kid = sign_with(Algorithm::RS256, None, &claims(), &key);
    assert_eq!(v.verify(&no_kid, now()), Err(JwtError::UnknownKey));
    // ...but with only one key that serves the algorithm, that one.
    let v = Verifier::new(&[Algorithm::ES256], KeyMaterial::Jwks(&keys)).unwrap();
    let token = sign(Algorithm::ES256, &claims());
    assert_eq!(code(v.verify(&token, now())), "ok");
}

#[test]
fn jwks_documents_are_checked_when_the_verifier_is_made() {
    let rs = [Algorithm::RS256];
    assert_eq!(
        Verifier::new(&rs, KeyMaterial::Jwks("not json")).unwrap_err(),
        KeyError::BadJwks
    );
    assert_eq!(
        Verifier::new(&rs, KeyMaterial::Jwks("{}")).unwrap_err(),
        KeyError::BadJwks
    );
    let oct = json!({ "keys": [{ "kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET) }] });
    assert_eq!(
        Verifier::new(&[Algorithm::HS256], KeyMaterial::Jwks(&oct.to_string())).unwrap_err(),
        KeyError::SecretInJwks { index: 0 }
    );
    // Keys for other uses, curves or algorithms are skipped; none left is an error.
    let keys: Value = serde_json::from_str(&jwks()).unwrap();
    let mut rsa = keys["keys"][0].clone();
    rsa["use"] = json!("enc");
    let mut rs384 = keys["keys"][1].clone();
    rs384["alg"] = json!("RS384");
    let p384 = json!({ "kty": "EC", "crv": "P-384", "kid": "p384",
        "x": URL_SAFE_NO_PAD.encode([1u8; 48]), "y": URL_SAFE_NO_PAD.encode([2u8; 48]) });
    let other = json!({ "kty": "XYZ", "kid": "x" });
    let doc = json!({ "keys": [rsa, rs384, p384, other, keys["keys"][2]] }).to_string();
    assert_eq!(
        Verifier::new(&rs, KeyMaterial::Jwks(&doc)).unwrap_err(),
        KeyError::NoUsableKey { skipped: 5 }
    );
    let v = Verifier::new(
        &[Algorithm::RS256, Algorithm::ES256],
        KeyMaterial::Jwks(&doc),
    )
    .unwrap();
    let token = sign_with(
        Algorithm::ES256,
        Some("ec"),
        &claims(),
        &signing_key(Algorithm::ES256, false),
    );
    assert_eq!(code(v.verify(&token, now())), "ok");
    // The RSA key was skipped (use: enc), so its kid is unknown.
    let token = sign_with(
        Algorithm::RS256,
        Some("rsa"),
        &claims(),
        &signing_key(Algorithm::RS256, false),
    );
    assert_eq!(code(v.verify(&token, now())), "unknown_key");
}

#[test]
fn keys_are_checked_when_the_verifier_is_made() {
    assert_eq!(
        Verifier::new(&[], KeyMaterial::Secret(SECRET)).unwrap_err(),
        KeyError::NoAlgorithms
    );
    assert_eq!(
        Verifier::new(&[Algorithm::HS256], KeyMaterial::Secret(b"short")).unwrap_err(),
        KeyError::ShortSecret { len: 5 }
    );
    for bad in [
        "",
        "not a pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ] {
        let r = Verifier::new(&[Algorithm::RS256], KeyMaterial::PublicKeyPem(bad));
        assert_eq!(r.unwrap_err(), KeyError::BadPem, "{bad:?}");
    }
    for private in [RSA_KEY, EC_KEY, ED_KEY] {
        let r = Verifier::new(&[Algorithm::RS256], KeyMaterial::PublicKeyPem(private));
        assert_eq!(r.unwrap_err(), KeyError::PrivateKeyPem);
    }
    assert_eq!(
        Verifier::new(&[Algorithm::RS256], KeyMaterial::PublicKeyPem(EC_PUB)).unwrap_err(),
        KeyError::KeyMismatch {
            alg: Algorithm::RS256,
            kind: super::jwt::KeyKind::P256
        }
    );
    assert_eq!(
        Verifier::new(
            &[Algorithm::HS256, Algorithm::HS256],
            KeyMaterial::Secret(SECRET)
        )
        .unwrap()
        .algorithms(),
        &[Algorithm::HS256]
    );
    assert_eq!("EdDSA".parse::<Algorithm>(), Ok(Algorithm::EdDSA));
    assert!("none".parse::<Algorithm>().is_err());
    assert!("hs256".parse::<Algorithm>().is_err());
}

#[test]
fn errors_show_neither_the_token_nor_the_secret() {
    let v = verifier(Algorithm::HS256)
        .issuer("https://id.example.test")
        .audience("connres");
    let secret = std::str::from_utf8(SECRET).unwrap();
    let other = EncodingKey::from_secret(OTHER_SECRET).unwrap();
    let good = json!({ "exp": NOW + 60, "iss": "https://id.example.test", "aud": "connres" });
    let tokens = [
        sign_with(Algorithm::HS256, None, &good, &other),
        sign(Algorithm::HS256, &json!({ "exp": NOW - 60 })),
        sign(
            Algorithm::HS256,
            &json!({ "exp": NOW + 60, "nbf": NOW + 60 }),
        ),
        sign(Algorithm::HS256, &json!({ "exp": NOW + 60, "iss": "x" })),
        sign(
            Algorithm::HS256,
            &json!({ "exp": NOW + 60, "iss": "https://id.example.test" }),
        ),
        sign(Algorithm::RS256, &good),
        format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&good)),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9".to_owned(),
        format!("{}.!!!.sig", b64(&json!({ "alg": "HS256" }))),
    ];
    for token in &tokens {
        let err = v.verify(token, now()).unwrap_err();
        for shown in [err.to_string(), format!("{err:?}"), err.code().to_owned()] {
            assert!(!shown.contains(token.as_str()), "{shown}");
            assert!(!shown.contains(secret), "{shown}");
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!shown.contains(part), "{shown} shows a part of the token");
            }
        }
    }
    assert!(!format!("{v:?}").contains(secret));
    assert!(!format!("{:?}", KeyMaterial::Secret(SECRET)).contains(secret));
    let short = b"0123456789abcdef";
    let err = Verifier::new(&[Algorithm::HS256], KeyMaterial::Secret(short)).unwrap_err();
    assert!(!err.to_string().contains("0123456789abcdef"));
}

#[test]
fn tokens_are_found_in_authorization_headers() {
    assert_eq!(
        from_authorization("Bearer abc.def.ghi"),
        Some("abc.def.ghi")
    );
    assert_eq!(from_authorization("bearer abc"), Some("abc"));
    assert_eq!(from_authorization("BEARER   abc  "), Some("abc"));
    assert_eq!(from_authorization("  Bearer\tabc"), Some("abc"));
    assert_eq!(from_authorization("Basic dXNlcjpwYXNz"), None);
    assert_eq!(from_authorization("Bearer"), None);
    assert_eq!(from_authorization("Bearer    "), None);
    assert_eq!(from_authorization("Bearerabc"), None);
    assert_eq!(from_authorization("abc.def.ghi"), None);
    assert_eq!(from_authorization("Bearer a b"), None);
    assert_eq!(from_authorization(""), None);
}

#[test]
fn tokens_are_found_in_cookie_headers() {
    let h = "theme=dark; session=abc.def.ghi; other=1";
    assert_eq!(from_cookie(h, "session"), Some("abc.def.ghi"));
    assert_eq!(from_cookie(h, "theme"), Some("dark"));
    assert_eq!(from_cookie(h, "Session"), None);
    assert_eq!(from_cookie(h, "sess"), None);
    assert_eq!(from_cookie("session=\"abc\"", "session"), Some("abc"));
    assert_eq!(from_cookie("xsession=1;session=2", "session"), Some("2"));
    assert_eq!(from_cookie("session=; session=2", "session"), Some("2"));
    assert_eq!(from_cookie("session=", "session"), None);
    assert_eq!(from_cookie("", "session"), None);
    assert_eq!(from_cookie("session", "session"), None);
    // A base64 value with padding keeps its '='.
    assert_eq!(from_cookie("a=b==; c=d", "a"), Some("b=="));
}

/// The cost of a login's verification, per algorithm:
/// `cargo test --release --lib auth::tests::verify_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test: run in release with --nocapture"]
fn verify_cost() {
    const N: u32 = 10_000;
    for alg in Algorithm::ALL {
        let v = verifier(alg);
        let token = sign(alg, &claims());
        v.verify(&token, now()).unwrap();
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(v.verify(std::hint::black_box(&token), now()).unwrap());
        }
        let each = start.elapsed() / N;
        println!("{alg}: {each:?} per verification ({N} runs)");
    }
}
