//! Where a message is handled: here when this instance serves its partition, else
//! forwarded to the partition's owner (reply subject kept, original subject in the
//! forwarding subject), or held while the partition has no owner. What arrives while
//! this instance was paused, or after its lease ran out, is dropped.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Message};

use super::{Cluster, BARRIER};
use crate::config::Config;
use crate::engine::Request;
use crate::service::discovery::Endpoint;
use crate::service::route::{route_request, Route};
use crate::store::record::partition_of;

/// Forwarded this often, a message is held until the owners settle.
const MAX_HOPS: u32 = 3;
/// The most messages held while their partitions have no owner.
const MAX_HELD: usize = 10_000;

/// A message waiting for its partition to have an owner.
pub(super) struct Held {
    since: Instant,
    route: Route,
    endpoint: Arc<Endpoint>,
    msg: Message,
}

/// A message to handle here, with the partition it belongs to (none: no pattern
/// matches its name, so any instance may answer it).
pub(in crate::service) struct Admitted {
    pub(in crate::service) route: Route,
    pub(in crate::service) endpoint: Arc<Endpoint>,
    pub(in crate::service) msg: Message,
    pub(in crate::service) partition: Option<u32>,
}

impl Cluster {
    /// Where a message is handled: here (returned), or forwarded to its partition's
    /// owner, or held until the partition has one.
    pub(in crate::service) async fn admit(
        &mut self,
        client: &Client,
        config: &Config,
        route: Route,
        endpoint: Arc<Endpoint>,
        mut msg: Message,
    ) -> Option<Admitted> {
        let mut hops = 0;
        let mut route = route;
        if route == Route::Forwarded {
            let rest = msg
                .subject
                .strip_prefix(self.forward_subject.as_str())
                .and_then(|r| r.strip_prefix('.'))?;
            if rest == BARRIER {
                if let Some(done) = self.barrier.take() {
                    self.stale.iter_mut().for_each(|s| *s = false);
                    let _ = done.send(());
                }
                return None;
            }
            let (count, subject) = rest.split_once('.')?;
            hops = count.parse().ok()?;
            route = route_of(subject, &config.api.prefix)?;
            msg.subject = subject.into();
        }
        self.place(client, config, route, endpoint, msg, hops).await
    }

    async fn place(
        &mut self,
        client: &Client,
        config: &Config,
        route: Route,
        endpoint: Arc<Endpoint>,
        msg: Message,
        hops: u32,
    ) -> Option<Admitted> {
        let partition = partition_of_message(config, route, &msg, self.settings.partitions);
        let Some(p) = partition else {
            return Some(Admitted {
                route,
                endpoint,
                msg,
                partition: None,
            });
        };
        let i = p as usize;
        if self.barrier.is_some() && self.stale[i] {
            // This instance was paused and lost the partition meanwhile: whatever it
            // applied or forwarded now could come after what the new owner did since.
            self.metrics.stale.inc();
            tracing::warn!(partition = p, subject = %msg.subject, "dropped a message that arrived while this instance was paused: its partition moved meanwhile");
            return None;
        }
        if self.served[i] {
            if self.deadlines.valid(i, Instant::now()) {
                return Some(Admitted {
                    route,
                    endpoint,
                    msg,
                    partition: Some(p),
                });
            }
            // The lease ran out while this instance served it (a pause, or NATS out of
            // reach): another instance may serve it now, so nothing is published.
            self.metrics.stale.inc();
            tracing::warn!(partition = p, subject = %msg.subject, "dropped a message: this instance's lease on its partition ran out");
            return None;
        }
        match self.owners[i].clone() {
            Some(owner) if *owner != *self.id && hops < MAX_HOPS => {
                self.forward(client, &owner, msg, hops + 1).await;
            }
            _ => self.hold(route, endpoint, msg),
        }
        None
    }

