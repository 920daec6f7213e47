//! The engine's clock for expiry: whole seconds since the clock started. The service
//! reads the system clock; tests drive a manual one, so expiry is tested without waiting.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds on a [`Clock`]. Four bytes per stored connection instead of an `Instant`'s
/// sixteen; one-second resolution is plenty for idle times of seconds to days.
pub type Tick = u32;

/// A source of [`Tick`]s.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    System(Instant),
    Manual(Arc<AtomicU32>),
}

impl Clock {
    /// The system's monotonic clock, starting now.
    pub fn system() -> Clock {
        Clock(Source::System(Instant::now()))
    }

    /// A clock that moves only when [`Clock::advance`] is called; clones share it.
    pub fn manual() -> Clock {
        Clock(Source::Manual(Arc::new(AtomicU32::new(0))))
    }

    /// Moves a manual clock forward (a system clock ignores this).
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(t) = &self.0 {
            t.fetch_add(ticks(by), Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> Tick {
        match &self.0 {
            Source::System(start) => ticks(start.elapsed()),
            Source::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// A duration in whole ticks, saturating (136 years of seconds fit in a `u32`).
pub fn ticks(d: Duration) -> Tick {
    d.as_secs().try_into().unwrap_or(Tick::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual();
        let other = clock.clone();
        assert_eq!(clock.now(), 0);
        other.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), 90);
        assert_eq!(ticks(Duration::from_secs(u64::MAX)), Tick::MAX);
    }
}
