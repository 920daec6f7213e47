//! A hand-written scan of the usual access payload: `cid`, whether `token` is there and
//! not null, and `query`, without serde. It reads a strict subset of JSON (valid UTF-8
//! throughout, no escapes or control characters in strings, no exponents, nesting below
//! [`MAX_DEPTH`], each known key once) and gives up on anything else, so the serde path
//! reads that instead, with its errors. Whatever it reads, serde reads the same way.

use std::borrow::Cow;

use super::{AccessHead, CallHead, Skip};

/// Arrays and objects nested this deep in a value are left to serde (whose own limit,
/// 128, is an error). At most 64: each open one is a bit of a `u64`.
const MAX_DEPTH: u32 = 32;

/// The longest number read here (serde reads longer ones as floats, or refuses them).
const MAX_NUMBER: usize = 18;

/// The head of an access payload, or `None` when the payload is not of the subset read
/// here (which includes every malformed one).
pub(super) fn access_head(payload: &[u8]) -> Option<AccessHead<'_>> {
    let head = head(payload, false)?;
    Some(AccessHead {
        cid: head.cid,
        token: head.token,
        query: head.query,
    })
}

/// The head of a call payload, as [`access_head`] reads an access payload's, and its
/// `params`: found by the scan, built by serde from their own bytes (so the same value
/// the whole payload's serde read would give).
pub(super) fn call_head(payload: &[u8]) -> Option<CallHead<'_>> {
    let head = head(payload, true)?;
    let params = match head.params {
        Some(range) => Some(serde_json::from_slice(&payload[range]).ok()?),
        None => None,
    };
    Some(CallHead {
        cid: head.cid,
        token: head.token,
        params,
        query: head.query,
    })
}

/// What [`head`] reads: `params` as where its value is (not null).
struct Head<'a> {
    cid: Cow<'a, str>,
    token: Option<Skip>,
    query: Option<Cow<'a, str>>,
    params: Option<std::ops::Range<usize>>,
}

/// The keys of an access or call payload (`params` only `with_params`; otherwise it
/// is skipped as any other key).
fn head(payload: &[u8], with_params: bool) -> Option<Head<'_>> {
    // Valid UTF-8 as a whole (serde reads some payloads that are not: those go to it).
    let text = std::str::from_utf8(payload).ok()?;
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    let mut cid = None;
    let mut token: Option<Option<Skip>> = None;
    let mut query: Option<Option<&str>> = None;
    let mut params: Option<Option<std::ops::Range<usize>>> = None;
    i += 1;
    loop {
        let key = string(b, ws(b, i))?;
        i = colon(b, key.end + 1)?;
        match &b[key] {
            b"cid" if cid.is_none() => {
                let value = string(b, i)?;
                i = value.end + 1;
                cid = Some(&text[value]);
            }
            b"token" if token.is_none() => {
                token = Some(match literal(b, i, b"null") {
                    Some(end) => {
                        i = end;
                        None
                    }
                    None => {
                        i = skip_value(b, i)?;
                        Some(Skip)
                    }
                })
            }
            b"query" if query.is_none() => {
                query = Some(match literal(b, i, b"null") {
                    Some(end) => {
                        i = end;
                        None
                    }
                    None => {
                        let value = string(b, i)?;
                        i = value.end + 1;
                        Some(&text[value])
                    }
                })
            }
            b"params" if with_params && params.is_none() => {
                params = Some(match literal(b, i, b"null") {
                    Some(end) => {
                        i = end;
                        None
                    }
                    None => {
                        let start = i;
                        i = skip_value(b, i)?;
                        Some(start..i)
                    }
                })
            }
            // A known key twice is serde's error to report.
            b"cid" | b"token" | b"query" => return None,
            b"params" if with_params => return None,
            _ => i = skip_value(b, i)?,
        }
        i = ws(b, i);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    if ws(b, i + 1) != b.len() {
        return None;
    }
    Some(Head {
        cid: Cow::Borrowed(cid?),
        token: token.flatten(),
        query: query.flatten().map(Cow::Borrowed),
        params: params.flatten(),
    })
}

/// Where the whitespace from `i` on ends (JSON's: space, tab, line feed, return).
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// After the whitespace, a colon and whitespace from `i`: where the value starts.
fn colon(b: &[u8], i: usize) -> Option<usize> {
    let i = ws(b, i);
    (*b.get(i)? == b':').then(|| ws(b, i + 1))
}