    async fn forward(&self, client: &Client, owner: &str, msg: Message, hops: u32) {
        let to = format!(
            "{}{owner}.{hops}.{}",
            self.forward_prefix,
            msg.subject.as_str()
        );
        let sent = match msg.reply {
            Some(reply) => client.publish_with_reply(to, reply, msg.payload).await,
            None => client.publish(to, msg.payload).await,
        };
        match sent {
            Ok(()) => {
                self.metrics.forwarded.inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not forward a message to its partition's owner")
            }
        }
    }

    fn hold(&mut self, route: Route, endpoint: Arc<Endpoint>, msg: Message) {
        if self.held.len() >= MAX_HELD {
            self.metrics.dropped.inc();
            tracing::error!(subject = %msg.subject, "dropped a message: too many wait for their partitions to have an owner");
            return;
        }
        self.held.push_back(Held {
            since: Instant::now(),
            route,
            endpoint,
            msg,
        });
    }

    /// Places the held messages again (after the owners changed); returns the ones to
    /// handle here. Messages held longer than two leases are dropped.
    pub(in crate::service) async fn release_held(
        &mut self,
        client: &Client,
        config: &Config,
    ) -> Vec<Admitted> {
        let mut here = Vec::new();
        let too_old = self.settings.lease * 2;
        for h in std::mem::take(&mut self.held) {
            if h.since.elapsed() > too_old {
                self.metrics.dropped.inc();
                tracing::error!(subject = %h.msg.subject, "dropped a message: its partition had no owner for two leases");
                continue;
            }
            if let Some(a) = self
                // The owners changed since it was held: it may take its hops again
                // (one held after bouncing between two views during a handover would
                // otherwise never leave).
                .place(client, config, h.route, h.endpoint, h.msg, 0)
                .await
            {
                here.push(a);
            }
        }
        here
    }
}

/// The route of a forwarded message, from its original subject.
fn route_of(subject: &str, prefix: &str) -> Option<Route> {
    let api = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'));
    Some(if subject.starts_with("get.") {
        Route::Get
    } else if subject.starts_with("access.") {
        Route::Access
    } else if subject.starts_with("call.") {
        Route::Call
    } else if subject.starts_with("conn.") && subject.ends_with(".token") {
        Route::Token
    } else if api.is_some_and(|r| r.starts_with("set.")) {
        Route::ApiSet
    } else if api.is_some_and(|r| r.starts_with("reset.")) {
        Route::ApiReset
    } else {
        return None;
    })
}

/// The partition a message belongs to: its connection's (a token event's cid, or the
/// cid in the model's name), or its model's when the name has no cid. `None` when no
/// pattern matches the name.
fn partition_of_message(config: &Config, route: Route, msg: &Message, n: u32) -> Option<u32> {
    let request = route_request(route, msg.subject.as_str(), &[], &config.api.prefix)?;
    let text = match request {
        Request::Token { cid, .. } => cid,
        Request::Get { rid }
        | Request::Access { rid, .. }
        | Request::Call { rid, .. }
        | Request::ApiSet { rid, .. }
        | Request::ApiReset { rid, .. } => {
            let res = config.resource_of(rid)?;
            res.pattern.cid_of(rid).unwrap_or(rid)
        }
    };
    Some(partition_of(text, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_subjects_find_their_route() {
        assert_eq!(route_of("get.session.user.c1", "connres"), Some(Route::Get));
        assert_eq!(route_of("access.a.b", "connres"), Some(Route::Access));
        assert_eq!(route_of("call.a.b.set", "connres"), Some(Route::Call));
        assert_eq!(route_of("conn.c1.token", "connres"), Some(Route::Token));
        assert_eq!(route_of("my.api.set.a.c1", "my.api"), Some(Route::ApiSet));
        assert_eq!(
            route_of("my.api.reset.a.c1", "my.api"),
            Some(Route::ApiReset)
        );
        assert_eq!(route_of("my.apix.set.a", "my.api"), None);
        assert_eq!(route_of("event.a.change", "connres"), None);
    }
}
