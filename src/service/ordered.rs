//! The ordered channel. Every request subject (token events, gets, access and calls of
//! each pattern, the backend API) is subscribed into one channel, so the serving task
//! takes messages in the order the connection received them: one publisher's messages
//! on different subjects are applied in the order it sent them, and a request never
//! overtakes a token event that reached the connection before it (a gateway asks access
//! with the token of the last event it heard; served first, that token would be learned
//! and the older events applied after it: `tests/reconnect.rs`). Subscriptions with a
//! channel each lose that order once merged (a stream that just yielded is polled again
//! before others that received earlier), measured in `tests/nats_order.rs`. The
//! subscriptions use `Client::subscribe_into`, which the vendored async-nats adds
//! (`vendor/async-nats/PATCHED.md`).
//!
//! A pattern's subscriptions are live before the config that declares it is in force
//! (the reloader makes them beside the serving task): a request that arrives in between
//! is answered by the config in force, as one that arrived just before.

use std::sync::Arc;

use async_nats::{Client, Message};

/// Looked up for every message (its pattern's endpoint): foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use tokio::sync::mpsc;

use super::discovery::Endpoint;
use super::route::{Route, Source, Tagged};
use super::ServiceError;
use crate::config::Config;

/// How many messages the ordered channel holds before the connection drops them (the
/// server then counts a slow consumer).
const CAPACITY: usize = 1 << 18;

/// One subscription into the ordered channel.
pub(super) struct OrderedSub {
    sid: u64,
    route: Route,
    /// The pattern whose requests it receives; for an auth subscription, the auth name.
    pattern: Option<String>,
    pub(super) endpoint: Arc<Endpoint>,
}

impl OrderedSub {
    /// Ends the subscription; what the server sent before it took the end is still
    /// received (and answered as any message for a name no pattern declares).
    pub(super) async fn unsubscribe(self, client: &Client) {
        if let Err(e) = client.unsubscribe_sid_drained(self.sid).await {
            tracing::warn!(error = %e, "unsubscribe failed");
        }
    }
}

/// The ordered channel's subscriptions, and the endpoints that count their messages.
pub(super) struct Ordered {
    client: Client,
    tx: Option<mpsc::Sender<Message>>,
    fixed: Vec<OrderedSub>,
    /// Gets, access and calls, by pattern.
    patterns: HashMap<String, Vec<OrderedSub>>,
    /// Auth requests and the backend's revocations, by auth name.
    auth: HashMap<String, Vec<OrderedSub>>,
    /// Other subjects in the channel (the shared store's probes), by subject.
    extra: Vec<u64>,
    /// The mapped reads of the partitions this instance holds (or held lately), and
    /// the mapped calls of those it follows (`crate::mapping`), by partition.
    partitions: HashMap<(Mapped, u32), u64>,
}

/// Which of a partition's mapped requests a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Mapped {
    /// Gets and access requests, in the queue group: one instance receives each.
    Reads,
    /// Calls, each received by every subscriber.
    Writes,
}

