//! Reload benchmark: for a config of N resources (default 1,000), measures
//! - parse: reading the text into a validated `Config`;
//! - parse to swap: what the service reports for a real reload (compile, diff, subscribe
//!   nothing new, swap, carry state over);
//! - save to in force: from saving the file (write a temporary file, rename it over the
//!   config, as editors do) to the service reporting the new config in force, through
//!   the directory watch and its 100 ms debounce;
//! - the reload stall: a client on its own thread sends gets one at a time during the
//!   reloads; the longest of those round trips is how long a reload can hold a request.
//!   The same client first runs as long with no reload: its longest get is what the
//!   machine alone makes a request wait.
//!
//! Parse to swap and save to in force are measured twice: on a quiet service (no
//! requests), then while the probe keeps it busy. The compiler runs below the serving
//! thread's priority, so under load the swap comes later but requests do not wait.
//!
//! With CONNECTIONS > 0 the service first holds that many connections, each with a
//! written value, and the reloads run twice: changing a default of every resource (no
//! stored value can become invalid), then tightening a constraint of the written field
//! of the resource those values live in (every stored model is re-checked).
//!
//! Usage: `cargo run --release --example reload_bench [N] [CONNECTIONS]`, with
//! `NATS_URL` pointing at a running nats-server on loopback (default
//! nats://127.0.0.1:4222).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connres::config::Config;
use connres::reload::ReloadReport;
use connres::service::Service;
use futures::stream::{FuturesUnordered, StreamExt};

type Error = Box<dyn std::error::Error>;

/// N resources; `default` is every `size` default, `max` the `size` maximum of `app0`.
fn config_text(n: usize, default: u32, max: u32) -> String {
    let mut s = String::from("version: 1\nstate: { max_entries: 10000000 }\nresources:\n");
    for i in 0..n {
        let max = if i == 0 { max } else { 100_000 };
        s.push_str(&format!(
            "  app{i}.model.{{cid}}:\n    fields:\n      name: {{ type: string, from: \"{{{{token.name}}}}\" }}\n      size: {{ type: integer, default: {default}, min: 0, max: {max}, writable: true }}\n      theme: {{ type: string, default: light, enum: [light, dark], writable: true }}\n    access:\n      get: cid == params.cid\n      call:\n        set: cid == params.cid && token != null\n"
        ));
    }
    s
}

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "{name:<34} median {:>9.2} ms   max {:>9.2} ms   ({} runs)",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        samples.len()
    );
}

/// Sequential gets from another thread until stopped; returns their round trips.
struct Probe {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<Duration>, String>>,
}

impl Probe {
    fn start(url: &str) -> Probe {
        let running = Arc::new(AtomicBool::new(true));
        let (url, flag) = (url.to_string(), running.clone());
        let thread = std::thread::spawn(move || -> Result<Vec<Duration>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
                let mut samples = Vec::new();
                let mut i = 0u64;
                while flag.load(Ordering::Relaxed) {
                    let subject = format!("get.app{}.model.probe{}", i % 7, i % 100);
                    i += 1;
                    let t = Instant::now();
                    client
                        .request(subject, bytes::Bytes::new())
                        .await
                        .map_err(|e| e.to_string())?;
                    samples.push(t.elapsed());
                }
                Ok(samples)
            })
        });
        Probe { running, thread }
    }

    /// Stops the probe and prints its figures. Joined off the runtime's thread: the
    /// service, on this runtime, must answer the probe's last get.
    async fn finish(self, what: &str) -> Result<(), Error> {
        self.running.store(false, Ordering::Relaxed);
        let thread = self.thread;
        let mut probes = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| "probe panicked")??;
        probes.sort();
        let pct = |p: f64| probes[((probes.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "{what:<34} p50 {:>9.3} ms   p99 {:>9.3} ms   max {:>9.3} ms   ({} gets)",
            pct(0.5),
            pct(0.99),
            pct(1.0),
            probes.len()
        );
        Ok(())
    }
}

