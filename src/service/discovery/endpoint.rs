//! An [`Endpoint`]: one subscription of the service as discovery lists it, its name and
//! what was handled on it (requests, errors, processing time, the last error), counted by
//! the serving task and read by the responder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::micro::{EndpointInfo, EndpointStats};
use crate::service::route::Route;

/// One subscription of the service, with what was handled on it.
pub(in crate::service) struct Endpoint {
    pub(super) route: Route,
    pub(super) name: String,
    subject: String,
    /// Empty for a subscription outside any queue group (token events).
    queue_group: String,
    /// The resource pattern it serves, if any.
    pub(super) pattern: Option<String>,
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    /// The last RES error reply, decoded only when STATS asks.
    last_error: Mutex<Option<Bytes>>,
}

impl Endpoint {
    pub(in crate::service) fn new(
        route: Route,
        pattern: Option<&str>,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Endpoint {
        Endpoint {
            route,
            name: endpoint_name(route, pattern),
            subject: subject.to_string(),
            queue_group: queue_group.unwrap_or_default().to_string(),
            pattern: pattern.map(str::to_string),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            processing_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// One message handled in `took`; `error` is its reply when that was a RES error.
    pub(in crate::service) fn record(&self, took: Duration, error: Option<Bytes>) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(reply) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
            // Release: whoever sees this error also sees its request counted.
            self.errors.fetch_add(1, Ordering::Release);
        }
    }

    /// The last error as `code:message`, or empty when there was none.
    fn last_error(&self) -> String {
        let reply = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        reply.as_deref().map(describe_error).unwrap_or_default()
    }

    pub(super) fn info(&self) -> EndpointInfo<'_> {
        let mut metadata = BTreeMap::new();
        if let Some(pattern) = &self.pattern {
            metadata.insert("pattern", pattern.as_str());
        }
        EndpointInfo {
            name: &self.name,
            subject: &self.subject,
            queue_group: &self.queue_group,
            metadata,
        }
    }

    pub(super) fn stats(&self) -> EndpointStats<'_> {
        // Read while the serving task counts: errors first, so never more errors than
        // requests.
        let errors = self.errors.load(Ordering::Acquire);
        let requests = self.requests.load(Ordering::Relaxed);
        let processing_time = self.processing_ns.load(Ordering::Relaxed);
        EndpointStats {
            name: &self.name,
            subject: &self.subject,
            queue_group: &self.queue_group,
            num_requests: requests,
            num_errors: errors,
            last_error: self.last_error(),
            processing_time,
            average_processing_time: processing_time.checked_div(requests).unwrap_or(0),
        }
    }
}

/// An endpoint's name, of the characters the micro protocol allows (`A-Z a-z 0-9 - _`):
/// the kind of message, then the pattern with dots as dashes and captures by their
/// name (`get-session-user-cid`). Two patterns may share a name; never a subject.
pub(super) fn endpoint_name(route: Route, pattern: Option<&str>) -> String {
    let kind = match route {
        Route::Get => "get",
        Route::Access => "access",
        Route::Call => "call",
        Route::Token => "token",
        Route::ApiSet => "api-set",
        Route::ApiReset => "api-reset",
        Route::ApiAdd => "api-add",
        Route::ApiRemove => "api-remove",
        Route::Auth => "auth",
        Route::ApiRevoke => "api-revoke",
        Route::ApiResume => "api-resume",
        Route::ApiRecheck => "api-recheck",
        Route::Forwarded => "forwarded",
        Route::Ordered => "ordered",
    };
    let Some(pattern) = pattern else {
        return kind.to_string();
    };
    let mut name = format!("{kind}-");
    for c in pattern.chars() {
        match c {
            '.' => name.push('-'),
            '{' | '}' => {}
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => name.push(c),
            _ => name.push('_'),
        }
    }
    name
}

/// `code:message` of a RES error reply (`{"error": {"code", "message"}}`).
pub(super) fn describe_error(reply: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Reply {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        code: String,
    }
    // The code only: a message may quote what a client sent (a name, a field), and
    // whoever may ask `$SRV.STATS` need not see it.
    match serde_json::from_slice::<Reply>(reply) {
        Ok(Reply { error }) => crate::logs::excerpt(&error.code).into_owned(),
        Err(_) => "an error reply that is not RES JSON".into(),
    }
}
