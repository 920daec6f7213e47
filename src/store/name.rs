//! A remembered model's name as its connection keeps it: without the connection's cid.
//! Every model a connection remembers carries its cid (the record is keyed by it), so
//! keeping the whole name repeats it in a block of its own per model: about 48 bytes
//! each for `session.user.<20-character cid>`. Without the cid, a seed model's name
//! (`session.user.`) fits in the 24 bytes of the value itself. A name is compared and
//! rebuilt with the cid its connection is keyed by, never another: one connection's
//! model cannot answer for another's name.

use std::borrow::Cow;

use smallvec::SmallVec;

/// A name without its connection's cid: where the cid stood (a byte offset), then the
/// name's other bytes. A name holds the cid as one of its dot-separated parts exactly
/// once to be kept this way; any other is kept whole.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelName(SmallVec<[u8; 16]>);

/// The first byte of a name kept whole.
const WHOLE: u8 = u8::MAX;

impl ModelName {
    /// `rid`, a name of connection `cid`'s.
    pub fn new(rid: &str, cid: &str) -> ModelName {
        let mut bytes = SmallVec::new();
        match cid_part(rid, cid) {
            Some(at) => {
                bytes.push(at as u8);
                bytes.extend_from_slice(&rid.as_bytes()[..at]);
                bytes.extend_from_slice(&rid.as_bytes()[at + cid.len()..]);
            }
            None => {
                bytes.push(WHOLE);
                bytes.extend_from_slice(rid.as_bytes());
            }
        }
        bytes.shrink_to_fit();
        ModelName(bytes)
    }

    /// Whether this is `rid`, for connection `cid`.
    pub fn is(&self, rid: &str, cid: &str) -> bool {
        let (at, rest) = self.parts();
        match at {
            None => rest == rid.as_bytes(),
            Some(at) => {
                let rid = rid.as_bytes();
                rid.len() == rest.len() + cid.len()
                    && rid[..at] == rest[..at]
                    && &rid[at..at + cid.len()] == cid.as_bytes()
                    && rid[at + cid.len()..] == rest[at..]
            }
        }
    }

    /// The whole name, for connection `cid`.
    pub fn with_cid(&self, cid: &str) -> Cow<'_, str> {
        let (at, rest) = self.parts();
        match at {
            None => Cow::Borrowed(text(rest)),
            Some(at) => {
                let mut name = String::with_capacity(rest.len() + cid.len());
                name.push_str(text(&rest[..at]));
                name.push_str(cid);
                name.push_str(text(&rest[at..]));
                Cow::Owned(name)
            }
        }
    }

    fn parts(&self) -> (Option<usize>, &[u8]) {
        match self.0.split_first() {
            Some((&WHOLE, rest)) => (None, rest),
            Some((&at, rest)) => (Some(at as usize), rest),
            None => (None, &[]),
        }
    }
}

/// The text of bytes copied from a `str` whole, or cut from one at part boundaries
/// (dots are ASCII). Read on every lookup of a model or a written field, so not checked
/// again: `from_utf8` cost about a thousand instructions per set (callgrind).
fn text(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: every `ModelName` and `ShortText` holds the bytes of a `str`, copied whole
    // or cut at the boundaries of a `.` part (an ASCII byte, so a char boundary), after
    // the position byte `ModelName::parts` takes off; nothing else writes them.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// Where `cid` stands in `rid` as a whole part, when it does exactly once (and early
/// enough to say where in a byte).
fn cid_part(rid: &str, cid: &str) -> Option<usize> {
    if cid.is_empty() {
        return None;
    }
    let mut found = None;
    let mut at = 0;
    for part in rid.split('.') {
        if part == cid {
            if found.is_some() {
                return None;
            }
            found = Some(at);
        }
        at += part.len() + 1;
    }
    found.filter(|&at| at < usize::from(WHOLE))
}

/// A short text kept in the 24 bytes of the value itself when it has at most 16 bytes
/// (a written field's name: `theme`, `fontSize`), else in a block of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortText(SmallVec<[u8; 16]>);

impl ShortText {
    pub fn new(text: &str) -> ShortText {
        let mut bytes = SmallVec::from_slice(text.as_bytes());
        bytes.shrink_to_fit();
        ShortText(bytes)
    }

    pub fn as_str(&self) -> &str {
        text(&self.0)
    }

    /// Whether it is `other` (bytes compared).
    pub fn is(&self, other: &str) -> bool {
        *self.0 == *other.as_bytes()
    }

    /// Whether it has a block of its own.
    pub fn spilled(&self) -> bool {
        self.0.spilled()
    }
}

impl std::fmt::Debug for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Debug for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parts() {
            (None, rest) => write!(f, "{:?}", text(rest)),
            (Some(at), rest) => write!(f, "\"{}{{cid}}{}\"", text(&rest[..at]), text(&rest[at..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_all_but_its_cid_and_is_itself_for_its_cid_only() {
        let cid = "bv0n7a2hb9lc00000001";
        for rid in [
            format!("session.user.{cid}"),
            format!("{cid}.prefs"),
            format!("chat.room1.typing.{cid}"),
            format!("a.{cid}.b"),
        ] {
            let name = ModelName::new(&rid, cid);
            assert!(name.is(&rid, cid), "{rid}");
            assert_eq!(name.with_cid(cid), rid);
            assert!(!name.is(&rid, "other"), "{rid}");
            assert!(!name.is(&format!("{rid}.x"), cid), "{rid}");
            assert!(
                !name.is(&rid.replace(cid, &format!("{cid}x")), cid),
                "{rid}"
            );
        }
        // No allocation of its own for a seed model's name.
        let name = ModelName::new(&format!("session.prefs.{cid}"), cid);
        assert!(!name.0.spilled());
        assert_eq!(std::mem::size_of::<ModelName>(), 24);
        assert_eq!(format!("{name:?}"), "\"session.prefs.{cid}\"");
    }

    #[test]
    fn short_text_is_kept_inline_up_to_16_bytes() {
        for (t, inline) in [
            ("theme", true),
            ("fontSize", true),
            ("é".repeat(8).as_str(), true),
            ("a_longer_field_name", false),
            ("", true),
        ] {
            let s = ShortText::new(t);
            assert_eq!(s.as_str(), t);
            assert_eq!(s.spilled(), !inline, "{t}");
        }
        assert_eq!(std::mem::size_of::<ShortText>(), 24);
    }

    #[test]
    fn a_name_without_its_cid_once_as_a_part_is_kept_whole() {
        for (rid, cid) in [
            ("site.banner", "c1"),
            ("pair.c1.c1", "c1"),
            ("session.user.c10", "c1"),
            ("session.user.xc1", "c1"),
            ("session.user.", ""),
        ] {
            let name = ModelName::new(rid, cid);
            assert_eq!(name.parts().0, None, "{rid}");
            assert!(name.is(rid, cid));
            assert_eq!(name.with_cid(cid), rid);
            assert!(!name.is("site.banner2", cid));
        }
        // A cid too far into the name to say where in a byte.
        let long = format!("{}.c1", "x".repeat(300));
        let name = ModelName::new(&long, "c1");
        assert_eq!(name.parts().0, None);
        assert!(name.is(&long, "c1"));
    }
}
