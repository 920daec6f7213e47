//! Which test files run, and against which config. A test file tests the config it
//! belongs to: the one its `config:` key names (relative to the file), else the
//! `X.yaml` beside `X.test.yaml`. A file that names neither tests the config `--config`
//! gives, or, without `--config`, the default `resources.yaml` when the file lies beside
//! it. A test file never runs against a config other than its own: a `--config` naming
//! another (not the same file, nor the directory it is one file of) is an error, and so
//! is a file that no rule gives a config.

use std::path::{Path, PathBuf};

use super::{parse, Suite};
use crate::config::{ConfigError, ConfigErrors, Pos};

/// Test files and the config they run against.
#[derive(Debug)]
pub struct Run {
    pub config: PathBuf,
    pub suites: Vec<Suite>,
}

/// The config a test file belongs to, by its own say.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Own {
    /// Its `config:` key: the path (joined to the file's directory) and where it is
    /// written.
    Key(PathBuf, Pos),
    /// The `X.yaml` beside `X.test.yaml`.
    Beside(PathBuf),
}

impl Own {
    fn path(&self) -> &Path {
        match self {
            Own::Key(p, _) | Own::Beside(p) => p,
        }
    }
}

/// The test files beside a config: `*.test.yaml` in its directory (the config's own
/// directory, when it is one), sorted.
fn beside(config: &Path) -> Vec<PathBuf> {
    test_files(&home(config))
}

/// `*.test.yaml` files in `dir`, sorted.
fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    files.sort();
    files
}

/// The directory a config's test files lie in: the config's own, when it is one.
fn home(config: &Path) -> PathBuf {
    if config.is_dir() {
        return config.to_path_buf();
    }
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads and parses test files (a directory stands for its `*.test.yaml` files).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Suite>, Vec<ConfigErrors>> {
    let mut suites = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = if path.is_dir() {
            test_files(path)
        } else {
            vec![path.clone()]
        };
        for file in files {
            let name = file.display().to_string();
            // Read as config files are: a regular file, at most as large as one.
            match crate::config::read_named(&file, crate::config::MAX_FILE_BYTES, "a test file") {
                Ok(text) => match parse(&name, &text) {
                    Ok(s) => suites.push(s),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(ConfigErrors::one(name, e)),
            }
        }
    }
    if errors.is_empty() {
        Ok(suites)
    } else {
        Err(errors)
    }
}

/// The test files beside `config` that test it, and those beside it that test another
/// config (each with that config).
#[derive(Debug)]
pub struct Discovered {
    pub run: Run,
    pub others: Vec<(String, PathBuf)>,
}

/// The test files beside `config` that belong to it: those naming it, or naming none.
pub fn discover(config: &Path) -> Result<Discovered, Vec<ConfigErrors>> {
    let mut run = Run {
        config: config.to_path_buf(),
        suites: Vec::new(),
    };
    let mut others = Vec::new();
    let mut errors = Vec::new();
    for suite in load(&beside(config))? {
        match own_config(&suite) {
            Err(e) => errors.push(e),
            Ok(Some(own)) if !agrees(config, own.path()) => {
                others.push((suite.file, own.path().to_path_buf()))
            }
            Ok(_) => run.suites.push(suite),
        }
    }
    if errors.is_empty() {
        Ok(Discovered { run, others })
    } else {
        Err(errors)
    }
}

/// The runs for the test files (and directories of them) named on the command line:
/// each file against its own config, `flag` (`--config`) for those naming none, and
/// `default` for those beside it when there is no flag. Files of one config run
/// together, in the order given.
pub fn assign(
    paths: &[PathBuf],
    flag: Option<&Path>,
    default: &Path,
) -> Result<Vec<Run>, Vec<ConfigErrors>> {
    let mut runs: Vec<(PathBuf, Run)> = Vec::new();
    let mut errors = Vec::new();
    for suite in load(paths)? {
        let config = match (own_config(&suite), flag) {
            (Err(e), _) => {
                errors.push(e);
                continue;
            }
            (Ok(Some(own)), Some(flag)) if !agrees(flag, own.path()) => {
                errors.push(conflict(&suite, &own, flag));
                continue;
            }
            (Ok(Some(_)), Some(flag)) => flag.to_path_buf(),
            (Ok(Some(own)), None) => own.path().to_path_buf(),
            (Ok(None), Some(flag)) => flag.to_path_buf(),
            (Ok(None), None) if default.exists() && is_beside(&suite, default) => {
                default.to_path_buf()
            }
            (Ok(None), None) => {
                errors.push(no_config(&suite));
                continue;
            }
        };
        let key = canonical(&config);
        match runs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, run)) => run.suites.push(suite),
            None => runs.push((
                key,
                Run {
                    config,
                    suites: vec![suite],
                },
            )),
        }
    }
    if errors.is_empty() {
        Ok(runs.into_iter().map(|(_, r)| r).collect())
    } else {
        Err(errors)
    }
}

/// The config a test file names, by its `config:` key or by its name; an error when
/// the key names nothing.
fn own_config(suite: &Suite) -> Result<Option<Own>, ConfigErrors> {
    let file = Path::new(&suite.file);
    let dir = file.parent().unwrap_or(Path::new(""));
    if let Some((path, pos)) = &suite.config {
        let path = dir.join(path);
        if !path.exists() {
            return Err(error(
                suite,
                *pos,
                format!("`config` names {}, which does not exist", path.display()),
            ));
        }
        return Ok(Some(Own::Key(path, *pos)));
    }
    let beside = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".test.yaml"))
        .map(|stem| dir.join(format!("{stem}.yaml")))
        .filter(|p| p.is_file());
    Ok(beside.map(Own::Beside))
}

/// True when `given` is the config `own` is, or the directory whose config `own` is
/// one file of.
fn agrees(given: &Path, own: &Path) -> bool {
    let (given, own) = (canonical(given), canonical(own));
    given == own || (given.is_dir() && own.parent() == Some(given.as_path()))
}

/// True when the test file lies in the directory of `config`'s test files.
fn is_beside(suite: &Suite, config: &Path) -> bool {
    let dir = match Path::new(&suite.file).parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    canonical(dir) == canonical(&home(config))
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn conflict(suite: &Suite, own: &Own, flag: &Path) -> ConfigErrors {
    let (pos, why) = match own {
        Own::Key(_, pos) => (*pos, "its `config:`"),
        Own::Beside(_) => (Pos { line: 1, col: 1 }, "the file beside it"),
    };
    error(
        suite,
        pos,
        format!(
            "the file tests {} ({why}), but --config names {}; a test file runs only against its own config",
            own.path().display(),
            flag.display()
        ),
    )
}

fn no_config(suite: &Suite) -> ConfigErrors {
    let name = Path::new(&suite.file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let beside = match name.strip_suffix(".test.yaml") {
        Some(stem) => format!("no {stem}.yaml beside it, "),
        None => String::new(),
    };
    error(
        suite,
        Pos { line: 1, col: 1 },
        format!("no config to test: {beside}no `config:` key in it and no --config; add `config: PATH` (relative to this file) or give --config"),
    )
}

fn error(suite: &Suite, pos: Pos, message: String) -> ConfigErrors {
    ConfigErrors {
        file: suite.file.clone(),
        errors: vec![ConfigError {
            file: None,
            pos,
            message,
        }],
    }
}
