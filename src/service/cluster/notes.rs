//! What the shared store tells the operator, kept short: partition changes summed up
//! in one line per batch (per partition at `debug`), with the written values the
//! partitions loaded held that this instance's config does not keep (one more line,
//! at `warn`), instances that run another config
//! than this one, and requests it cannot answer, each kind reported at most every ten
//! seconds ([`Throttle`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::Message;

use crate::engine::DroppedValues;
use crate::logs::Throttle;
use crate::ownership::{Input, Instance};
use crate::service::route::Route;
use crate::service::Service;

impl Service {
    /// The subject of a request about to be placed that may be kept here for an owner
    /// running another config (a write with a reply subject, while some instance runs
    /// another config): worth a look if it is kept ([`Service::kept`]).
    pub(super) fn watch_kept(
        &self,
        route: Route,
        msg: &Message,
        partition: Option<u32>,
    ) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        let write = matches!(
            route,
            Route::Call | Route::ApiSet | Route::ApiReset | Route::ApiAdd | Route::ApiRemove
        );
        (write && msg.reply.is_some() && partition.is_some() && cluster.peers.mixed())
            .then(|| msg.subject.to_string())
    }

    /// A message was kept in the window; `watched`: its subject, when
    /// [`Service::watch_kept`] found it worth a look.
    pub(super) fn kept(&mut self, partition: Option<u32>, watched: Option<String>) {
        let (Some(p), Some(subject)) = (partition, watched) else {
            return;
        };
        let mine = self.config.content_hash();
        if let Some(cluster) = &mut self.cluster {
            cluster.kept_for_other_config(p, &subject, mine);
        }
    }
}

/// Partitions taken and given up since the last summary line.
#[derive(Debug, Default)]
pub(super) struct PartitionLog {
    acquired: Vec<u32>,
    units: usize,
    released: Vec<u32>,
    /// Written values the loaded units held that the config does not keep, and the
    /// partitions they were in.
    dropped: DroppedValues,
    dropped_in: Vec<u32>,
    /// When the first change of the batch and the last one happened.
    first: Option<Instant>,
    last: Option<Instant>,
}

/// One batch of partition changes, for its log line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Batch {
    pub(super) acquired: Vec<u32>,
    pub(super) units: usize,
    pub(super) released: Vec<u32>,
    pub(super) dropped: DroppedValues,
    pub(super) dropped_in: Vec<u32>,
}

impl PartitionLog {
    /// A partition was installed here with `units` units read from the bucket.
    pub(super) fn acquired(&mut self, p: u32, units: usize, now: Instant) {
        self.released.retain(|&q| q != p);
        self.acquired.push(p);
        self.units += units;
        self.changed(now);
    }

    /// Partition `p`'s loaded units held written values that the config does not keep
    /// (written under another config): dropped, the units written back.
    pub(super) fn dropped(&mut self, p: u32, dropped: DroppedValues) {
        if dropped.is_empty() {
            return;
        }
        self.dropped.extend(dropped);
        self.dropped_in.push(p);
    }

    /// A partition is no longer this instance's (handed over or lost).
    pub(super) fn released(&mut self, p: u32, now: Instant) {
        self.acquired.retain(|&q| q != p);
        self.released.push(p);
        self.changed(now);
    }

    fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// The batch, once nothing changed for `quiet` or it began `longest` ago (a
    /// cluster that keeps changing still gets a line now and then).
    pub(super) fn due(
        &mut self,
        now: Instant,
        quiet: Duration,
        longest: Duration,
    ) -> Option<Batch> {
        let (first, last) = (self.first?, self.last?);
        if now.saturating_duration_since(last) < quiet
            && now.saturating_duration_since(first) < longest
        {
            return None;
        }
        self.take()
    }

    /// The batch whatever its age (at shutdown).
    pub(super) fn take(&mut self) -> Option<Batch> {
        self.first?;
        let mut log = std::mem::take(self);
        log.acquired.sort_unstable();
        log.acquired.dedup();
        log.released.sort_unstable();
        log.released.dedup();
        log.dropped_in.sort_unstable();
        log.dropped_in.dedup();
        Some(Batch {
            acquired: log.acquired,
            units: log.units,
            released: log.released,
            dropped: log.dropped,
            dropped_in: log.dropped_in,
        })
    }
}

