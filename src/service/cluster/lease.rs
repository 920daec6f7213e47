//! The lease task: one per instance, beside the serving task. It keeps this instance's
//! heartbeat, watches the other instances' heartbeats and every partition's lease,
//! acquires the partitions that rendezvous hashing assigns to this instance, renews the
//! ones it holds, and hands over the ones that belong to another live instance.
//!
//! No clocks are compared across machines: a lease counts as expired when its revision
//! has not changed for one lease length on this instance's monotonic clock, and an
//! instance counts as alive once its heartbeat is seen to change, until it has not
//! changed for a lease length. The holder stops serving at 0.8 leases after it sent
//! its last successful renewal (see [`Deadlines`]), before any other instance may take
//! the partition over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, MissedTickBehavior};

use super::bucket;
use super::members::{rendezvous, Members};
use super::{ClusterMetrics, Control, Deadlines, Report};
use crate::config::SharedStore;

/// The share of a lease an owner serves after sending a renewal that then succeeded.
pub(crate) const SERVE_SHARE: f64 = 0.8;
/// Renewals (and heartbeats) per lease.
const BEATS_PER_LEASE: u32 = 4;
/// Partitions acquired or handed over before the task looks at its timers and
/// watches again (it comes straight back for more).
const MOVES_PER_TURN: usize = 4;

/// A partition's lease as the watch last showed it.
struct LeaseView {
    owner: Arc<str>,
    revision: u64,
    /// When this instance first saw this revision.
    seen: Instant,
}

pub(super) struct Leases {
    pub(super) kv: kv::Store,
    pub(super) id: Arc<str>,
    pub(super) settings: SharedStore,
    pub(super) control: mpsc::UnboundedSender<Control>,
    pub(super) deadlines: Arc<Deadlines>,
    pub(super) metrics: Arc<ClusterMetrics>,
    views: Vec<Option<LeaseView>>,
    /// The owners last told to the serving task.
    sent_owners: Vec<Option<Arc<str>>>,
    /// The revision of each lease this instance holds.
    held: Vec<Option<u64>>,
    /// When this instance last tried to acquire each partition.
    tried: Vec<Option<Instant>>,
    members: Members,
    beat: u64,
    /// Set while this instance must claim nothing: after a pause, until the serving task
    /// has worked through what arrived meanwhile; and while leaving.
    quiet: bool,
}

impl Leases {
    pub(super) fn new(
        kv: kv::Store,
        id: Arc<str>,
        settings: SharedStore,
        control: mpsc::UnboundedSender<Control>,
        deadlines: Arc<Deadlines>,
        metrics: Arc<ClusterMetrics>,
    ) -> Leases {
        let n = settings.partitions as usize;
        Leases {
            kv,
            id,
            settings,
            control,
            deadlines,
            metrics,
            views: (0..n).map(|_| None).collect(),
            sent_owners: vec![None; n],
            held: vec![None; n],
            tried: vec![None; n],
            members: Members::default(),
            beat: 0,
            quiet: false,
        }
    }

    fn lease(&self) -> Duration {
        self.settings.lease
    }

    /// Runs until the serving task says to leave (or goes away).
    pub(super) async fn run(mut self, mut reports: mpsc::UnboundedReceiver<Report>) {
        let (mut leases, mut nodes) = match (
            self.kv.watch("lease.>").await,
            self.kv.watch("node.>").await,
        ) {
            (Ok(l), Ok(n)) => (l, n),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch the bucket's leases; this instance serves no partition");
                return;
            }
        };
        let mut tick = interval(self.lease() / BEATS_PER_LEASE);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let mut more = false;
        loop {
            tokio::select! {
                biased;
                report = reports.recv() => match report {
                    Some(Report::WriteFailed(p)) => self.give_up(p).await,
                    Some(Report::Leave(done)) => {
                        self.leave().await;
                        // Until the others own every partition, the serving task still
                        // forwards what arrives, so it needs to know who does.
                        let until = tokio::time::Instant::now() + self.lease() * 2;
                        while !self.all_elsewhere() {
                            tokio::select! {
                                _ = tokio::time::sleep_until(until) => break,
                                Some(Ok(e)) = leases.next() => self.lease_seen(e),
                                Some(Ok(e)) = nodes.next() => self.node_seen(e),
                            }
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let gap = now - last_tick;
                    last_tick = now;
                    if gap > self.lease() / 2 {
                        self.paused(gap).await;
                    }
                    self.heartbeat().await;
                    self.renew().await;
                }
                entry = leases.next() => match entry {
                    Some(Ok(e)) => self.lease_seen(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "lease watch"),
                    None => {
                        tracing::warn!("the lease watch ended; watching again");
                        if let Ok(w) = self.kv.watch("lease.>").await {
                            leases = w;
                        }
                    }
                },
                entry = nodes.next() => match entry {
                    Some(Ok(e)) => self.node_seen(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "heartbeat watch"),
                    None => {
                        tracing::warn!("the heartbeat watch ended; watching again");
                        if let Ok(w) = self.kv.watch("node.>").await {
                            nodes = w;
                        }
                    }
                },
                // More partitions to move: back to it once the rest was looked at.
                _ = std::future::ready(()), if more => {}
            }
            more = false;
            for _ in 0..MOVES_PER_TURN {
                more = self.rebalance_one().await;
                if !more {
                    break;
                }
            }
            // Instances seen alive, or no longer, change who may be forwarded to.
            self.publish_owners();
        }
    }

    fn lease_seen(&mut self, e: kv::Entry) {
        let Some(p) = e
            .key
            .strip_prefix("lease.")
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|&p| p < self.views.len())
        else {
            return;
        };
        // A watch may deliver a revision again (it restarts after missed heartbeats):
        // only a new revision counts as a renewal.
        if matches!(&self.views[p], Some(v) if v.revision == e.revision) {
            return;
        }
        self.views[p] = match e.operation {
            Operation::Put => Some(LeaseView {
                owner: String::from_utf8_lossy(&e.value).into(),
                revision: e.revision,
                seen: Instant::now(),
            }),
            Operation::Delete | Operation::Purge => None,
        };
        self.publish_owners();
    }

