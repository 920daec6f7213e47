//! Several instances on one NATS cluster (`state.store: nats`): the I/O around the
//! ownership protocol (`crate::ownership`, which decides everything). State lives in a
//! JetStream key-value bucket, split into partitions by cid (names without a cid by
//! name), one owner per partition held by a lease.
//!
//! Every instance receives every state-changing message (the ordered channel, without a
//! queue group); the protocol says which to apply here, and keeps the rest in its window.
//! Reads (get, access) reach one instance of the queue group and are forwarded to the
//! owner (`_CONNRES.<bucket>.fwd.<instance>.<hops>.<subject>`: reply subject kept, no
//! headers), or held while the partition has no owner. The owner writes every changed
//! unit to the bucket before its events and reply leave (`pipeline`).
//!
//! This module holds the [`Cluster`] (the machine, the bucket, what is in flight) and
//! what it waits for; `io` starts the bucket operations the machine asks for, `bucket`
//! reads and writes the bucket, `pipeline` the writes of handled messages, `steps` the
//! serving task's side (placing messages, carrying out the machine's actions on the
//! engine and store), `feed` what the connection, bucket and clock tell the machine,
//! `partition` actions on a whole partition's state, `publish` writes and outcomes
//! once written, `evict` the size bound (units past it stay in the bucket) and
//! `readback` reading them back; `presence` presence lists (a token event's step on
//! the lists of each partition served here, the ttl sweep of the lists served here);
//! `trace` what the machine decided, in the log; `notes`
//! what the operator is told (partition changes in one line per batch, instances
//! running another config, requests that cannot be answered).

mod bucket;
mod evict;
mod feed;
mod grants;
mod io;
mod mapped;
mod metrics;
mod notes;
mod partition;
mod pipeline;
mod presence;
mod publish;
mod readback;
mod steps;
mod trace;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::Client;
use tokio::sync::mpsc;

use super::route::Received;
use super::ServiceError;
use crate::config::SharedStore;
use crate::ownership::{NodeInfo, Ownership, Settings, PROTOCOL};

pub(super) use bucket::Loaded;
pub(super) use io::Io;
pub use metrics::ClusterMetrics;
use pipeline::Pipeline;
pub(super) use steps::token_cid;

/// The most reads held while their partitions have no owner.
const MAX_HELD: usize = 10_000;
/// The most unapplied messages kept per partition.
const WINDOW_CAP: usize = 50_000;

/// The serving task's side of the shared store.
pub(super) struct Cluster {
    kv: Arc<kv::Store>,
    client: Client,
    settings: SharedStore,
    id: Arc<str>,
    /// The origin of the machine's clock.
    base: Instant,
    machine: Ownership<Received>,
    /// `_CONNRES.<bucket>.fwd.`: other instances' forwarding subjects follow it.
    forward_prefix: String,
    /// Where this instance's probes go (in the ordered channel).
    probe_subject: String,
    /// The partitions whose mapped requests are subscribed here.
    mapped: mapped::MappedRequests,
    io_tx: mpsc::UnboundedSender<Io>,
    io_rx: mpsc::UnboundedReceiver<Io>,
    joined: bool,
    tick: tokio::time::Interval,
    pipeline: Pipeline,
    /// Units read for a partition, until the machine says to install them: by
    /// partition, the latest load's id and units (an earlier load that answers later is
    /// not kept: its units may predate another owner's writes).
    loaded: HashMap<u32, (u64, Vec<Loaded>)>,
    /// Partitions whose handled messages must all be out before the machine hears so.
    drains: Vec<u32>,
    started: bool,
    left: bool,
    /// When a request for an undeclared name was last logged (at most one line every
    /// ten seconds).
    undeclared_logged: Option<Instant>,
    /// Partitions taken and given up since the last summary line.
    partition_log: notes::PartitionLog,
    /// The configs the other instances run.
    peers: notes::Peers,
    /// Units out of memory past `state.max_entries`, and what waits for them.
    cold: crate::store::cold::ColdSet<evict::Held>,
    /// When a failed read of a cold unit was last logged.
    cold_failed: crate::logs::Throttle,
    /// Access granted here to connections whose records other instances keep.
    foreign_grants: grants::ForeignGrants,
    pub(super) metrics: Arc<ClusterMetrics>,
}

