//! The documents stand alone and their examples are true:
//! - every YAML example that is a whole config (it has `version: 1` and `resources:`)
//!   loads, and
//!   one marked ```` ```yaml invalid ```` does not; when a ```` ```text ```` block of
//!   `resources.yaml:...` lines follows it, those are exactly its errors;
//! - a ```` ```sh ```` block of one `connres` command directly followed by a
//!   ```` ```text ```` block shows what the binary prints, run beside the shipped
//!   `resources.yaml` (with the rule test example of `docs/rules.md` as
//!   `prefs.test.yaml`);
//! - every link between the project's documents leads to a file, and to a heading of it
//!   when it names one;
//! - no document links outside the repository;
//! - the user documents stay short, tell no history and state a measured figure only
//!   where it was measured (`docs/user_docs.rs`).

use std::path::{Path, PathBuf};

use connres::config::Config;

/// The user documents: the README's length, no history, figures stated where measured.
#[path = "docs/user_docs.rs"]
mod user_docs;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Markdown documents.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced block: its info string, first and last line numbers and text.
struct Block {
    info: String,
    line: usize,
    end: usize,
    text: String,
}

/// The fenced blocks of a document, and its other lines (with their numbers).
fn split(text: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: n + 1,
                    end: n,
                    text: String::new(),
                })
            }
            (Some(b), Some(_)) => {
                b.end = n;
                blocks.extend(open.take());
            }
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => prose.push((n, line)),
        }
    }
    (blocks, prose)
}

#[test]
fn whole_config_examples_load_and_invalid_ones_fail_as_shown() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let (blocks, _) = split(&text);
        for (i, block) in blocks.iter().enumerate() {
            let mut words = block.info.split_whitespace();
            let whole = block.text.lines().any(|l| l.starts_with("version: 1"))
                && block.text.lines().any(|l| l.starts_with("resources:"));
            if words.next() != Some("yaml") || !whole {
                continue;
            }
            let invalid = words.any(|w| w == "invalid");
            let at = format!("{}:{}", doc.display(), block.line);
            checked += 1;
            match (Config::parse("resources.yaml", &block.text), invalid) {
                (Ok(_), false) => {}
                (Err(e), false) => panic!("{at}: the example does not load:\n{e}"),
                (Ok(_), true) => panic!("{at}: the example marked invalid loads"),
                (Err(e), true) => {
                    // The errors shown after it, if any, are exactly these.
                    let shown: Vec<&str> = blocks
                        .get(i + 1)
                        .filter(|b| b.info == "text")
                        .map(|b| {
                            b.text
                                .lines()
                                .filter(|l| l.starts_with("resources.yaml:"))
                                .filter(|l| !l.ends_with(" error(s)"))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !shown.is_empty() {
                        assert_eq!(shown, e.lines(), "{at}: the errors shown");
                    }
                }
            }
        }
    }
    assert!(checked >= 5, "only {checked} examples found");
}

/// A directory with the shipped config and rule tests, and the rule test example of
/// `docs/rules.md` (its first ```` ```yaml ```` block that is a `tests:` file).
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "resources.yaml",
        "resources.test.yaml",
        "connres.schema.json",
    ] {
        let from = root().join(f);
        if from.exists() {
            std::fs::copy(from, dir.path().join(f)).unwrap();
        }
    }
    let rules = std::fs::read_to_string(root().join("docs/rules.md")).unwrap();
    let (blocks, _) = split(&rules);
    let example = blocks
        .iter()
        .find(|b| b.info == "yaml" && b.text.starts_with("tests:"))
        .expect("docs/rules.md shows a rule test file");
    std::fs::write(dir.path().join("prefs.test.yaml"), &example.text).unwrap();
    dir
}

#[test]
fn shown_commands_print_what_is_shown() {
    let bin = Path::new(env!("CARGO_BIN_EXE_connres"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = example_dir();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let (blocks, _) = split(&text);
        for pair in blocks.windows(2) {
            let (command, shown) = (&pair[0], &pair[1]);
            let lines: Vec<&str> = command.text.lines().collect();
            let adjacent = shown.line <= command.end + 3;
            if command.info != "sh"
                || shown.info != "text"
                || !adjacent
                || lines.len() != 1
                || !lines[0].starts_with("connres ")
            {
                continue;
            }
            let at = format!("{}:{}", doc.display(), command.line);
            let mut cmd = std::process::Command::new("bash");
            cmd.arg("-c").arg(lines[0]).current_dir(dir.path());
            for (name, _) in std::env::vars() {
                if name.starts_with("NATS_") || name.starts_with("CONNRES_") {
                    cmd.env_remove(name);
                }
            }
            let out = cmd
                .env("PATH", &path)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                shown.text,
                "{at}: `{}` prints something else",
                lines[0]
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} commands found");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document's headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> Vec<String> {
    let (_, prose) = split(text);
    let mut out: Vec<String> = Vec::new();
    for (_, line) in prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(heading.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.push(anchor);
    }
    out
}

/// The targets of the Markdown links in a line: `[text](target)`.
fn links(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

#[test]
fn links_lead_to_files_and_headings_of_the_repository() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let (_, prose) = split(&text);
        for (n, line) in prose {
            for target in links(line) {
                let at = format!("{}:{n}", doc.display());
                assert!(
                    !target.contains("://") && !target.starts_with("mailto:"),
                    "{at}: `{target}` is outside the repository; documents refer only to the project's own files"
                );
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() {
                    doc.clone()
                } else {
                    doc.parent().unwrap().join(path)
                };
                assert!(file.exists(), "{at}: `{target}`: no such file");
                if !anchor.is_empty() {
                    let linked = std::fs::read_to_string(&file).unwrap();
                    assert!(
                        anchors(&linked).iter().any(|a| a == anchor),
                        "{at}: `{target}`: no such heading in {}",
                        file.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} links found");
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" Connecting to a secured NATS"),
        "connecting-to-a-secured-nats"
    );
    assert_eq!(slug(" from (templates)"), "from-templates");
    assert_eq!(
        slug(" Testing rules: connres test"),
        "testing-rules-connres-test"
    );
    assert_eq!(slug(" `api.prefix`"), "apiprefix");
}
