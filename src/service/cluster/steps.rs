//! The serving task's side of the shared store: placing each message (applied here,
//! forwarded, kept or dropped, as the ownership protocol says) and carrying out the
//! protocol's actions on the engine and the store. Beside it: `feed` (what the
//! connection, the bucket and the clock tell the protocol), `partition` (actions on a
//! whole partition's state), `publish` (writes, outcomes once written, leaving) and
//! `evict` (the size bound).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;

use super::evict::Held;
use super::io;
use super::partition::partition_of_unit;
use crate::config::Config;
use crate::engine::Request;
use crate::ownership::{Action, Dropped, Incoming, Input, Kind, Placement};
use crate::protocol;
use crate::service::discovery::Endpoint;
use crate::service::route::{route_request, Route};
use crate::service::serve::Admitted;
use crate::service::Service;
use crate::store::record::{partition_of_cid, partition_of_name, stable_hash};
use crate::store::token_digest;

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
                self.admit(Held::Serve(Admitted {
                    route,
                    endpoint,
                    msg,
                    partition,
                    waited,
                }))
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
            Some(
                Request::ApiSet { rid, .. }
                | Request::ApiReset { rid, .. }
                | Request::ApiAdd { rid, .. }
                | Request::ApiRemove { rid, .. },
            ) => rid,
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
    pub(super) fn superseded(&mut self, route: Route, msg: &Message) {
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
            Action::Load { p, op } => {
                let probe = format!("{}.l.{p}.{op}", cluster.probe_subject);
                io::spawn_load(
                    &cluster.kv,
                    &cluster.io_tx,
                    &cluster.client,
                    probe,
                    p,
                    op,
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
                Box::pin(self.admit(Held::Serve(Admitted {
                    route,
                    endpoint,
                    msg,
                    partition,
                    waited,
                })))
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
            } => Box::pin(self.admit(Held::Supersede(route, msg))).await,
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
                let mut dropped = cluster.pipeline.forget(p);
                let held = cluster.cold.forget(p);
                dropped += held.iter().filter(|h| h.is_message()).count();
                cluster.loaded.remove(&p);
                self.engine
                    .store_mut()
                    .forget_where(|k| partition_of_unit(k, n) != p);
                self.engine
                    .presence_forget(|rid| partition_of_name(rid, n) != p);
                if dropped > 0 {
                    tracing::warn!(partition = p, outcomes = dropped, "no longer holds the partition: outcomes waiting for their writes (or messages for units being read back) were not published (the gateway times those requests out)");
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
}

/// The connection ID of a token event.
pub(in crate::service) fn token_cid(route: Route, msg: &Message) -> Option<&str> {
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
        Route::Call
        | Route::ApiSet
        | Route::ApiReset
        | Route::ApiAdd
        | Route::ApiRemove
        | Route::ApiResume
        | Route::ApiRecheck => {
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
        Request::ResumeTake { from: cid, .. } | Request::Recheck { cid, .. } => {
            return Some(partition_of_cid(cid, n))
        }
        Request::Get { rid }
        | Request::Access { rid, .. }
        | Request::Call { rid, .. }
        | Request::ApiSet { rid, .. }
        | Request::ApiReset { rid, .. }
        | Request::ApiAdd { rid, .. }
        | Request::ApiRemove { rid, .. } => rid,
    };
    let res = config.resource_of(rid)?;
    Some(match res.pattern.cid_of(rid) {
        Some(cid) => partition_of_cid(cid, n),
        None => partition_of_name(rid, n),
    })
}
