//! Deterministic simulation of the ownership protocol (see `sim/`): thousands of seeded
//! runs of several instances under faults, each checked on every step and at the end.
//! `SIM_SEEDS=N` runs more seeds, `SIM_SEED=S` one seed (to replay a failure).

mod sim;

use sim::{run, SimConfig};

#[test]
fn the_ownership_protocol_keeps_its_promises_under_faults() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000);
            let from: u64 = std::env::var("SIM_FROM")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            (from..from + n).collect()
        }
    };
    let mut failures = Vec::new();
    let (mut steps, mut sent, mut applied, mut acked, mut faults) = (0, 0, 0, 0, 0);
    for seed in seeds {
        let out = run(SimConfig::new(seed));
        steps += out.steps;
        sent += out.sent;
        applied += out.applied;
        acked += out.acknowledged;
        faults += out.faults;
        if !out.violations.is_empty() {
            failures.push(out.violations);
        }
    }
    eprintln!(
        "simulated: {steps} steps, {sent} changes sent, {applied} applied, {acked} acknowledged, {faults} faults"
    );
    for f in &failures {
        eprintln!("{}", f[0]);
    }
    assert!(
        failures.is_empty(),
        "{} seed(s) broke an invariant; first: {:#?}",
        failures.len(),
        failures.first()
    );
}
