//! Requests that nats-server maps to their partition (`crate::mapping`).
//! - Reads: this instance subscribes to partition `p`'s mapped reads, in the queue
//!   group, while it holds `p`'s lease and for one lease after it let go (the next
//!   owner may not have subscribed yet; what reaches this instance meanwhile is
//!   forwarded, as any read that reaches an instance other than the owner).
//! - Calls: it subscribes to `p`'s mapped calls, each subscriber receiving all, while
//!   the ownership machine says it follows them (it holds the lease, or is ranked first
//!   or second for `p`: `Ownership::follows_writes`) and for one lease after. A call
//!   for a partition it does not serve is kept in the window, as on its own subject.
//!   The protocol does not depend on who follows: a call that reaches neither the
//!   owner nor the next owner is answered by no one (the gateway times it out), one
//!   that reaches the next owner is applied by it or not by the usual cut.
//!
//! And the check, at start and after a reload that changes the mapping, of whether the
//! server maps this config's requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;

use super::metrics::ClusterMetrics;
use crate::config::{Config, SharedStore};
use crate::mapping::{
    partition_prefix, partition_subject, write_prefix, write_subject, Mapping, Verdict,
};
use crate::service::ordered::Mapped;
use crate::service::Service;

/// How long the check waits for its message to come back.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The partitions whose mapped requests this instance is subscribed to.
pub(super) struct MappedRequests {
    /// `_CONNRES.<bucket>.p.`: every mapped read's subject starts with it.
    read_prefix: String,
    /// `_CONNRES.<bucket>.w.`: every mapped call's subject starts with it.
    write_prefix: String,
    reads: Followed,
    writes: Followed,
    /// The digest of the mapping last checked.
    checked: Option<String>,
}

/// The partitions whose mapped reads, or calls, are subscribed: by partition, when this
/// instance stopped wanting them (none: wants them).
#[derive(Default)]
struct Followed(HashMap<u32, Option<Instant>>);

impl MappedRequests {
    pub(super) fn new(settings: &SharedStore) -> MappedRequests {
        MappedRequests {
            read_prefix: partition_prefix(&settings.bucket),
            write_prefix: write_prefix(&settings.bucket),
            reads: Followed::default(),
            writes: Followed::default(),
            checked: None,
        }
    }

    /// A mapped request's own subject, from its mapped subject.
    pub(super) fn unmap<'a>(&self, subject: &'a str) -> Option<&'a str> {
        crate::mapping::unmap(&self.read_prefix, subject)
            .or_else(|| crate::mapping::unmap(&self.write_prefix, subject))
    }

    fn followed(&mut self, which: Mapped) -> &mut Followed {
        match which {
            Mapped::Reads => &mut self.reads,
            Mapped::Writes => &mut self.writes,
        }
    }
}

impl Followed {
    /// The partitions to subscribe and to unsubscribe, given which are wanted now: a
    /// partition no longer wanted stays subscribed for `grace`.
    fn changes(
        &mut self,
        wanted: impl Iterator<Item = (u32, bool)>,
        now: Instant,
        grace: Duration,
    ) -> (Vec<u32>, Vec<u32>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for (p, holds) in wanted {
            match (holds, self.0.get_mut(&p)) {
                (true, None) => add.push(p),
                (true, Some(since)) => *since = None,
                (false, Some(since)) => match since {
                    None => *since = Some(now),
                    Some(t) if now.duration_since(*t) >= grace => remove.push(p),
                    Some(_) => {}
                },
                (false, None) => {}
            }
        }
        for p in &remove {
            self.0.remove(p);
        }
        for p in &add {
            self.0.insert(*p, None);
        }
        (add, remove)
    }
}

impl MappedRequests {
    /// Starts the check when the mapping `config` needs is not the one last checked.
    pub(super) fn check(
        &mut self,
        client: &Client,
        config: &Config,
        settings: &SharedStore,
        id: &str,
        metrics: &Arc<ClusterMetrics>,
    ) {
        let mapping = Mapping::of(config, settings);
        if self.checked.as_deref() == Some(mapping.digest()) {
            return;
        }
        self.checked = Some(mapping.digest().to_string());
        let (client, id, metrics) = (client.clone(), id.to_string(), metrics.clone());
        let hash = config.content_hash().to_string();
        tokio::spawn(async move {
            let verdict = tokio::time::timeout(CHECK_TIMEOUT, check(&client, &mapping, &id)).await;
            let mapped = matches!(verdict, Ok(Ok(Verdict::Mapped)));
            metrics.reads_mapped.set(i64::from(mapped));
            match verdict {
                Ok(Ok(Verdict::Mapped)) => {
                    tracing::info!(config = %hash, "nats-server routes each read to its partition's owner (the block `connres mapping` prints is in force)")
                }
                Ok(Ok(Verdict::NotMapped)) if mapping.is_empty() => {}
                Ok(Ok(Verdict::NotMapped)) => {
                    tracing::info!(config = %hash, "nats-server does not map this config's reads: a read that reaches an instance other than its partition's owner is forwarded to it (one more hop); `connres mapping` prints the block that routes reads to their owners")
                }
                Ok(Ok(Verdict::Disagrees { theirs, ours })) => {
                    tracing::warn!(config = %hash, theirs, ours, "nats-server maps reads to other partitions than this instance computes (a mapping printed for another `state.partitions`?): reads are forwarded from where they land; print the block again with `connres mapping`")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not check whether nats-server maps reads to their owners")
                }
                Err(_) => {
                    tracing::warn!(waited = ?CHECK_TIMEOUT, "could not check whether nats-server maps reads to their owners: the check did not come back (may this user publish and subscribe `_CONNRES.>`?)")
                }
            }
        });
    }
}

