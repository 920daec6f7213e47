//! A connection's token as its record keeps it: its canonical JSON text (compact, keys
//! in order and each once, as serde_json writes a parsed value), not the parsed value.
//! A serde_json object is a B-tree node of about 640 bytes however few keys it has; a
//! three-claim token's text is about 50 bytes. The text is parsed only where something
//! reads the token: a `from` template or a CEL rule that reads it, a presence list's
//! member. A cached get reply, a native rule (`token != null`), the comparison of two
//! tokens (their canonical texts) and the shared store's record (the text as it is)
//! never parse it.

use std::fmt;

use serde_json::Value;

use super::size;
use crate::protocol::json_len;

/// A token: the canonical JSON text of a value that is not `null` (a connection without
/// a token holds none). Two tokens are equal when their values are (up to `-0.0` and
/// `0.0`, which differ here).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Box<str>);

/// Why text is not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The text is longer than the limit it was read under.
    TooLong { len: usize, max: usize },
    /// The text is not JSON (serde_json's message).
    Malformed(String),
    /// `null` is no token: a logout.
    Null,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLong { len, max } => {
                write!(f, "token of {len} bytes is over the limit of {max}")
            }
            TokenError::Malformed(e) => write!(f, "token is not JSON: {e}"),
            TokenError::Null => write!(f, "a null token is no token"),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// The token of a parsed value (the caller leaves `null` out: no token).
    pub fn new(value: &Value) -> Token {
        Token::sized(value, json_len(value))
    }

    /// The token of a parsed value whose compact JSON is `len` bytes: the text is
    /// written into a block of exactly that size (a grown and shrunk one would leave
    /// its tail free between kept blocks, resident).
    pub fn sized(value: &Value, len: usize) -> Token {
        let mut text = Vec::with_capacity(len);
        // Writing into a vector fails only for want of memory.
        let _ = serde_json::to_writer(&mut text, value);
        // serde_json writes UTF-8.
        Token(String::from_utf8(text).unwrap_or_default().into_boxed_str())
    }

    /// The token of JSON text of at most `max` bytes, in canonical form.
    pub fn parse(text: &str, max: usize) -> Result<Token, TokenError> {
        if text.len() > max {
            return Err(TokenError::TooLong {
                len: text.len(),
                max,
            });
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Null) => Err(TokenError::Null),
            Ok(value) => Ok(Token::new(&value)),
            Err(e) => Err(TokenError::Malformed(e.to_string())),
        }
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value. Canonical text always parses (it was written from a value
    /// parsed under the same nesting limit).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// One top-level key's value (`token.userId`), read from the text: the rest of the
    /// token is skipped, not parsed. `None` when the token is not an object or has no
    /// such key.
    pub fn claim(&self, key: &str) -> Option<Value> {
        let text = self.0.as_bytes();
        if text.first() != Some(&b'{') {
            return None;
        }
        let mut i = 1;
        while text.get(i) == Some(&b'"') {
            let key_end = string_end(text, i)?;
            let raw_key = &self.0[i + 1..key_end - 1];
            // `:` follows the key in canonical text.
            let start = key_end + 1;
            let end = value_end(text, start)?;
            let matches = match raw_key.contains('\\') {
                false => raw_key == key,
                true => serde_json::from_str::<String>(&self.0[i..key_end]).ok()? == key,
            };
            if matches {
                return serde_json::from_str(&self.0[start..end]).ok();
            }
            // `,` or the closing `}`.
            i = end + 1;
        }
        None
    }

    /// What the token takes in memory: its text and the block that holds it (whole
    /// pages for a large one).
    pub fn bytes(&self) -> usize {
        self.0.len() + size::block(self.0.len())
    }
}

/// The index just past the string that starts (at its `"`) at `start`.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match text.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index just past the value that starts at `start` (canonical text: no spaces).
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match text.get(i)? {
            b'"' => i = string_end(text, i)?,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
}