/// Writes each text in turn and waits for it to be in force; returns parse-to-swap and
/// save-to-in-force times.
async fn reloads(
    path: &Path,
    reports: &mut tokio::sync::broadcast::Receiver<ReloadReport>,
    texts: Vec<String>,
) -> Result<(Vec<Duration>, Vec<Duration>), Error> {
    let (mut to_swap, mut in_force) = (Vec::new(), Vec::new());
    for text in texts {
        // Saved as editors save: a temporary file renamed over the config.
        let t = Instant::now();
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)?;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), reports.recv()).await?? {
                ReloadReport::Applied {
                    parse_to_swap_us, ..
                } => {
                    in_force.push(t.elapsed());
                    to_swap.push(Duration::from_micros(parse_to_swap_us));
                    break;
                }
                ReloadReport::Compiling
                | ReloadReport::Unchanged { .. }
                | ReloadReport::StillRejected => continue,
                ReloadReport::Rejected { errors } => return Err(errors.join("\n").into()),
            }
        }
    }
    Ok((to_swap, in_force))
}

/// Makes `count` connections, each logged in by a token event with a written `size`
/// on `app0.model.<cid>`.
async fn fill(url: &str, count: usize) -> Result<(), Error> {
    let client = async_nats::connect(url).await?;
    let mut next = 0;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < 64 && next < count {
            let client = client.clone();
            let i = next;
            next += 1;
            in_flight.push(async move {
                let token = format!(r#"{{"token":{{"name":"u{i}"}}}}"#);
                client
                    .publish(format!("conn.fill{i}.token"), token.into())
                    .await?;
                let set = r#"{"values":{"size":5}}"#;
                client
                    .request(format!("connres.set.app0.model.fill{i}"), set.into())
                    .await?;
                Ok::<(), Error>(())
            });
        }
        match in_flight.next().await {
            Some(r) => r?,
            None => break,
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let connections: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let text = config_text(n, 1, 100_000);
    println!("config: {n} resources, {} bytes", text.len());

    let mut parse = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        Config::parse("bench.yaml", &text).map_err(|e| e.to_string())?;
        parse.push(t.elapsed());
    }
    stats("parse + validate", parse);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("resources.yaml");
    std::fs::write(&path, &text)?;
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let service = Service::start(config, &url).await?.watch(&path)?;
    let mut reports = service.reload_reports();
    let stats_handle = service.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    if connections > 0 {
        let t = Instant::now();
        fill(&url, connections).await?;
        println!(
            "state: {} connections, {} entries ({:.1} s to fill)",
            stats_handle.connections(),
            stats_handle.entries(),
            t.elapsed().as_secs_f64()
        );
    }

    // Defaults change: every pattern is named in the reset, no stored value is visited.
    // First with no request to serve.
    let texts = (0..10u32).map(|r| config_text(n, r + 2, 100_000)).collect();
    let (to_swap, in_force) = reloads(&path, &mut reports, texts).await?;
    stats("quiet reload: parse to swap", to_swap);
    stats("quiet reload: save to in force", in_force);

    // The probe alone, about as long as the reloads under it take: what the machine
    // makes a get wait without any reload.
    let probe = Probe::start(&url);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = t.elapsed();
    probe
        .finish(&format!("get, no reload ({:.1} s)", alone.as_secs_f64()))
        .await?;

    let probe = Probe::start(&url);
    let t = Instant::now();
    let texts = (0..10u32)
        .map(|r| config_text(n, r + 12, 100_000))
        .collect();
    let (to_swap, in_force) = reloads(&path, &mut reports, texts).await?;
    stats("reload (defaults): parse to swap", to_swap);
    stats("reload (defaults): save to in force", in_force);
    probe
        .finish(&format!(
            "get during default reloads ({:.1} s)",
            t.elapsed().as_secs_f64()
        ))
        .await?;

    if connections > 0 {
        // A constraint on the written field of app0 changes: every model is re-checked.
        let probe = Probe::start(&url);
        let texts = (0..10u32)
            .map(|r| config_text(n, 21, 100_000 - 1 - r))
            .collect();
        let (to_swap, _) = reloads(&path, &mut reports, texts).await?;
        stats("reload (constraint): parse to swap", to_swap);
        probe.finish("get during constraint reloads").await?;
    }

    let _ = stop.send(());
    task.await??;
    Ok(())
}
