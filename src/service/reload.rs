//! Reloads in two steps, so that requests never wait on a file or a compiler. The
//! reloader task reads the file, compiles it on a thread of its own, diffs it against the
//! config in force and subscribes added patterns, all beside the serving task; the
//! serving task then only swaps the prepared config in between two messages, carries
//! state over, unsubscribes removed patterns and publishes one `system.reset`.
//!
//! The reloader remembers what it last rejected: the same bad content is not reported
//! again however often the file is touched, and content back at what is served is
//! logged once, so an operator sees the recovery.

use std::sync::Arc;
use std::time::Instant;

use async_nats::Client;
use tokio::sync::{broadcast, mpsc};

use super::ordered::{subscribe_auth, subscribe_pattern, OrderedSub};
use super::subscribe::sync_with_server;
use super::{Service, ServiceError};
use crate::config::{self, Config, ConfigDiff, Sources};
use crate::metrics::{self, Gone, Metrics, Requests};
use crate::protocol;
use crate::reload::{ReloadReport, Trigger, Triggers};

/// A valid new config, ready to be swapped in.
pub(super) struct Prepared {
    config: Arc<Config>,
    diff: ConfigDiff,
    /// The patterns whose stored state it can invalidate
    /// ([`crate::engine::invalidated_patterns`]).
    invalidated: Vec<String>,
    /// Subscriptions of the added patterns (into the ordered channel), live on the
    /// server already.
    added: Vec<OrderedSub>,
    /// Its request series (made beside the serving task), and those of the config in
    /// force it cannot touch.
    requests: Requests,
    gone: Gone,
    /// When compiling started.
    started: Instant,
    file: String,
}

