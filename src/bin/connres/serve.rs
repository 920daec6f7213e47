//! `connres serve`: the runtime, the metrics listener, signals, and where a failure to
//! start is reported.

use std::path::PathBuf;

use anyhow::Context as _;
use connres::config::{Config, NatsOverrides};
use connres::logs::LogFormat;
use connres::service::Service;

/// Where `serve` reports why it could not start: plain lines on stderr, or log events
/// when logs are JSON (so that every line a collector reads parses).
#[derive(Clone, Copy)]
pub struct Report(pub LogFormat);

impl Report {
    pub fn line(self, line: &str) {
        match self.0 {
            LogFormat::Text => eprintln!("{line}"),
            LogFormat::Json => tracing::error!("{line}"),
        }
    }
}

pub fn serve(
    path: PathBuf,
    nats: NatsOverrides,
    metrics_addr: Option<std::net::SocketAddr>,
    report: Report,
) -> anyhow::Result<()> {
    large_blocks_return_to_the_system();
    let config = Config::load(&path).map_err(|errors| {
        for line in errors.lines() {
            report.line(&line);
        }
        anyhow::anyhow!("{}: invalid config, not starting", path.display())
    })?;
    // One thread: the engine is one task, and a current-thread runtime costs 15-25% less
    // CPU per request than the default multi-thread one (BENCHMARKS.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        // Handlers go in before the service announces itself, so no signal is missed.
        let shutdown = shutdown_signal()?;
        // Bound first: a taken port is an error at start, not a silent gap in metrics.
        let listener = match metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let service = Service::connect(config, &nats).await?.watch(&path)?;
        if let Some(listener) = listener {
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
            tokio::spawn(connres::admin::serve(listener, service.metrics()));
        }
        service.run(shutdown).await?;
        Ok(())
    });
    // Dropping the runtime would wait for whatever runs on its blocking threads, such as
    // a reload reading the config (bounded by the size limits, but on a hung file
    // system not even that): once the service has stopped, nothing there is owed.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    served
}

/// Blocks of 128 KiB or more (a token or a value of a megabyte, its cached reply, a
/// large message) get pages of their own, which go back to the system when freed. By
/// default glibc raises this threshold each time such a block is freed, and the larger
/// blocks then come from the heap, whose free space stays resident: after a burst of
/// tokens of a megabyte, `state.max_bytes` dropped what it kept but RSS stayed at twice
/// the bound (docs/performance.md).
fn large_blocks_return_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` sets a parameter of glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// How long, once the service has stopped, work on the runtime's blocking threads may
/// go on before the process exits without it.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A future that resolves on SIGTERM or SIGINT; the handlers are installed at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
