//! Several instances on one NATS cluster (`state.store: nats`): state in a JetStream
//! key-value bucket, split into partitions by cid (names without a cid by name), one
//! owner per partition held by a lease (`lease`).
//!
//! Requests reach any instance through the queue group; one that does not own the
//! request's partition forwards it, reply subject kept, to the owner's own subjects
//! (`_CONNRES.<bucket>.fwd.<instance>.<hops>.<original subject>`: no headers to build
//! or parse), and holds it while no instance owns the partition. Only the owner applies changes and publishes events and replies, so each
//! model has exactly one publisher and the single-instance ordering holds. The owner
//! writes every changed unit to the bucket (compare-and-set on the revision it last
//! saw) before the events and the reply; a failed write means another instance took
//! the partition: it stops serving it.
//!
//! This module is the serving task's side (`Cluster`); `lease` is the task that holds
//! the leases; `bucket` reads and writes the bucket.

mod bucket;
mod lease;
mod members;
mod metrics;
mod pipeline;
mod place;
mod steps;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::Client;
use tokio::sync::{mpsc, oneshot};

use super::ServiceError;
use crate::config::SharedStore;
use crate::store::record::partition;
use crate::store::{MemoryStore, UnitKey};

pub(super) use bucket::Loaded;
pub use metrics::ClusterMetrics;
pub(super) use place::Admitted;
use place::Held;

/// The last token of the subject an instance sends itself to know it has worked
/// through what arrived before (after a pause).
const BARRIER: &str = "barrier";
/// What the lease task tells the serving task.
pub(super) enum Control {
    /// This instance holds the partition's lease; its units as read from the bucket.
    /// `expired`: taken over from an owner that stopped renewing.
    Acquired {
        partition: u32,
        units: Vec<Loaded>,
        expired: bool,
    },
    /// Stop serving the partition; `done` once its events and replies are out.
    Release {
        partition: u32,
        done: Option<oneshot::Sender<()>>,
    },
    /// The owner of each partition, as the leases say.
    Owners(Vec<Option<Arc<str>>>),
    /// This instance was paused and lost these partitions meanwhile: what arrived for
    /// them before the barrier message comes back is stale and dropped; then `done`.
    Paused {
        lost: Vec<u32>,
        done: oneshot::Sender<()>,
    },
}

/// What the serving task tells the lease task.
pub(super) enum Report {
    /// A write to the partition failed: it was dropped here.
    WriteFailed(u32),
    /// Hand every partition over and stop.
    Leave(oneshot::Sender<()>),
}

/// Until when each partition may be served: the lease task moves it forward with each
/// renewal, and the serving task checks it before it publishes.
pub(super) struct Deadlines {
    base: Instant,
    /// Nanoseconds after `base`; 0: not held.
    at: Vec<AtomicU64>,
}

impl Deadlines {
    fn new(partitions: u32) -> Deadlines {
        Deadlines {
            base: Instant::now(),
            at: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, p: usize, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos() as u64;
        self.at[p].store(nanos.max(1), Ordering::Release);
    }

    fn clear(&self, p: usize) {
        self.at[p].store(0, Ordering::Release);
    }

    fn valid(&self, p: usize, now: Instant) -> bool {
        let now = now.saturating_duration_since(self.base).as_nanos() as u64;
        self.at[p].load(Ordering::Acquire) > now
    }
}

/// The serving task's side of the shared store.
pub(super) struct Cluster {
    kv: Arc<kv::Store>,
    settings: SharedStore,
    id: Arc<str>,
    /// Where other instances forward this one's messages (then `.<hops>.<subject>`).
    forward_subject: String,
    /// The same for any instance, without the instance id.
    forward_prefix: String,
    served: Vec<bool>,
    owners: Vec<Option<Arc<str>>>,
    deadlines: Arc<Deadlines>,
    /// The revision and value fingerprint of each unit as last written or read.
    revisions: HashMap<UnitKey, (u64, u64)>,
    /// Handled messages whose writes are in flight, in the order they were handled:
    /// each is published once its writes and every earlier one are done.
    pipeline: VecDeque<pipeline::Pending>,
    /// How many writes of each unit are in flight.
    in_flight: HashMap<UnitKey, usize>,
    held: VecDeque<Held>,
    control: mpsc::UnboundedReceiver<Control>,
    control_tx: mpsc::UnboundedSender<Control>,
    reports: Option<mpsc::UnboundedSender<Report>>,
    /// Set after a pause in which partitions were lost, until the barrier message
    /// comes back: what arrives for them meanwhile was sent before or during the pause
    /// (another instance served them since), and is dropped.
    barrier: Option<oneshot::Sender<()>>,
    /// The partitions lost during a pause (see `barrier`).
    stale: Vec<bool>,
    pub(super) metrics: Arc<ClusterMetrics>,
}

impl Cluster {
    /// Opens the bucket; nothing is served until [`Cluster::start`].
    pub(super) async fn open(
        client: &Client,
        settings: &SharedStore,
        id: &str,
    ) -> Result<Cluster, ServiceError> {
        let kv = Arc::new(bucket::open(client, settings).await?);
        let (control_tx, control) = mpsc::unbounded_channel();
        let n = settings.partitions;
        Ok(Cluster {
            kv,
            settings: settings.clone(),
            id: id.into(),
            forward_subject: forward_subject(settings, id),
            forward_prefix: forward_subject(settings, ""),
            served: vec![false; n as usize],
            owners: vec![None; n as usize],
            deadlines: Arc::new(Deadlines::new(n)),
            revisions: HashMap::new(),
            pipeline: VecDeque::new(),
            in_flight: HashMap::new(),
            held: VecDeque::new(),
            control,
            control_tx,
            reports: None,
            barrier: None,
            stale: vec![false; n as usize],
            metrics: Arc::new(ClusterMetrics::new()),
        })
    }

