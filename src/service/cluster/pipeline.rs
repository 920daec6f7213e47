//! Writing to the bucket before publishing, without waiting for one write before
//! handling the next message: the writes of each handled message start at once (each
//! unit's writes one after another, since each compares against the revision the last
//! one made), and its outcome waits in a queue; outcomes leave strictly in the order
//! their messages were handled, each once its own writes and every earlier one are
//! done. So the order a single instance publishes in is kept, and throughput is bound
//! by the bucket's capacity rather than by the latency of one write.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use async_nats::Client;
use futures::FutureExt;
use tokio::task::JoinHandle;

use super::{bucket, Cluster, Report};
use crate::metrics::Metrics;
use crate::service::outcome::Finished;
use crate::store::record::{self, partition, UnitRef};
use crate::store::{MemoryStore, Store, UnitKey};

/// The most handled messages waiting for their writes; past it, the serving task waits.
const MAX_PENDING: usize = 256;

type WriteResult = Result<Option<u64>, String>;

/// A handled message whose writes are in flight.
pub(in crate::service) struct Pending {
    writes: Vec<InFlight>,
    finished: Option<Finished>,
}

/// One unit's write to the bucket.
struct InFlight {
    key: UnitKey,
    partition: u32,
    fingerprint: u64,
    started: Instant,
    task: Option<JoinHandle<WriteResult>>,
    result: Option<WriteResult>,
}

impl Cluster {
    /// Starts writing what `finished`'s message changed and queues its outcome; it is
    /// published once the writes are done (at once when there are none and nothing
    /// waits before it).
    pub(in crate::service) async fn submit(
        &mut self,
        client: &Client,
        metrics: &Metrics,
        store: &mut MemoryStore,
        finished: Finished,
    ) {
        let writes = self.start_writes(client, metrics, store).await;
        if writes.is_empty() && self.pipeline.is_empty() {
            self.publish(client, metrics, finished).await;
            return;
        }
        self.pipeline.push_back(Pending {
            writes,
            finished: Some(finished),
        });
        while self.pipeline.len() > MAX_PENDING {
            self.complete_head(client, metrics, store).await;
        }
    }

    /// Writes what a step other than a message changed (a sweep, a reload), after
    /// everything queued.
    pub(in crate::service) async fn persist(
        &mut self,
        client: &Client,
        metrics: &Metrics,
        store: &mut MemoryStore,
    ) {
        self.complete_all(client, metrics, store).await;
        let writes = self.start_writes(client, metrics, store).await;
        self.pipeline.push_back(Pending {
            writes,
            finished: None,
        });
        self.complete_all(client, metrics, store).await;
    }

    /// Starts the writes of every unit changed since the last call. A unit with a write
    /// still in flight waits for it (publishing what was queued before it): its next
    /// write compares against the revision that one makes. Units of partitions served
    /// elsewhere are forgotten (nothing is kept of another partition's connection).
    async fn start_writes(
        &mut self,
        client: &Client,
        metrics: &Metrics,
        store: &mut MemoryStore,
    ) -> Vec<InFlight> {
        let changed = store.take_changed();
        while changed.iter().any(|k| self.in_flight.contains_key(k)) {
            self.complete_head(client, metrics, store).await;
        }
        let n = self.settings.partitions;
        let mut writes = Vec::new();
        for key in changed {
            let p = partition(&key, n);
            if !self.served[p as usize] {
                store.forget(&key);
                continue;
            }
            let value = match &key {
                UnitKey::Connection(cid) => store
                    .connection(cid)
                    .map(|c| record::encode(UnitRef::Connection(c))),
                UnitKey::Shared(rid) => store
                    .shared(rid)
                    .map(|w| record::encode(UnitRef::Shared(w))),
            };
            let known = self.revisions.get(&key).copied();
            let (write, fingerprint) = match (value, known) {
                (Some(v), Some((_, h))) if bucket::hash(&v) == h => continue,
                (Some(v), known) => {
                    let h = bucket::hash(&v);
                    let revision = known.map(|k| k.0);
                    (
                        bucket::Write::Put {
                            value: v.into(),
                            revision,
                        },
                        h,
                    )
                }
                (None, Some((revision, _))) => (bucket::Write::Delete { revision }, 0),
                (None, None) => continue,
            };
            let kv = Arc::clone(&self.kv);
            let bucket_key = record::key(p, &key);
            let task = tokio::spawn(async move { bucket::write(&kv, &bucket_key, write).await });
            *self.in_flight.entry(key.clone()).or_default() += 1;
            writes.push(InFlight {
                key,
                partition: p,
                fingerprint,
                started: Instant::now(),
                task: Some(task),
                result: None,
            });
        }
        writes
    }

    /// Waits for the oldest queued message's writes and publishes its outcome; a failed
    /// write drops its partition and the outcome becomes an internal error.
    pub(in crate::service) async fn complete_head(
        &mut self,
        client: &Client,
        metrics: &Metrics,
        store: &mut MemoryStore,
    ) {
        if self.pipeline.is_empty() {
            return;
        }
        head_ready(&mut self.pipeline).await;
        let Some(head) = self.pipeline.pop_front() else {
            return;
        };
        let mut failed = false;
        for w in head.writes {
            if let Some(n) = self.in_flight.get_mut(&w.key) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&w.key);
                }
            }
            self.metrics.kv_write(w.started.elapsed());
            match w.result {
                Some(Ok(Some(revision))) => {
                    self.revisions.insert(w.key, (revision, w.fingerprint));
                }
                Some(Ok(None)) => {
                    self.revisions.remove(&w.key);
                }
                Some(Err(e)) => {
                    failed = true;
                    if self.served[w.partition as usize] {
                        tracing::error!(partition = w.partition, error = %e, "a write to the bucket failed; another instance took the partition over");
                        self.drop_partition(store, w.partition);
                        if let Some(reports) = &self.reports {
                            let _ = reports.send(Report::WriteFailed(w.partition));
                        }
                    }
                }
                None => failed = true,
            }
        }
        if let Some(finished) = head.finished {
            let finished = if failed { finished.failed() } else { finished };
            let publish = failed || self.may_publish(finished.partition);
            if publish {
                finished.publish(client, metrics).await;
            } else {
                tracing::warn!(subject = %finished.subject, "not published: this instance no longer serves the partition");
            }
        }
    }

    /// Publishes everything queued, in order.
    pub(in crate::service) async fn complete_all(
        &mut self,
        client: &Client,
        metrics: &Metrics,
        store: &mut MemoryStore,
    ) {
        while !self.pipeline.is_empty() {
            self.complete_head(client, metrics, store).await;
        }
    }

    /// Publishes an outcome with nothing to wait for, if the partition is still served.
    async fn publish(&self, client: &Client, metrics: &Metrics, finished: Finished) {
        if self.may_publish(finished.partition) {
            finished.publish(client, metrics).await;
        } else {
            tracing::warn!(subject = %finished.subject, "not published: this instance's lease on the partition ran out while handling it");
        }
    }
}

/// Resolves once the oldest queued message's writes are done (never, when nothing is
/// queued). Cancel-safe: results are kept in the queue.
pub(super) async fn head_ready(pipeline: &mut VecDeque<Pending>) {
    poll_fn(|cx| {
        let Some(head) = pipeline.front_mut() else {
            return Poll::Pending;
        };
        let mut done = true;
        for w in &mut head.writes {
            if let Some(task) = &mut w.task {
                match task.poll_unpin(cx) {
                    Poll::Ready(result) => {
                        w.result = Some(result.unwrap_or_else(|e| Err(e.to_string())));
                        w.task = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
