//! Resource name patterns: `session.user.{cid}` parsed once, matched against resource
//! names, turned into NATS subscription subjects and gateway reset patterns.

use std::collections::HashMap;
use std::fmt;

use crate::config::excerpt;

/// The capture the gateway fills with the connection ID.
pub const CID: &str = "cid";

/// One dot-separated part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    Literal(String),
    Capture(String),
}

/// A parsed resource name pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: String,
    parts: Vec<Part>,
    /// Index of the `{cid}` part, if the pattern has one.
    cid_index: Option<usize>,
}

/// Why a pattern string is not a pattern. Messages quote the pattern and the part
/// as short excerpts ([`excerpt`]): a key of a file that is not a config can be long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("resource pattern is empty")]
    Empty,
    #[error("resource pattern `{}` has an empty part (two dots in a row, or a leading or trailing dot)", excerpt(.0))]
    EmptyPart(String),
    #[error("resource pattern `{}`: part `{}` must be a literal name or a whole `{{capture}}`", excerpt(.pattern), excerpt(.part))]
    BadPart { pattern: String, part: String },
    #[error("resource pattern `{}`: capture `{{{}}}` must be a name of letters, digits and `_`", excerpt(.pattern), excerpt(.name))]
    BadCapture { pattern: String, name: String },
    #[error("resource pattern `{}`: capture `{{{}}}` appears twice", excerpt(.pattern), excerpt(.name))]
    DuplicateCapture { pattern: String, name: String },
}

/// The captures of a resource name matched by a pattern, in pattern order.
pub type Params<'a> = smallvec::SmallVec<[(&'a str, &'a str); 4]>;

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut parts = Vec::new();
        for raw in source.split('.') {
            if raw.is_empty() {
                return Err(PatternError::EmptyPart(source.to_string()));
            }
            let part = if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
            {
                let valid = !inner.is_empty()
                    && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !inner.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(PatternError::BadCapture {
                        pattern: source.to_string(),
                        name: inner.to_string(),
                    });
                }
                if parts.contains(&Part::Capture(inner.to_string())) {
                    return Err(PatternError::DuplicateCapture {
                        pattern: source.to_string(),
                        name: inner.to_string(),
                    });
                }
                Part::Capture(inner.to_string())
            } else {
                if !is_name_part(raw) || raw.contains(['{', '}']) {
                    return Err(PatternError::BadPart {
                        pattern: source.to_string(),
                        part: raw.to_string(),
                    });
                }
                Part::Literal(raw.to_string())
            };
            parts.push(part);
        }
        let cid_index = parts
            .iter()
            .position(|p| matches!(p, Part::Capture(n) if n == CID));
        Ok(Pattern {
            source: source.to_string(),
            parts,
            cid_index,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn has_cid(&self) -> bool {
        self.cid_index.is_some()
    }

    /// Names of the captures, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Capture(n) => Some(n.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Matches a resource name (no query), returning the captures.
    pub fn matches<'a>(&'a self, name: &'a str) -> Option<Params<'a>> {
        let mut params = Params::new();
        let mut split = split_parts(name);
        for part in &self.parts {
            let seg = split.next()?;
            match part {
                Part::Literal(l) if l == seg => {}
                Part::Literal(_) => return None,
                Part::Capture(n) => {
                    if seg.is_empty() {
                        return None;
                    }
                    params.push((n.as_str(), seg));
                }
            }
        }
        if split.next().is_some() {
            return None;
        }
        Some(params)
    }

    /// The captured parts of a name this pattern matches, in order, without
    /// allocating.
    pub fn captured<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.parts
            .iter()
            .zip(split_parts(name))
            .filter_map(|(p, seg)| matches!(p, Part::Capture(_)).then_some(seg))
    }

    /// True when the pattern matches a resource name; unlike [`Pattern::matches`] it
    /// collects no captures, so it does not allocate.
    pub fn is_match(&self, name: &str) -> bool {
        let mut split = split_parts(name);
        self.parts.iter().all(|part| match (part, split.next()) {
            (Part::Literal(l), Some(seg)) => l == seg,
            (Part::Capture(_), Some(seg)) => !seg.is_empty(),
            (_, None) => false,
        }) && split.next().is_none()
    }

    /// The connection ID in a resource name this pattern matches, without allocating.
    pub fn cid_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let i = self.cid_index?;
        if i + 1 == self.parts.len() {
            // The usual place: the last part, one search from the end.
            Some(split_last(name).map_or(name, |(_, last)| last))
        } else {
            split_parts(name).nth(i)
        }
    }

    /// The name with its connection ID replaced by `cid` (the same name of another
    /// connection); `None` when the pattern has no `{cid}`.
    pub fn with_cid(&self, name: &str, cid: &str) -> Option<String> {
        let i = self.cid_index?;
        let parts: Vec<&str> = name
            .split('.')
            .enumerate()
            .map(|(j, p)| if j == i { cid } else { p })
            .collect();
        Some(parts.join("."))
    }

    /// True when some resource name matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.parts.len() == other.parts.len()
            && self
                .parts
                .iter()
                .zip(&other.parts)
                .all(|(a, b)| match (a, b) {
                    (Part::Literal(x), Part::Literal(y)) => x == y,
                    _ => true,
                })
    }

    /// The gateway's pattern syntax, used in `system.reset` and subjects: captures as `*`.
    pub fn wildcard(&self) -> String {
        let mut out = String::with_capacity(self.source.len());
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Capture(_) => out.push('*'),
            }
        }
        out
    }
}