    /// The subject other instances forward this one's messages to.
    pub(super) fn forward_subject(&self) -> String {
        format!("{}.>", self.forward_subject)
    }

    /// Starts the lease task: partitions are acquired from now on.
    pub(super) fn start(&mut self) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.reports = Some(tx);
        let leases = lease::Leases::new(
            (*self.kv).clone(),
            self.id.clone(),
            self.settings.clone(),
            self.control_tx.clone(),
            self.deadlines.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(leases.run(rx));
    }

    /// Hands every partition over and stops the lease task; returns once that is done
    /// (the serving task must keep handling [`Control`]s meanwhile).
    pub(super) fn leave(&mut self) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        match self.reports.take() {
            Some(reports) => {
                let _ = reports.send(Report::Leave(done));
            }
            None => {
                let _ = done.send(());
            }
        }
        wait
    }

    /// Whether nothing is served or held here any more (after the lease task handed
    /// every partition over).
    pub(super) fn left(&self) -> bool {
        self.held.is_empty() && !self.served.iter().any(|s| *s)
    }

    /// Whether the partition may still be published for.
    pub(super) fn may_publish(&self, partition: Option<u32>) -> bool {
        partition.is_none_or(|p| {
            self.served[p as usize] && self.deadlines.valid(p as usize, Instant::now())
        })
    }

    /// Stops serving a partition and forgets its units (they live on in the bucket).
    pub(super) fn drop_partition(&mut self, store: &mut MemoryStore, p: u32) {
        let n = self.settings.partitions;
        self.served[p as usize] = false;
        store.forget_where(|k| partition(k, n) != p);
        self.revisions.retain(|k, _| partition(k, n) != p);
        self.metrics
            .served
            .set(self.served.iter().filter(|s| **s).count() as i64);
    }

    /// Applies a control message; `resets` receives the names gateways must re-fetch.
    pub(super) fn apply(
        &mut self,
        store: &mut MemoryStore,
        control: Control,
        now: crate::clock::Tick,
        resets: &mut Vec<Box<str>>,
    ) -> Option<oneshot::Sender<()>> {
        match control {
            Control::Acquired {
                partition: p,
                units,
                expired,
            } => {
                for loaded in units {
                    if expired {
                        match &loaded.unit {
                            crate::store::Unit::Connection(c) => {
                                resets.extend(c.models.iter().map(|m| m.rid.clone()))
                            }
                            crate::store::Unit::Shared(_) => {
                                if let UnitKey::Shared(rid) = &loaded.key {
                                    resets.push(rid.clone());
                                }
                            }
                        }
                    }
                    self.revisions
                        .insert(loaded.key.clone(), (loaded.revision, loaded.hash));
                    store.insert(loaded.key, loaded.unit, now);
                }
                self.served[p as usize] = true;
                self.metrics
                    .served
                    .set(self.served.iter().filter(|s| **s).count() as i64);
                None
            }
            Control::Release { partition, done } => {
                self.drop_partition(store, partition);
                done
            }
            Control::Owners(owners) => {
                self.owners = owners;
                None
            }
            Control::Paused { lost, done } => {
                for p in lost {
                    self.stale[p as usize] = true;
                    if self.served[p as usize] {
                        self.drop_partition(store, p);
                    }
                }
                self.barrier = Some(done);
                None
            }
        }
    }

    /// Sends this instance a message that comes back after everything already on its
    /// way (the end of a [`Control::Paused`]).
    pub(super) async fn send_barrier(&self, client: &Client) {
        let subject = format!("{}.{BARRIER}", self.forward_subject);
        if let Err(e) = client.publish(subject, bytes::Bytes::new()).await {
            tracing::warn!(error = %e, "could not send the barrier message");
        }
    }

    /// How long a lease lasts.
    pub(super) fn lease(&self) -> Duration {
        self.settings.lease
    }
}

/// What the serving task must look at next for the shared store.
pub(super) enum Next {
    Control(Control),
    /// The oldest handled message's writes are done.
    Written,
}

impl Cluster {
    /// The next message of the lease task, or the oldest queued message's writes done.
    pub(super) async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            Some(control) = self.control.recv() => Next::Control(control),
            _ = pipeline::head_ready(&mut self.pipeline) => Next::Written,
        }
    }

    /// Whether the lease task has said something not yet looked at.
    pub(super) fn control_waiting(&self) -> bool {
        !self.control.is_empty()
    }
}

/// `_CONNRES.<bucket>.fwd.<instance>`; forwarded messages go to subjects below it.
fn forward_subject(settings: &SharedStore, id: &str) -> String {
    format!("_CONNRES.{}.fwd.{id}", settings.bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_pass() {
        let d = Deadlines::new(2);
        let now = Instant::now();
        assert!(!d.valid(0, now));
        d.set(0, now + Duration::from_secs(1));
        assert!(d.valid(0, now));
        assert!(!d.valid(0, now + Duration::from_secs(2)));
        d.clear(0);
        assert!(!d.valid(0, now));
        assert!(!d.valid(1, now));
    }
}