impl Cluster {
    /// Opens the bucket; nothing is served until [`Cluster::start`].
    pub(super) async fn open(
        client: &Client,
        settings: &SharedStore,
        id: &str,
        config_hash: &str,
    ) -> Result<Cluster, ServiceError> {
        let kv = Arc::new(bucket::open(client, settings).await?);
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        let base = Instant::now();
        let info = NodeInfo {
            beat: 0,
            proto: PROTOCOL,
            partitions: settings.partitions,
            lease_ms: settings.lease.as_millis() as u64,
            config: config_hash.to_string(),
            ready: false,
        };
        let machine = Ownership::new(
            id.into(),
            info,
            Settings {
                partitions: settings.partitions,
                lease: settings.lease,
                window_cap: WINDOW_CAP,
                max_held: MAX_HELD,
            },
            Duration::ZERO,
        );
        let mut tick = tokio::time::interval(settings.lease / 8);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Cluster {
            kv,
            client: client.clone(),
            settings: settings.clone(),
            id: id.into(),
            base,
            machine,
            forward_prefix: format!("_CONNRES.{}.fwd.", settings.bucket),
            probe_subject: format!("_CONNRES.{}.probe.{id}", settings.bucket),
            mapped: mapped::MappedRequests::new(settings),
            io_tx,
            io_rx,
            joined: false,
            tick,
            pipeline: Pipeline::new(settings.partitions),
            loaded: HashMap::new(),
            drains: Vec::new(),
            started: false,
            left: false,
            undeclared_logged: None,
            partition_log: notes::PartitionLog::default(),
            peers: notes::Peers::default(),
            cold: crate::store::cold::ColdSet::new(settings.partitions),
            cold_failed: crate::logs::Throttle::default(),
            foreign_grants: grants::ForeignGrants::default(),
            metrics: Arc::new(ClusterMetrics::new()),
        })
    }

    /// This instance's ID.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The machine's clock now.
    fn now(&self) -> Duration {
        self.base.elapsed()
    }

    /// The subject other instances forward this one's reads to.
    pub(super) fn forward_subject(&self) -> String {
        format!("{}{}.>", self.forward_prefix, self.id)
    }

    /// The subject of this instance's probes (subscribed into the ordered channel).
    pub(super) fn probe_subject(&self) -> String {
        format!("{}.>", self.probe_subject)
    }

    /// Starts taking part: the first heartbeat, and the watch of heartbeats and leases
    /// (their current values first, then every change).
    pub(super) async fn start(&mut self) -> Result<(), ServiceError> {
        let now = self.now();
        let actions = self.machine.tick(now);
        self.started = true;
        for action in actions {
            // Before the watch: only the first heartbeat and a probe come out here.
            if let crate::ownership::Action::Heartbeat(info) = action {
                io::heartbeat(&self.kv, &self.id, &info)
                    .await
                    .map_err(|e| ServiceError::Nats(format!("cannot write the heartbeat: {e}")))?;
            }
        }
        let watch = bucket::watch(&self.kv).await?;
        io::spawn_watch(&self.kv, &self.io_tx, watch);
        Ok(())
    }

    /// What every probe's subject starts with.
    pub(super) fn probe_prefix(&self) -> &str {
        &self.probe_subject
    }

    /// A mapped request's own subject, from its mapped subject (`crate::mapping`).
    pub(super) fn unmap<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.mapped.unmap(subject)
    }

    /// A forwarded message's hops and original subject, from its forwarding subject.
    pub(super) fn unforward(&self, subject: &str) -> Option<(u32, String)> {
        let rest = subject
            .strip_prefix(self.forward_prefix.as_str())?
            .strip_prefix(&*self.id)?
            .strip_prefix('.')?;
        let (hops, original) = rest.split_once('.')?;
        Some((hops.parse().ok()?, original.to_string()))
    }

    /// Whether every partition was handed over after leaving.
    pub(super) fn left(&self) -> bool {
        self.left
    }

    /// How long a lease lasts.
    pub(super) fn lease(&self) -> Duration {
        self.settings.lease
    }

    /// The summary line of the partitions taken and given up lately, once they stop
    /// changing for a tick (or after two leases of changes); `all`: whatever its age.
    pub(super) fn log_partitions(&mut self, all: bool) {
        let now = Instant::now();
        let tick = self.settings.lease / 8;
        let batch = match all {
            true => self.partition_log.take(),
            false => self.partition_log.due(now, tick, self.settings.lease * 2),
        };
        if let Some(batch) = batch {
            let at = self.now();
            let held = (0..self.settings.partitions)
                .filter(|&p| self.machine.holds(p, at))
                .count();
            batch.log(held, self.settings.partitions);
        }
    }

    /// This instance's config changed by a reload from `old` to `new` (content hashes).
    pub(super) fn reloaded(&mut self, old: &str, new: &str) {
        self.peers.reloaded(old, new);
    }

    /// Reports a write kept here for partition `p` when its owner runs another config
    /// than `mine` (at most every ten seconds): if that config does not declare the
    /// name, the owner never subscribed it, and nobody answers.
    pub(super) fn kept_for_other_config(&mut self, p: u32, subject: &str, mine: &str) {
        let owners = self.machine.owners();
        let Some(owner) = owners.get(p as usize).cloned().flatten() else {
            return;
        };
        let Some(theirs) = self.peers.differs(&owner, mine).map(str::to_string) else {
            return;
        };
        if let Some(skipped) = self.peers.kept.occurred(Instant::now()) {
            tracing::warn!(subject, partition = p, owner = %owner, owner_config = %theirs, config = %mine, skipped, "a request waits for its partition's owner, which runs a different config: if that config does not declare the name, nobody answers it (the requester times out); reported at most every 10s, `skipped` since the last line");
        }
    }
}

/// What the serving task must look at next for the shared store.
pub(super) enum Next {
    Io(Io),
    Tick,
}

impl Cluster {
    /// The next result, watch entry or tick.
    pub(super) async fn next(&mut self) -> Next {
        if !self.started {
            return std::future::pending().await;
        }
        tokio::select! {
            biased;
            Some(io) = self.io_rx.recv() => Next::Io(io),
            _ = self.tick.tick() => Next::Tick,
        }
    }

    /// Whether something waits already (the serving loop looks at it before the next
    /// message of a burst).
    pub(super) fn waiting(&self) -> bool {
        !self.io_rx.is_empty()
    }
}
