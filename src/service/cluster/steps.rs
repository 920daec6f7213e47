//! The serving task's side of the shared store: placing each message (applied here,
//! forwarded, kept or dropped, as the ownership protocol says), feeding the protocol
//! what the bucket and the clock tell, carrying out its actions on the engine and the
//! store, publishing outcomes once their writes are done, and leaving at shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use futures::stream::StreamExt;
use futures::FutureExt;

use super::io::{self, Io};
use super::pipeline::changed_units;
use super::{bucket, Cluster, Next};
use crate::config::Config;
use crate::engine::Request;
use crate::ownership::{Action, Dropped, Incoming, Input, Kind, Placement};
use crate::protocol;
use crate::service::cluster::Loaded;
use crate::service::discovery::Endpoint;
use crate::service::outcome::Finished;
use crate::service::route::{route_request, Route};
use crate::service::serve::Admitted;
use crate::service::Service;
use crate::store::record::{partition_of_cid, partition_of_name, stable_hash};
use crate::store::{token_digest, Store, Unit, UnitKey};

impl Service {
    /// Places a message of the shared store: applied here, forwarded to its partition's
    /// owner, kept (in the window, or held), or dropped.
    pub(in crate::service) async fn place(
        &mut self,
        route: Route,
        endpoint: Arc<Endpoint>,
        msg: Message,
        hops: u32,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let n = cluster.settings.partitions;
        let partition = partition_of_message(&self.config, route, &msg, n);
        if partition.is_none() && hops > 0 {
            // Forwarded by an instance whose config declares the name, to this one that
            // owns its partition and does not: instances disagree (a rolling config
            // change). Answered, never dropped silently.
            self.undeclared(route, &msg).await;
            return;
        }
        if partition.is_none() && !self.answers_undeclared_write(route, &msg) {
            return;
        }
        let kind = kind_of(route, &msg);
        let watched = self.watch_kept(route, &msg, partition);
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let placed = cluster.machine.place(
            Incoming {
                partition,
                kind,
                hops,
                msg: (route, endpoint, msg),
            },
            now,
        );
        let waited = matches!(placed, Placement::ApplyLate(_));
        match placed {
            Placement::Apply((route, endpoint, msg))
            | Placement::ApplyLate((route, endpoint, msg)) => {
                super::trace::placed(partition, waited, &msg);
                self.serve(Admitted {
                    route,
                    endpoint,
                    msg,
                    partition,
                    waited,
                })
                .await
            }
            Placement::Forward { to, hops, msg } => self.forward(&to, hops, msg.2).await,
            Placement::Kept => self.kept(partition, watched),
            Placement::Drop((_, _, msg), why) => self.dropped(&msg, why),
        }
    }