/// Starts the reloader; prepared configs arrive on the returned channel in order.
pub(super) fn spawn(
    client: Client,
    ordered: Option<mpsc::Sender<async_nats::Message>>,
    triggers: Triggers,
    current: Arc<Config>,
    reports: broadcast::Sender<ReloadReport>,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<Prepared> {
    let (tx, rx) = mpsc::channel(1);
    let reloader = Reloader {
        client,
        ordered: ordered.map(|tx| tx.downgrade()),
        triggers,
        current,
        reports,
        prepared: tx,
        rejected: None,
        failures: 0,
        metrics,
    };
    tokio::spawn(reloader.run());
    rx
}

struct Reloader {
    client: Client,
    /// The ordered channel, for the subscriptions of added patterns. Weak: the
    /// reloader waits for triggers for as long as the process runs, and must not keep
    /// the channel open once the serving task closes it at shutdown (the drain waits
    /// for the channel to end).
    ordered: Option<mpsc::WeakSender<async_nats::Message>>,
    triggers: Triggers,
    /// The config last handed to the serving task: what is (about to be) in force.
    current: Arc<Config>,
    reports: broadcast::Sender<ReloadReport>,
    prepared: mpsc::Sender<Prepared>,
    /// The hash of the content rejected last, until other content is read.
    rejected: Option<u64>,
    failures: u64,
    metrics: Arc<Metrics>,
}

impl Reloader {
    async fn run(mut self) {
        loop {
            let trigger = self.triggers.next().await;
            if self.reload(trigger).await.is_err() {
                return; // the service stopped
            }
        }
    }

    /// One reload attempt; `Err` only when the serving task is gone.
    async fn reload(&mut self, trigger: Trigger) -> Result<(), ()> {
        let path = self.triggers.path().to_path_buf();
        let file = path.display().to_string();
        let forced = trigger == Trigger::Signal;
        let read = tokio::task::spawn_blocking(move || Sources::read(&path)).await;
        let sources = match read {
            Ok(Ok(sources)) => sources,
            Ok(Err(errors)) => {
                let lines = errors.lines();
                self.reject(config::source_hash(&lines.join("\n")), forced, lines);
                return Ok(());
            }
            Err(e) => {
                let error = format!("{file}:1:1: reading failed: {e}");
                self.reject(config::source_hash(&error), forced, vec![error]);
                return Ok(());
            }
        };
        let hash = sources.source_hash();
        if !forced && hash == self.current.source_hash() {
            let restored = self.rejected.take().is_some();
            if restored {
                tracing::info!(
                    file,
                    "config file is back to the served content; nothing to reload"
                );
            } else {
                tracing::info!(file, "config file unchanged; nothing to reload");
            }
            let _ = self.reports.send(ReloadReport::Unchanged { restored });
            return Ok(());
        }
        if !forced && self.rejected == Some(hash) {
            tracing::debug!(file, "config file still holds the rejected content");
            let _ = self.reports.send(ReloadReport::StillRejected);
            return Ok(());
        }
        let started = Instant::now();
        let _ = self.reports.send(ReloadReport::Compiling);
        let compiled = compile(sources, self.metrics.clone(), self.current.clone()).await;
        let Compiled {
            config: new,
            diff,
            invalidated,
            requests,
            gone,
        } = match compiled {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                self.reject(hash, forced, errors.lines());
                return Ok(());
            }
            Err(e) => {
                let error = format!("{file}:1:1: compiling failed: {e}");
                self.reject(hash, forced, vec![error]);
                return Ok(());
            }
        };
        let new = Arc::new(new);
        let added = match self.subscribe_added(&new, &diff).await {
            Ok(added) => added,
            Err(e) => {
                let error = format!(
                    "{file}: reload not applied: {}",
                    crate::logs::error_chain(&e)
                );
                self.reject(hash, true, vec![error]);
                // The series it made that the config in force cannot touch.
                let (metrics, current) = (self.metrics.clone(), self.current.clone());
                tokio::task::spawn_blocking(move || {
                    let shared = current.state.store.shared().is_some();
                    metrics.remove(&metrics::gone(&new, &current, shared));
                });
                return Ok(());
            }
        };
        self.rejected = None;
        self.current = new.clone();
        let prepared = Prepared {
            config: new,
            diff,
            invalidated,
            added,
            requests,
            gone,
            started,
            file,
        };
        self.prepared.send(prepared).await.map_err(|_| ())
    }

    /// Reports a rejected file, unless this content was the one rejected last time
    /// (a SIGHUP reports it again).
    fn reject(&mut self, hash: u64, forced: bool, errors: Vec<String>) {
        if !forced && self.rejected == Some(hash) {
            let _ = self.reports.send(ReloadReport::StillRejected);
            return;
        }
        self.rejected = Some(hash);
        self.failures += 1;
        self.metrics.reload_rejected();
        for line in &errors {
            tracing::error!("{line}");
        }
        tracing::error!(
            failures = self.failures,
            "config reload rejected; the previous config keeps serving"
        );
        let _ = self.reports.send(ReloadReport::Rejected { errors });
    }

    /// Subscribes the added patterns and waits until the server has them: they must be
    /// live before the config that declares them is in force. On failure nothing stays
    /// subscribed.
    async fn subscribe_added(
        &self,
        new: &Config,
        diff: &ConfigDiff,
    ) -> Result<Vec<OrderedSub>, ServiceError> {
        let mut subs = Vec::new();
        // None once the serving task closed the channel (shutting down).
        let ordered = self.ordered.as_ref().and_then(mpsc::WeakSender::upgrade);
        let result = async {
            for pattern in &diff.added {
                subs.extend(subscribe_pattern(&self.client, ordered.as_ref(), new, pattern).await?);
            }
            for name in &diff.auth_added {
                subs.extend(subscribe_auth(&self.client, ordered.as_ref(), new, name).await?);
            }
            if !subs.is_empty() {
                sync_with_server(&self.client).await?;
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(subs),
            Err(e) => {
                // The ordered channel's subscriptions do not end when dropped.
                for sub in subs {
                    sub.unsubscribe(&self.client).await;
                }
                Err(e)
            }
        }
    }
}

/// The stack of the thread a reload compiles on: the YAML reader and the rule parser
/// recurse, and the main thread, which compiles the first config, has 8 MiB.
/// A compiled config and what the swap needs of it beside the config in force.
struct Compiled {
    config: Config,
    diff: ConfigDiff,
    invalidated: Vec<String>,
    requests: Requests,
    gone: Gone,
}

/// The NATS connection, queue group, API prefix and store are fixed for the process's
/// life: a new config keeps those of `current`.
fn keep_restart_settings(current: &Config, new: &mut Config) {
    if new.nats != current.nats || new.api != current.api {
        tracing::warn!(
            "`nats` and `api` settings take effect on restart; keeping the running ones"
        );
        new.nats = current.nats.clone();
        new.api = current.api.clone();
    }
    if new.state.store != current.state.store {
        tracing::warn!(
            "`state.store` and its settings take effect on restart; keeping the running ones"
        );
        new.state.store = current.state.store.clone();
    }
}

const COMPILE_STACK: usize = 8 << 20;

/// Compiles config text on a thread of its own, beside the serving task, and makes its
/// request series there too (those of the config in force, `current`, it cannot touch
/// are removed at the swap).
async fn compile(
    sources: Sources,
    metrics: Arc<Metrics>,
    current: Arc<Config>,
) -> Result<Result<Compiled, config::ConfigErrors>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("connres-compile".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            // Below the serving thread: on a small machine the two share the cores, and
            // requests must not wait for the compiler's time slice.
            // SAFETY: setpriority on this thread's own id; failure leaves it as it was.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
            }
            let compiled = Config::compile(&sources).map(|mut config| {
                keep_restart_settings(&current, &mut config);
                // Fixed for the process's life, whatever the new file says.
                let shared = current.state.store.shared().is_some();
                let requests = metrics.requests(&config, shared);
                let gone = metrics::gone(&current, &config, shared);
                // What the swap needs of the two configs, worked out here rather than
                // on the serving thread: milliseconds for a large config.
                let diff = config::diff(&current, &config);
                let invalidated = crate::engine::invalidated_patterns(&current, &config);
                Compiled {
                    config,
                    diff,
                    invalidated,
                    requests,
                    gone,
                }
            });
            let _ = tx.send(compiled);
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|_| "the compiler thread stopped".to_string())
}

