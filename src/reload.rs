//! What triggers a config reload: a debounced watch on the config file's directory, and
//! SIGHUP. Watching the directory, not the file, sees in-place writes, editors' write to
//! a temporary file then rename, and Kubernetes ConfigMap symlink swaps alike; the
//! service compares the file's content with what it loaded, so events for other files in
//! the directory cost one read and nothing else.

use std::path::{Path, PathBuf};
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
    /// Something changed in the config file's directory.
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

impl Triggers {
    /// Watches the directory of `path` and listens for SIGHUP.
    pub fn watch(path: &Path) -> Result<Triggers, WatchError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, changes) = mpsc::unbounded_channel();
        let mut debouncer =
            new_debouncer(
                DEBOUNCE,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        if events.iter().any(|e| !e.kind.is_access()) {
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

    /// The config file this watches.
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
    /// The new config is in force.
    Applied {
        diff: crate::config::ConfigDiff,
        /// From the start of parsing to the swap, in microseconds.
        parse_to_swap_us: u64,
    },
    /// The file's content is what is already served: nothing to do.
    Unchanged,
    /// The new file is invalid (or unreadable); the old config keeps serving.
    Rejected { errors: Vec<String> },
}
