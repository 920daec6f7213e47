//! From NATS subscription to engine request: which kind of message a subscription
//! carries, which kind a subject is (for the messages of the ordered channel and
//! forwarded ones), and how a subject becomes a [`Request`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_nats::{Message, Subscriber};
use futures::stream::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::discovery::Endpoint;
use crate::engine::Request;

/// Which kind of message a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Get,
    Access,
    Call,
    Token,
    ApiSet,
    ApiReset,
    /// `<prefix>.add.<rid>`: the backend adds an item to a collection.
    ApiAdd,
    /// `<prefix>.remove.<rid>`: the backend removes an item from a collection.
    ApiRemove,
    /// `auth.<name>.<method>` of a name the `auth:` block declares.
    Auth,
    /// `<prefix>.revoke.<name>`: the backend revokes tokens of an auth name.
    ApiRevoke,
    /// `<prefix>.resume.<name>.<cid>`: an instance takes a connection's session for a
    /// resume.
    ApiResume,
    /// `<prefix>.recheck.<name>.<cid>`: an instance asks a connection's owner to verify
    /// its JWT again.
    ApiRecheck,
    /// From the ordered channel (every request subject, in the order the connection
    /// received them: `ordered`): the subject decides the route.
    Ordered,
    /// Forwarded by another instance (the shared store): the original subject is in the
    /// forwarding subject, and decides the route.
    Forwarded,
}

impl Route {
    /// The kind of message, for metrics.
    pub(super) fn kind(self) -> crate::metrics::Kind {
        use crate::metrics::Kind;
        match self {
            Route::Get => Kind::Get,
            Route::Access => Kind::Access,
            Route::Call => Kind::Call,
            Route::Token => Kind::Token,
            Route::Auth | Route::ApiRevoke | Route::ApiResume | Route::ApiRecheck => Kind::Auth,
            // Never recorded as such: an ordered or forwarded message is counted under
            // the route of its subject.
            Route::ApiSet
            | Route::ApiReset
            | Route::ApiAdd
            | Route::ApiRemove
            | Route::Ordered
            | Route::Forwarded => Kind::Api,
        }
    }

    /// The route of a subject, for messages whose subscription does not say (the
    /// ordered channel, forwarded messages). The one place a subject's kind is read
    /// from the subject itself: a new request kind goes here and in [`route_request`].
    pub(super) fn of_subject(subject: &str, prefix: &str) -> Option<Route> {
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
        } else if subject.starts_with("auth.") {
            Route::Auth
        } else if api.is_some_and(|r| r.starts_with("set.")) {
            Route::ApiSet
        } else if api.is_some_and(|r| r.starts_with("reset.")) {
            Route::ApiReset
        } else if api.is_some_and(|r| r.starts_with("add.")) {
            Route::ApiAdd
        } else if api.is_some_and(|r| r.starts_with("remove.")) {
            Route::ApiRemove
        } else if api.is_some_and(|r| r.starts_with("revoke.")) {
            Route::ApiRevoke
        } else if api.is_some_and(|r| r.starts_with("resume.")) {
            Route::ApiResume
        } else if api.is_some_and(|r| r.starts_with("recheck.")) {
            Route::ApiRecheck
        } else {
            return None;
        })
    }
}

/// Where a tagged stream's messages come from.
pub(super) enum Source {
    Sub(Subscriber),
    /// The ordered channel: the messages of several subscriptions, in arrival order.
    Channel(mpsc::Receiver<Message>),
}

/// A stream of messages, tagged with its route and the endpoint that counts what it
/// received.
pub(super) struct Tagged {
    pub(super) route: Route,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) source: Source,
}

/// A message, with the route and endpoint of the stream it came on.
pub(super) type Received = (Route, Arc<Endpoint>, Message);

impl Stream for Tagged {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = match &mut this.source {
            Source::Sub(sub) => sub.poll_next_unpin(cx),
            Source::Channel(rx) => rx.poll_recv(cx),
        };
        next.map(|m| m.map(|m| (this.route, this.endpoint.clone(), m)))
    }
}

/// The serving task's tagged streams, polled in turns (the one after the last to give
/// a message first), ended ones let go; ends when every stream has. What
/// `futures::stream::SelectAll` does, without its per-message allocation and
/// re-queueing: with one or two streams (the ordered channel, and the forwarded
/// messages of the shared store) that cost about 750 instructions a message.
#[derive(Default)]
pub(super) struct Merged {
    streams: Vec<Tagged>,
    next: usize,
}