impl Batch {
    /// The batch's line: how many partitions came and went, which, the units loaded,
    /// and how many this instance holds now. Then, if the units loaded held written
    /// values the config does not keep, how many, where and why (worded as a reload
    /// that drops values says it).
    pub(super) fn log(&self, held: usize, partitions: u32) {
        tracing::info!(
            acquired = self.acquired.len(),
            acquired_partitions = %ranges(&self.acquired),
            units_loaded = self.units,
            released = self.released.len(),
            released_partitions = %ranges(&self.released),
            held,
            partitions,
            "partitions changed"
        );
        if !self.dropped.is_empty() {
            tracing::warn!(
                values = self.dropped.total(),
                dropped = self.dropped.describe(),
                partitions = %ranges(&self.dropped_in),
                "loading partitions dropped written values that this instance's config does not keep (written under another config); those fields read as their defaults"
            );
        }
    }
}

/// Sorted partition numbers as ranges: `0-3,7,9-10`; `-` for none.
pub(super) fn ranges(ps: &[u32]) -> String {
    if ps.is_empty() {
        return "-".to_string();
    }
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ps.len() {
        let mut j = i;
        while j + 1 < ps.len() && ps[j + 1] == ps[j] + 1 {
            j += 1;
        }
        out.push(match j - i {
            0 => ps[i].to_string(),
            _ => format!("{}-{}", ps[i], ps[j]),
        });
        i = j + 1;
    }
    out.join(",")
}

/// The configs the other instances run, from their heartbeats, and whether any differs
/// from this instance's: then requests for names only one of the configs declares can
/// go unanswered (a call waits here for an owner that never subscribed it) or be
/// answered with an error.
#[derive(Debug, Default)]
pub(super) struct Peers {
    configs: HashMap<Instance, String>,
    /// Whether one of them differs from this instance's (looked at for every write
    /// placed, so kept up to date rather than worked out).
    mixed: bool,
    /// Kept writes whose owner runs another config, reported at most every ten seconds.
    pub(super) kept: Throttle,
    /// Reads dropped for want of an owner, likewise.
    pub(super) dropped: Throttle,
    /// Backend writes for undeclared names left unanswered while configs differ,
    /// likewise.
    pub(super) undeclared: Throttle,
}

impl Peers {
    /// A watched heartbeat (or its deletion); `me` and `mine`: this instance and the
    /// hash of its config. Logs when another instance starts or stops running another
    /// config than this one.
    pub(super) fn observed(&mut self, input: &Input, me: &str, mine: &str) {
        let Input::Node { id, info, .. } = input else {
            return;
        };
        if &**id == me {
            return;
        }
        let Some(info) = info else {
            self.configs.remove(id);
            self.mixed = self.configs.values().any(|c| c != mine);
            return;
        };
        if self.configs.get(id) == Some(&info.config) {
            return;
        }
        let before = self.configs.insert(id.clone(), info.config.clone());
        let was = before.as_deref().is_some_and(|b| b != mine);
        compared(id, &info.config, mine, was);
        self.mixed = self.configs.values().any(|c| c != mine);
    }

    /// This instance's config changed from `old` to `new` (a reload): logs the
    /// instances that now run another config, or the same one again.
    pub(super) fn reloaded(&mut self, old: &str, new: &str) {
        for (id, config) in &self.configs {
            if (config != old) != (config != new) {
                compared(id, config, new, config != old);
            }
        }
        self.mixed = self.configs.values().any(|c| c != new);
    }

    /// Whether an instance is known to run another config than this one.
    pub(super) fn mixed(&self) -> bool {
        self.mixed
    }

    /// The config an instance runs, when it differs from `mine`.
    pub(super) fn differs(&self, id: &str, mine: &str) -> Option<&str> {
        self.configs
            .get(id)
            .map(String::as_str)
            .filter(|c| *c != mine)
    }
}

