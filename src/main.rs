//! The `connres` command: parses flags, sets up logging and runs the service or the
//! config check. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use connres::config::{Config, NatsOverrides, Secret};
use connres::explain::{Action, Question};
use connres::logs::{self, LogFormat};
use connres::service::{Service, ServiceError};

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
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        nats: Box<NatsArgs>,
        /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on this
        /// address (e.g. 127.0.0.1:9464). Off when not given.
        #[arg(long, env = "CONNRES_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Validate configs and print what each serves; every error as file:line:col.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Configs to check (files or directories) instead of --config.
        paths: Vec<PathBuf>,
    },
    /// Run rule tests (*.test.yaml): each case's access, set outcome and model, then
    /// the rules and fields no case exercised. Exit 1 on a failing case.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// Test files or directories of them (default: *.test.yaml beside the config).
        paths: Vec<PathBuf>,
    },
    /// What a reload from OLD to NEW would do: patterns, fields and rules changed, the
    /// system.reset it would publish, access decisions that change for the rule tests.
    /// Exit 0: no change; 2: changes; 3: a tested decision changes; 1: an error.
    Plan {
        /// The config in force (file or directory).
        old: PathBuf,
        /// The config to apply (file or directory).
        new: PathBuf,
        /// Rule tests whose decisions to compare (default: *.test.yaml beside NEW).
        #[arg(long = "tests", value_name = "PATH")]
        tests: Vec<PathBuf>,
    },
    /// Show what connres would answer one request, and why, without NATS: the pattern
    /// matched, its captures, every rule with its result, the model served or the
    /// outcome of a call.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The request, as the gateway sends it.
        #[arg(value_enum)]
        action: ExplainAction,
        /// The resource name, e.g. session.user.c1.
        rid: String,
        /// The connection asking.
        #[arg(long)]
        cid: String,
        /// The connection's token, as JSON (omit for logged out).
        #[arg(long, value_parser = json_arg)]
        token: Option<serde_json::Value>,
        /// The call method (for `call`).
        #[arg(long, required_if_eq("action", "call"))]
        method: Option<String>,
        /// The call's parameters, as JSON (for `call`), e.g. '{"theme":"dark"}'.
        #[arg(long, value_parser = json_arg, default_value = "{}")]
        params: serde_json::Value,
        /// The resource's query string (rules read it as `query`).
        #[arg(long)]
        query: Option<String>,
    },
}

/// The config, named the same way by every subcommand.
#[derive(Args)]
struct ConfigArg {
    /// The config: a file, or a directory whose *.yaml files form one config.
    #[arg(
        long,
        env = "CONNRES_CONFIG",
        default_value = "resources.yaml",
        value_name = "PATH"
    )]
    config: PathBuf,
}

/// How to reach NATS. Each option given wins over the file's `nats:` block; credentials
/// given here replace the file's as a whole.
#[derive(Args)]
#[command(next_help_heading = "NATS connection")]
struct NatsArgs {
    /// Server URLs, comma-separated (nats://, tls://, ws://, wss://; default
    /// nats://127.0.0.1:4222). A URL may carry user:password@ or token@.
    #[arg(long, env = "NATS_URL", value_name = "URLS")]
    nats: Option<String>,
    /// Connection name shown by nats-server (default connres).
    #[arg(long, env = "CONNRES_NATS_NAME", value_name = "NAME")]
    nats_name: Option<String>,
    /// Credentials file: user JWT and NKey seed (.creds).
    #[arg(long, env = "NATS_CREDS", value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// File holding an NKey user seed.
    #[arg(long, env = "NATS_NKEY", value_name = "FILE")]
    nats_nkey: Option<PathBuf>,
    /// User name, with --nats-password.
    #[arg(long, env = "NATS_USER", value_name = "USER")]
    nats_user: Option<String>,
    /// Password (prefer the environment: flags show in the process list).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    nats_password: Option<String>,
    /// Token (prefer the environment: flags show in the process list).
    #[arg(long, env = "NATS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (enables TLS).
    #[arg(long, env = "NATS_CA", value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// PEM client certificate, with --nats-key (enables TLS).
    #[arg(long, env = "NATS_CERT", value_name = "FILE")]
    nats_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "NATS_KEY", value_name = "FILE")]
    nats_key: Option<PathBuf>,
    /// TLS handshake before anything else (nats-server `handshake_first`).
    #[arg(long, env = "CONNRES_NATS_TLS_FIRST")]
    nats_tls_first: bool,
    /// Exit after this many failed reconnect attempts in a row (default: retry forever).
    #[arg(long, env = "CONNRES_NATS_MAX_RECONNECTS", value_name = "N")]
    nats_max_reconnects: Option<usize>,
    /// Longest wait between reconnect attempts (default 4s).
    #[arg(long, env = "CONNRES_NATS_RECONNECT_MAX_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    nats_reconnect_max_delay: Option<std::time::Duration>,
    /// How long one connection attempt may take (default 5s).
    #[arg(long, env = "CONNRES_NATS_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    nats_connect_timeout: Option<std::time::Duration>,
}

