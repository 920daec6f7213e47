//! The YAML reader: the one module that names the YAML crate. It turns the file into a
//! small tree where every node and every key keeps its line and column, so that the
//! compiler can report every error at its place.
//!
//! Why not `serde_yaml`: it is deprecated, keeps the last of two duplicate keys
//! silently, stops at the first error and gives no positions for nodes. `marked-yaml`
//! gives spans for every node and rejects duplicate keys.

use std::fmt;

use marked_yaml::{LoadError, LoaderOptions, Node};
use serde_json::Value;

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Yaml {
    pub pos: Pos,
    pub kind: Kind,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    /// Entries in file order; of duplicate keys only the last is kept (and reported).
    Map(Vec<(Key, Yaml)>),
}

impl Yaml {
    /// A name for the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The node as plain JSON (for defaults and enum values).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// How many duplicate keys one file may report before the rest are left unsaid.
const MAX_DUPLICATES: usize = 50;

/// Parses a YAML document whose top level is a mapping. Duplicate keys do not stop it:
/// each is reported (the second of two keys, naming the first), and the tree keeps the
/// last value, so the rest of the file is still checked. Any other error is fatal.
pub fn parse(source: &str) -> Result<(Yaml, Vec<SyntaxError>), SyntaxError> {
    if source.trim().is_empty() {
        return Err(SyntaxError {
            pos: Pos { line: 1, col: 1 },
            message: "the file is empty; it needs at least `version: 1` and `resources:`".into(),
        });
    }
    let options = || {
        LoaderOptions::default()
            .prevent_coercion(true)
            .toplevel_mapping()
    };
    // The loader stops at the first duplicate: each one found is renamed in a copy of
    // the text (same length, so later positions hold) and the copy loaded again.
    // Without duplicates (the usual case) the first load is the tree itself.
    let mut duplicates = Vec::new();
    let strict = || options().error_on_duplicate_keys(true);
    let mut probe: Vec<char> = match marked_yaml::parse_yaml_with_options(0, source, strict()) {
        Ok(node) => return Ok((convert(&node), duplicates)),
        Err(LoadError::DuplicateKey(_)) => source.chars().collect(),
        Err(e) => return Err(at_tag(source, load_error(e))),
    };
    for round in 0..MAX_DUPLICATES {
        let text: String = probe.iter().collect();
        match marked_yaml::parse_yaml_with_options(0, &text, strict()) {
            Ok(_) => break,
            Err(LoadError::DuplicateKey(inner)) => {
                let start = inner.key.span().start().copied();
                let len = inner.key.as_str().chars().count();
                duplicates.push(load_error(LoadError::DuplicateKey(inner)));
                let Some(start) = start else {
                    break;
                };
                let mut at = start.character();
                if matches!(probe.get(at), Some('"' | '\'')) {
                    at += 1;
                }
                for c in probe.iter_mut().skip(at).take(len) {
                    *c = rename(round);
                }
            }
            Err(e) => return Err(at_tag(source, load_error(e))),
        }
    }
    let node = marked_yaml::parse_yaml_with_options(0, source, options())
        .map_err(|e| at_tag(source, load_error(e)))?;
    Ok((convert(&node), duplicates))
}

/// A character no config uses, different for each renamed duplicate.
fn rename(round: usize) -> char {
    char::from_u32(0xE000 + round as u32).unwrap_or('\u{E000}')
}

/// The loader reports a tag where the token after it starts; the tag itself is the last
/// `!` that starts a token before that place. A rule such as `!model.locked` reads as a
/// tag in YAML, so the message says how to write it.
fn at_tag(source: &str, mut error: SyntaxError) -> SyntaxError {
    if error.message != TAGS_UNSUPPORTED {
        return error;
    }
    let mut last = None;
    let (mut line, mut col, mut prev) = (1, 0, '\n');
    for c in source.chars() {
        if (line, col + 1) >= (error.pos.line, error.pos.col) {
            break;
        }
        if c == '\n' {
            (line, col) = (line + 1, 0);
        } else {
            col += 1;
            if c == '!' && (prev.is_whitespace() || matches!(prev, ':' | '[' | '{' | ',' | '-')) {
                last = Some(Pos { line, col });
            }
        }
        prev = c;
    }
    if let Some(pos) = last {
        error.pos = pos;
    }
    error.message = format!(
        "{TAGS_UNSUPPORTED}; a value that starts with `!` (such as the rule `!model.locked`) must be quoted: \"!model.locked\""
    );
    error
}

const TAGS_UNSUPPORTED: &str = "YAML tags are not supported";

fn load_error(e: LoadError) -> SyntaxError {
    let (marker, message) = match &e {
        LoadError::TopLevelMustBeMapping(m) => {
            (Some(*m), "the top level must be a mapping".to_string())
        }
        LoadError::TopLevelMustBeSequence(m) => {
            (Some(*m), "the top level must be a mapping".to_string())
        }
        LoadError::UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported".to_string(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => {
            (Some(*m), "mapping keys must be plain strings".to_string())
        }
        LoadError::UnexpectedTag(m) => (Some(*m), TAGS_UNSUPPORTED.to_string()),
        LoadError::ScanError(m, se) => (Some(*m), format!("YAML syntax: {}", se.info())),
        LoadError::DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first defined at {})",
                super::excerpt(inner.key.as_str()),
                inner
                    .prev_key
                    .span()
                    .start()
                    .map(|m| pos_of(*m))
                    .unwrap_or_default()
            ),
        ),
    };
    SyntaxError {
        pos: marker.map(pos_of).unwrap_or(Pos { line: 1, col: 1 }),
        message,
    }
}

