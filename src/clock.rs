//! The engine's clock for expiry: whole seconds since the clock started. The service
//! reads the system clock; tests drive a manual one, so expiry is tested without waiting.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

    /// The wall-clock time, for what is dated in seconds since 1970 (a JWT's `exp`):
    /// the system's, or for a manual clock [`MANUAL_EPOCH_SECS`] plus its ticks.
    pub fn wall(&self) -> SystemTime {
        match &self.0 {
            Source::System(_) => SystemTime::now(),
            Source::Manual(t) => {
                let ticks = u64::from(t.load(Ordering::Relaxed));
                UNIX_EPOCH + Duration::from_secs(MANUAL_EPOCH_SECS + ticks)
            }
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

/// What a manual clock's [`Clock::wall`] says at tick 0, in seconds since 1970:
/// 2026-01-01T00:00:00Z.
pub const MANUAL_EPOCH_SECS: u64 = 1_767_225_600;

/// A duration in whole ticks, saturating (136 years of seconds fit in a `u32`).
pub fn ticks(d: Duration) -> Tick {
    d.as_secs().try_into().unwrap_or(Tick::MAX)
}

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`): what a step of
/// the serving task cost, apart from the time the machine gave to other threads while
/// it ran (which wall time includes).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write; the clock ID is one
    // Linux always has.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

    #[test]
    fn a_thread_s_cpu_time_grows_with_its_work() {
        let before = thread_cpu();
        let mut x = 0u64;
        for _ in 0..20_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu() > before, "after {x} additions");
    }
}
