//! What triggers a config reload: a debounced watch on the config file (or on the
//! config files of a config directory), and SIGHUP.
//!
//! The watch is on the file's directory, since editors save by writing a temporary file
//! and renaming it over the original, and Kubernetes swaps a ConfigMap by re-pointing a
//! `..data` symlink: neither shows up as an event on the file itself. But a directory
//! also holds other files (a log written next to the config, say), so a batch of events
//! counts only when an event names the config file, or when the file the config path
//! leads to (through any symlinks) is no longer the one seen before: another inode, size
//! or modification time. Everything else costs one `stat` and nothing more.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// How long the file must be quiet before a reload: editors save in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The config file changed.
    FileChanged,
    /// SIGHUP: reload even when the content looks unchanged.
    Signal,
}

/// The reload triggers for one config file.
pub struct Triggers {
    path: PathBuf,
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    changes: mpsc::UnboundedReceiver<()>,
    hangup: Option<Signal>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir} for config changes: {source}")]
pub struct WatchError {
    dir: String,
    source: notify::Error,
}

/// What identifies the file a config path leads to, to tell a swap or a write from
/// events about other files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    target: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    /// The identity of what `path` leads to now; `None` when it leads nowhere.
    pub fn of(path: &Path) -> Option<FileIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            target: std::fs::canonicalize(path).ok()?,
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// What is watched: one config file, or the config files of a directory.
#[derive(Debug, Clone)]
pub enum Watched {
    File(OsString),
    Dir,
}

impl Watched {
    /// True when an event about `path` is about the config.
    fn names(&self, path: &Path) -> bool {
        let name = path.file_name();
        match self {
            Watched::File(file) => name == Some(file.as_os_str()),
            Watched::Dir => name
                .and_then(|n| n.to_str())
                .is_some_and(crate::config::is_config_file),
        }
    }

    /// The identities of the files the config path leads to now; `None` when a file
    /// config leads nowhere.
    pub fn identity(&self, path: &Path) -> Option<Vec<FileIdentity>> {
        match self {
            Watched::File(_) => FileIdentity::of(path).map(|i| vec![i]),
            Watched::Dir => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .ok()?
                    .filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(crate::config::is_config_file)
                    })
                    .map(|e| e.path())
                    .collect();
                files.sort();
                Some(files.iter().filter_map(|f| FileIdentity::of(f)).collect())
            }
        }
    }
}

/// True when a batch of events in the directory concerns the config: one names a config
/// file, or what the config path leads to is not what it was (`seen`, updated here).
pub fn concerns_config<'a>(
    event_paths: impl IntoIterator<Item = &'a Path>,
    watched: &Watched,
    seen: &mut Option<Vec<FileIdentity>>,
    now: Option<Vec<FileIdentity>>,
) -> bool {
    let named = event_paths.into_iter().any(|p| watched.names(p));
    let swapped = *seen != now;
    *seen = now;
    named || swapped
}

impl Triggers {
    /// Watches the config file (through its directory), or a config directory, and
    /// listens for SIGHUP.
    pub fn watch(path: &Path) -> Result<Triggers, WatchError> {
        let (dir, watched) = if path.is_dir() {
            (path.to_path_buf(), Watched::Dir)
        } else {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = path.file_name().map(OsString::from).unwrap_or_default();
            (dir, Watched::File(name))
        };
        let seen = Mutex::new(watched.identity(path));
        let config_path = path.to_path_buf();
        let (tx, changes) = mpsc::unbounded_channel();
        let mut debouncer =
            new_debouncer(
                DEBOUNCE,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        let paths = events
                            .iter()
                            .filter(|e| !e.kind.is_access())
                            .flat_map(|e| e.paths.iter().map(PathBuf::as_path));
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        let now = watched.identity(&config_path);
                        if concerns_config(paths, &watched, &mut seen, now) {
                            let _ = tx.send(());
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "config watch error");
                        }
                    }
                },
            )
            .map_err(|source| WatchError {
                dir: dir.display().to_string(),
                source,
            })?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                dir: dir.display().to_string(),
                source,
            })?;
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on file changes only");
                None
            }
        };
        Ok(Triggers {
            path: path.to_path_buf(),
            _debouncer: debouncer,
            changes,
            hangup,
        })
    }

    /// The config (file or directory) this watches.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next trigger.
    pub async fn next(&mut self) -> Trigger {
        let hangup = async {
            match &mut self.hangup {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = self.changes.recv() => Trigger::FileChanged,
            Some(()) = hangup => Trigger::Signal,
            else => std::future::pending().await,
        }
    }
}

