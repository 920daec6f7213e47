//! Writing what changed to the bucket, publishing the outcomes whose writes are done
//! (per partition, in order), telling the protocol of drained partitions, and leaving
//! at shutdown.

use futures::stream::StreamExt;
use futures::FutureExt;

use super::io;
use super::pipeline::changed_units;
use super::Cluster;
use crate::ownership::Input;
use crate::service::outcome::Finished;
use crate::service::Service;
use crate::store::UnitKey;

impl Service {
    /// Publishes what waits for its writes, as they finish (at shutdown, for at most a
    /// lease: a partition no longer held is not waited for).
    pub(in crate::service) async fn finish_writes(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let give_up = tokio::time::sleep(cluster.lease());
        tokio::pin!(give_up);
        loop {
            let Some(cluster) = &mut self.cluster else {
                return;
            };
            let now = cluster.now();
            let waiting = cluster
                .pipeline
                .busy()
                .into_iter()
                .chain(cluster.cold.held_partitions())
                .any(|p| cluster.machine.holds(p, now));
            if !waiting {
                return;
            }
            tokio::select! {
                _ = &mut give_up => {
                    tracing::warn!("gave up waiting for writes to the bucket; their outcomes were not published");
                    return;
                }
                Some(io) = cluster.io_rx.recv() => {
                    let actions = self.io_done(io);
                    self.run_actions(actions).await;
                    self.after_step().await;
                }
            }
        }
    }

    /// Writes what changed in the store (by messages or by actions), publishes the
    /// outcomes whose writes are done, and tells the protocol of drained partitions.
    pub(in crate::service) async fn after_step(&mut self) {
        self.release_held().await;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let n = cluster.settings.partitions;
        for (p, key) in changed_here(self.engine.store_mut(), cluster, now, n) {
            cluster.pipeline.submit(p, None, vec![key]);
        }
        self.evict(super::evict::EVICT_PER_STEP);
        self.start_writes();
        self.publish_ready().await;
        self.drained().await;
        self.update_cluster_stats();
    }

    /// Starts the writes that can start.
    pub(super) fn start_writes(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let machine = &cluster.machine;
        let starts = cluster
            .pipeline
            .starts(self.engine.store(), |p| machine.holds(p, now));
        for s in starts {
            io::spawn_unit_write(
                &cluster.kv,
                &cluster.io_tx,
                s.p,
                s.generation,
                s.key,
                s.fingerprint,
                s.write,
            );
        }
        cluster.pipeline.trim();
    }

    /// Publishes the outcomes whose writes are done, partition by partition, while the
    /// partition is held (a suspended one waits; a lost one is forgotten).
    pub(super) async fn publish_ready(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let mut out: Vec<Finished> = Vec::new();
        for p in cluster.pipeline.busy() {
            if cluster.machine.holds(p, now) {
                out.extend(cluster.pipeline.ready(p));
            }
        }
        for finished in out {
            finished.publish(&self.client, &self.metrics).await;
        }
    }

    /// Tells the protocol of the partitions being handed over whose outcomes are all
    /// out.
    pub(super) async fn drained(&mut self) {
        loop {
            let Some(cluster) = &mut self.cluster else {
                return;
            };
            let Some(i) = cluster
                .drains
                .iter()
                .position(|p| cluster.pipeline.is_empty(*p) && !cluster.cold.has_held(*p))
            else {
                return;
            };
            let p = cluster.drains.remove(i);
            let now = cluster.now();
            let actions = cluster.machine.handle(Input::Drained { p }, now);
            self.run_actions(actions).await;
        }
    }

    /// Queues a handled message's outcome behind the writes of what it changed (the
    /// shared store), and moves the pipeline on.
    pub(in crate::service) async fn submit(&mut self, finished: Finished) {
        let Some(cluster) = &mut self.cluster else {
            finished.publish(&self.client, &self.metrics).await;
            return;
        };
        let now = cluster.now();
        let n = cluster.settings.partitions;
        let changed: Vec<UnitKey> = changed_here(self.engine.store_mut(), cluster, now, n)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        match finished.partition {
            Some(p) => cluster.pipeline.submit(p, Some(finished), changed),
            None => {
                finished.publish(&self.client, &self.metrics).await;
                return;
            }
        }
        self.evict(super::evict::EVICT_PER_MESSAGE);
        self.start_writes();
        self.publish_ready().await;
    }

    pub(super) fn update_cluster_stats(&self) {
        let Some(cluster) = &self.cluster else { return };
        let now = cluster.now();
        cluster
            .metrics
            .served
            .set(cluster.machine.served(now) as i64);
        cluster.metrics.partitions.set(
            (0..cluster.settings.partitions)
                .filter(|&p| cluster.machine.holds(p, now))
                .count() as i64,
        );
        cluster
            .metrics
            .instances
            .set(cluster.machine.instances(now) as i64);
        cluster.metrics.cold.set(cluster.cold.len() as i64);
    }

    /// Hands every partition over to the other instances, still serving and forwarding
    /// what arrives, until every partition went (or four leases passed); then goes on
    /// forwarding for half a lease, while the others learn the new owners.
    pub(in crate::service) async fn leave(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let lease = cluster.lease();
        let now = cluster.now();
        let actions = cluster.machine.handle(Input::Leave, now);
        self.run_actions(actions).await;
        self.after_step().await;
        tracing::info!("leaving: handing partitions over");
        let give_up = tokio::time::sleep(lease * 4);
        tokio::pin!(give_up);
        while !self.cluster.as_ref().is_none_or(Cluster::left) {
            tokio::select! {
                biased;
                _ = &mut give_up => {
                    tracing::warn!("gave up waiting for other instances to take the partitions");
                    break;
                }
                next = super::super::cluster_next(&mut self.cluster) => self.cluster_step(next).await,
                Some(received) = self.subs.next() => self.handle(received).await,
            }
        }
        // Others may still forward here for a moment, until they see the new owners.
        let linger = tokio::time::sleep(lease / 2);
        tokio::pin!(linger);
        loop {
            tokio::select! {
                biased;
                _ = &mut linger => break,
                next = super::super::cluster_next(&mut self.cluster) => self.cluster_step(next).await,
                Some(received) = self.subs.next() => self.handle(received).await,
            }
        }
        while let Some(Some(received)) = self.subs.next().now_or_never() {
            self.handle(received).await;
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.log_partitions(true);
        }
    }
}

/// The units changed since last asked in the partitions held here, with their
/// partitions; the others are let go, what was granted to them here noted first.
fn changed_here(
    store: &mut crate::store::MemoryStore,
    cluster: &mut super::Cluster,
    now: std::time::Duration,
    n: u32,
) -> Vec<(u32, UnitKey)> {
    let machine = &cluster.machine;
    let grants = &mut cluster.foreign_grants;
    changed_units(
        store,
        n,
        |p| machine.holds(p, now),
        |cid, rids| grants.note(cid, rids.iter().map(|r| &**r)),
    )
}
