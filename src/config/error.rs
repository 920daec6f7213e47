//! Config errors: every problem found in a file, each with its place, printed as
//! `file:line:col: message`.

use std::borrow::Cow;
use std::fmt;

use super::yaml::Pos;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the config is a directory of files.
    pub file: Option<String>,
    pub pos: Pos,
    pub message: String,
}

/// Every problem found in a config (a file, or a directory of files), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The config's path.
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// One error about the config as a whole, such as a file that cannot be read.
    pub fn one(file: impl Into<String>, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors {
            file: file.into(),
            errors: vec![ConfigError {
                file: None,
                pos: Pos { line: 1, col: 1 },
                message: message.into(),
            }],
        }
    }

    /// The errors as `file:line:col: message` lines.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| {
                let file = e.file.as_deref().unwrap_or(&self.file);
                format!("{file}:{}: {}", e.pos, e.message)
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// The most characters of a file's own text (a key, a value, a pattern) that an error
/// message quotes: a file that is not a config (a password file, say, whose lines read
/// as keys) is never echoed at length.
pub const EXCERPT_CHARS: usize = 60;

/// Text from a config file as error messages quote it: whole when short, else its
/// first [`EXCERPT_CHARS`] characters and `...`.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}...", &text[..end])),
    }
}

/// Names longer than this are no misspelling of an allowed one, and are not compared
/// (the comparison's cost grows with the product of the lengths).
const MAX_SUGGESTED: usize = 256;

/// A "did you mean" hint for a misspelt name, from the names allowed at that place.
pub fn suggestion(name: &str, allowed: &[&str]) -> Option<String> {
    if name.len() > MAX_SUGGESTED {
        return None;
    }
    let near = allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(name, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3) && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.to_string());
    // An abbreviation (`int`, `bool`, `str`) of exactly one allowed name.
    let mut prefixed = allowed
        .iter()
        .filter(|a| name.len() >= 3 && a.len() > name.len() && a.starts_with(name));
    near.or_else(|| match (prefixed.next(), prefixed.next()) {
        (Some(a), None) => Some(a.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["type", "default", "from", "writable"];
        assert_eq!(suggestion("tpye", &keys), Some("type".into()));
        assert_eq!(suggestion("defualt", &keys), Some("default".into()));
        assert_eq!(suggestion("writeable", &keys), Some("writable".into()));
        assert_eq!(suggestion("colour", &keys), None);
        let types = ["string", "integer", "number", "boolean", "ref", "data"];
        assert_eq!(suggestion("int", &types), Some("integer".into()));
        assert_eq!(suggestion("bool", &types), Some("boolean".into()));
        assert_eq!(suggestion(&"type".repeat(1000), &keys), None);
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("resources"), "resources");
        let long = "é".repeat(61);
        assert_eq!(excerpt(&long), format!("{}...", "é".repeat(60)));
        assert_eq!(excerpt(&"é".repeat(60)), "é".repeat(60));
    }
}