/// What a reload did, for logs, tests and (later) metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadReport {
    /// New content is being compiled, beside the serving task; one of the outcomes below
    /// follows.
    Compiling,
    /// The new config is in force.
    Applied {
        diff: crate::config::ConfigDiff,
        /// From the start of compiling to the swap, in microseconds.
        parse_to_swap_us: u64,
    },
    /// The file holds what is already served: nothing to do. `restored`: it came back
    /// to the served content after a rejected edit.
    Unchanged { restored: bool },
    /// The new file is invalid (or unreadable); the old config keeps serving.
    Rejected { errors: Vec<String> },
    /// The file holds the content rejected last time: not reported again.
    StillRejected,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(ino: u64, len: u64) -> Option<Vec<FileIdentity>> {
        Some(vec![FileIdentity {
            target: PathBuf::from("/cfg/..2024/resources.yaml"),
            dev: 1,
            ino,
            len,
            mtime: (100, 0),
        }])
    }

    #[test]
    fn events_about_other_files_do_not_count() {
        let name = Watched::File(OsString::from("resources.yaml"));
        let mut seen = identity(7, 100);
        let log = [Path::new("/cfg/connres.log")];
        assert!(!concerns_config(log, &name, &mut seen, identity(7, 100)));
        assert!(!concerns_config([], &name, &mut seen, identity(7, 100)));
    }

    #[test]
    fn an_event_naming_the_file_counts() {
        let name = Watched::File(OsString::from("resources.yaml"));
        let mut seen = identity(7, 100);
        let saved = [
            Path::new("/cfg/.resources.yaml.swp"),
            Path::new("/cfg/resources.yaml"),
        ];
        assert!(concerns_config(saved, &name, &mut seen, identity(7, 100)));
    }

    #[test]
    fn a_swap_behind_a_symlink_counts_once() {
        // A ConfigMap update re-points `..data`: no event names the file itself.
        let name = Watched::File(OsString::from("resources.yaml"));
        let mut seen = identity(7, 100);
        let swap = [Path::new("/cfg/..data_tmp"), Path::new("/cfg/..data")];
        assert!(concerns_config(swap, &name, &mut seen, identity(8, 120)));
        assert_eq!(seen, identity(8, 120));
        let log = [Path::new("/cfg/connres.log")];
        assert!(!concerns_config(log, &name, &mut seen, identity(8, 120)));
        // The file going away and coming back counts too.
        assert!(concerns_config([], &name, &mut seen, None));
        assert!(concerns_config([], &name, &mut seen, identity(9, 120)));
    }

    #[test]
    fn in_a_config_directory_every_config_file_counts_and_nothing_else() {
        let dir = Watched::Dir;
        let mut seen = identity(7, 100);
        let now = identity(7, 100);
        assert!(concerns_config(
            [Path::new("/cfg/teams/cart.yaml")],
            &dir,
            &mut seen,
            now.clone()
        ));
        for other in [
            "/cfg/cart.test.yaml",
            "/cfg/.cart.yaml.swp",
            "/cfg/notes.txt",
        ] {
            assert!(
                !concerns_config([Path::new(other)], &dir, &mut seen, now.clone()),
                "{other}"
            );
        }
    }
}