impl Ordered {
    /// The channel, as a stream the serving loop takes messages from.
    pub(super) fn new(client: &Client) -> (Ordered, Tagged) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let ordered = Ordered {
            client: client.clone(),
            tx: Some(tx),
            fixed: Vec::new(),
            patterns: HashMap::default(),
            auth: HashMap::default(),
            extra: Vec::new(),
            partitions: HashMap::default(),
        };
        let stream = Tagged {
            route: Route::Ordered,
            endpoint: Arc::new(Endpoint::new(Route::Ordered, None, "", None)),
            source: Source::Channel(rx),
        };
        (ordered, stream)
    }

    /// A sender of the channel, to subscribe more into it from another task.
    pub(super) fn sender(&self) -> Option<mpsc::Sender<Message>> {
        self.tx.clone()
    }

    /// Subscribes the token event and backend API subjects (`shared`: every instance
    /// receives each; else one instance of the queue group does).
    pub(super) async fn subscribe_fixed(
        &mut self,
        config: &Config,
        shared: bool,
    ) -> Result<(), ServiceError> {
        let prefix = &config.api.prefix;
        let group = (!shared).then(|| config.nats.queue_group.clone());
        // With the memory store every instance tracks every token: no queue group.
        let token = subscribe(
            &self.client,
            self.tx.as_ref(),
            Route::Token,
            None,
            "conn.*.token".into(),
            None,
        )
        .await?;
        let set = subscribe(
            &self.client,
            self.tx.as_ref(),
            Route::ApiSet,
            None,
            format!("{prefix}.set.>"),
            group.clone(),
        )
        .await?;
        let reset = subscribe(
            &self.client,
            self.tx.as_ref(),
            Route::ApiReset,
            None,
            format!("{prefix}.reset.>"),
            group.clone(),
        )
        .await?;
        let add = subscribe(
            &self.client,
            self.tx.as_ref(),
            Route::ApiAdd,
            None,
            format!("{prefix}.add.>"),
            group.clone(),
        )
        .await?;
        let remove = subscribe(
            &self.client,
            self.tx.as_ref(),
            Route::ApiRemove,
            None,
            format!("{prefix}.remove.>"),
            group,
        )
        .await?;
        self.fixed = vec![token, set, reset, add, remove];
        Ok(())
    }

    /// Subscribes another subject into the channel (the shared store's probes).
    pub(super) async fn subscribe_extra(&mut self, subject: String) -> Result<(), ServiceError> {
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        let sid = self
            .client
            .subscribe_into(subject.clone(), None, tx.clone())
            .await
            .map_err(|source| ServiceError::Subscribe { subject, source })?;
        self.extra.push(sid);
        Ok(())
    }

    /// Subscribes partition `p`'s mapped reads (in the queue group `group`) or calls
    /// (`group` none) into the channel.
    pub(super) async fn subscribe_partition(
        &mut self,
        which: Mapped,
        p: u32,
        subject: String,
        group: Option<String>,
    ) -> Result<(), ServiceError> {
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        let sid = self
            .client
            .subscribe_into(subject.clone(), group, tx.clone())
            .await
            .map_err(|source| ServiceError::Subscribe { subject, source })?;
        if let Some(old) = self.partitions.insert((which, p), sid) {
            let _ = self.client.unsubscribe_sid(old).await;
        }
        Ok(())
    }

    /// Ends a subscription of partition `p`'s mapped requests, keeping what the server
    /// sent before it took the end: a read the queue group had already handed to this
    /// instance is placed (forwarded to the owner), a call kept or applied, not lost.
    pub(super) async fn unsubscribe_partition(&mut self, which: Mapped, p: u32) {
        if let Some(sid) = self.partitions.remove(&(which, p)) {
            if let Err(e) = self.client.unsubscribe_sid_drained(sid).await {
                tracing::warn!(error = %e, "unsubscribe failed");
            }
        }
    }

    /// Adds subscriptions made by [`subscribe_pattern`] and [`subscribe_auth`].
    pub(super) fn add(&mut self, subs: Vec<OrderedSub>) {
        for sub in subs {
            match (sub.route, sub.pattern.clone()) {
                (
                    Route::Auth | Route::ApiRevoke | Route::ApiResume | Route::ApiRecheck,
                    Some(name),
                ) => {
                    self.auth.entry(name).or_default().push(sub);
                }
                (_, Some(pattern)) => self.patterns.entry(pattern).or_default().push(sub),
                (_, None) => {}
            }
        }
    }

    /// The endpoint counting an auth name's requests (`route`: its auth requests or
    /// its revocations).
    pub(super) fn auth_endpoint(&self, route: Route, name: &str) -> Option<&Arc<Endpoint>> {
        let subs = self.auth.get(name)?;
        subs.iter().find(|s| s.route == route).map(|s| &s.endpoint)
    }

    /// Ends the subscriptions of these auth names.
    pub(super) async fn unsubscribe_auth(&mut self, names: &[String]) {
        for name in names {
            for sub in self.auth.remove(name).unwrap_or_default() {
                sub.unsubscribe(&self.client).await;
            }
        }
    }

    /// The endpoint that counts a message of the channel, by its route and, for a
    /// pattern's subjects, the pattern its name matches.
    pub(super) fn endpoint(&self, route: Route, pattern: Option<&str>) -> Option<&Arc<Endpoint>> {
        let subs = match pattern {
            Some(p) => self.patterns.get(p)?,
            None => &self.fixed,
        };
        subs.iter().find(|s| s.route == route).map(|s| &s.endpoint)
    }

    /// Every endpoint, for discovery.
    pub(super) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.fixed
            .iter()
            .chain(self.patterns.values().flatten())
            .chain(self.auth.values().flatten())
            .map(|s| s.endpoint.clone())
            .collect()
    }

    /// Ends the subscriptions of these patterns.
    pub(super) async fn unsubscribe_patterns(&mut self, patterns: &[String]) {
        for pattern in patterns {
            for sub in self.patterns.remove(pattern).unwrap_or_default() {
                sub.unsubscribe(&self.client).await;
            }
        }
    }

    /// Ends every subscription: the channel ends once what it holds was taken.
    pub(super) async fn close(&mut self) {
        let sids: Vec<u64> = self
            .fixed
            .drain(..)
            .chain(self.patterns.drain().flat_map(|(_, s)| s))
            .chain(self.auth.drain().flat_map(|(_, s)| s))
            .map(|s| s.sid)
            .chain(self.extra.drain(..))
            .chain(self.partitions.drain().map(|(_, sid)| sid))
            .collect();
        for sid in sids {
            if let Err(e) = self.client.unsubscribe_sid_drained(sid).await {
                tracing::warn!(error = %e, "unsubscribe failed");
            }
        }
        self.tx = None;
    }
}