impl From<Value> for Token {
    fn from(value: Value) -> Token {
        Token::new(&value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_is_canonical_whatever_the_spacing_order_and_repeats() {
        let a = Token::parse(r#" { "b" : [1, 2], "a": "x", "a": "y" } "#, 100).unwrap();
        assert_eq!(a.as_str(), r#"{"a":"y","b":[1,2]}"#);
        assert_eq!(a, Token::new(&json!({"b": [1, 2], "a": "y"})));
        assert_ne!(a, Token::new(&json!({"b": [1, 2], "a": "x"})));
        // Escapes as serde_json writes them.
        let e = Token::parse(r#"{"s":"\u0041\n\/"}"#, 100).unwrap();
        assert_eq!(e.as_str(), r#"{"s":"A\n/"}"#);
        assert_eq!(e.value(), json!({"s": "A\n/"}));
        // Numbers keep their kind: 1 and 1.0 are different tokens, as different values.
        assert_ne!(Token::new(&json!({"n": 1})), Token::new(&json!({"n": 1.0})));
        assert_eq!(Token::new(&json!(0.1)).value(), json!(0.1));
    }

    #[test]
    fn the_value_and_the_text_round_trip() {
        let v = json!({"userId": 42, "name": "Ann", "role": "admin", "deep": {"l": [null, true, -1.5e300]}});
        let t = Token::new(&v);
        assert_eq!(t.value(), v);
        assert_eq!(Token::new(&t.value()), t);
        assert_eq!(t.bytes(), t.as_str().len() + size::ALLOCATION);
        assert_eq!(
            Token::sized(&v, 3),
            t,
            "a wrong size only costs a reallocation"
        );
        // A megabyte takes whole pages.
        let big = Token::new(&json!({"blob": "x".repeat(1_000_000)}));
        assert_eq!(big.bytes(), 1_003_520);
        assert_eq!(Token::new(&json!("s")).value(), json!("s"));
    }

    #[test]
    fn a_claim_is_read_without_parsing_the_rest() {
        let t = Token::new(&json!({
            "a\"b": 1, "list": [{"x": "}]"}, [], "\\"], "name": "Ann", "n": {"m": {}}, "userId": 42, "z": null
        }));
        assert_eq!(t.claim("userId"), Some(json!(42)));
        assert_eq!(t.claim("name"), Some(json!("Ann")));
        assert_eq!(t.claim("list"), Some(json!([{"x": "}]"}, [], "\\"])));
        assert_eq!(t.claim("n"), Some(json!({"m": {}})));
        assert_eq!(t.claim("a\"b"), Some(json!(1)));
        assert_eq!(t.claim("z"), Some(Value::Null));
        assert_eq!(t.claim("missing"), None);
        assert_eq!(t.claim("m"), None, "only top-level keys");
        assert_eq!(Token::new(&json!({})).claim("a"), None);
        assert_eq!(Token::new(&json!([1])).claim("a"), None);
        assert_eq!(Token::new(&json!("userId")).claim("userId"), None);
        // Every claim of a generated token, against the parsed value.
        for i in 0..50 {
            let v = json!({
                format!("k{i}"): "x".repeat(i), "e\\": [i, {"q": "\""}], "u": i, "\u{e9}": true
            });
            let t = Token::new(&v);
            for (k, want) in v.as_object().unwrap() {
                assert_eq!(t.claim(k).as_ref(), Some(want), "{k} of {}", t.as_str());
            }
        }
    }

    #[test]
    fn malformed_null_and_huge_text_are_errors() {
        assert!(matches!(
            Token::parse(r#"{"a":"#, 100),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            Token::parse("", 100),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            Token::parse("[[[[", 100),
            Err(TokenError::Malformed(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = Token::parse(&deep, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        assert_eq!(Token::parse("null", 100), Err(TokenError::Null));
        let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2_000_000));
        assert_eq!(
            Token::parse(&huge, 1 << 20),
            Err(TokenError::TooLong {
                len: 2_000_011,
                max: 1 << 20
            })
        );
        assert!(Token::parse(&huge, 4 << 20).is_ok());
    }
}