impl Merged {
    pub(super) fn push(&mut self, stream: Tagged) {
        self.streams.push(stream);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Tagged> {
        self.streams.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Tagged> {
        self.streams.iter_mut()
    }
}

impl Stream for Merged {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut tried = 0;
        while tried < this.streams.len() {
            let i = (this.next + tried) % this.streams.len();
            match this.streams[i].poll_next_unpin(cx) {
                Poll::Ready(Some(received)) => {
                    this.next = i + 1;
                    return Poll::Ready(Some(received));
                }
                // Ended: let go; the stream now at `i` has not been tried.
                Poll::Ready(None) => {
                    this.streams.remove(i);
                    if i < this.next {
                        this.next -= 1;
                    }
                }
                Poll::Pending => tried += 1,
            }
        }
        if this.streams.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// Turns a subject into an engine request.
pub(super) fn route_request<'a>(
    route: Route,
    subject: &'a str,
    payload: &'a [u8],
    prefix: &str,
) -> Option<Request<'a>> {
    let rest = |p: &str| subject.strip_prefix(p);
    Some(match route {
        Route::Get => Request::Get { rid: rest("get.")? },
        Route::Access => Request::Access {
            rid: rest("access.")?,
            payload,
        },
        Route::Call => {
            let (rid, method) = crate::pattern::split_last(rest("call.")?)?;
            Request::Call {
                rid,
                method,
                payload,
            }
        }
        Route::Token => Request::Token {
            cid: rest("conn.")?.strip_suffix(".token")?,
            payload,
        },
        Route::ApiSet => Request::ApiSet {
            rid: rest(prefix)?.strip_prefix(".set.")?,
            payload,
        },
        Route::ApiReset => Request::ApiReset {
            rid: rest(prefix)?.strip_prefix(".reset.")?,
            payload,
        },
        Route::ApiAdd => Request::ApiAdd {
            rid: rest(prefix)?.strip_prefix(".add.")?,
            payload,
        },
        Route::ApiRemove => Request::ApiRemove {
            rid: rest(prefix)?.strip_prefix(".remove.")?,
            payload,
        },
        Route::Auth => {
            let (name, method) = rest("auth.")?.rsplit_once('.')?;
            Request::Auth {
                name,
                method,
                payload,
            }
        }
        Route::ApiRevoke => Request::Revoke {
            name: rest(prefix)?.strip_prefix(".revoke.")?,
            payload,
        },
        Route::ApiResume => {
            let (name, from) = rest(prefix)?.strip_prefix(".resume.")?.rsplit_once('.')?;
            Request::ResumeTake {
                name,
                from,
                payload,
            }
        }
        Route::ApiRecheck => {
            let (name, cid) = rest(prefix)?.strip_prefix(".recheck.")?.rsplit_once('.')?;
            Request::Recheck { name, cid }
        }
        Route::Ordered | Route::Forwarded => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str) -> Message {
        Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn merged_streams_take_turns_and_end_when_all_have() {
        use futures::FutureExt;
        let endpoint = Arc::new(Endpoint::new(Route::Get, None, "s", None));
        let (a_tx, a_rx) = mpsc::channel(8);
        let (b_tx, b_rx) = mpsc::channel(8);
        let mut merged = Merged::default();
        for (route, rx) in [(Route::Get, a_rx), (Route::Token, b_rx)] {
            merged.push(Tagged {
                route,
                endpoint: endpoint.clone(),
                source: Source::Channel(rx),
            });
        }
        for s in ["a1", "a2", "a3"] {
            a_tx.try_send(message(s)).unwrap();
        }
        b_tx.try_send(message("b1")).unwrap();
        let mut next = || {
            merged
                .next()
                .now_or_never()
                .map(|m| m.map(|(route, _, msg)| (route, msg.subject.to_string())))
        };
        let got = |route, s: &str| Some(Some((route, s.to_string())));
        assert_eq!(next(), got(Route::Get, "a1"));
        assert_eq!(next(), got(Route::Token, "b1"), "the other stream's turn");
        assert_eq!(next(), got(Route::Get, "a2"));
        assert_eq!(next(), got(Route::Get, "a3"), "the only one with a message");
        assert_eq!(next(), None, "nothing waiting: pending");
        drop(a_tx);
        b_tx.try_send(message("b2")).unwrap();
        assert_eq!(next(), got(Route::Token, "b2"), "an ended stream is let go");
        drop(b_tx);
        assert_eq!(next(), Some(None), "every stream ended");
    }

    #[test]
    fn routes_subjects() {
        assert!(matches!(
            route_request(Route::Call, "call.session.prefs.c1.set", b"{}", "connres"),
            Some(Request::Call {
                rid: "session.prefs.c1",
                method: "set",
                ..
            })
        ));
        assert!(matches!(
            route_request(Route::Token, "conn.c1.token", b"{}", "connres"),
            Some(Request::Token { cid: "c1", .. })
        ));
        assert!(matches!(
            route_request(Route::ApiSet, "my.api.set.a.b", b"{}", "my.api"),
            Some(Request::ApiSet { rid: "a.b", .. })
        ));
        assert!(matches!(
            route_request(Route::ApiReset, "connres.reset.a.b", b"", "connres"),
            Some(Request::ApiReset { rid: "a.b", .. })
        ));
        assert!(matches!(
            route_request(Route::Auth, "auth.my.session.login", b"{}", "connres"),
            Some(Request::Auth {
                name: "my.session",
                method: "login",
                ..
            })
        ));
        assert!(route_request(Route::Get, "access.a", b"", "connres").is_none());
    }

    #[test]
    fn subjects_find_their_route() {
        let of = |s| Route::of_subject(s, "my.api");
        assert_eq!(of("get.session.user.c1"), Some(Route::Get));
        assert_eq!(of("access.a.b"), Some(Route::Access));
        assert_eq!(of("call.a.b.set"), Some(Route::Call));
        assert_eq!(of("conn.c1.token"), Some(Route::Token));
        assert_eq!(of("auth.session.login"), Some(Route::Auth));
        assert_eq!(of("my.api.set.a.c1"), Some(Route::ApiSet));
        assert_eq!(of("my.api.reset.a.c1"), Some(Route::ApiReset));
        assert_eq!(of("my.api.add.a.c1"), Some(Route::ApiAdd));
        assert_eq!(of("my.api.remove.a.c1"), Some(Route::ApiRemove));
        assert_eq!(of("my.api.revoke.session"), Some(Route::ApiRevoke));
        assert_eq!(of("my.apix.set.a"), None);
        assert_eq!(of("event.a.change"), None);
    }
}