/// Patterns that do not overlap each other, numbered in the order they were added, to
/// find the first that a new pattern overlaps without comparing it with every one.
///
/// A tree over the parts, one per part count, where every capture is one child (any
/// capture matches what any other does): a literal part follows its own child and the
/// capture child, a capture part every child, and a branch is left out once it holds no
/// pattern added before the best found. Before the walk, a pattern is let go at once
/// when one of its literal parts meets neither that literal nor a capture at its place
/// in any pattern added (so `{tenant}.orders.{id}` costs nothing beside thousands of
/// `app1.model.{cid}`). Finding costs the branches that can match, not the number of
/// patterns. The nodes are in one list (children by index), so that neither finding
/// nor dropping recurses, however many parts a pattern has.
#[derive(Debug, Default)]
pub struct OverlapIndex {
    nodes: Vec<Node>,
    /// The root of each part count's tree.
    roots: FastMap<usize, usize>,
    /// What each place (part count, index) holds in some pattern: a literal or a
    /// capture, by hash ([`OverlapIndex::place`]). A collision only spares a pattern
    /// the quick refusal.
    held: std::collections::HashSet<u64, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Node {
    /// The first pattern (by number) through this node: patterns are numbered in
    /// the order they are added, so it is the one that made the node.
    first: usize,
    literals: FastMap<String, usize>,
    capture: Option<usize>,
    /// The pattern that ends here.
    end: Option<usize>,
}

impl Node {
    fn new(first: usize) -> Node {
        Node {
            first,
            literals: FastMap::default(),
            capture: None,
            end: None,
        }
    }
}

impl OverlapIndex {
    /// The lowest-numbered pattern added that overlaps `pattern` (see
    /// [`Pattern::overlaps`]).
    pub fn first_overlap(&self, pattern: &Pattern) -> Option<usize> {
        let parts = pattern.parts();
        let len = parts.len();
        let root = *self.roots.get(&len)?;
        let unmatched = parts.iter().enumerate().any(|(i, part)| match part {
            Part::Literal(l) => {
                !self.held.contains(&self.place(len, i, None))
                    && !self.held.contains(&self.place(len, i, Some(l)))
            }
            Part::Capture(_) => false,
        });
        if unmatched {
            return None;
        }
        let mut best: Option<usize> = None;
        let mut stack = vec![(root, 0)];
        while let Some((at, depth)) = stack.pop() {
            let node = &self.nodes[at];
            if best.is_some_and(|b| node.first >= b) {
                continue;
            }
            let Some(part) = parts.get(depth) else {
                if let Some(end) = node.end {
                    best = Some(best.map_or(end, |b| b.min(end)));
                }
                continue;
            };
            if let Some(capture) = node.capture {
                stack.push((capture, depth + 1));
            }
            match part {
                Part::Literal(l) => {
                    if let Some(&child) = node.literals.get(l) {
                        stack.push((child, depth + 1));
                    }
                }
                Part::Capture(_) => {
                    stack.extend(node.literals.values().map(|&child| (child, depth + 1)))
                }
            }
        }
        best
    }

