//! From NATS subscription to engine request: which kind of message a subscription
//! carries, and how its subject becomes a [`Request`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_nats::{Message, Subscriber};
use futures::stream::{Stream, StreamExt};

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
    /// Forwarded by another instance (the shared store): the original subject is in a
    /// header, and decides the route.
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
            // Never recorded as such: a forwarded message is counted under the route
            // of its original subject.
            Route::ApiSet | Route::ApiReset | Route::Forwarded => Kind::Api,
        }
    }
}

/// A subscription, tagged with its route, the pattern it serves (none for the token
/// and API subscriptions) and the endpoint that counts what it received.
pub(super) struct Tagged {
    pub(super) route: Route,
    pub(super) pattern: Option<String>,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) sub: Subscriber,
}

/// A message, with the route and endpoint of the subscription it came on.
pub(super) type Received = (Route, Arc<Endpoint>, Message);

impl Stream for Tagged {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.sub
            .poll_next_unpin(cx)
            .map(|m| m.map(|m| (this.route, this.endpoint.clone(), m)))
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
            let (rid, method) = rest("call.")?.rsplit_once('.')?;
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
        Route::Forwarded => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(route_request(Route::Get, "access.a", b"", "connres").is_none());
    }
}