impl NatsArgs {
    fn overrides(self) -> NatsOverrides {
        NatsOverrides {
            url: self.nats,
            name: self.nats_name,
            creds: self.nats_creds,
            nkey: self.nats_nkey,
            user: self.nats_user,
            password: self.nats_password.map(Secret::new),
            token: self.nats_token.map(Secret::new),
            ca: self.nats_ca,
            cert: self.nats_cert,
            key: self.nats_key,
            tls_first: self.nats_tls_first,
            max_reconnects: self.nats_max_reconnects,
            reconnect_max_delay: self.nats_reconnect_max_delay,
            connect_timeout: self.nats_connect_timeout,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExplainAction {
    Get,
    Access,
    Call,
}

fn json_arg(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init(cli.log_format);
    let report = Report(cli.log_format);
    match cli.command {
        Command::Check { config, paths } => {
            let paths = if paths.is_empty() {
                vec![config.config]
            } else {
                paths
            };
            paths
                .iter()
                .fold(ExitCode::SUCCESS, |code, path| match check(path) {
                    ExitCode::SUCCESS => code,
                    failed => failed,
                })
        }
        Command::Test { config, paths } => test(&config.config, paths),
        Command::Plan { old, new, tests } => plan(&old, &new, tests),
        Command::Explain {
            config,
            action,
            rid,
            cid,
            token,
            method,
            params,
            query,
        } => {
            let action = match action {
                ExplainAction::Get => Action::Get,
                ExplainAction::Access => Action::Access,
                ExplainAction::Call => Action::Call {
                    method: method.unwrap_or_default(),
                    params,
                },
            };
            let question = Question {
                action,
                rid,
                cid,
                token,
                query,
            };
            explain(&config.config, &question)
        }
        Command::Serve {
            config,
            nats,
            metrics_addr,
        } => match serve(config.config, nats.overrides(), metrics_addr, report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report.line(&format!("connres: {}", logs::error_chain(e.as_ref())));
                if let Some(hint) = e
                    .downcast_ref::<ServiceError>()
                    .and_then(ServiceError::hint)
                {
                    report.line(&format!("connres: {hint}."));
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

fn load_or_report(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            for line in errors.lines() {
                eprintln!("{line}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
            None
        }
    }
}

fn plan(old: &std::path::Path, new: &std::path::Path, tests: Vec<PathBuf>) -> ExitCode {
    let (Some(old_config), Some(new_config)) = (load_or_report(old), load_or_report(new)) else {
        return ExitCode::FAILURE;
    };
    let tests = if tests.is_empty() {
        connres::ruletest::discover(new)
    } else {
        tests
    };
    let suites = match connres::ruletest::load(&tests) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                for line in e.lines() {
                    eprintln!("{line}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    println!("plan: {} -> {}", old.display(), new.display());
    let plan = connres::plan::plan(&old_config, &new_config, &suites);
    print!("{}", plan.text);
    ExitCode::from(plan.verdict as u8)
}

fn test(path: &std::path::Path, paths: Vec<PathBuf>) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let paths = if paths.is_empty() {
        connres::ruletest::discover(path)
    } else {
        paths
    };
    if paths.is_empty() {
        eprintln!(
            "connres: no rule tests: no *.test.yaml beside {}; name test files as arguments",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let suites = match connres::ruletest::load(&paths) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                for line in e.lines() {
                    eprintln!("{line}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    let report = connres::ruletest::run(&config, &path.display().to_string(), &suites);
    print!("{}", report.text());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn explain(path: &std::path::Path, question: &Question) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    match connres::explain::explain(&config, question) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("connres: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
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
    nats: NatsOverrides,
    metrics_addr: Option<std::net::SocketAddr>,
    report: Report,
) -> anyhow::Result<()> {
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
        let service = Service::connect(config, &nats).await?.watch(&path)?;
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
