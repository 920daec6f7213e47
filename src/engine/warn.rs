//! Rate-limited warnings: a broken rule or template under load logs once per interval,
//! not once per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Logs a given warning at most once per interval.
#[derive(Default)]
pub(super) struct WarnLimiter {
    last: HashMap<String, Instant>,
}

impl WarnLimiter {
    const INTERVAL: Duration = Duration::from_secs(10);

    pub(super) fn warn(&mut self, key: &str, log: impl FnOnce()) {
        let now = Instant::now();
        match self.last.get_mut(key) {
            Some(at) if now.duration_since(*at) < Self::INTERVAL => {}
            Some(at) => {
                *at = now;
                log();
            }
            None => {
                self.last.insert(key.to_string(), now);
                log();
            }
        }
    }

    /// Forgets every key (a reload may rename what the keys name).
    pub(super) fn clear(&mut self) {
        self.last.clear();
    }
}
