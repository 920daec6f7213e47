//! Reload benchmark: for a config of N resources (default 1,000), measures
//! - parse: reading the text into a validated `Config`;
//! - parse to swap: what the service reports for a real reload (parse, diff, subscribe
//!   nothing new, swap, carry state over);
//! - save to in force: from writing the file to the service reporting the new config in
//!   force, through the directory watch and its 100 ms debounce;
//! - the reload stall: a client on its own thread sends gets one at a time during the
//!   reloads; the longest of those round trips is how long a reload can hold a request.
//!
//! Usage: `cargo run --release --example reload_bench [N]`, with `NATS_URL` pointing at a
//! running nats-server on loopback (default nats://127.0.0.1:4222).

use std::time::{Duration, Instant};

use connres::config::Config;
use connres::reload::ReloadReport;
use connres::service::Service;

fn config_text(n: usize, default: u32) -> String {
    let mut s = String::from("version: 1\nresources:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  app{i}.model.{{cid}}:\n    fields:\n      name: {{ type: string, from: \"{{{{token.name}}}}\" }}\n      size: {{ type: integer, default: {default}, min: 0, max: 100000, writable: true }}\n      theme: {{ type: string, default: light, enum: [light, dark], writable: true }}\n    access:\n      get: cid == params.cid\n      call:\n        set: cid == params.cid && token != null\n"
        ));
    }
    s
}

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "{name:<28} median {:>9.2} ms   max {:>9.2} ms   ({} runs)",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        samples.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let text = config_text(n, 1);
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
    let config = Config::load_file(&path).map_err(|e| e.to_string())?;
    let service = Service::start(config, &url).await?.watch(&path)?;
    let mut reports = service.reload_reports();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));

    // The probe: sequential gets from another thread for as long as the reloads run.
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let (url, probing) = (url.clone(), probing.clone());
        std::thread::spawn(move || -> Result<Vec<Duration>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
                let mut samples = Vec::new();
                let mut i = 0u64;
                while probing.load(std::sync::atomic::Ordering::Relaxed) {
                    let subject = format!("get.app{}.model.c{}", i % 7, i % 100);
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
        })
    };

    let mut to_swap = Vec::new();
    let mut in_force = Vec::new();
    for round in 0..10u32 {
        // Change one default of every resource: each is named in the reset.
        let next = config_text(n, round + 2);
        let t = Instant::now();
        std::fs::write(&path, &next)?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), reports.recv()).await?? {
                ReloadReport::Applied {
                    parse_to_swap_us,
                    diff,
                } => {
                    in_force.push(t.elapsed());
                    to_swap.push(Duration::from_micros(parse_to_swap_us));
                    assert_eq!(diff.reset_resources.len(), n);
                    break;
                }
                ReloadReport::Compiling
                | ReloadReport::Unchanged { .. }
                | ReloadReport::StillRejected => continue,
                ReloadReport::Rejected { errors } => return Err(errors.join("\n").into()),
            }
        }
    }
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    // Joined off the runtime's thread: the service must answer the probe's last get.
    let mut probes = tokio::task::spawn_blocking(move || probe.join())
        .await?
        .map_err(|_| "probe panicked")??;
    stats("reload: parse to swap", to_swap);
    stats("reload: save to in force", in_force);
    probes.sort();
    let pct = |p: f64| probes[((probes.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "{:<28} p50 {:>9.3} ms   p99 {:>9.3} ms   max {:>9.3} ms   ({} gets)",
        "get during reloads",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        probes.len()
    );
    let _ = stop.send(());
    task.await??;
    Ok(())
}
