//! Logs: to stderr, as text (colours only on a terminal) or as one JSON object per line
//! for log collectors; levels by a `RUST_LOG`-style filter; error chains with each cause
//! once.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset: connres at `info`; the NATS client only at
/// `warn`, since connres reports connection events itself, with their causes.
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only when stderr is a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's fields.
    Json,
}

/// Installs the process's log subscriber.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Reports something that can happen per request at most once per [`Throttle::EVERY`],
/// saying how many went unreported since the last line: under a flood a line now and
/// then, never one per message.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    /// Occurrences since the last line that were not reported.
    skipped: u64,
}

impl Throttle {
    /// The least time between two lines.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// One occurrence at `now`: `Some(n)` when it is to be reported (`n` others went
    /// unreported since the last line), `None` when it is only counted.
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < Self::EVERY)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// An error and its causes, each said once: a cause whose text the message already
/// holds (libraries often repeat their source in their own message) is left out.
/// The most characters of text from a client or token that a log line quotes.
pub const EXCERPT_CHARS: usize = 120;

/// `text` for a log line: as it is when short, else its first [`EXCERPT_CHARS`]
/// characters and how long it was, so a client's megabyte never becomes a log line.
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!(
            "{}... ({} characters in all)",
            &text[..cut],
            text.chars().count()
        )
        .into(),
    }
}

pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to NATS at nats://127.0.0.1:1")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("IO error: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn a_throttle_reports_once_per_interval_with_what_it_skipped() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.occurred(t0), Some(0));
        assert_eq!(t.occurred(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.occurred(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.occurred(t0 + Throttle::EVERY), Some(2));
        assert_eq!(t.occurred(t0 + Throttle::EVERY), None);
        assert_eq!(t.occurred(t0 + Throttle::EVERY * 3), Some(1));
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Outer(Middle(io));
        assert_eq!(
            error_chain(&e),
            "cannot connect to NATS at nats://127.0.0.1:1: IO error: Connection refused"
        );
    }
}
