//! Load generator and yardstick for connres (see docs/performance.md and scripts/bench.sh).
//!
//! ```text
//! bench bare --nats URL                      # the bare responder (the yardstick)
//! bench load --nats URL --kind get|get-anon|access|set [--requests N] [--concurrency C]
//!            [--cids K] [--pid SERVER_PID [--also-pid PID]...] [--nats-pid NATS_PID]
//!            [--target connres|bare]
//! bench fill --nats URL --connections N [--from I] [--pid SERVER_PID]
//! bench token-latency --nats URL [--rate R] [--secs S] [--cids K] [--pid SERVER_PID]
//! ```
//!
//! `fill` makes N live connections with the seed models, as Resgate and an auth service
//! would: a token event, then access and get of `session.user.<cid>` and a `set` of
//! `session.prefs.<cid>`; then prints the server's RSS (memory per live connection).
//!
//! `token-latency` times token event -> change event: K connections' `session.user`
//! models are made known to connres (a token event, then a get), then `conn.<cid>.token`
//! events are published at a paced R per second, cycling through the cids and
//! alternating between two tokens so that every event changes the model, and each
//! event's `event.session.user.<cid>.change` is awaited on a second connection. It prints
//! the latency percentiles from each publish to the receipt of its change event, and the
//! rate achieved.
//!
//! `bare` answers `get.session.user.*`, `access.session.user.*` and
//! `call.session.prefs.*.set` with fixed pre-serialized replies, inline in one task on a
//! current-thread runtime, subscribed with the queue group `connres`: the cheapest
//! honest service on the same nats-server, the unit connres's CPU is measured in.
//!
//! `load` sends a bounded number of requests (and stops at `--max-secs` regardless) with
//! a fixed number in flight from one client, after a warm-up, and prints throughput,
//! latency percentiles and, given the server's pid, its CPU time per request over the
//! measured window only, two ways: exact (`/proc/<pid>/task/*/schedstat`, nanoseconds)
//! and tick-sampled (utime + stime from `/proc/<pid>/stat`, 10 ms ticks: coarse when the
//! window holds little CPU), and its peak RSS (VmHWM).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::Client;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::{FuturesUnordered, SelectAll, StreamExt};

#[derive(Parser)]
#[command(about = "connres load generator and bare-responder yardstick")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bare responder until SIGTERM/SIGINT.
    Bare {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        #[arg(long, default_value = "connres")]
        queue_group: String,
        /// Also answer each `conn.<cid>.token` event with an
        /// `event.session.user.<cid>.change`, as connres does for a known model (the
        /// yardstick of `token-latency`).
        #[arg(long)]
        relay_tokens: bool,
    },
    /// Send a bounded load and report.
    Load(LoadArgs),
    /// Make live connections with the seed models and report the server's memory.
    Fill {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// How many connections to add.
        #[arg(long)]
        connections: u64,
        /// The first connection's number (to add more to an earlier fill).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Connections being set up at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The server's pid, for its RSS.
        #[arg(long)]
        pid: Option<u32>,
        /// What each connection holds: `seed` (token of three claims, user model
        /// subscribed, a preference written), `user` (no write), `small` (as `user`,
        /// with a one-claim token), `anon` (as `user`, logged out).
        #[arg(long, default_value = "seed")]
        shape: String,
    },
    /// Time token events to their change events at a paced rate.
    TokenLatency(TokenLatencyArgs),
}

#[derive(Parser, Clone)]
struct TokenLatencyArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Token events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Connections the events cycle through, each with its user model known to connres.
    #[arg(long, default_value_t = 1_000)]
    cids: usize,
    /// Events at the start sent but left out of the figures.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// How long to wait for the last change events after the last publish.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// The responding server's pid, for its CPU per event.
    #[arg(long)]
    pid: Option<u32>,
    /// nats-server's pid, for its CPU per event (context only).
    #[arg(long)]
    nats_pid: Option<u32>,
    /// What is answering: connres, or `bench bare --relay-tokens` (nothing to prime).
    #[arg(long, value_enum, default_value_t = Target::Connres)]
    target: Target,
}

