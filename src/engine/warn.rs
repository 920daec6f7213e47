//! Rate-limited warnings: a broken rule or template under load logs once per interval,
//! not once per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Logs a given warning at most once per interval, with how many were left out since.
#[derive(Default)]
pub(super) struct WarnLimiter {
    last: HashMap<String, (Instant, u64)>,
}

impl WarnLimiter {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Calls `log` with the number of these warnings left out since the last one, or
    /// counts this one as left out.
    pub(super) fn warn(&mut self, key: &str, log: impl FnOnce(u64)) {
        let now = Instant::now();
        match self.last.get_mut(key) {
            Some((at, skipped)) if now.duration_since(*at) < Self::INTERVAL => *skipped += 1,
            Some((at, skipped)) => {
                *at = now;
                log(std::mem::take(skipped));
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                log(0);
            }
        }
    }

    /// Forgets every key (a reload may rename what the keys name).
    pub(super) fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_repeated_within_the_interval_is_counted_not_logged() {
        let mut w = WarnLimiter::default();
        let mut logged = Vec::new();
        for _ in 0..5 {
            w.warn("k", |skipped| logged.push(skipped));
        }
        w.warn("other", |skipped| logged.push(100 + skipped));
        assert_eq!(logged, vec![0, 100]);
        // Past the interval, the next one says how many were left out.
        w.last.get_mut("k").unwrap().0 -= WarnLimiter::INTERVAL;
        w.warn("k", |skipped| logged.push(skipped));
        assert_eq!(logged, vec![0, 100, 4]);
    }
}
