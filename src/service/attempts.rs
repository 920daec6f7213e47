//! Failed attempts per connection (logins refused for their token, resumes refused for
//! their key), counted within a window: past the limit, the connection's next attempts
//! are refused without being tried until the window is over. Each instance counts what
//! it answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// Connections remembered at most (then those out of their window are forgotten, or
/// all).
const REMEMBERED: usize = 10_000;

/// Failed attempts per connection, at most `max` per [`WINDOW`].
#[derive(Debug)]
pub(super) struct Attempts {
    max: u32,
    failed: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Attempts {
    pub(super) fn new(max: u32) -> Attempts {
        Attempts {
            max,
            failed: Mutex::default(),
        }
    }

    /// How many failures a connection may have within the window.
    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// Whether `cid` may try again.
    pub(super) fn allowed(&self, cid: &str, now: Instant) -> bool {
        let map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(cid)
            .is_none_or(|(n, since)| *n < self.max || now.duration_since(*since) >= WINDOW)
    }

    pub(super) fn failed(&self, cid: &str, now: Instant) {
        let mut map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= REMEMBERED {
            map.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if map.len() >= REMEMBERED {
                map.clear();
            }
        }
        let entry = map.entry(cid.to_string()).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_connection_within_a_window() {
        let limits = Attempts::new(5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limits.allowed("c1", t0));
            limits.failed("c1", t0);
        }
        assert!(!limits.allowed("c1", t0));
        assert!(
            limits.allowed("c2", t0),
            "another connection is not limited"
        );
        assert!(limits.allowed("c1", t0 + WINDOW), "a new window");
    }
}