#[derive(Parser, Clone)]
struct LoadArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Measured requests.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Warm-up requests before the measured window.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Requests in flight at once (1 = sequential latency run).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct connection IDs the requests cycle through.
    #[arg(long, default_value_t = 1_000)]
    cids: usize,
    /// Stop issuing requests after this long, whatever the count.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Per-request timeout.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// The responding server's pid, for CPU and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// More instances of the server (the shared store): their CPU is added to the
    /// server's (exact figure only). Repeat for each.
    #[arg(long)]
    also_pid: Vec<u32>,
    /// nats-server's pid, for its CPU per request (context only).
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// What is answering: `connres` gets state primed and replies checked.
    #[arg(long, value_enum, default_value_t = Target::Connres)]
    target: Target,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Kind {
    /// `get.session.user.<cid>` of logged-in connections (4 fields from the token).
    Get,
    /// `get.session.user.<cid>` of connections with no token (all null).
    GetAnon,
    /// `access.session.user.<cid>` with the requester's cid and token.
    Access,
    /// `call.session.prefs.<cid>.set`, alternating theme dark/light so each set changes.
    Set,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Target {
    Connres,
    Bare,
}

const TOKEN: &str = r#"{"userId":42,"name":"Ann","role":"admin"}"#;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Bare {
                nats,
                queue_group,
                relay_tokens,
            } => bare(&nats, &queue_group, relay_tokens).await,
            Command::Load(args) => load(args).await,
            Command::Fill {
                nats,
                connections,
                from,
                concurrency,
                pid,
                shape,
            } => fill(&nats, from, connections, concurrency, pid, &shape).await,
            Command::TokenLatency(args) => token_latency(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bare responder

async fn bare(url: &str, queue_group: &str, relay_tokens: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let client = async_nats::ConnectOptions::new()
        .name("bench-bare")
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let routes: [(&str, &'static [u8]); 3] = [
        (
            "get.session.user.*",
            br#"{"result":{"model":{"id":null,"name":null,"role":null,"user":null}}}"#,
        ),
        ("access.session.user.*", br#"{"result":{"get":true}}"#),
        ("call.session.prefs.*.set", br#"{"result":null}"#),
    ];
    let mut subs = SelectAll::new();
    for (subject, reply) in routes {
        let sub = client
            .queue_subscribe(subject, queue_group.to_string())
            .await?;
        let reply = Bytes::from_static(reply);
        subs.push(sub.map(move |m| (m, Some(reply.clone()))));
    }
    // The requests alone, or with the token events relayed (each a stream of its own
    // type: the yardstick's loop stays as it is without them).
    if relay_tokens {
        let tokens = client.subscribe("conn.*.token").await?.map(|m| (m, None));
        let subs = futures::stream::select(subs, tokens);
        serve_bare(&client, subs, &mut term, &mut int, url).await
    } else {
        serve_bare(&client, subs, &mut term, &mut int, url).await
    }
}

/// Answers each request with its fixed reply, and relays each token event (an item
/// without a reply), until SIGTERM or SIGINT.
async fn serve_bare(
    client: &Client,
    mut subs: impl futures::Stream<Item = (async_nats::Message, Option<Bytes>)> + Unpin,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
    url: &str,
) -> anyhow::Result<()> {
    client.flush().await?;
    eprintln!("bare responder ready on {url}");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            item = subs.next() => match item {
                Some((msg, Some(body))) => {
                    if let Some(reply) = msg.reply {
                        client.publish(reply, body).await?;
                    }
                }
                Some((msg, None)) => {
                    if let Some((subject, payload)) = relayed_change(&msg.subject, &msg.payload) {
                        client.publish(subject, payload).await?;
                    }
                }
                None => break,
            },
        }
    }
    client.flush().await?;
    Ok(())
}

/// The bare responder's change event for a token event: the user model's name, for the
/// tokens `token-latency` sends.
fn relayed_change(subject: &str, payload: &[u8]) -> Option<(String, Bytes)> {
    let cid = subject.strip_prefix("conn.")?.strip_suffix(".token")?;
    let values: &'static [u8] = [
        (TIMED_NAMES[0], br#"{"values":{"name":"Ann"}}"#),
        (TIMED_NAMES[1], br#"{"values":{"name":"Bob"}}"#),
        (PRIME_NAME, br#"{"values":{"name":"Pat"}}"#),
    ]
    .into_iter()
    .find(|(name, _)| contains(payload, name))?
    .1;
    Some((
        format!("event.session.user.{cid}.change"),
        Bytes::from_static(values),
    ))
}

// ---------------------------------------------------------------------------------------
// The load generator

/// One request to send: subject and payload, both pre-built.
struct Req {
    subject: String,
    payload: Bytes,
}

/// The request the `i`-th send of a run makes (cycling through the cids; a cid's sets
/// alternate between two themes so every one changes the model).
fn request(kind: Kind, cids: usize, i: u64) -> Req {
    let c = (i % cids as u64) as usize;
    match kind {
        Kind::Get => Req {
            subject: format!("get.session.user.user{c}"),
            payload: Bytes::new(),
        },
        Kind::GetAnon => Req {
            subject: format!("get.session.user.anon{c}"),
            payload: Bytes::new(),
        },
        Kind::Access => Req {
            subject: format!("access.session.user.user{c}"),
            payload: Bytes::from(format!(
                r#"{{"cid":"user{c}","token":{TOKEN},"isHttp":false}}"#
            )),
        },
        Kind::Set => {
            let theme = if (i / cids as u64).is_multiple_of(2) {
                "dark"
            } else {
                "light"
            };
            Req {
                subject: format!("call.session.prefs.user{c}.set"),
                payload: Bytes::from(format!(
                    r#"{{"cid":"user{c}","token":{TOKEN},"params":{{"theme":"{theme}"}},"isHttp":false}}"#
                )),
            }
        }
    }
}

struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Sends requests `from..to` with `concurrency` in flight; stops issuing at `deadline`.
async fn run_window(
    client: &Client,
    args: &LoadArgs,
    from: u64,
    to: u64,
    deadline: Instant,
    tally: &mut Tally,
) -> u64 {
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut next = from;
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0;
    loop {
        while in_flight.len() < args.concurrency && next < to && Instant::now() < deadline {
            let req = request(args.kind, args.cids, next);
            next += 1;
            in_flight.push(async move {
                let started = Instant::now();
                let result =
                    tokio::time::timeout(timeout, client.request(req.subject.clone(), req.payload))
                        .await;
                (started.elapsed(), req.subject, result)
            });
        }
        let Some((elapsed, subject, result)) = in_flight.next().await else {
            break;
        };
        done += 1;
        match result {
            Ok(Ok(msg)) if msg.payload.starts_with(br#"{"result""#) => {
                tally.latencies_ns.push(elapsed.as_nanos() as u64)
            }
            Ok(Ok(msg)) => tally.error(format!(
                "{subject}: {}",
                String::from_utf8_lossy(&msg.payload)
            )),
            Ok(Err(e)) => tally.error(format!("{subject}: {e}")),
            Err(_) => tally.error(format!("{subject}: no reply within {timeout:?}")),
        }
    }
    done
}

/// Retries one request until the target answers (it may still be starting).
async fn wait_ready(client: &Client, kind: Kind, cids: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let req = request(kind, cids, 0);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(250),
            client.request(req.subject.clone(), req.payload.clone()),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("no answer to {} within 20s", req.subject);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs every `user<c>` connection in with a `conn.<cid>.token` event, and waits until
/// connres has applied the last one (token events are handled in order).
async fn prime_tokens(client: &Client, cids: usize) -> anyhow::Result<()> {
    for c in 0..cids {
        client
            .publish(
                format!("conn.user{c}.token"),
                Bytes::from(format!(r#"{{"token":{TOKEN}}}"#)),
            )
            .await?;
    }
    client.flush().await?;
    let last = format!("get.session.user.user{}", cids - 1);
    let started = Instant::now();
    loop {
        let reply = client.request(last.clone(), Bytes::new()).await?;
        if reply.payload.windows(7).any(|w| w == br#""id":42"#) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "tokens not applied after 20s: {}",
                String::from_utf8_lossy(&reply.payload)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Nanoseconds on CPU of each thread of a process (`/proc/<pid>/task/*/schedstat`,
/// first field: the scheduler's exact run time, not tick-sampled like utime/stime).
fn cpu_ns_by_thread(pid: u32) -> anyhow::Result<HashMap<u32, u64>> {
    let mut out = HashMap::new();
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) {
            if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
                out.insert(tid, ns);
            }
        }
    }
    Ok(out)
}

/// CPU nanoseconds a process spent between two snapshots: threads started in between
/// count from zero; the in-window time of threads that exited in between is lost
/// (negligible here: the services do their work on one long-lived thread).
fn cpu_ns_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// A `/proc/<pid>/status` line's value in kB (VmHWM, VmRSS).
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.cids == 0 {
        bail!("--concurrency and --cids must be at least 1");
    }
    let client = async_nats::ConnectOptions::new()
        .name("bench-load")
        .request_timeout(Some(Duration::from_secs(args.timeout_secs)))
        .connect(&args.nats)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    wait_ready(&client, args.kind, args.cids).await?;
    if args.target == Target::Connres && args.kind != Kind::GetAnon {
        prime_tokens(&client, args.cids).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let mut warm = Tally {
        latencies_ns: Vec::new(),
        errors: 0,
        first_error: None,
    };
    run_window(&client, &args, 0, args.warmup, deadline, &mut warm).await;

    let ticks = |pid: Option<u32>| pid.map(cpu_ticks).transpose();
    let exact = |pid: Option<u32>| pid.map(cpu_ns_by_thread).transpose();
    // Every instance's threads in one map: thread ids are unique across processes.
    let exact_all = || -> anyhow::Result<Option<HashMap<u32, u64>>> {
        let Some(mut all) = exact(args.pid)? else {
            return Ok(None);
        };
        for &pid in &args.also_pid {
            all.extend(cpu_ns_by_thread(pid)?);
        }
        Ok(Some(all))
    };
    let server_ns_before = exact_all()?;
    let nats_ns_before = exact(args.nats_pid)?;
    let server_before = ticks(args.pid)?;
    let nats_before = ticks(args.nats_pid)?;
    let self_before = cpu_ticks(std::process::id())?;
    let mut tally = Tally {
        latencies_ns: Vec::with_capacity(args.requests as usize),
        errors: warm.errors,
        first_error: warm.first_error,
    };
    let started = Instant::now();
    let done = run_window(
        &client,
        &args,
        args.warmup,
        args.warmup + args.requests,
        deadline,
        &mut tally,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let server_after = ticks(args.pid)?;
    let nats_after = ticks(args.nats_pid)?;
    let self_after = cpu_ticks(std::process::id())?;
    let server_ns_after = exact_all()?;
    let nats_ns_after = exact(args.nats_pid)?;
    let ns_per = |before: &Option<HashMap<u32, u64>>, after: &Option<HashMap<u32, u64>>| match (
        before, after,
    ) {
        (Some(b), Some(a)) if done > 0 => {
            format!("{:.2}", cpu_ns_between(b, a) as f64 / 1e3 / done as f64)
        }
        _ => "-".to_string(),
    };

    let us_per = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if done > 0 => {
            format!(
                "{:.2}",
                (a - b) as f64 * 1e6 / args.clk_tck as f64 / done as f64
            )
        }
        _ => "-".to_string(),
    };
    let lat = &mut tally.latencies_ns;
    lat.sort_unstable();
    let hwm = args
        .pid
        .and_then(|p| status_kb(p, "VmHWM"))
        .map_or("-".to_string(), |kb| kb.to_string());
    let kind = format!("{:?}", args.kind).to_lowercase();
    let kind = if kind == "getanon" { "get-anon" } else { &kind };
    // One machine-readable line for scripts/bench.sh, then a human one.
    println!(
        "RESULT target={:?} kind={kind} conc={} requests={done} secs={secs:.3} rps={:.0} p50_us={:.1} p99_us={:.1} server_cpu_us={} server_ticks_us={} nats_cpu_us={} nats_ticks_us={} loadgen_ticks_us={} hwm_kb={hwm} errors={}",
        args.target,
        args.concurrency,
        done as f64 / secs,
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        ns_per(&server_ns_before, &server_ns_after),
        us_per(server_before, server_after),
        ns_per(&nats_ns_before, &nats_ns_after),
        us_per(nats_before, nats_after),
        us_per(Some(self_before), Some(self_after)),
        tally.errors,
    );
    eprintln!(
        "{:?} {kind} x{done} ({} in flight): {:.0} req/s, p50 {:.1} us, p99 {:.1} us, server CPU {} us/req (ticks: {}){}",
        args.target,
        args.concurrency,
        done as f64 / secs,
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        ns_per(&server_ns_before, &server_ns_after),
        us_per(server_before, server_after),
        tally
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(", {} errors, first: {e}", tally.errors)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Live connections, for memory

/// One connection as it lives in production: logged in by its token event, its user
/// model subscribed (access, then get) and its preferences written.
async fn connect_one(client: &Client, i: u64, shape: &str) -> anyhow::Result<()> {
    let cid = format!("fill{i}");
    let token = if shape == "small" {
        format!(r#"{{"userId":{i}}}"#)
    } else if shape == "anon" {
        "null".to_string()
    } else {
        format!(r#"{{"userId":{i},"name":"User {i}","role":"user"}}"#)
    };
    client
        .publish(
            format!("conn.{cid}.token"),
            Bytes::from(format!(r#"{{"token":{token}}}"#)),
        )
        .await?;
    let steps = [
        (
            format!("access.session.user.{cid}"),
            format!(r#"{{"cid":"{cid}","token":{token},"isHttp":false}}"#),
        ),
        (format!("get.session.user.{cid}"), String::new()),
        (
            format!("call.session.prefs.{cid}.set"),
            format!(
                r#"{{"cid":"{cid}","token":{token},"params":{{"theme":"dark"}},"isHttp":false}}"#
            ),
        ),
    ];
    let steps = if shape == "seed" {
        &steps[..]
    } else {
        &steps[..2]
    };
    for (subject, payload) in steps.iter().cloned() {
        let reply = client
            .request(subject.clone(), Bytes::from(payload))
            .await?;
        if !reply.payload.starts_with(br#"{"result""#) {
            bail!("{subject}: {}", String::from_utf8_lossy(&reply.payload));
        }
    }
    Ok(())
}

async fn fill(
    url: &str,
    from: u64,
    connections: u64,
    concurrency: usize,
    pid: Option<u32>,
    shape: &str,
) -> anyhow::Result<()> {
    if !["seed", "user", "small", "anon"].contains(&shape) {
        bail!("--shape is seed, user, small or anon");
    }
    let client = async_nats::ConnectOptions::new()
        .name("bench-fill")
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let rss_before = pid.and_then(|p| status_kb(p, "VmRSS"));
    let started = Instant::now();
    let mut next = from;
    let end = from + connections;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < concurrency.max(1) && next < end {
            in_flight.push(connect_one(&client, next, shape));
            next += 1;
        }
        match in_flight.next().await {
            Some(result) => result?,
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_after = pid.and_then(|p| status_kb(p, "VmRSS"));
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connections > 0 => {
            format!(
                "{:.0}",
                (a.saturating_sub(b)) as f64 * 1024.0 / connections as f64
            )
        }
        _ => "-".into(),
    };
    println!(
        "FILL connections={end} added={connections} secs={secs:.1} rss_before_kb={} rss_after_kb={} bytes_per_added_connection={per}",
        rss_before.map_or("-".into(), |v| v.to_string()),
        rss_after.map_or("-".into(), |v| v.to_string()),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Token event -> change event latency

/// The token the connections are primed with; its change events are not timed.
const PRIME_TOKEN: &str = r#"{"userId":40,"name":"Pat","role":"guest"}"#;
/// The two tokens timed events alternate between (each round of the cids, the other).
const TIMED_TOKENS: [&str; 2] = [TOKEN, r#"{"userId":43,"name":"Bob","role":"user"}"#];
/// What the change event of a timed event of an even or an odd round carries.
const TIMED_NAMES: [&[u8]; 2] = [br#""name":"Ann""#, br#""name":"Bob""#];
const PRIME_NAME: &[u8] = br#""name":"Pat""#;
/// Change events of the timed connections' user models.
const CHANGES: &str = "event.session.user.*.change";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Nanoseconds since `epoch` (the one clock both threads read).
fn ns_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// What the receiving thread saw.
#[derive(Default)]
struct Received {
    timed: u64,
    /// Change events of the priming, or of earlier runs' connections.
    other: u64,
    /// Change events that are not the one their connection was owed next.
    unexpected: u64,
    first_unexpected: Option<String>,
}

/// Receives change events on a connection of its own, on a thread of its own, and
/// stamps each timed one with its arrival: the `k`-th change of `lat<c>` is the answer
/// to event `c + k * cids`. Ready once the server is known to have its subscription
/// (its own probe came back through it).
fn spawn_receiver(
    url: String,
    cids: usize,
    arrived: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>>,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    timeout: Duration,
    epoch: Instant,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> std::thread::JoinHandle<anyhow::Result<Received>> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let subscribed = async {
                let client = async_nats::ConnectOptions::new()
                    .name("bench-token-latency-receiver")
                    .connect(&url)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                let mut sub = client.subscribe(CHANGES).await?;
                // A round trip through the subscription: the server has it.
                client
                    .publish("event.session.user.probe.change", Bytes::new())
                    .await?;
                client.flush().await?;
                match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                    Ok(Some(_)) => Ok((client, sub)),
                    _ => bail!("the receiver's probe did not come back within 10s"),
                }
            };
            let (_client, mut sub) = match subscribed.await {
                Ok(s) => {
                    let _ = ready.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let total = arrived.len() as u64;
            let mut next_round = vec![0u64; cids];
            let mut seen = Received::default();
            let mut deadline: Option<Instant> = None;
            let mut check = tokio::time::interval(Duration::from_millis(20));
            while seen.timed < total {
                if deadline.is_none() && finished.load(Ordering::Acquire) {
                    deadline = Some(Instant::now() + timeout);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let msg = tokio::select! {
                    msg = sub.next() => match msg {
                        Some(msg) => msg,
                        None => bail!("the change subscription ended"),
                    },
                    _ = check.tick() => continue,
                };
                let at = ns_since(epoch);
                let Some(c) = msg
                    .subject
                    .strip_prefix("event.session.user.lat")
                    .and_then(|s| s.strip_suffix(".change"))
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|&c| c < cids)
                else {
                    seen.other += 1;
                    continue;
                };
                if contains(&msg.payload, PRIME_NAME) {
                    seen.other += 1;
                    continue;
                }
                let round = next_round[c];
                let i = c as u64 + round * cids as u64;
                if i >= total || !contains(&msg.payload, TIMED_NAMES[(round % 2) as usize]) {
                    seen.unexpected += 1;
                    if seen.first_unexpected.is_none() {
                        seen.first_unexpected = Some(format!(
                            "{}: {} (expected round {round})",
                            msg.subject,
                            String::from_utf8_lossy(&msg.payload)
                        ));
                    }
                    continue;
                }
                arrived[i as usize].store(at, Ordering::Relaxed);
                next_round[c] += 1;
                seen.timed += 1;
            }
            Ok(seen)
        })
    })
}

/// Logs every `lat<c>` connection in with the priming token and gets its user model,
/// until the get shows that token: connres then remembers the model, and every later
/// token event of the connection owes a change event.
async fn prime_models(client: &Client, cids: usize, target: Target) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut next = 0;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < 64 && next < cids {
            let c = next;
            next += 1;
            in_flight.push(async move {
                client
                    .publish(
                        format!("conn.lat{c}.token"),
                        Bytes::from(format!(r#"{{"token":{PRIME_TOKEN}}}"#)),
                    )
                    .await?;
                if target == Target::Bare {
                    return anyhow::Ok(());
                }
                // The token event and the get travel on different subscriptions, so the
                // get may be answered first: asked again until it shows the token.
                loop {
                    let reply = client
                        .request(format!("get.session.user.lat{c}"), Bytes::new())
                        .await?;
                    if contains(&reply.payload, PRIME_NAME) {
                        return anyhow::Ok(());
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        bail!(
                            "lat{c}: token not applied after 30s: {}",
                            String::from_utf8_lossy(&reply.payload)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        match in_flight.next().await {
            Some(result) => result?,
            None => return Ok(()),
        }
    }
}

async fn token_latency(args: TokenLatencyArgs) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    if args.rate == 0 || args.cids == 0 || args.secs <= 0.0 {
        bail!("--rate, --cids and --secs must be positive");
    }
    let total = (args.rate as f64 * args.secs).round() as u64;
    if total <= args.warmup {
        bail!("--rate x --secs ({total} events) must exceed --warmup");
    }
    let epoch = Instant::now();
    let arrived: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let finished = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = spawn_receiver(
        args.nats.clone(),
        args.cids,
        arrived.clone(),
        finished.clone(),
        Duration::from_secs(args.timeout_secs),
        epoch,
        ready_tx,
    );
    let client = async_nats::ConnectOptions::new()
        .name("bench-token-latency")
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(&args.nats)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    // Blocks this thread only until the receiver has subscribed (or failed to).
    match ready_rx.recv() {
        Ok(result) => result?,
        Err(_) => bail!("the receiver thread stopped"),
    }
    let probe = request(Kind::GetAnon, 1, 0);
    wait_ready(&client, Kind::GetAnon, 1)
        .await
        .with_context(|| format!("waiting for {}", probe.subject))?;
    prime_models(&client, args.cids, args.target).await?;
    client.flush().await?;

    let subjects: Vec<String> = (0..args.cids)
        .map(|c| format!("conn.lat{c}.token"))
        .collect();
    let payloads = TIMED_TOKENS.map(|t| Bytes::from(format!(r#"{{"token":{t}}}"#)));
    let cids = args.cids as u64;
    let interval_ns = 1e9 / args.rate as f64;
    let mut published = vec![0u64; total as usize];
    let exact = |pid: Option<u32>| pid.map(cpu_ns_by_thread).transpose();
    let server_before = exact(args.pid)?;
    let nats_before = exact(args.nats_pid)?;
    // Sleeps end within a few microseconds of their time, not the default 50 µs slack.
    // SAFETY: prctl on this thread's own timer slack; failure leaves the default.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
    let start = ns_since(epoch) + 1_000_000;
    let due = |i: u64| start + (i as f64 * interval_ns) as u64;
    let mut i = 0u64;
    while i < total {
        let now = ns_since(epoch);
        if due(i) > now {
            // The pacing blocks the thread on purpose: nothing else runs on this runtime
            // but the client's connection task, whose writes were flushed below.
            std::thread::sleep(Duration::from_nanos(due(i) - now));
            continue;
        }
        while i < total && due(i) <= ns_since(epoch) {
            let c = (i % cids) as usize;
            let round = (i / cids) as usize;
            published[i as usize] = ns_since(epoch);
            client
                .publish(subjects[c].clone(), payloads[round % 2].clone())
                .await?;
            i += 1;
        }
        client.flush().await?;
    }
    finished.store(true, Ordering::Release);
    let seen = match tokio::task::spawn_blocking(move || receiver.join()).await? {
        Ok(result) => result?,
        Err(_) => bail!("the receiver thread panicked"),
    };
    let server_after = exact(args.pid)?;
    let nats_after = exact(args.nats_pid)?;

    let window = args.warmup as usize..total as usize;
    let mut latencies = Vec::with_capacity(window.len());
    let mut from_due = Vec::with_capacity(window.len());
    let mut lag = Vec::with_capacity(window.len());
    for i in window.clone() {
        let at = arrived[i].load(Ordering::Relaxed);
        lag.push(published[i].saturating_sub(due(i as u64)));
        if at > 0 {
            latencies.push(at.saturating_sub(published[i]));
            from_due.push(at.saturating_sub(due(i as u64)));
        }
    }
    for v in [&mut latencies, &mut from_due, &mut lag] {
        v.sort_unstable();
    }
    let missing = window.len() - latencies.len();
    let first = published[window.start];
    let last = published[window.end - 1];
    let rate = (window.len() - 1) as f64 * 1e9 / (last - first).max(1) as f64;
    let per_event = |b: &Option<HashMap<u32, u64>>, a: &Option<HashMap<u32, u64>>| match (b, a) {
        (Some(b), Some(a)) => format!("{:.2}", cpu_ns_between(b, a) as f64 / 1e3 / total as f64),
        _ => "-".to_string(),
    };
    let max = |v: &[u64]| v.last().map_or(f64::NAN, |&ns| ns as f64 / 1000.0);
    println!(
        "TOKEN_LATENCY target={:?} target_rate={} rate={rate:.0} events={} missing={missing} unexpected={} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} from_due_p99_us={:.1} from_due_max_us={:.1} pub_lag_p99_us={:.1} pub_lag_max_us={:.1} server_cpu_us={} nats_cpu_us={}",
        args.target,
        args.rate,
        window.len(),
        seen.unexpected,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        max(&latencies),
        percentile(&from_due, 99.0),
        max(&from_due),
        percentile(&lag, 99.0),
        max(&lag),
        per_event(&server_before, &server_after),
        per_event(&nats_before, &nats_after),
    );
    eprintln!(
        "token -> change: {} events at {rate:.0}/s (target {}/s), p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; {missing} missing{}",
        window.len(),
        args.rate,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        max(&latencies),
        seen.first_unexpected
            .map_or(String::new(), |e| format!(", {} unexpected, first: {e}", seen.unexpected)),
    );
    if missing > 0 || seen.unexpected > 0 {
        bail!(
            "{missing} change events missing, {} unexpected",
            seen.unexpected
        );
    }
    Ok(())
}
