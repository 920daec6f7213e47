//! The serving task's steps for the shared store: applying what the lease task says
//! (a partition acquired or released, new owners, a pause), writing out what a sweep or
//! a reload changed, and leaving the cluster at shutdown.

use std::time::Duration;

use futures::stream::StreamExt;
use futures::FutureExt;

use super::Control;
use crate::service::Service;

impl Service {
    /// Publishes every handled message still waiting for its writes (before any step
    /// other than a message, so steps see what came before them published).
    pub(in crate::service) async fn complete_writes(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            let store = self.engine.store_mut();
            cluster
                .complete_all(&self.client, &self.metrics, store)
                .await;
        }
    }

    /// Publishes the oldest handled message waiting for its writes, now done.
    pub(in crate::service) async fn complete_head(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            let store = self.engine.store_mut();
            cluster
                .complete_head(&self.client, &self.metrics, store)
                .await;
        }
    }

    /// Applies a message of the lease task, then places the held messages again.
    pub(in crate::service) async fn cluster_step(&mut self, control: Control) {
        self.complete_writes().await;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = self.engine.now();
        let barrier = matches!(control, Control::Paused { .. });
        let mut resets = Vec::new();
        let done = cluster.apply(self.engine.store_mut(), control, now, &mut resets);
        for rid in &resets {
            self.engine.owe_reset(&self.config, rid);
        }
        if barrier {
            cluster.send_barrier(&self.client).await;
        }
        if let Some(done) = done {
            // What was published for the partition leaves before its lease does.
            if let Err(e) = self.client.flush().await {
                tracing::warn!(error = %e, "flush before a handover failed");
            }
            let _ = done.send(());
        }
        self.update_stats();
        self.serve_held().await;
    }

    /// Serves the held messages whose partitions are served here now, and forwards the
    /// ones whose partitions have an owner elsewhere.
    pub(in crate::service) async fn serve_held(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        for admitted in cluster.release_held(&self.client, &self.config).await {
            self.serve(admitted).await;
        }
    }

    /// Writes out what a step other than a message changed (a sweep, a reload).
    pub(in crate::service) async fn persist(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            let store = self.engine.store_mut();
            cluster.persist(&self.client, &self.metrics, store).await;
        }
    }

    /// Hands every partition over to the other instances, still forwarding what
    /// arrives, until the others own them all (or four leases have passed); then goes
    /// on forwarding for half a lease, while the others learn the new owners.
    pub(in crate::service) async fn leave(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let lease = cluster.lease();
        let mut handed_over = cluster.leave();
        self.complete_writes().await;
        let mut finished = false;
        let give_up = tokio::time::sleep(lease * 4);
        tokio::pin!(give_up);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tracing::info!("leaving: handing partitions over");
        loop {
            tokio::select! {
                biased;
                _ = &mut give_up => {
                    tracing::warn!("gave up waiting for other instances to take the partitions");
                    break;
                }
                next = super::super::cluster_next(&mut self.cluster) => match next {
                    super::Next::Control(control) => self.cluster_step(control).await,
                    super::Next::Written => self.complete_head().await,
                },
                _ = &mut handed_over, if !finished => finished = true,
                Some(received) = self.subs.next() => self.handle(received).await,
                _ = tick.tick() => {}
            }
            if finished && self.cluster.as_ref().is_none_or(|c| c.left()) {
                break;
            }
        }
        // Others may still forward here for a moment, until they see the new owners:
        // what arrives is forwarded on before the subscriptions end.
        let linger = tokio::time::sleep(lease / 2);
        tokio::pin!(linger);
        loop {
            tokio::select! {
                biased;
                _ = &mut linger => break,
                next = super::super::cluster_next(&mut self.cluster) => match next {
                    super::Next::Control(control) => self.cluster_step(control).await,
                    super::Next::Written => self.complete_head().await,
                },
                Some(received) = self.subs.next() => self.handle(received).await,
            }
        }
        // What is still held has nowhere to go.
        while let Some(Some(received)) = self.subs.next().now_or_never() {
            self.handle(received).await;
        }
        self.complete_writes().await;
    }
}
