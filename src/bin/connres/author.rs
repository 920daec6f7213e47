//! The commands for the people who edit the config: `check`, `test`, `plan`,
//! `explain`, `mapping`. They print for a person and exit with a code a CI job can use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use connres::config::{Config, ConfigErrors};
use connres::explain::Question;
use connres::ruletest::{self, Suite};

use crate::args::DEFAULT_CONFIG;

fn load_or_report(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            for line in errors.lines() {
                eprintln!("{line}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
            None
        }
    }
}

/// Prints the errors of test files that do not parse or have no config to test.
fn report_test_errors(errors: &[ConfigErrors]) {
    for line in errors.iter().flat_map(|e| e.lines()) {
        eprintln!("{line}");
    }
}

/// The rule tests whose decisions `plan` compares: those at `paths`, or the test files
/// beside NEW that test it.
fn plan_suites(new: &Path, paths: Vec<PathBuf>) -> Option<Vec<Suite>> {
    let found = if paths.is_empty() {
        ruletest::discover(new).map(|d| d.run.suites)
    } else {
        ruletest::load(&paths)
    };
    found.map_err(|e| report_test_errors(&e)).ok()
}

/// `connres mapping`: the nats-server `mappings` block that routes each read and call of
/// the config to its partition (shared store only).
pub fn mapping(path: &Path) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let Some(store) = config.state.store.shared() else {
        eprintln!(
            "{}: `state.store` is memory: one instance serves every read, there is nothing to map \
             (the mapping is for `state.store: nats`; to remove a block nats-server loaded \
             before, reload it with `mappings = {{}}`)",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    print!("{}", connres::mapping::Mapping::of(&config, store).block());
    ExitCode::SUCCESS
}

pub fn plan(old: &Path, new: &Path, tests: Vec<PathBuf>) -> ExitCode {
    let (Some(old_config), Some(new_config)) = (load_or_report(old), load_or_report(new)) else {
        return ExitCode::FAILURE;
    };
    let Some(suites) = plan_suites(new, tests) else {
        return ExitCode::FAILURE;
    };
    println!("plan: {} -> {}", old.display(), new.display());
    let plan = connres::plan::plan(&old_config, &new_config, &suites);
    print!("{}", plan.text);
    ExitCode::from(plan.verdict as u8)
}

/// `connres test`: each test file against its own config (`ruletest::assign`), or,
/// without files, the test files beside the config that test it.
pub fn test(flag: Option<&Path>, paths: Vec<PathBuf>) -> ExitCode {
    let default = Path::new(DEFAULT_CONFIG);
    let runs = if paths.is_empty() {
        let config = flag.unwrap_or(default);
        match ruletest::discover(config) {
            Err(e) => Err(e),
            Ok(found) if found.run.suites.is_empty() => {
                let others: Vec<String> = found
                    .others
                    .iter()
                    .map(|(file, own)| format!("{file} tests {}", own.display()))
                    .collect();
                let why = if others.is_empty() {
                    String::new()
                } else {
                    format!(" tests it ({})", others.join("; "))
                };
                eprintln!(
                    "connres: no rule tests for {}: no *.test.yaml beside it{why}; name test files as arguments",
                    config.display()
                );
                return ExitCode::FAILURE;
            }
            Ok(found) => Ok(vec![found.run]),
        }
    } else {
        ruletest::assign(&paths, flag, default)
    };
    let runs = match runs {
        Ok(runs) => runs,
        Err(errors) => {
            report_test_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let mut code = ExitCode::SUCCESS;
    for run in &runs {
        let files: Vec<&str> = run.suites.iter().map(|s| s.file.as_str()).collect();
        let shown = run.config.display().to_string();
        println!("running {} against {shown}", files.join(", "));
        let Some(config) = load_or_report(&run.config) else {
            eprintln!(
                "connres: {} not run: the config they test does not load",
                files.join(", ")
            );
            code = ExitCode::FAILURE;
            continue;
        };
        let report = ruletest::run(&config, &shown, &run.suites);
        print!("{}", report.text());
        if !report.ok() {
            code = ExitCode::FAILURE;
        }
    }
    code
}

pub fn explain(path: &Path, question: &Question) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    match connres::explain::explain(&config, question) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("connres: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn check(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            print!("{}", connres::summary(&config));
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for line in errors.lines() {
                eprintln!("{line}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.errors.len());
            ExitCode::FAILURE
        }
    }
}
