//! `connres test`: rule tests. A test file (`*.test.yaml`, beside the config by
//! default; `select.rs` decides which config each file tests, `parse.rs` reads it)
//! lists cases: a connection (cid and token) asks for a resource, and the case says
//! what access it must get, what a `set` must do and what the model (or a collection's
//! items) must hold; or `steps`, a sequence of such requests (a collection's `add` and
//! `remove` too, and a presence list's `join`, `leave` and `ping`), token changes,
//! backend writes and waits, each with its expectations. Each case runs through a real engine, without NATS
//! (`session.rs`), step by step (`run.rs`). Failures name the rule that decided, with
//! its text and place; the report ends with the rules and fields no case exercised.

mod parse;
mod run;
mod select;
mod session;

use std::fmt::Write as _;

pub use parse::{parse, Action, CallExpect, Case, Expect, Step, Suite};
pub use select::{assign, discover, load, Discovered, Run};
pub(crate) use session::Session;

use crate::config::Config;
use run::{rule_key, Exercised, Names};

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// Each failing case: its heading and what went wrong.
    pub failures: Vec<String>,
    /// Per resource, the rules and fields no case exercised.
    pub uncovered: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as printed.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let _ = writeln!(out, "{f}");
        }
        let _ = writeln!(
            out,
            "{} case(s) passed, {} failed",
            self.passed,
            self.failures.len()
        );
        if !self.uncovered.is_empty() {
            let _ = writeln!(out, "not exercised by any case:");
            for u in &self.uncovered {
                let _ = writeln!(out, "  {u}");
            }
        }
        out
    }
}

/// Runs every case of `suites` against `config` (named `config_path` in messages).
pub fn run(config: &Config, config_path: &str, suites: &[Suite]) -> Report {
    let mut report = Report::default();
    let mut exercised = Exercised::new();
    for suite in suites {
        let names = Names {
            config_path,
            file: &suite.file,
        };
        for case in &suite.cases {
            let heading = format!("FAIL {}:{}: {}", suite.file, case.at, case.name);
            match run::case(config, &names, case, &mut exercised) {
                Ok(()) => report.passed += 1,
                Err(problems) => report
                    .failures
                    .push(format!("{heading}\n{}", problems.join("\n"))),
            }
        }
    }
    for res in &config.resources {
        let pattern = res.pattern.as_str();
        let mut missing: Vec<String> = res
            .sites
            .0
            .iter()
            .filter(|(name, _)| name != "pattern")
            .filter(|(name, _)| !exercised.contains(&(pattern.to_string(), rule_key(name))))
            .map(|(name, site)| format!("rule {name} ({})", site.show(config_path)))
            .collect();
        let fields: Vec<&str> = res
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .filter(|f| !exercised.contains(&(pattern.to_string(), format!("field {f}"))))
            .collect();
        if !fields.is_empty() {
            missing.push(format!("field(s) {}", fields.join(", ")));
        }
        if !missing.is_empty() {
            report
                .uncovered
                .push(format!("{pattern}: {}", missing.join("; ")));
        }
    }
    report
}

#[cfg(test)]
mod tests;
