//! Deterministic simulation of the ownership protocol (see `sim/`): thousands of seeded
//! runs of several instances under faults, each checked on every step and at the end.
//! `SIM_SEEDS=N` runs more seeds, `SIM_SEED=S` one seed (to replay a failure).

mod sim;

use sim::{run, SimConfig};

/// Seeds that failed in long runs and were traced and fixed: 249 and 28618 (a handover
/// applied a request received before one the previous owner applied), 5978 (a token
/// event applied twice: alignment behind superseded marks), 2383 (a partition taken
/// while disconnected kept its earlier horizon), 5322 (token events whose writes
/// failed, taken back by the same instance), 39735 (a load issued for an earlier
/// holding of a partition answered after the partition was taken again, and its
/// units, older than another owner's writes since, were installed: a token event
/// applied twice and an acknowledged write lost; loads now carry an id).
const REGRESSIONS: [u64; 6] = [249, 2383, 5322, 5978, 28618, 39735];

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
            // Seeds that broke an invariant once, each fixed since (with the code of
            // their day: a change to the protocol changes what a seed does).
            (from..from + n).chain(REGRESSIONS).collect()
        }
    };
    let mut failures = Vec::new();
    let (mut steps, mut sent, mut applied, mut acked, mut faults) = (0, 0, 0, 0, 0);
    let (mut mapped, mut spared) = (0, 0);
    for seed in seeds {
        let cfg = SimConfig::new(seed);
        mapped += u64::from(cfg.mapped);
        let out = run(cfg);
        spared += out.spared;
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
        "simulated: {steps} steps, {sent} changes sent, {applied} applied, {acked} acknowledged, {faults} faults; \
         {mapped} runs with calls mapped, which spared {spared} deliveries"
    );
    if std::env::var("SIM_SEED").is_err() {
        assert!(
            spared > 0,
            "the mapped runs route calls to their partitions' subscribers only"
        );
    }
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