    /// Tells the serving task who owns each partition, when that changed: the lease's
    /// holder if it is this instance or seen alive, else nobody (so messages wait for
    /// the next owner instead of going to an instance that stopped).
    fn publish_owners(&mut self) {
        let live = self.live();
        let owners: Vec<Option<Arc<str>>> = self
            .views
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| v.owner.clone())
                    .filter(|o| live.contains(o))
            })
            .collect();
        if owners != self.sent_owners {
            self.sent_owners = owners.clone();
            let _ = self.control.send(Control::Owners(owners));
        }
    }

    fn node_seen(&mut self, e: kv::Entry) {
        self.members.seen(&self.id, e);
        self.live();
    }

    /// Whether every partition has another owner, or there is no other instance.
    fn all_elsewhere(&self) -> bool {
        self.live().len() == 1
            || self
                .views
                .iter()
                .all(|v| v.as_ref().is_some_and(|v| v.owner != self.id))
    }

    /// This instance and every instance seen alive, sorted.
    fn live(&self) -> Vec<Arc<str>> {
        let live = self.members.live(&self.id, self.lease());
        self.metrics.instances.set(live.len() as i64);
        live
    }

    /// Takes one step towards the assignment: hands over one partition that belongs to
    /// another live instance, or acquires one that belongs here. Says whether it did.
    async fn rebalance_one(&mut self) -> bool {
        if self.quiet {
            return false;
        }
        let live = self.live();
        let now = Instant::now();
        for p in 0..self.held.len() {
            let mine = self.held[p].is_some();
            let target = rendezvous(&live, p as u32);
            if mine && **target != *self.id {
                self.hand_over(p).await;
                return true;
            }
            if mine || **target != *self.id {
                continue;
            }
            if self.tried[p].is_some_and(|t| now - t < self.lease() / BEATS_PER_LEASE) {
                continue;
            }
            let expired = match &self.views[p] {
                None => None,
                Some(v) if now - v.seen >= self.lease() => Some(v.revision),
                Some(_) => continue,
            };
            self.tried[p] = Some(now);
            if self.acquire(p, expired).await {
                return true;
            }
        }
        false
    }

    /// Takes a free partition (`expired`: none) or one whose lease expired at that
    /// revision, reads its units and hands them to the serving task.
    async fn acquire(&mut self, p: usize, expired: Option<u64>) -> bool {
        let key = format!("lease.{p}");
        let value = Bytes::from(self.id.to_string());
        let sent = Instant::now();
        let result = match expired {
            None => self.kv.create(&key, value).await.map_err(|e| e.to_string()),
            Some(rev) => self
                .kv
                .update(&key, value, rev)
                .await
                .map_err(|e| e.to_string()),
        };
        let Ok(revision) = result else {
            // Someone else got there, or the view is behind: read the lease itself.
            self.refresh(p).await;
            return false;
        };
        self.held[p] = Some(revision);
        self.deadlines
            .set(p, sent + self.lease().mul_f64(SERVE_SHARE));
        // This instance owns it now: the serving task holds its messages until the
        // units are loaded, instead of forwarding them to the last owner.
        self.views[p] = Some(LeaseView {
            owner: self.id.clone(),
            revision,
            seen: Instant::now(),
        });
        self.publish_owners();
        let started = Instant::now();
        match bucket::load(&self.kv, p as u32, self.lease() / 2).await {
            Ok(units) => {
                self.metrics.kv_read(started.elapsed());
                if expired.is_some() {
                    self.metrics.takeovers.inc();
                    tracing::warn!(
                        partition = p,
                        units = units.len(),
                        "took over a partition whose owner stopped renewing"
                    );
                } else {
                    tracing::info!(partition = p, units = units.len(), "acquired a partition");
                }
                let _ = self.control.send(Control::Acquired {
                    partition: p as u32,
                    units,
                    expired: expired.is_some(),
                });
                true
            }
            Err(e) => {
                tracing::error!(partition = p, error = %e, "cannot read a partition; letting it go");
                self.let_go(p).await;
                false
            }
        }
    }

    /// Reads a partition's lease directly, for when the watch's view of it is behind.
    async fn refresh(&mut self, p: usize) {
        match self.kv.entry(format!("lease.{p}")).await {
            Ok(Some(e)) => self.lease_seen(e),
            Ok(None) => {
                self.views[p] = None;
                self.publish_owners();
            }
            Err(e) => tracing::debug!(partition = p, error = %e, "cannot read a lease"),
        }
    }

    /// Renews every held lease; a lease that cannot be renewed is lost.
    async fn renew(&mut self) -> Vec<u32> {
        let mut lost = Vec::new();
        let value = Bytes::from(self.id.to_string());
        let held: Vec<(usize, u64)> = self
            .held
            .iter()
            .enumerate()
            .filter_map(|(p, r)| r.map(|r| (p, r)))
            .collect();
        let sent = Instant::now();
        let kv = &self.kv;
        let results = futures::future::join_all(held.iter().map(|&(p, rev)| {
            let value = value.clone();
            async move { kv.update(format!("lease.{p}"), value, rev).await }
        }))
        .await;
        for ((p, _), result) in held.into_iter().zip(results) {
            match result {
                Ok(rev) if self.held[p].is_some() => {
                    self.held[p] = Some(rev);
                    self.deadlines
                        .set(p, sent + self.lease().mul_f64(SERVE_SHARE));
                    self.metrics.renewals.inc();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "lost a partition's lease");
                    self.metrics.lost.inc();
                    self.held[p] = None;
                    self.deadlines.clear(p);
                    let _ = self.control.send(Control::Release {
                        partition: p as u32,
                        done: None,
                    });
                    lost.push(p as u32);
                }
            }
        }
        self.metrics
            .partitions
            .set(self.held.iter().flatten().count() as i64);
        lost
    }

    async fn heartbeat(&mut self) {
        if self.quiet {
            return;
        }
        self.beat += 1;
        let key = format!("node.{}", self.id);
        if let Err(e) = self.kv.put(key, Bytes::from(self.beat.to_string())).await {
            tracing::warn!(error = %e, "heartbeat not written");
        }
    }

    /// Hands a partition over: the serving task stops serving it and sends what it
    /// owes, then the lease is deleted for the next owner to create.
    async fn hand_over(&mut self, p: usize) {
        let (done, wait) = oneshot::channel();
        let _ = self.control.send(Control::Release {
            partition: p as u32,
            done: Some(done),
        });
        let _ = tokio::time::timeout(self.lease(), wait).await;
        tracing::info!(partition = p, "handed a partition over");
        self.let_go(p).await;
    }

    /// Deletes a held lease (the serving task no longer serves the partition).
    async fn let_go(&mut self, p: usize) {
        self.deadlines.clear(p);
        if let Some(rev) = self.held[p].take() {
            if let Err(e) = self
                .kv
                .delete_expect_revision(format!("lease.{p}"), Some(rev))
                .await
            {
                tracing::warn!(partition = p, error = %e, "lease not deleted; it will expire");
            }
        }
        self.metrics
            .partitions
            .set(self.held.iter().flatten().count() as i64);
    }

    /// A write to the partition failed: the serving task dropped it; so does this.
    async fn give_up(&mut self, p: u32) {
        self.let_go(p as usize).await;
        self.tried[p as usize] = Some(Instant::now());
    }

    /// The task did not run for `gap` (the process was stopped, or starved): leases
    /// may have passed on. It renews at once; a partition whose lease passed on is
    /// dropped, and while the serving task works through what arrived meanwhile, what
    /// arrived for those partitions is dropped too (the new owner has served them
    /// since) and this instance claims nothing.
    async fn paused(&mut self, gap: Duration) {
        let lost = self.renew().await;
        tracing::warn!(paused = ?gap, lost = lost.len(), "this instance was paused");
        if lost.is_empty() {
            return;
        }
        self.quiet = true;
        let (done, wait) = oneshot::channel();
        let _ = self.control.send(Control::Paused { lost, done });
        let _ = tokio::time::timeout(self.lease() * 4, wait).await;
        tracing::info!("worked through what arrived while paused; rejoining");
        self.quiet = false;
    }

    /// Leaving: no more heartbeats; every held partition handed over.
    async fn leave(&mut self) {
        self.quiet = true;
        let _ = self.kv.delete(format!("node.{}", self.id)).await;
        for p in 0..self.held.len() {
            if self.held[p].is_some() {
                self.hand_over(p).await;
            }
        }
    }
}