    /// Whether this instance answers a message for a name its config does not declare
    /// (a backend write: every instance receives it). Only the owner of the name's
    /// partition (by the whole name) does, so the backend gets one error; and none while
    /// another instance runs another config, which may declare the name: that config's
    /// owner then answers, and if none declares it the backend times out, as this
    /// instance's log says.
    fn answers_undeclared_write(&mut self, route: Route, msg: &Message) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return true;
        };
        let rid = match route_request(route, msg.subject.as_str(), &[], &self.config.api.prefix) {
            Some(Request::ApiSet { rid, .. } | Request::ApiReset { rid, .. }) => rid,
            _ => return true,
        };
        if cluster.peers.mixed() {
            if let Some(skipped) = cluster.peers.undeclared.occurred(std::time::Instant::now()) {
                tracing::warn!(subject = %msg.subject, config = %self.config.content_hash(), skipped, "a backend write for a name this instance's config does not declare, while instances run different configs: left to the instances whose config declares it (if none does, the backend times out); reported at most every 10s, `skipped` since the last line");
            }
            return false;
        }
        let p = partition_of_name(rid, cluster.settings.partitions);
        cluster.machine.serves(p, cluster.now())
    }

    /// Answers a forwarded request for a name this instance's config does not declare.
    async fn undeclared(&mut self, route: Route, msg: &Message) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let started = std::time::Instant::now();
        cluster.metrics.undeclared.inc();
        let hash = self.config.content_hash();
        if cluster
            .undeclared_logged
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            cluster.undeclared_logged = Some(std::time::Instant::now());
            tracing::warn!(subject = %msg.subject, config = %hash, "another instance forwarded a request for a name this instance's config does not declare: the instances run different configs (a rolling change?); answered with an error");
        }
        let Some(reply) = &msg.reply else { return };
        let error = protocol::ResError::Internal(format!(
            "not served: the instance that owns this connection's state runs config {hash}, which does not declare it; the instances' configs differ (a config change in progress?)"
        ));
        if let Err(e) = self.client.publish(reply.clone(), error.reply()).await {
            tracing::warn!(error = %e, "could not answer a request for an undeclared name");
        }
        let status = crate::engine::Status::Error(error.code());
        let counter = self.requests.counter(route.kind(), None, status);
        self.metrics
            .request(route.kind(), &counter, started.elapsed());
    }

    async fn forward(&self, to: &str, hops: u32, msg: Message) {
        let Some(cluster) = &self.cluster else { return };
        let subject = format!("{}{to}.{hops}.{}", cluster.forward_prefix, msg.subject);
        let sent = match msg.reply {
            Some(reply) => {
                self.client
                    .publish_with_reply(subject, reply, msg.payload)
                    .await
            }
            None => self.client.publish(subject, msg.payload).await,
        };
        match sent {
            Ok(()) => {
                cluster.metrics.forwarded.inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not forward a message to its partition's owner")
            }
        }
    }

    /// A token event a cut counts as applied without applying it (see
    /// [`Dropped::Superseded`]).
    fn superseded(&mut self, route: Route, msg: &Message) {
        if let Some(cid) = token_cid(route, msg) {
            self.engine.supersede_token(cid, &msg.payload);
        }
    }

    /// Records a message the protocol let go of.
    fn dropped(&mut self, msg: &Message, why: Dropped) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        match why {
            // Another instance applied it (or will), or it is superseded: nothing was
            // lost.
            Dropped::Expired | Dropped::Applied | Dropped::Superseded => {}
            Dropped::Stale => {
                cluster.metrics.stale.inc();
                tracing::debug!(subject = %msg.subject, "dropped a message that arrived while this instance caught up after a pause");
            }
            Dropped::TooOld | Dropped::TooMany => {
                cluster.metrics.dropped.inc();
                if let Some(skipped) = cluster.peers.dropped.occurred(std::time::Instant::now()) {
                    tracing::warn!(subject = %msg.subject, reason = ?why, skipped, "dropped a read: its partition had no owner (the gateway times it out); reported at most every 10s, `skipped` since the last line");
                }
            }
        }
    }

    /// Tells the protocol something the connection said.
    pub(in crate::service) async fn cluster_input(&mut self, input: Input) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let actions = cluster.machine.handle(input, now);
        self.run_actions(actions).await;
        self.after_step().await;
    }

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

    /// Handles what the shared store needs looked at next.
    pub(in crate::service) async fn cluster_step(&mut self, next: Next) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        // Ticks and lease news change which partitions are held here.
        let leases = matches!(
            next,
            Next::Tick | Next::Io(Io::Entry(_) | Io::LeaseWritten { .. } | Io::LeaseRead { .. })
        );
        let actions = match next {
            Next::Tick => {
                cluster.log_partitions(false);
                cluster.machine.tick(now)
            }
            Next::Io(io) => self.io_done(io),
        };
        self.run_actions(actions).await;
        self.after_step().await;
        if leases {
            self.follow_partitions().await;
        }
    }

    /// A bucket operation finished.
    fn io_done(&mut self, io: Io) -> Vec<Action<super::super::route::Received>> {
        let Some(cluster) = &mut self.cluster else {
            return Vec::new();
        };
        let now = cluster.now();
        match io {
            Io::Entry(entry) => {
                let mut actions = Vec::new();
                if let Some(input) = bucket::observation(&entry) {
                    let mine = self.config.content_hash();
                    cluster.peers.observed(&input, &cluster.id, mine);
                    actions = cluster.machine.handle(input, now);
                }
                if entry.seen_current && !cluster.joined {
                    cluster.joined = true;
                    actions.extend(cluster.machine.handle(Input::Joined, now));
                    self.metrics.set_ready(true);
                    let _ = self.serving.send(true);
                }
                actions
            }
            Io::LeaseWritten { p, op, result } => {
                if result.is_ok() {
                    cluster.metrics.renewals.inc();
                }
                cluster
                    .machine
                    .handle(Input::LeaseWritten { p, op, result }, now)
            }
            Io::LeaseRead { p, entry } => {
                cluster.machine.handle(Input::LeaseRead { p, entry }, now)
            }
            Io::Loaded { p, units, took } => match units {
                Ok(units) => {
                    cluster.metrics.kv_read(took);
                    // Complete when the probe sent after it comes back.
                    cluster.loaded.insert(p, units);
                    Vec::new()
                }
                Err(e) => cluster
                    .machine
                    .handle(Input::Loaded { p, logs: Err(e) }, now),
            },
            Io::UnitWritten {
                p,
                generation,
                key,
                fingerprint,
                result,
            } => {
                let (read_back, took) =
                    cluster
                        .pipeline
                        .written(p, generation, key.clone(), fingerprint, result);
                if let Some(took) = took {
                    cluster.metrics.kv_write(took);
                }
                if read_back {
                    io::spawn_unit_read(&cluster.kv, &cluster.io_tx, p, generation, key);
                }
                Vec::new()
            }
            Io::UnitRead {
                p,
                generation,
                key,
                result,
            } => {
                cluster.pipeline.read_back(p, generation, key, result);
                Vec::new()
            }
        }
    }

    /// A probe of this instance came back through the ordered channel: everything
    /// received before it was placed.
    pub(in crate::service) async fn probe(&mut self, subject: &str) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let rest = subject
            .strip_prefix(cluster.probe_subject.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or_default();
        let actions = if let Some(nanos) = rest.strip_prefix("t.").and_then(|n| n.parse().ok()) {
            let sent = Duration::from_nanos(nanos);
            cluster.machine.handle(Input::Probe { sent }, now)
        } else if let Some(p) = rest.strip_prefix("l.").and_then(|p| p.parse::<u32>().ok()) {
            let Some(units) = cluster.loaded.get(&p) else {
                return;
            };
            let logs = units
                .iter()
                .filter_map(|l| match (&l.key, &l.unit) {
                    (UnitKey::Connection(cid), Some(Unit::Connection(c))) => {
                        Some((stable_hash(cid), c.tokens.digests().to_vec()))
                    }
                    _ => None,
                })
                .collect();
            cluster
                .machine
                .handle(Input::Loaded { p, logs: Ok(logs) }, now)
        } else {
            return;
        };
        self.run_actions(actions).await;
        self.after_step().await;
    }

    /// Carries out the protocol's actions, in order.
    pub(in crate::service) async fn run_actions(
        &mut self,
        actions: Vec<Action<super::super::route::Received>>,
    ) {
        for action in actions {
            self.run_action(action).await;
        }
    }

    async fn run_action(&mut self, action: Action<super::super::route::Received>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        super::trace::action(&action);
        let waited = matches!(action, Action::ApplyLate { .. });
        match action {
            Action::Heartbeat(info) => io::spawn_heartbeat(&cluster.kv, &cluster.id, info),
            Action::Goodbye => io::spawn_goodbye(&cluster.kv, &cluster.id),
            Action::WriteLease {
                p,
                op,
                value,
                expect,
            } => io::spawn_lease_write(&cluster.kv, &cluster.io_tx, p, op, value, expect),
            Action::ReadLease { p } => io::spawn_lease_read(&cluster.kv, &cluster.io_tx, p),
            Action::Load { p } => {
                let probe = format!("{}.l.{p}", cluster.probe_subject);
                io::spawn_load(
                    &cluster.kv,
                    &cluster.io_tx,
                    &cluster.client,
                    probe,
                    p,
                    cluster.settings.lease / 2,
                );
            }
            Action::Probe { sent } => {
                let subject = format!("{}.t.{}", cluster.probe_subject, sent.as_nanos());
                if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
                    tracing::debug!(error = %e, "probe not sent");
                }
            }
            Action::Install { p, confirmed } => self.install(p, confirmed),
            Action::Reset { p } => self.reset_partition(p),
            Action::ResetAll => {
                if let Err(e) = self.reset_all().await {
                    tracing::error!(error = %e, "the system.reset for every pattern was not published");
                }
            }
            Action::Recall { p, since } => {
                let ago = now.saturating_sub(since);
                self.recall_partition(p, ago);
            }
            Action::Unconfirm { p } => self.set_confirmed(p, None, false),
            Action::Doubt { p, conns } => self.set_confirmed(p, Some(&conns), false),
            Action::Confirm { p, conns } => self.set_confirmed(p, Some(&conns), true),
            Action::Apply {
                msg: (route, endpoint, msg),
            }
            | Action::ApplyLate {
                msg: (route, endpoint, msg),
            } => {
                let n = cluster.settings.partitions;
                let partition = partition_of_message(&self.config, route, &msg, n);
                Box::pin(self.serve(Admitted {
                    route,
                    endpoint,
                    msg,
                    partition,
                    waited,
                }))
                .await
            }
            Action::Forward {
                to,
                hops,
                msg: (_, _, msg),
            } => self.forward(&to, hops, msg).await,
            Action::Drop {
                msg: (route, _, msg),
                why: Dropped::Superseded,
            } => self.superseded(route, &msg),
            Action::Drop {
                msg: (_, _, msg),
                why,
            } => self.dropped(&msg, why),
            Action::Drain { p } => {
                if !cluster.drains.contains(&p) {
                    cluster.drains.push(p);
                }
            }
            Action::Forget { p } => {
                let n = cluster.settings.partitions;
                cluster.partition_log.released(p, std::time::Instant::now());
                let dropped = cluster.pipeline.forget(p);
                cluster.loaded.remove(&p);
                self.engine
                    .store_mut()
                    .forget_where(|k| partition_of_unit(k, n) != p);
                if dropped > 0 {
                    tracing::warn!(partition = p, outcomes = dropped, "no longer holds the partition: outcomes waiting for their writes were not published (the gateway times those requests out)");
                    let more = cluster.machine.handle(Input::Unwritten { p }, now);
                    Box::pin(self.run_actions(more)).await;
                }
            }
            Action::Refuse { why } => {
                tracing::error!("this instance takes no partition: {why}; start it with the same `state` settings as the running instances");
            }
            Action::Left => cluster.left = true,
        }
        let _ = now;
    }

    /// Puts a partition's loaded units in the store, each checked against the config in
    /// force (written under another config, values may no longer fit: those dropped are
    /// said in the batch's log lines).
    fn install(&mut self, p: u32, confirmed: bool) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let units = cluster.loaded.remove(&p).unwrap_or_default();
        cluster
            .partition_log
            .acquired(p, units.len(), std::time::Instant::now());
        tracing::debug!(
            partition = p,
            confirmed,
            units = units.len(),
            "installed a partition"
        );
        let now = self.engine.now();
        let mut dropped = crate::engine::DroppedValues::default();
        for Loaded {
            key,
            unit,
            revision,
            hash,
        } in units
        {
            cluster.pipeline.loaded(key.clone(), revision, hash);
            let Some(mut unit) = unit else {
                // Unreadable: replaced by the next write (the revision is known now).
                continue;
            };
            let mut changed = crate::engine::fit_unit(&self.config, &mut unit, &key, &mut dropped);
            if let Unit::Connection(c) = &mut unit {
                if !confirmed && c.confirmed {
                    c.confirmed = false;
                    changed = true;
                }
            }
            let ends = match (&key, &unit) {
                (UnitKey::Connection(cid), Unit::Connection(c)) if c.token.is_some() => {
                    Some((cid.clone(), c.expires))
                }
                _ => None,
            };
            let store = self.engine.store_mut();
            store.insert(key.clone(), unit, now);
            if changed {
                store.mark_changed(key);
            }
            if let Some((cid, at)) = ends {
                self.engine.track_token_end(&cid, at);
            }
        }
        cluster.partition_log.dropped(p, dropped);
        cluster.metrics.takeovers.inc();
    }

    /// Owes gateways a `system.reset` naming the partition's models: re-fetched, and
    /// their access asked again (token records are filled in again from it).
    fn reset_partition(&mut self, p: u32) {
        let Some(cluster) = &self.cluster else { return };
        let n = cluster.settings.partitions;
        let store = self.engine.store();
        let names = models_in(store, store.keys(), p, n);
        for (rid, access) in names {
            self.engine.owe_reset(&self.config, &rid);
            if access {
                self.engine.owe_reaccess(&self.config, &rid);
            }
        }
    }

    /// Tells gateways to re-fetch the models of partition `p` touched within `ago`
    /// (resources only): events this instance published for them before it stopped may
    /// have reached gateways after the new owner's ([`Action::Recall`]).
    fn recall_partition(&mut self, p: u32, ago: Duration) {
        let Some(cluster) = &self.cluster else { return };
        let n = cluster.settings.partitions;
        // Whole seconds: one more, so nothing touched in that second is left out.
        let since = self
            .engine
            .now()
            .saturating_sub(crate::clock::ticks(ago).saturating_add(1));
        let store = self.engine.store();
        let names = models_in(store, store.touched_since(since), p, n);
        tracing::debug!(
            partition = p,
            models = names.len(),
            "lost the partition after it stopped serving it: gateways re-fetch the models it changed last"
        );
        for (rid, _) in names {
            self.engine.owe_reset(&self.config, &rid);
        }
    }

    /// Marks the token records of a partition's connections (those in `conns`, by cid
    /// hash, or all) confirmed or not.
    fn set_confirmed(&mut self, p: u32, conns: Option<&[u64]>, confirmed: bool) {
        let Some(cluster) = &self.cluster else { return };
        let n = cluster.settings.partitions;
        self.engine.store_mut().update_where(
            |cid| {
                partition_of_cid(cid, n) == p && conns.is_none_or(|c| c.contains(&stable_hash(cid)))
            },
            |c| c.confirmed = confirmed,
        );
    }

    /// Writes what changed in the store (by messages or by actions), publishes the
    /// outcomes whose writes are done, and tells the protocol of drained partitions.
    pub(in crate::service) async fn after_step(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let n = cluster.settings.partitions;
        let machine = &cluster.machine;
        for (p, key) in changed_units(self.engine.store_mut(), n, |p| machine.holds(p, now)) {
            cluster.pipeline.submit(p, None, vec![key]);
        }
        self.start_writes();
        self.publish_ready().await;
        self.drained().await;
        self.update_cluster_stats();
    }

    /// Starts the writes that can start.
    fn start_writes(&mut self) {
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
    async fn publish_ready(&mut self) {
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
    async fn drained(&mut self) {
        loop {
            let Some(cluster) = &mut self.cluster else {
                return;
            };
            let Some(i) = cluster
                .drains
                .iter()
                .position(|p| cluster.pipeline.is_empty(*p))
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
        let machine = &cluster.machine;
        let changed: Vec<UnitKey> =
            changed_units(self.engine.store_mut(), n, |p| machine.holds(p, now))
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
        self.start_writes();
        self.publish_ready().await;
    }

    fn update_cluster_stats(&self) {
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

/// The models of the units `keys` that are in partition `p`: each name, and whether it
/// is a connection's (whose access a reset asks again).
fn models_in(
    store: &crate::store::MemoryStore,
    keys: impl IntoIterator<Item = UnitKey>,
    p: u32,
    n: u32,
) -> Vec<(String, bool)> {
    let mut names = Vec::new();
    for key in keys {
        if partition_of_unit(&key, n) != p {
            continue;
        }
        match &key {
            UnitKey::Connection(cid) => {
                if let Some(c) = store.connection(cid) {
                    names.extend(c.models.iter().map(|m| (m.rid.to_string(), true)));
                }
            }
            UnitKey::Shared(rid) => names.push((rid.to_string(), false)),
        }
    }
    names
}

/// A unit's partition.
fn partition_of_unit(key: &UnitKey, n: u32) -> u32 {
    crate::store::record::partition(key, n)
}

/// The connection ID of a token event.
fn token_cid(route: Route, msg: &Message) -> Option<&str> {
    match route {
        Route::Token => msg
            .subject
            .strip_prefix("conn.")
            .and_then(|r| r.strip_suffix(".token")),
        _ => None,
    }
}

/// What a message is, for the window and the cut.
fn kind_of(route: Route, msg: &Message) -> Kind {
    match route {
        Route::Token => Kind::Token {
            conn: stable_hash(token_cid(route, msg).unwrap_or_default()),
            digest: token_digest(&msg.payload),
        },
        Route::Call | Route::ApiSet | Route::ApiReset | Route::ApiResume => {
            use std::hash::BuildHasher;
            let h = foldhash::fast::FixedState::with_seed(0x0077_7269_7465);
            let reply = msg.reply.as_ref().map(|r| r.as_str()).unwrap_or_default();
            Kind::Write {
                id: h.hash_one((msg.subject.as_str(), reply, &msg.payload[..])),
            }
        }
        _ => Kind::Read,
    }
}

/// The partition a message belongs to: its connection's (a token event's cid, or the
/// cid in the model's name), or its model's when the name has no cid. `None` when no
/// pattern matches the name.
pub(in crate::service) fn partition_of_message(
    config: &Config,
    route: Route,
    msg: &Message,
    n: u32,
) -> Option<u32> {
    let request = route_request(route, msg.subject.as_str(), &[], &config.api.prefix)?;
    let rid = match request {
        Request::Token { cid, .. } => return Some(partition_of_cid(cid, n)),
        // Changes nothing here: any instance answers (its token event is placed).
        Request::Auth { .. } | Request::Revoke { .. } => return None,
        Request::ResumeTake { from, .. } => return Some(partition_of_cid(from, n)),
        Request::Get { rid }
        | Request::Access { rid, .. }
        | Request::Call { rid, .. }
        | Request::ApiSet { rid, .. }
        | Request::ApiReset { rid, .. } => rid,
    };
    let res = config.resource_of(rid)?;
    Some(match res.pattern.cid_of(rid) {
        Some(cid) => partition_of_cid(cid, n),
        None => partition_of_name(rid, n),
    })
}
