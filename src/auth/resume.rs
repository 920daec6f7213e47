//! Resume keys: a login (and every resume) answers a one-use key with which a new
//! connection takes the session over (Resgate gives a reconnecting WebSocket a new
//! cid). A key is `<cid>.<secret>`: the connection it resumes, and 256 random bits in
//! base64url. Only the secret's SHA-256 is kept (in the connection's record, beside
//! when the key stops being valid), and hashes are compared in constant time. Pure: the
//! caller gives the random bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a key's secret.
pub const SECRET_LEN: usize = 32;

/// A key to give the client, and what to keep of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub key: String,
    pub hash: [u8; 32],
}

/// The key of connection `cid` with `secret`.
pub fn issue(cid: &str, secret: &[u8; SECRET_LEN]) -> Issued {
    Issued {
        key: format!("{cid}.{}", encode_secret(secret)),
        hash: hash(secret),
    }
}

/// The connection a key resumes and its secret; `None` when it is not a key.
pub fn parse(key: &str) -> Option<(&str, [u8; SECRET_LEN])> {
    if key.len() > 512 {
        return None;
    }
    let (cid, secret) = key.rsplit_once('.')?;
    if cid.is_empty() {
        return None;
    }
    Some((cid, decode_secret(secret)?))
}

/// A secret in base64url (as keys and takes carry it).
pub fn decode_secret(text: &str) -> Option<[u8; SECRET_LEN]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// A secret in base64url.
pub fn encode_secret(secret: &[u8; SECRET_LEN]) -> String {
    URL_SAFE_NO_PAD.encode(secret)
}

/// The hash kept of a secret. Token events carry it, so it proves nothing: a take
/// must present the secret itself.
pub fn hash(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether a key's hash is the kept one, in constant time.
pub fn matches(kept: &[u8; 32], given: &[u8; 32]) -> bool {
    kept.ct_eq(given).into()
}

/// A hash as lowercase hex (how it travels in token events and the store).
pub fn to_hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A hash from hex; `None` unless it is 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_connection_and_matches_only_its_own_hash() {
        let issued = issue("c1", &[7; SECRET_LEN]);
        let (cid, secret) = parse(&issued.key).unwrap();
        assert_eq!(cid, "c1");
        assert!(matches(&issued.hash, &hash(&secret)));
        let other = issue("c1", &[8; SECRET_LEN]);
        assert!(!matches(&other.hash, &hash(&secret)));
        assert_eq!(from_hex(&to_hex(&issued.hash)), Some(issued.hash));
        assert!(
            !issued.key.contains(&to_hex(&issued.hash)),
            "the hash is not the key"
        );
    }

    #[test]
    fn what_is_not_a_key_is_refused() {
        let good = issue("c1", &[1; SECRET_LEN]).key;
        let secret = good.rsplit_once('.').unwrap().1;
        for bad in [
            "",
            "c1",
            ".",
            &format!(".{secret}"),
            "c1.short",
            "c1.!!!!",
            &format!("c1.{secret}AA"),
            &"x".repeat(600),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}
