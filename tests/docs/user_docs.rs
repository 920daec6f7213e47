//! The user documents: the README stays short, engineering history stays out of them,
//! and a measured figure is stated where it was measured, matching its measurement.

use std::path::PathBuf;

use super::{documents, root, split};

/// The README is for users: what connres is, how to run it, a short tour and links. Its
/// length is kept in check so that it stays that.
#[test]
fn the_readme_stays_short() {
    let lines = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines (at most 250): move detail into docs/"
    );
}

/// A document's prose in paragraphs (a list item or table row is one), each with the
/// heading it sits under and its first line number.
fn paragraphs(text: &str) -> Vec<(String, usize, String)> {
    let (_, prose) = split(text);
    let mut out: Vec<(String, usize, String)> = Vec::new();
    let mut heading = String::new();
    let mut open = false;
    let mut last = 0;
    for (n, line) in prose {
        let trimmed = line.trim();
        let starts = trimmed.starts_with("- ") || trimmed.starts_with('|') || n != last + 1;
        last = n;
        if let Some(h) = trimmed.strip_prefix('#') {
            heading = h.trim_start_matches('#').trim().to_string();
            open = false;
        } else if trimmed.is_empty() {
            open = false;
        } else if open && !starts {
            let p = out.last_mut().unwrap();
            p.2.push(' ');
            p.2.push_str(trimmed);
        } else {
            out.push((heading.clone(), n, trimmed.to_string()));
            open = true;
        }
    }
    out
}

/// The user documents: the README and docs/, without the history page.
fn user_documents() -> Vec<PathBuf> {
    documents()
        .into_iter()
        .filter(|d| d.parent() == Some(&root().join("docs")) || d.ends_with("README.md"))
        .filter(|d| !d.ends_with("docs/history.md"))
        .collect()
}

/// Engineering history (what was found, what an earlier build measured) lives in
/// docs/history.md and BENCHMARKS.md; user documents say how connres behaves now. The
/// reports of runs in docs/scaling.md ("What it costs", "Checking it under faults")
/// compare builds on purpose.
#[test]
fn user_documents_tell_no_history() {
    let phrases = [
        "what the real gateway showed",
        "before this round",
        "used to be",
        "used to put",
        "measured before",
        "now fixed",
        "before this one",
    ];
    let reports = ["What it costs", "Checking it under faults"];
    for doc in user_documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (heading, n, p) in paragraphs(&text) {
            if doc.ends_with("docs/scaling.md") && reports.contains(&heading.as_str()) {
                continue;
            }
            let lower = p.to_lowercase();
            for phrase in phrases {
                assert!(
                    !lower.contains(phrase),
                    "{}:{n}: \"{phrase}\" is history: move it to docs/history.md or BENCHMARKS.md",
                    doc.display()
                );
            }
        }
    }
}

/// A time figure: digits followed by ms or µs.
fn time_figure() -> regex::Regex {
    regex::Regex::new(r"\d[\d.,–-]*\s?(ms|µs)\b").unwrap()
}

/// The cost of a reload that re-checks stored models is measured once, in
/// docs/performance.md (`examples/reload_bench.rs`); other documents link to it rather
/// than state a figure of their own (three documents once stated three figures).
#[test]
fn the_reload_recheck_cost_is_stated_only_where_it_is_measured() {
    let recheck =
        regex::Regex::new(r"(?i)re-?checks?|checked again|state visited|visits every stored")
            .unwrap();
    let figure = time_figure();
    let mut linked = 0;
    for doc in user_documents() {
        if doc.ends_with("docs/performance.md") {
            continue;
        }
        let text = std::fs::read_to_string(&doc).unwrap();
        for (_, n, p) in paragraphs(&text) {
            for sentence in p.split(". ").filter(|s| recheck.is_match(s)) {
                assert!(
                    !figure.is_match(sentence) && !sentence.contains("per connection"),
                    "{}:{n}: a figure for the reload's re-check: link to docs/performance.md instead:\n{sentence}",
                    doc.display()
                );
                linked += usize::from(sentence.contains("performance.md#"));
            }
        }
    }
    assert!(
        linked >= 2,
        "the README and operations.md link to the measured figure"
    );
}

/// docs/performance.md states the re-check cost three ways: the measured range (ms per
/// 100,000 connections), the targets table's rounding of it and the cost per
/// connection. They must agree.
#[test]
fn the_reload_recheck_figures_agree_with_their_measurement() {
    let text = std::fs::read_to_string(root().join("docs/performance.md")).unwrap();
    let prose: String = paragraphs(&text)
        .into_iter()
        .map(|(_, _, p)| p + "\n")
        .collect();
    let range = |re: &str| -> (f64, f64) {
        let c = regex::Regex::new(re)
            .unwrap()
            .captures(&prose)
            .unwrap_or_else(|| panic!("docs/performance.md has no match for {re}"));
        (c[1].parse().unwrap(), c[2].parse().unwrap())
    };
    let measured = range(r"constraint held the serving task (\d+\.\d)–(\d+\.\d) ms");
    let table = range(r"(\d+)–(\d+) ms with 100,000 stored connections");
    assert_eq!(
        (measured.0.round(), measured.1.round()),
        table,
        "the targets table rounds {measured:?} ms"
    );
    let per = regex::Regex::new(
        r"visits every stored model on the serving task: about (\d+\.\d+) µs per connection",
    )
    .unwrap()
    .captures(&prose)
    .expect("the cost per connection")[1]
        .parse::<f64>()
        .unwrap();
    let (low, high) = (measured.0 / 100.0, measured.1 / 100.0);
    assert!(
        (low - 0.05..=high + 0.05).contains(&per),
        "{per} µs per connection, but {measured:?} ms per 100,000 is {low:.2}–{high:.2} µs"
    );
}