/// The bytes that end the plain part of a string: its quote, an escape, a control
/// character.
static STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// The text of the string starting at `i` (its opening quote), when it has no escape
/// and no control character; its closing quote is at the range's end.
fn string(b: &[u8], i: usize) -> Option<std::ops::Range<usize>> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let mut end = i + 1;
    loop {
        let c = *b.get(end)?;
        if STOPS[c as usize] {
            return (c == b'"').then_some(i + 1..end);
        }
        end += 1;
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i + word.len();
    (b.get(i..end)? == word).then_some(end)
}

/// Where the number starting at `i` ends: `-?(0|[1-9][0-9]*)(.[0-9]+)?`, short. What
/// follows is the caller's to check.
fn number(b: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while let Some(b'0'..=b'9') = b.get(j) {
            j += 1;
        }
        j
    };
    let mut j = i + usize::from(b.get(i) == Some(&b'-'));
    j = match *b.get(j)? {
        b'0' => j + 1,
        b'1'..=b'9' => digits(j + 1),
        _ => return None,
    };
    if b.get(j) == Some(&b'.') {
        let end = digits(j + 1);
        if end == j + 1 {
            return None;
        }
        j = end;
    }
    (j - i <= MAX_NUMBER).then_some(j)
}

/// Where the value starting at `i` ends, without recursion: the open arrays and
/// objects are bits of `open` (1 for an object), innermost lowest.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut open: u64 = 0;
    let mut depth = 0;
    loop {
        // A value starts at `i`.
        match *b.get(i)? {
            b'"' => i = string(b, i)?.end + 1,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number(b, i)?,
            c @ (b'[' | b'{') => {
                depth += 1;
                if depth >= MAX_DEPTH {
                    return None;
                }
                let object = c == b'{';
                open = open << 1 | u64::from(object);
                i = ws(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    depth -= 1;
                    open >>= 1;
                } else {
                    if object {
                        i = colon(b, string(b, i)?.end + 1)?;
                    }
                    continue;
                }
            }
            _ => return None,
        }
        // A value ended at `i`: close what it ends, or go on to the next.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = ws(b, i);
            let object = open & 1 == 1;
            match (*b.get(i)?, object) {
                (b',', false) => {
                    i = ws(b, i + 1);
                    break;
                }
                (b',', true) => {
                    i = colon(b, string(b, ws(b, i + 1))?.end + 1)?;
                    break;
                }
                (b']', false) | (b'}', true) => {
                    i += 1;
                    depth -= 1;
                    open >>= 1;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{access_head as head_or_serde, parse};
    use proptest::prelude::*;

    /// What serde makes of a payload, comparable.
    fn serde(p: &[u8]) -> Result<(String, bool, Option<String>), String> {
        parse::<AccessHead>(p, "access request")
            .map(|h| {
                (
                    h.cid.into_owned(),
                    h.token.is_some(),
                    h.query.map(Cow::into_owned),
                )
            })
            .map_err(|e| e.to_string())
    }

    fn scanned(p: &[u8]) -> Option<(String, bool, Option<String>)> {
        access_head(p).map(|h| {
            (
                h.cid.into_owned(),
                h.token.is_some(),
                h.query.map(Cow::into_owned),
            )
        })
    }

    /// The scan reads what serde reads, or gives up; with the fallback, the result and
    /// every error are serde's.
    fn agrees(p: &[u8]) {
        let want = serde(p);
        if let Some(got) = scanned(p) {
            assert_eq!(Ok(got), want, "{}", String::from_utf8_lossy(p));
        }
        let with_fallback = head_or_serde(p)
            .map(|h| {
                (
                    h.cid.into_owned(),
                    h.token.is_some(),
                    h.query.map(Cow::into_owned),
                )
            })
            .map_err(|e| e.to_string());
        assert_eq!(with_fallback, want, "{}", String::from_utf8_lossy(p));
    }

    /// A call head, comparable.
    type Call = (String, bool, Option<String>, Option<serde_json::Value>);

    fn call_of(h: CallHead) -> Call {
        (
            h.cid.into_owned(),
            h.token.is_some(),
            h.query.map(Cow::into_owned),
            h.params,
        )
    }

    /// The call scan reads what serde reads, params included, or gives up; with the
    /// fallback, the result and every error are serde's.
    fn call_agrees(p: &[u8]) {
        let want = parse::<CallHead>(p, "call request")
            .map(call_of)
            .map_err(|e| e.to_string());
        if let Some(got) = call_head(p).map(call_of) {
            assert_eq!(Ok(got), want, "{}", String::from_utf8_lossy(p));
        }
        let with_fallback = crate::protocol::call_head(p)
            .map(call_of)
            .map_err(|e| e.to_string());
        assert_eq!(with_fallback, want, "{}", String::from_utf8_lossy(p));
    }

    #[test]
    fn reads_the_usual_call_payloads() {
        for p in [
            r#"{"cid":"c1","token":{"userId":42},"params":{"theme":"dark","size":12}}"#,
            r#"{"params":[1,"a",{"b":null}],"cid":"c1"}"#,
            r#"{"cid":"c1","params":null}"#,
            r#"{"cid":"c1"}"#,
            r#"{"cid":"c1","params":"x","query":"a=1"}"#,
            r#"{"cid":"c1","params":{"n":-1.5,"big":1700000000,"t":true}}"#,
        ] {
            assert!(call_head(p.as_bytes()).is_some(), "scanned: {p}");
            call_agrees(p.as_bytes());
        }
        let head = call_head(br#"{"cid":"c1","params":{"theme":"dark"}}"#).unwrap();
        assert_eq!(head.params, Some(serde_json::json!({"theme": "dark"})));
        // Left to serde: a second params, escapes inside, malformed ones.
        for p in [
            r#"{"cid":"c1","params":{},"params":{}}"#,
            r#"{"cid":"c1","params":{"a":"\u00e9"}}"#,
            r#"{"cid":"c1","params":{"a":1e3}}"#,
            r#"{"cid":"c1","params":{"a":}}"#,
            r#"{"cid":"c1","params":{"a":1,}}"#,
        ] {
            assert!(call_head(p.as_bytes()).is_none(), "left to serde: {p}");
            call_agrees(p.as_bytes());
        }
    }

    #[test]
    fn reads_the_usual_payloads() {
        for (p, cid, token, query) in [
            (
                r#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":"admin"},"isHttp":false}"#,
                "c1",
                true,
                None,
            ),
            (r#"{"cid":"c1","token":null}"#, "c1", false, None),
            (r#"{"cid":"c1"}"#, "c1", false, None),
            (
                r#"{"token":{"cid":"other","x":[1,{"cid":2}]},"cid":"c1"}"#,
                "c1",
                true,
                None,
            ),
            (
                " {\n\t\"cid\" : \"c1\" ,\r\n \"query\" : \"a=1&b=é\" , \"token\" : [ ] } \n",
                "c1",
                true,
                Some("a=1&b=é"),
            ),
            (r#"{"cid":"c1","query":null,"token":0}"#, "c1", true, None),
            (r#"{"cid":"c1","token":false}"#, "c1", true, None),
            (
                r#"{"cid":"","token":-0.5,"isHttp":true,"isHttp":1}"#,
                "",
                true,
                None,
            ),
            (
                r#"{"cid":"c1","token":{"exp":1700000000,"a":{}, "b":[[]]}}"#,
                "c1",
                true,
                None,
            ),
        ] {
            let want = Some((cid.to_string(), token, query.map(str::to_string)));
            assert_eq!(scanned(p.as_bytes()), want, "{p}");
            agrees(p.as_bytes());
        }
    }

    #[test]
    fn leaves_the_unusual_to_serde() {
        let deep = format!(
            r#"{{"cid":"c1","token":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let too_deep = format!(
            r#"{{"cid":"c1","token":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for p in [
            // Escapes: valid, invalid, lone surrogates; in keys and values.
            r#"{"cid":"c\u0031","token":null}"#,
            r#"{"cid":"c1","token":"\ud800"}"#,
            r#"{"cid":"c1","isHttp":"\ud800"}"#,
            r#"{"c\u0069d":"c1"}"#,
            r#"{"cid":"c1\"","token":{"a\n":1}}"#,
            r#"{"cid":"c1","token":"\x"}"#,
            "{\"cid\":\"c\u{1}1\"}",
            // Malformed or not an object.
            "",
            " ",
            "[1]",
            r#"["c1", {"a": 1}]"#,
            "{",
            "{}",
            r#"{"cid":"c1",}"#,
            r#"{"cid":"c1","token":[1,]}"#,
            r#"{"cid":"c1","token":{"a":}"#,
            r#"{"cid":"c1"} x"#,
            r#"{"cid":"c1"}{"#,
            r#"{"cid":c1}"#,
            r#"{"cid":"c1","token":nul}"#,
            r#"{"cid":"c1","token":nullx}"#,
            r#"{"cid":"c1","token":truefalse}"#,
            "\u{feff}{\"cid\":\"c1\"}",
            "\u{c}{\"cid\":\"c1\"}",
            // Wrong types, duplicates, missing fields.
            r#"{"cid":1}"#,
            r#"{"cid":null}"#,
            r#"{"token":{}}"#,
            r#"{"cid":"c1","query":1}"#,
            r#"{"cid":"c1","cid":"c2"}"#,
            r#"{"cid":"c1","token":null,"token":{}}"#,
            r#"{"cid":"c1","query":"a","query":null}"#,
            // Numbers serde reads its own way or refuses.
            r#"{"cid":"c1","token":01}"#,
            r#"{"cid":"c1","token":1.}"#,
            r#"{"cid":"c1","token":-}"#,
            r#"{"cid":"c1","token":1e400}"#,
            r#"{"cid":"c1","token":1E2}"#,
            r#"{"cid":"c1","token":123456789012345678901234567890}"#,
            r#"{"cid":"c1","token":+1}"#,
            deep.as_str(),
            too_deep.as_str(),
        ] {
            agrees(p.as_bytes());
        }
        // Bytes that are not UTF-8, in a value the request ignores and in the cid.
        agrees(b"{\"cid\":\"c1\",\"isHttp\":\"\xff\"}");
        agrees(b"{\"cid\":\"c\xff\"}");
        agrees(b"{\"cid\":\"c1\",\"token\":{\"\xc3\":1}}");
    }

    /// JSON whitespace, and now and then what is not.
    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            40 => proptest::sample::select(vec!["", "", "", " ", "\n\t", "\r\n  "]),
            1 => Just("\u{c}"),
        ]
    }

    /// Strings as written in a payload: plain, non-ASCII, escaped, broken.
    fn string() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            6 => proptest::sample::select(vec![r#""c1""#, r#""""#, r#""é ü""#, r#""a=1&b=2""#]),
            2 => proptest::sample::select(vec![r#""\u00e9""#, r#""\"""#, r#""a\nb""#]),
            1 => proptest::sample::select(vec![
                r#""\ud800""#, r#""\x""#, "\"\u{1}\"", r#""unterminated"#,
            ]),
        ]
    }

    /// Values: scalars usual and not, and nested arrays and objects of them.
    fn value() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            3 => string().prop_map(str::to_string),
            6 => proptest::sample::select(vec![
                "null", "true", "false", "0", "-0", "42", "-1.5", "1700000000",
            ])
            .prop_map(str::to_string),
            1 => proptest::sample::select(vec![
                "01", "1.", "-", "1e3", "1E-2", "123456789012345678901234", "nul", "truex", "+1",
            ])
            .prop_map(str::to_string),
        ];
        scalar.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (
                    proptest::collection::vec((ws(), inner.clone()), 0..4),
                    proptest::bool::weighted(0.05)
                )
                    .prop_map(|(items, trailing)| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(w, v)| format!("{w}{v}{w}"))
                            .collect();
                        format!("[{}{}]", items.join(","), if trailing { "," } else { "" })
                    }),
                proptest::collection::vec((key(), ws(), inner), 0..4).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, w, v)| format!("{k}{w}:{w}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            6 => proptest::sample::select(vec![r#""token""#, r#""query""#, r#""isHttp""#, r#""é""#, r#""params""#]),
            1 => proptest::sample::select(vec![r#""cid""#, r#""c\u0069d""#, r#""""#]),
        ]
    }

    /// An access payload: members of known and unknown keys with any values, between
    /// any whitespace; sometimes cut short, or one byte changed.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let member = (ws(), key(), ws(), value(), ws());
        (
            proptest::collection::vec(member, 0..4),
            ws(),
            prop_oneof![4 => Just(0), 1 => Just(1), 1 => Just(2)],
            any::<usize>(),
            any::<u8>(),
            (0usize..4, string()),
        )
            .prop_map(|(members, outer, change, at, byte, (cid_at, cid))| {
                let mut members: Vec<String> = members
                    .into_iter()
                    .map(|(a, k, b, v, c)| format!("{a}{k}{b}:{c}{v}{a}"))
                    .collect();
                members.insert(cid_at.min(members.len()), format!(r#""cid":{cid}"#));
                let mut p = format!("{outer}{{{}}}{outer}", members.join(",")).into_bytes();
                let at = at % p.len();
                match change {
                    1 => p.truncate(at),
                    2 => p[at] = byte,
                    _ => {}
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn agrees_with_serde_on_generated_payloads(p in payload()) {
            agrees(&p);
            call_agrees(&p);
        }

        #[test]
        fn agrees_with_serde_on_usual_payloads_cut_or_changed(
            at in 0usize..160,
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let p = br#"{"cid":"c1","token":{"userId":42,"name":"Ann","role":["admin"]},"query":"a=1","isHttp":false,"params":{"theme":"dark","n":[1,2]}}"#;
            let mut p = p.to_vec();
            let at = at % p.len();
            if cut {
                p.truncate(at);
            } else {
                p[at] = byte;
            }
            agrees(&p);
            call_agrees(&p);
        }
    }
}
