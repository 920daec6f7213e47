//! The command line: every subcommand and flag (clap), and the NATS flags turned into
//! the library's overrides.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use connres::config::{NatsOverrides, Secret};
use connres::logs::LogFormat;

#[derive(Parser)]
#[command(
    name = "connres",
    version,
    about = "Serve per-connection RES resources declared in resources.yaml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text (colours only on a terminal) or as one JSON object per line.
    /// Levels: `RUST_LOG` (default `info,async_nats=warn`).
    #[arg(long, global = true, env = "CONNRES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Run rule tests (*.test.yaml): each case's access, set outcome and model (or each
    /// step's, for a case with `steps`), then the rules and fields no case exercised.
    /// Exit 1 on a failing case.
    Test {
        /// The config for test files that name none (no `config:` key, no X.yaml beside
        /// X.test.yaml; without --config, resources.yaml for those beside it). A test
        /// file that names another config is an error. Without test files: the config
        /// whose *.test.yaml to run (default resources.yaml).
        #[arg(long, env = "CONNRES_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Test files or directories of them (default: the *.test.yaml beside the
        /// config that test it). Each runs against its own config: its `config:` key
        /// (relative to the file), else the X.yaml beside X.test.yaml.
        paths: Vec<PathBuf>,
    },
    /// What a reload from OLD to NEW would do: patterns, fields and rules changed, the
    /// system.reset it would publish, the decisions (access answers, outcomes of
    /// clients' calls) that change for the rule tests.
    /// Exit 0: no change; 2: changes (resources added or removed included); 3: a
    /// tested decision on a resource served before and after changes; 1: an error.
    Plan {
        /// The config in force (file or directory).
        old: PathBuf,
        /// The config to apply (file or directory).
        new: PathBuf,
        /// Rule tests whose decisions to compare (default: the *.test.yaml beside NEW
        /// that test it).
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
    /// Print the nats-server `mappings` block that routes each get and access to the
    /// instance owning its partition (`state.store: nats`), saving a forwarding hop, and
    /// each call to the owner and the instance ranked next, not to every instance.
    /// Optional: without it reads are forwarded and calls reach every instance; connres
    /// logs whether it is in force.
    Mapping {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the JSON Schema of the config file, for editors (it is also committed as
    /// connres.schema.json).
    Schema,
}

/// The config when `--config` and `$CONNRES_CONFIG` name none.
pub const DEFAULT_CONFIG: &str = "resources.yaml";

/// The config, named the same way by every subcommand.
#[derive(Args)]
pub struct ConfigArg {
    /// The config: a file, or a directory whose *.yaml files form one config.
    #[arg(
        long,
        env = "CONNRES_CONFIG",
        default_value = DEFAULT_CONFIG,
        value_name = "PATH"
    )]
    pub config: PathBuf,
}

/// How to reach NATS. Each option given wins over the file's `nats:` block; credentials
/// given here replace the file's as a whole.
#[derive(Args)]
#[command(next_help_heading = "NATS connection")]
pub struct NatsArgs {
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
    pub fn overrides(self) -> NatsOverrides {
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
pub enum ExplainAction {
    Get,
    Access,
    Call,
}

fn json_arg(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}