impl Service {
    /// Puts a prepared config in force: the swap, then what follows from it.
    pub(super) async fn apply(&mut self, prepared: Prepared) {
        let Prepared {
            config,
            diff,
            invalidated,
            added,
            requests,
            gone,
            started,
            file,
        } = prepared;
        let endpoints: Vec<_> = added.iter().map(|s| s.endpoint.clone()).collect();
        self.ordered.add(added);
        let old = std::mem::replace(&mut self.config, config);
        let old_requests = std::mem::replace(&mut self.requests, requests);
        self.metrics.remove(&gone);
        let dropped = self
            .engine
            .reloaded_knowing(&old, &self.config, &invalidated);
        if let Some(cluster) = &mut self.cluster {
            cluster.reloaded(old.content_hash(), self.config.content_hash());
        }
        self.check_mapping();
        self.jwks.follow(&self.config);
        let parse_to_swap_us = started.elapsed().as_micros() as u64;
        // Freeing a large config (compiled rules, templates, regexes) takes
        // milliseconds: not on the serving task.
        tokio::task::spawn_blocking(move || drop((old, old_requests)));
        self.update_stats();
        self.config_in_force(true, endpoints, &diff.removed);
        self.unsubscribe_patterns(&diff.removed).await;
        self.ordered.unsubscribe_auth(&diff.auth_removed).await;
        if !diff.needs_no_reset() {
            let (subject, payload) =
                protocol::system_reset(&diff.reset_resources, &diff.reset_access);
            self.metrics.event(crate::metrics::EventKind::SystemReset);
            if let Err(e) = self.publish(subject, payload).await {
                tracing::error!(error = %e, "the reload's system.reset was not published; gateways may serve stale models");
            }
        }
        tracing::info!(
            file,
            added = ?diff.added,
            removed = ?diff.removed,
            auth_added = ?diff.auth_added,
            auth_removed = ?diff.auth_removed,
            reset_resources = ?diff.reset_resources,
            reset_access = ?diff.reset_access,
            parse_to_swap_us,
            config = self.config.content_hash(),
            "config reloaded"
        );
        if !dropped.places.is_empty() {
            tracing::warn!(
                file,
                values = dropped.total(),
                dropped = dropped.describe(),
                "the reload dropped written values that the new config does not keep; those fields read as their defaults"
            );
        }
        let _ = self.reports.send(ReloadReport::Applied {
            diff,
            parse_to_swap_us,
        });
    }
}
