//! Load generator and yardstick for connres (see docs/performance.md and scripts/bench.sh).
//!
//! ```text
//! bench bare --nats URL                      # the bare responder (the yardstick)
//! bench load --nats URL --kind get|get-anon|access|set [--requests N] [--concurrency C]
//!            [--cids K] [--pid SERVER_PID] [--nats-pid NATS_PID] [--target connres|bare]
//! bench fill --nats URL --connections N [--from I] [--pid SERVER_PID]
//! ```
//!
//! `fill` makes N live connections with the seed models, as Resgate and an auth service
//! would: a token event, then access and get of `session.user.<cid>` and a `set` of
//! `session.prefs.<cid>`; then prints the server's RSS (memory per live connection).
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
            Command::Bare { nats, queue_group } => bare(&nats, &queue_group).await,
            Command::Load(args) => load(args).await,
            Command::Fill {
                nats,
                connections,
                from,
                concurrency,
                pid,
                shape,
            } => fill(&nats, from, connections, concurrency, pid, &shape).await,
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

async fn bare(url: &str, queue_group: &str) -> anyhow::Result<()> {
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
        subs.push(sub.map(move |m| (m, reply.clone())));
    }
    client.flush().await?;
    eprintln!("bare responder ready on {url}");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            item = subs.next() => match item {
                Some((msg, body)) => {
                    if let Some(reply) = msg.reply {
                        client.publish(reply, body).await?;
                    }
                }
                None => break,
            },
        }
    }
    client.flush().await?;
    Ok(())
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
    let server_ns_before = exact(args.pid)?;
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
    let server_ns_after = exact(args.pid)?;
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