    /// A place of a pattern of `len` parts, index `i`, holding a literal (or `None`, a
    /// capture), as a hash.
    fn place(&self, len: usize, i: usize, literal: Option<&str>) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one((len, i, literal))
    }

    /// Adds a pattern that overlaps none added before, numbered `n` (greater than every
    /// number before).
    pub fn insert(&mut self, pattern: &Pattern, n: usize) {
        let len = pattern.parts().len();
        let mut at = match self.roots.get(&len) {
            Some(&root) => root,
            None => {
                self.nodes.push(Node::new(n));
                self.roots.insert(len, self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        for (i, part) in pattern.parts().iter().enumerate() {
            let next = match part {
                Part::Literal(l) => {
                    self.held.insert(self.place(len, i, Some(l)));
                    self.nodes[at].literals.get(l).copied()
                }
                Part::Capture(_) => {
                    self.held.insert(self.place(len, i, None));
                    self.nodes[at].capture
                }
            };
            at = match next {
                Some(child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::new(n));
                    match part {
                        Part::Literal(l) => {
                            self.nodes[at].literals.insert(l.clone(), child);
                        }
                        Part::Capture(_) => self.nodes[at].capture = Some(child),
                    }
                    child
                }
            };
        }
        self.nodes[at].end.get_or_insert(n);
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A part of a resource name: non-empty, no whitespace, no dots and none of the NATS
/// wildcards `*` and `>` or the query mark `?`.
pub fn is_name_part(part: &str) -> bool {
    // Connection IDs and most captures are plain ASCII: a byte check settles them.
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    !part.is_empty()
        && (part.bytes().all(plain)
            || !part
                .chars()
                .any(|c| c.is_whitespace() || c == '.' || c == '*' || c == '>' || c == '?'))
}

/// `name` split at its last dot, as `str::rsplit_once('.')` does, found with a SIMD
/// search (memchr): resource names are split so on every request, and the standard
/// library's search for a char costs several times as much on names this short.
pub fn split_last(name: &str) -> Option<(&str, &str)> {
    let at = memchr::memrchr(b'.', name.as_bytes())?;
    // A dot is one byte and never inside a UTF-8 sequence: both sides are `str`s.
    Some((&name[..at], &name[at + 1..]))
}

/// The dot-separated parts of `name`, as `str::split('.')` gives them, found with a
/// SIMD search (memchr): a name is split on every request.
pub fn split_parts(name: &str) -> impl Iterator<Item = &str> {
    let mut from = 0;
    let mut dots = memchr::memchr_iter(b'.', name.as_bytes());
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        // A dot is one byte and never inside a UTF-8 sequence: each part is a `str`.
        let part = match dots.next() {
            Some(at) => {
                let part = &name[from..at];
                from = at + 1;
                part
            }
            None => {
                done = true;
                &name[from..]
            }
        };
        Some(part)
    })
}

/// True when every part of `name` is non-empty and plain ASCII (letters, digits, `_`,
/// `-`): one pass over the bytes, no splitting. Such a name is a valid resource name,
/// and so is every part of it; a name it refuses may still be one
/// ([`is_resource_name`] decides).
pub fn is_plain_name(name: &str) -> bool {
    let mut after_dot = true;
    for b in name.bytes() {
        if b == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            after_dot = false;
        } else {
            return false;
        }
    }
    !after_dot
}

/// True when `name` is a valid RES resource name (dot-separated non-empty parts, no
/// whitespace, no wildcards, no query).
pub fn is_resource_name(name: &str) -> bool {
    !name.is_empty() && split_parts(name).all(is_name_part)
}

/// The longest reference connres stores or serves, in bytes.
pub const MAX_REF_LEN: usize = 1024;

/// True when `name` is a reference the gateway accepts: dot-separated non-empty parts of
/// printable ASCII (`!` to `~`) without `*`, `>` or `?` (Resgate refuses a model that
/// refers to anything else, for every client of it), at most [`MAX_REF_LEN`] bytes.
pub fn is_valid_ref(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| (33..=126).contains(&b) && !matches!(b, b'*' | b'>' | b'?'))
    };
    name.len() <= MAX_REF_LEN && name.split('.').all(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_is_split() {
        for name in [
            "", "a", "a.b", "a.b.c", ".", "a.", ".b", "é.ü.x", "a..b", "..",
        ] {
            let ours: Vec<&str> = split_parts(name).collect();
            let std: Vec<&str> = name.split('.').collect();
            assert_eq!(ours, std, "{name:?}");
        }
    }

    #[test]
    fn split_last_is_rsplit_once() {
        for name in ["", "a", "a.b", "a.b.c", ".", "a.", ".b", "é.ü.x", "a..b"] {
            assert_eq!(split_last(name), name.rsplit_once('.'), "{name:?}");
        }
    }

    #[test]
    fn a_plain_name_is_a_resource_name() {
        for name in ["a", "session.user.c1", "a-b.c_d.9"] {
            assert!(is_plain_name(name), "{name}");
            assert!(is_resource_name(name), "{name}");
        }
        // Refused: empty parts, and anything not plain (some of which are valid names).
        for name in ["", ".", "a.", ".a", "a..b", "a.b*", "a b", "a.é", "a.b>"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
        assert!(is_resource_name("a.é"), "valid, though not plain");
    }

    proptest::proptest! {
        #[test]
        fn a_plain_name_is_one_whose_parts_are_non_empty_and_plain(name in "[a-c._* é-]{0,12}") {
            let plain = |p: &str| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            proptest::prop_assert_eq!(is_plain_name(&name), name.split('.').all(plain));
        }
    }

    #[test]
    fn parses_literals_and_captures() {
        let p = Pattern::parse("session.user.{cid}").unwrap();
        assert_eq!(
            p.parts(),
            &[
                Part::Literal("session".into()),
                Part::Literal("user".into()),
                Part::Capture("cid".into())
            ]
        );
        assert!(p.has_cid());
        assert_eq!(p.wildcard(), "session.user.*");
        assert_eq!(p.captures().collect::<Vec<_>>(), vec!["cid"]);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::EmptyPart(_))
        ));
        assert!(matches!(
            Pattern::parse("a.b."),
            Err(PatternError::EmptyPart(_))
        ));
        assert!(matches!(
            Pattern::parse("a.x{cid}"),
            Err(PatternError::BadPart { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.*"),
            Err(PatternError::BadPart { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.{}"),
            Err(PatternError::BadCapture { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.{c-d}"),
            Err(PatternError::BadCapture { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.{x}.{x}"),
            Err(PatternError::DuplicateCapture { .. })
        ));
    }

    #[test]
    fn matches_names_and_extracts_params() {
        let p = Pattern::parse("chat.{room}.typing.{cid}").unwrap();
        assert_eq!(
            p.matches("chat.lobby.typing.c1").as_deref(),
            Some(&[("room", "lobby"), ("cid", "c1")][..])
        );
        assert_eq!(p.cid_of("chat.lobby.typing.c1"), Some("c1"));
        let inner = Pattern::parse("a.{cid}.b").unwrap();
        assert_eq!(inner.cid_of("a.c2.b"), Some("c2"));
        assert_eq!(p.matches("chat.lobby.typing"), None);
        assert_eq!(p.matches("chat.lobby.typing.c1.x"), None);
        assert_eq!(p.matches("chat.lobby.talking.c1"), None);
        assert_eq!(p.matches("chat..typing.c1"), None);
    }

    #[test]
    fn is_match_agrees_with_matches() {
        let p = Pattern::parse("chat.{room}.typing.{cid}").unwrap();
        for name in [
            "chat.lobby.typing.c1",
            "chat.lobby.typing",
            "chat.lobby.typing.c1.x",
            "chat.lobby.talking.c1",
            "chat..typing.c1",
            "",
        ] {
            assert_eq!(p.is_match(name), p.matches(name).is_some(), "{name:?}");
        }
    }

    #[test]
    fn overlap_needs_same_length_and_compatible_literals() {
        let a = Pattern::parse("session.user.{cid}").unwrap();
        let b = Pattern::parse("session.{kind}.c1").unwrap();
        let c = Pattern::parse("session.prefs.{cid}").unwrap();
        let d = Pattern::parse("session.user.{cid}.x").unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&d));
        assert!(b.overlaps(&c));
    }

    /// The index finds what comparing with every pattern added finds: the first that
    /// overlaps.
    #[test]
    fn the_overlap_index_finds_the_first_overlapping_pattern() {
        use proptest::prelude::*;
        let part = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("{x}".to_string()),
        ];
        let pattern = prop::collection::vec(part, 1..4).prop_map(|parts| {
            // Captures renamed apart, as a pattern needs them.
            let parts: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    if p == "{x}" {
                        format!("{{x{i}}}")
                    } else {
                        p.clone()
                    }
                })
                .collect();
            Pattern::parse(&parts.join(".")).unwrap()
        });
        proptest!(|(patterns in prop::collection::vec(pattern, 1..40))| {
            let mut index = OverlapIndex::default();
            let mut added: Vec<&Pattern> = Vec::new();
            for p in &patterns {
                let expected = added.iter().position(|a| a.overlaps(p));
                prop_assert_eq!(index.first_overlap(p), expected, "{}", p);
                if expected.is_none() {
                    index.insert(p, added.len());
                    added.push(p);
                }
            }
        });
    }

    #[test]
    fn a_pattern_of_very_many_parts_is_indexed_without_recursion() {
        let long = Pattern::parse(&vec!["a"; 200_000].join(".")).unwrap();
        let mut index = OverlapIndex::default();
        assert_eq!(index.first_overlap(&long), None);
        index.insert(&long, 0);
        let other = Pattern::parse(&format!("{}.{{x}}", vec!["a"; 199_999].join("."))).unwrap();
        assert_eq!(index.first_overlap(&other), Some(0));
    }

    #[test]
    fn errors_quote_long_patterns_short() {
        let long = format!("{}.x{{cid}}", "a".repeat(1000));
        let message = Pattern::parse(&long).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("resource pattern `{}...`: part `x{{cid}}` must be a literal name or a whole `{{capture}}`", "a".repeat(60))
        );
    }

    #[test]
    fn resource_names() {
        assert!(is_resource_name("users.user.42"));
        assert!(!is_resource_name("users..42"));
        assert!(!is_resource_name("users.user 42"));
        assert!(!is_resource_name("users.*"));
        assert!(!is_resource_name(""));
        assert!(!is_resource_name("a.b?q=1"));
        assert!(is_valid_ref("users.user.42"));
        assert!(is_valid_ref("a-b_c.~!"));
        for bad in [
            "users.user.\u{0}",
            "users.user.é",
            "users..42",
            "users.*",
            "a.b?q=1",
            "",
            "a.b c",
            "a.\u{7f}",
        ] {
            assert!(!is_valid_ref(bad), "{bad:?}");
        }
        assert!(is_valid_ref(&format!("a.{}", "x".repeat(MAX_REF_LEN - 2))));
        assert!(!is_valid_ref(&format!("a.{}", "x".repeat(MAX_REF_LEN - 1))));
    }
}