fn closed() -> ServiceError {
    ServiceError::Nats("the ordered channel is closed".into())
}

/// Subscribes a pattern's gets, access and calls into the channel `tx` (the reloader
/// does this beside the serving task; the serving task adds the result with
/// [`Ordered::add`]). Reads go to one instance of the queue group; calls too, except
/// with the shared store, where every instance receives each and its owner applies it.
pub(super) async fn subscribe_pattern(
    client: &Client,
    tx: Option<&mpsc::Sender<Message>>,
    config: &Config,
    pattern: &str,
) -> Result<Vec<OrderedSub>, ServiceError> {
    let Some(res) = config.resource(pattern) else {
        return Ok(Vec::new());
    };
    let w = res.pattern.wildcard();
    let group = Some(config.nats.queue_group.clone());
    let call_group = group
        .clone()
        .filter(|_| config.state.store.shared().is_none());
    let wanted = [
        (Route::Get, format!("get.{w}"), group.clone()),
        (Route::Access, format!("access.{w}"), group),
        (Route::Call, format!("call.{w}.*"), call_group),
    ];
    subscribe_all(client, tx, pattern, wanted).await
}

/// Subscribes each of `wanted` (route, subject, queue group) for `owner` (a pattern or
/// an auth name); on a failure, nothing of them stays subscribed.
async fn subscribe_all(
    client: &Client,
    tx: Option<&mpsc::Sender<Message>>,
    owner: &str,
    wanted: impl IntoIterator<Item = (Route, String, Option<String>)>,
) -> Result<Vec<OrderedSub>, ServiceError> {
    let mut subs = Vec::new();
    for (route, subject, queue_group) in wanted {
        match subscribe(
            client,
            tx,
            route,
            Some(owner.to_string()),
            subject,
            queue_group,
        )
        .await
        {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                for sub in subs {
                    sub.unsubscribe(client).await;
                }
                return Err(e);
            }
        }
    }
    Ok(subs)
}

/// Subscribes an auth name's requests (`auth.<name>.*`), the backend's revocations
/// (`<prefix>.revoke.<name>`), the takes of resumes (`<prefix>.resume.<name>.*`) and
/// the rechecks (`<prefix>.recheck.<name>.*`) into the channel `tx`. The first two in
/// the queue group: answering one changes nothing here (the token events it publishes
/// do), so any instance may, with either store.
pub(super) async fn subscribe_auth(
    client: &Client,
    tx: Option<&mpsc::Sender<Message>>,
    config: &Config,
    name: &str,
) -> Result<Vec<OrderedSub>, ServiceError> {
    let group = Some(config.nats.queue_group.clone());
    let prefix = &config.api.prefix;
    // A take or a recheck reads and changes the state of the connection it names: with
    // the shared store every instance receives it and the connection's owner applies it.
    let take_group = group
        .clone()
        .filter(|_| config.state.store.shared().is_none());
    let wanted = [
        (Route::Auth, format!("auth.{name}.*"), group.clone()),
        (Route::ApiRevoke, format!("{prefix}.revoke.{name}"), group),
        (
            Route::ApiResume,
            format!("{prefix}.resume.{name}.*"),
            take_group.clone(),
        ),
        (
            Route::ApiRecheck,
            format!("{prefix}.recheck.{name}.*"),
            take_group,
        ),
    ];
    subscribe_all(client, tx, name, wanted).await
}

async fn subscribe(
    client: &Client,
    tx: Option<&mpsc::Sender<Message>>,
    route: Route,
    pattern: Option<String>,
    subject: String,
    queue_group: Option<String>,
) -> Result<OrderedSub, ServiceError> {
    let tx = tx.ok_or_else(closed)?;
    let endpoint = Endpoint::new(route, pattern.as_deref(), &subject, queue_group.as_deref());
    let sid = client
        .subscribe_into(subject.clone(), queue_group, tx.clone())
        .await
        .map_err(|source| ServiceError::Subscribe { subject, source })?;
    Ok(OrderedSub {
        sid,
        route,
        pattern,
        endpoint: Arc::new(endpoint),
    })
}
