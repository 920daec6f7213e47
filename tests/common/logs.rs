//! The log lines of connres running in-process, captured for assertions: a `fmt`
//! subscriber (as `connres serve` installs, without colours) made the test thread's
//! default, so it sees what the service tasks on the test's current-thread runtime log,
//! and nothing of other tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What was logged on this thread since [`Logs::capture`], until dropped.
pub struct Logs {
    text: Arc<Mutex<Vec<u8>>>,
    written: watch::Receiver<u64>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Writer {
    text: Arc<Mutex<Vec<u8>>>,
    written: Arc<watch::Sender<u64>>,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.lock().unwrap().extend_from_slice(buf);
        self.written.send_modify(|n| *n += 1);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Writer {
        self.clone()
    }
}

impl Logs {
    /// Captures what `filter` (a `RUST_LOG` value) lets through.
    pub fn capture(filter: &str) -> Logs {
        let text = Arc::new(Mutex::new(Vec::new()));
        let (tx, written) = watch::channel(0);
        let writer = Writer {
            text: text.clone(),
            written: Arc::new(tx),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        Logs {
            text,
            written,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        let text = self.text.lock().unwrap();
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines holding every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .collect()
    }

    /// Waits (at most [`super::WAIT`]) for a line holding every one of `parts`, and
    /// returns it.
    pub async fn wait_for(&mut self, parts: &[&str]) -> String {
        self.wait_until(&format!("{parts:?}"), |l| {
            parts.iter().all(|p| l.contains(p))
        })
        .await
    }

    /// Waits (at most [`super::WAIT`]) for a line `wanted` says yes to (`what`
    /// describes it if none comes), and returns it: woken by each line written.
    pub async fn wait_until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        loop {
            self.written.borrow_and_update();
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return line;
            }
            let changed = tokio::time::timeout_at(deadline, self.written.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "no line {what} in:\n{}",
                self.lines().join("\n")
            );
        }
    }
}