/// Another instance was found to run `theirs`, this one `mine`; `was`: whether they
/// differed before. Logs a difference, and the end of one.
fn compared(id: &Instance, theirs: &str, mine: &str, was: bool) {
    if theirs != mine {
        tracing::warn!(instance = %id, config = %theirs, this = %mine, "another instance runs a different config: until every instance runs the same one, requests for names that only one of the configs declares can go unanswered or be answered with an error (a rolling change?)");
    } else if was {
        tracing::info!(instance = %id, config = %mine, "another instance runs the same config as this one again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` logs at `info` and above, one string per line.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = buf.0.lock().unwrap().clone();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn beat(id: &str, config: &str) -> Input {
        Input::Node {
            id: id.into(),
            revision: 1,
            info: Some(crate::ownership::NodeInfo {
                beat: 1,
                proto: crate::ownership::PROTOCOL,
                partitions: 8,
                lease_ms: 2000,
                config: config.into(),
                ready: true,
            }),
            server_ms: None,
        }
    }

    /// A difference is said when it shows, once, and its end when it ends; by
    /// heartbeats or by this instance's reload.
    #[test]
    fn another_config_is_said_once_and_its_end_too() {
        let mut peers = Peers::default();
        let lines = logged(|| {
            peers.observed(&beat("me", "other"), "me", "mine");
            peers.observed(&beat("b", "mine"), "me", "mine");
            peers.observed(&beat("a", "other"), "me", "mine");
            peers.observed(&beat("a", "other"), "me", "mine");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("another instance runs a different config")
                && lines[0].contains("instance=a config=other this=mine"),
            "{lines:?}"
        );
        assert!(peers.mixed());
        assert_eq!(peers.differs("a", "mine"), Some("other"));
        assert_eq!(peers.differs("b", "mine"), None);
        let lines = logged(|| peers.observed(&beat("a", "mine"), "me", "mine"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("INFO")
                && lines[0].contains("another instance runs the same config as this one again")
                && lines[0].contains("instance=a"),
            "{lines:?}"
        );
        assert!(!peers.mixed());
        // This instance reloads to another config: both others differ now.
        let mut lines = logged(|| peers.reloaded("mine", "new"));
        lines.sort();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.contains("runs a different config")),
            "{lines:?}"
        );
        assert!(peers.mixed());
        // A deleted heartbeat: that instance is gone.
        peers.observed(
            &Input::Node {
                id: "a".into(),
                revision: 2,
                info: None,
                server_ms: None,
            },
            "me",
            "new",
        );
        assert_eq!(peers.differs("a", "new"), None);
    }

    #[test]
    fn partitions_show_as_ranges() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
    }

    #[test]
    fn changes_are_summed_up_once_quiet() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = PartitionLog::default();
        assert_eq!(log.due(t0, ms(100), ms(1000)), None);
        log.acquired(3, 2, t0);
        log.acquired(1, 5, t0 + ms(50));
        log.released(7, t0 + ms(90));
        // Still changing.
        assert_eq!(log.due(t0 + ms(120), ms(100), ms(1000)), None);
        let batch = log.due(t0 + ms(190), ms(100), ms(1000)).unwrap();
        assert_eq!(
            batch,
            Batch {
                acquired: vec![1, 3],
                units: 7,
                released: vec![7],
                dropped: DroppedValues::default(),
                dropped_in: Vec::new(),
            }
        );
        assert_eq!(log.due(t0 + ms(5000), ms(100), ms(1000)), None);
        // A partition that comes and goes within a batch is said once, as it ended.
        log.acquired(2, 0, t0);
        log.released(2, t0);
        assert_eq!(log.take().unwrap().released, vec![2]);
    }

    #[test]
    fn a_batch_that_keeps_changing_is_said_after_the_longest_wait() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = PartitionLog::default();
        for i in 0..20 {
            log.acquired(i, 1, t0 + ms(50 * i as u64));
        }
        assert_eq!(log.due(t0 + ms(950), ms(100), ms(1000)), None);
        let batch = log.due(t0 + ms(1000), ms(100), ms(1000)).unwrap();
        assert_eq!(batch.acquired.len(), 20);
    }

    /// Values dropped from the units loaded are said in one more line for the batch,
    /// at `warn`, worded as a reload that drops values says it; a batch that dropped
    /// none has only the summary.
    #[test]
    fn values_dropped_on_load_are_said_once_per_batch() {
        let t0 = Instant::now();
        let mut log = PartitionLog::default();
        log.acquired(1, 0, t0);
        log.dropped(1, DroppedValues::default());
        let lines = logged(|| log.take().unwrap().log(1, 8));
        assert_eq!(lines.len(), 1, "{lines:?}");
        log.acquired(4, 3, t0);
        log.acquired(2, 1, t0);
        let mut a = DroppedValues::default();
        a.add(
            "session.prefs.{cid}",
            "theme",
            "fails the field's new constraints",
            2,
        );
        log.dropped(4, a);
        let mut b = DroppedValues::default();
        b.add(
            "session.prefs.{cid}",
            "theme",
            "fails the field's new constraints",
            1,
        );
        b.add("session.prefs.{cid}", "fontSize", "field removed", 1);
        log.dropped(2, b);
        let lines = logged(|| log.take().unwrap().log(3, 8));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("INFO") && lines[0].contains("partitions changed"));
        for part in [
            "WARN",
            "dropped written values",
            "those fields read as their defaults",
            "values=4",
            r#"dropped="session.prefs.{cid} fontSize: 1 (field removed); session.prefs.{cid} theme: 3 (fails the field's new constraints)""#,
            "partitions=2,4",
        ] {
            assert!(lines[1].contains(part), "{part} in {}", lines[1]);
        }
    }
}
