//! The commands for the people who edit the config: `check`, `test`, `plan`,
//! `explain`. They print for a person and exit with a code a CI job can use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use connres::config::Config;
use connres::explain::Question;
use connres::ruletest::Suite;

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

/// The rule tests at `paths`, or beside the config at `config` when none are given;
/// `None` after printing the errors of files that do not parse.
fn load_suites(config: &Path, paths: Vec<PathBuf>) -> Option<Vec<Suite>> {
    let paths = if paths.is_empty() {
        connres::ruletest::discover(config)
    } else {
        paths
    };
    match connres::ruletest::load(&paths) {
        Ok(s) => Some(s),
        Err(errors) => {
            for line in errors.iter().flat_map(|e| e.lines()) {
                eprintln!("{line}");
            }
            None
        }
    }
}

pub fn plan(old: &Path, new: &Path, tests: Vec<PathBuf>) -> ExitCode {
    let (Some(old_config), Some(new_config)) = (load_or_report(old), load_or_report(new)) else {
        return ExitCode::FAILURE;
    };
    let Some(suites) = load_suites(new, tests) else {
        return ExitCode::FAILURE;
    };
    println!("plan: {} -> {}", old.display(), new.display());
    let plan = connres::plan::plan(&old_config, &new_config, &suites);
    print!("{}", plan.text);
    ExitCode::from(plan.verdict as u8)
}

pub fn test(path: &Path, paths: Vec<PathBuf>) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let Some(suites) = load_suites(path, paths) else {
        return ExitCode::FAILURE;
    };
    if suites.is_empty() {
        eprintln!(
            "connres: no rule tests: no *.test.yaml beside {}; name test files as arguments",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let report = connres::ruletest::run(&config, &path.display().to_string(), &suites);
    print!("{}", report.text());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