fn pos_of(m: marked_yaml::Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.column().max(1),
    }
}

fn span_pos(span: &marked_yaml::Span) -> Pos {
    span.start()
        .map(|m| pos_of(*m))
        .unwrap_or(Pos { line: 1, col: 1 })
}

fn convert(node: &Node) -> Yaml {
    let pos = span_pos(node.span());
    let kind = match node {
        Node::Scalar(s) => scalar(s.as_str(), s.may_coerce()),
        Node::Sequence(seq) => Kind::Seq(seq.iter().map(convert).collect()),
        Node::Mapping(map) => Kind::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.as_str().to_string(),
                            pos: span_pos(k.span()),
                        },
                        convert(v),
                    )
                })
                .collect(),
        ),
    };
    Yaml { pos, kind }
}

/// YAML 1.2 core schema resolution for plain scalars; quoted scalars stay strings.
fn scalar(text: &str, plain: bool) -> Kind {
    if !plain {
        return Kind::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    let numeric = text
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if numeric {
        if let Ok(i) = text.parse::<i64>() {
            return Kind::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            if f.is_finite() {
                return Kind::Float(f);
            }
        }
    }
    Kind::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_like_yaml_core_schema() {
        let (doc, _) =
            parse("a: 1\nb: 1.5\nc: true\nd: ~\ne: \"1\"\nf: text\ng:\nh: -3\n").unwrap();
        let Kind::Map(entries) = doc.kind else {
            panic!()
        };
        let kinds: Vec<_> = entries.into_iter().map(|(_, v)| v.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Int(1),
                Kind::Float(1.5),
                Kind::Bool(true),
                Kind::Null,
                Kind::Str("1".into()),
                Kind::Str("text".into()),
                Kind::Null,
                Kind::Int(-3),
            ]
        );
    }

    #[test]
    fn positions_are_one_based() {
        let (doc, _) = parse("top:\n  key: value\n").unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        let Kind::Map(inner) = &entries[0].1.kind else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 2, col: 8 });
    }

    #[test]
    fn every_duplicate_key_is_reported_and_the_rest_still_parses() {
        let (doc, dups) = parse("a: 1\nb: 2\na: 3\nc:\n  x: 1\n  \"x\": 2\na: 4\n").unwrap();
        let found: Vec<(Pos, &str)> = dups.iter().map(|d| (d.pos, d.message.as_str())).collect();
        assert_eq!(
            found,
            [
                (
                    Pos { line: 3, col: 1 },
                    "duplicate key `a` (first defined at 1:1)"
                ),
                (
                    Pos { line: 6, col: 3 },
                    "duplicate key `x` (first defined at 5:3)"
                ),
                (
                    Pos { line: 7, col: 1 },
                    "duplicate key `a` (first defined at 1:1)"
                ),
            ]
        );
        // The last value is kept.
        assert_eq!(doc.to_json()["a"], serde_json::json!(4));
    }

    #[test]
    fn a_tag_is_reported_where_it_is_with_how_to_quote_it() {
        let e = parse("a: 1\nget: !model.locked\ncall: x\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 6 });
        assert!(e.message.contains("must be quoted"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax"), "{}", e.message);
        assert!(e.pos.line >= 1);
        assert!(parse("").unwrap_err().message.contains("empty"));
        assert!(parse("- a\n").unwrap_err().message.contains("mapping"));
    }
}