/// Publishes the check and sees where it arrives.
async fn check(client: &Client, mapping: &Mapping, id: &str) -> Result<Verdict, String> {
    let subject = mapping.check_subject(id);
    let mut raw = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut mapped = client
        .subscribe(mapping.checked_filter(id))
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(subject, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let arrived = tokio::select! {
        m = raw.next() => m,
        m = mapped.next() => m,
    };
    let _ = raw.unsubscribe().await;
    let _ = mapped.unsubscribe().await;
    let msg = arrived.ok_or("the subscription ended")?;
    Ok(mapping.verdict(id, msg.subject.as_str()))
}

impl Service {
    /// Subscribes the mapped reads of the partitions this instance took and the mapped
    /// calls of those it follows, and ends those it stopped wanting a lease ago.
    pub(in crate::service) async fn follow_partitions(&mut self) {
        self.follow(Mapped::Reads).await;
        self.follow(Mapped::Writes).await;
    }

    async fn follow(&mut self, which: Mapped) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let at = cluster.now();
        let n = cluster.settings.partitions;
        let machine = &mut cluster.machine;
        let wanted: Vec<bool> = match which {
            Mapped::Reads => (0..n).map(|p| machine.holds(p, at)).collect(),
            Mapped::Writes => machine.followed_writes(at),
        };
        let wanted = (0..n).zip(wanted);
        let grace = cluster.settings.lease;
        let (add, remove) = cluster
            .mapped
            .followed(which)
            .changes(wanted, Instant::now(), grace);
        let bucket = cluster.settings.bucket.clone();
        if !add.is_empty() || !remove.is_empty() {
            tracing::debug!(?which, ?add, ?remove, "mapped requests' subscriptions");
        }
        for p in remove {
            self.ordered.unsubscribe_partition(which, p).await;
        }
        let group = match which {
            Mapped::Reads => Some(self.config.nats.queue_group.clone()),
            Mapped::Writes => None,
        };
        for p in add {
            let subject = match which {
                Mapped::Reads => partition_subject(&bucket, p),
                Mapped::Writes => write_subject(&bucket, p),
            };
            let result = self
                .ordered
                .subscribe_partition(which, p, subject, group.clone())
                .await;
            if let Err(e) = result {
                // Reads reach the queue group's subjects or are forwarded: served, one
                // hop later. Calls reach the instances that did subscribe. Tried again
                // at the next change.
                if let Some(cluster) = &mut self.cluster {
                    cluster.mapped.followed(which).0.remove(&p);
                }
                tracing::warn!(partition = p, ?which, error = %e, "could not subscribe the partition's mapped requests");
            }
        }
    }

    /// Starts the check of whether nats-server maps the reads of the config in force.
    pub(in crate::service) fn check_mapping(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.mapped.check(
                &self.client,
                &self.config,
                &cluster.settings,
                &cluster.id,
                &cluster.metrics,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_let_go_stays_subscribed_for_the_grace() {
        let mut m = Followed::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        let held = |ps: &[u32]| {
            let ps = ps.to_vec();
            (0..4).map(move |p| (p, ps.contains(&p)))
        };
        assert_eq!(m.changes(held(&[1, 2]), t0, grace), (vec![1, 2], vec![]));
        assert_eq!(m.changes(held(&[1, 2]), t0, grace), (vec![], vec![]));
        // 2 let go: kept for the grace.
        assert_eq!(m.changes(held(&[1]), t0, grace), (vec![], vec![]));
        let later = t0 + Duration::from_secs(4);
        assert_eq!(m.changes(held(&[1]), later, grace), (vec![], vec![]));
        // Taken again within the grace: stays, and its clock starts over.
        assert_eq!(m.changes(held(&[1, 2]), later, grace), (vec![], vec![]));
        assert_eq!(m.changes(held(&[1]), later, grace), (vec![], vec![]));
        let end = later + grace;
        assert_eq!(m.changes(held(&[1]), end, grace), (vec![], vec![2]));
        assert_eq!(m.changes(held(&[1, 2]), end, grace), (vec![2], vec![]));
    }
}
