//! How long reading a message's JSON takes at the most connres reads (twice
//! `state.max_token_bytes` plus 256 KiB: 294,912 bytes at the default) and at the 8 MiB
//! a NATS server may be configured to allow: `cargo run --release --example parse_cost`.

use std::time::{Duration, Instant};

fn main() {
    let max = connres::config::StateSettings::default().max_payload_bytes();
    for (name, len) in [("the most connres reads", max), ("8 MiB", 8 << 20)] {
        for (shape, item) in [("numbers", "1,"), ("short strings", "\"ab\",")] {
            let mut payload = String::from(r#"{"cid":"c1","params":{"blob":{"data":["#);
            while payload.len() + item.len() + 6 < len {
                payload.push_str(item);
            }
            payload.push_str("0]}}}");
            let mut times: Vec<Duration> = (0..9)
                .map(|_| {
                    let start = Instant::now();
                    let v: serde_json::Value = serde_json::from_slice(payload.as_bytes()).unwrap();
                    let took = start.elapsed();
                    drop(v);
                    took
                })
                .collect();
            times.sort();
            println!(
                "{name} ({} bytes) of {shape}: {:.2} ms to parse (median of 9)",
                payload.len(),
                times[4].as_secs_f64() * 1e3
            );
        }
    }
}
