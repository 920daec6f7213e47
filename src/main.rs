//! The `connres` command: parses flags, sets up logging and runs the service or the
//! config check. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use connres::config::Config;
use connres::logs::{self, LogFormat};
use connres::service::{Service, ServiceError, DEFAULT_NATS_URL};

#[derive(Parser)]
#[command(
    name = "connres",
    version,
    about = "Serve per-connection RES resources declared in resources.yaml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (colours only on a terminal) or as one JSON object per line.
    /// Levels: `RUST_LOG` (default `info,async_nats=warn`).
    #[arg(long, global = true, env = "CONNRES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every declared resource over NATS.
    Serve {
        /// The resources file.
        #[arg(long, env = "CONNRES_CONFIG", default_value = "resources.yaml")]
        config: PathBuf,
        /// NATS server URL; overrides `nats.url` in the file.
        #[arg(long, env = "NATS_URL")]
        nats: Option<String>,
        /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on this
        /// address (e.g. 127.0.0.1:9464). Off when not given.
        #[arg(long, env = "CONNRES_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Validate a resources file and print what it serves.
    Check {
        /// The resources file.
        #[arg(env = "CONNRES_CONFIG", default_value = "resources.yaml")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init(cli.log_format);
    let report = Report(cli.log_format);
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Serve {
            config,
            nats,
            metrics_addr,
        } => match serve(config, nats, metrics_addr, report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report.line(&format!("connres: {}", logs::error_chain(e.as_ref())));
                if let Some(ServiceError::Connect { .. }) = e.downcast_ref::<ServiceError>() {
                    report.line("connres: is nats-server running there? Point connres at another server with --nats URL, NATS_URL or `nats: { url: ... }` in the config.");
                }
                ExitCode::FAILURE
            }
        },
    }
}

/// Where `serve` reports why it could not start: plain lines on stderr, or log events
/// when logs are JSON (so that every line a collector reads parses).
#[derive(Clone, Copy)]
struct Report(LogFormat);

impl Report {
    fn line(self, line: &str) {
        match self.0 {
            LogFormat::Text => eprintln!("{line}"),
            LogFormat::Json => tracing::error!("{line}"),
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::load_file(file) {
        Ok(config) => {
            print!("{}", connres::summary(&config));
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for line in errors.lines() {
                eprintln!("{line}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.errors.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(
    path: PathBuf,
    nats: Option<String>,
    metrics_addr: Option<std::net::SocketAddr>,
    report: Report,
) -> anyhow::Result<()> {
    let config = Config::load_file(&path).map_err(|errors| {
        for line in errors.lines() {
            report.line(&line);
        }
        anyhow::anyhow!("{}: invalid config, not starting", path.display())
    })?;
    let url = nats
        .or_else(|| config.nats.url.clone())
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
    // One thread: the engine is one task, and a current-thread runtime costs 15-25% less
    // CPU per request than the default multi-thread one (BENCHMARKS.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
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
        let service = Service::start(config, &url).await?.watch(&path)?;
        if let Some(listener) = listener {
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
            tokio::spawn(connres::admin::serve(listener, service.metrics()));
        }
        service.run(shutdown).await?;
        Ok(())
    })
}

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
