//! Feeding the ownership protocol what the connection, the bucket and the clock tell:
//! connection news, ticks, finished bucket operations and watched entries, and this
//! instance's probes coming back.

use std::time::Duration;

use super::io::{self, Io};
use super::{bucket, Next};
use crate::ownership::{Action, Input};
use crate::service::Service;
use crate::store::record::stable_hash;
use crate::store::{Unit, UnitKey};

impl Service {
    /// Tells the protocol something the connection said.
    pub(in crate::service) async fn cluster_input(&mut self, input: Input) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let actions = cluster.machine.handle(input, now);
        self.run_actions(actions).await;
        self.after_step().await;
    }

    /// Handles what the shared store needs looked at next.
    pub(in crate::service) async fn cluster_step(&mut self, next: Next) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        // Ticks and lease news change which partitions are held here.
        let leases = matches!(
            next,
            Next::Tick | Next::Io(Io::Entry(_) | Io::LeaseWritten { .. } | Io::LeaseRead { .. })
        );
        let actions = match next {
            Next::Tick => {
                cluster.log_partitions(false);
                let actions = cluster.machine.tick(now);
                self.retry_cold();
                actions
            }
            Next::Io(io) => self.io_done(io),
        };
        self.run_actions(actions).await;
        self.after_step().await;
        if leases {
            self.follow_partitions().await;
        }
    }

    /// A bucket operation finished.
    pub(super) fn io_done(&mut self, io: Io) -> Vec<Action<super::super::route::Received>> {
        let Some(cluster) = &mut self.cluster else {
            return Vec::new();
        };
        let now = cluster.now();
        match io {
            Io::Entry(entry) => {
                let mut actions = Vec::new();
                if let Some(input) = bucket::observation(&entry) {
                    let mine = self.config.content_hash();
                    cluster.peers.observed(&input, &cluster.id, mine);
                    actions = cluster.machine.handle(input, now);
                }
                if entry.seen_current && !cluster.joined {
                    cluster.joined = true;
                    actions.extend(cluster.machine.handle(Input::Joined, now));
                    self.metrics.set_ready(true);
                    let _ = self.serving.send(true);
                }
                actions
            }
            Io::LeaseWritten { p, op, result } => {
                if result.is_ok() {
                    cluster.metrics.renewals.inc();
                }
                cluster
                    .machine
                    .handle(Input::LeaseWritten { p, op, result }, now)
            }
            Io::LeaseRead { p, entry } => {
                cluster.machine.handle(Input::LeaseRead { p, entry }, now)
            }
            Io::Loaded { p, op, units, took } => match units {
                Ok(units) => {
                    cluster.metrics.kv_read(took);
                    // Complete when the probe sent after it comes back. An earlier
                    // load's units, answering late, are not kept over a later one's.
                    let loaded = &mut cluster.loaded;
                    if loaded.get(&p).is_none_or(|(latest, _)| *latest <= op) {
                        loaded.insert(p, (op, units));
                    }
                    Vec::new()
                }
                Err(e) => cluster.machine.handle(
                    Input::Loaded {
                        p,
                        op,
                        logs: Err(e),
                    },
                    now,
                ),
            },
            Io::UnitWritten {
                p,
                generation,
                key,
                fingerprint,
                result,
            } => {
                let (read_back, took) =
                    cluster
                        .pipeline
                        .written(p, generation, key.clone(), fingerprint, result);
                if let Some(took) = took {
                    cluster.metrics.kv_write(took);
                }
                if read_back {
                    io::spawn_unit_read(&cluster.kv, &cluster.io_tx, p, generation, key);
                }
                Vec::new()
            }
            Io::UnitRead {
                p,
                generation,
                key,
                result,
            } => {
                cluster.pipeline.read_back(p, generation, key, result);
                Vec::new()
            }
            Io::ColdRead {
                key,
                id,
                result,
                took,
            } => {
                self.cold_read(key, id, result.map(|u| u.map(|u| *u)), took);
                Vec::new()
            }
        }
    }

    /// A probe of this instance came back through the ordered channel: everything
    /// received before it was placed.
    pub(in crate::service) async fn probe(&mut self, subject: &str) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = cluster.now();
        let rest = subject
            .strip_prefix(cluster.probe_subject.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or_default();
        let actions = if let Some(nanos) = rest.strip_prefix("t.").and_then(|n| n.parse().ok()) {
            let sent = Duration::from_nanos(nanos);
            cluster.machine.handle(Input::Probe { sent }, now)
        } else if let Some((p, op)) = rest.strip_prefix("l.").and_then(|r| {
            let (p, op) = r.split_once('.')?;
            Some((p.parse::<u32>().ok()?, op.parse::<u64>().ok()?))
        }) {
            // The units of this load, unless a later load's replaced them (that one's
            // probe follows).
            let Some((_, units)) = cluster.loaded.get(&p).filter(|(latest, _)| *latest == op)
            else {
                return;
            };
            let logs = units
                .iter()
                .filter_map(|l| match (&l.key, &l.unit) {
                    (UnitKey::Connection(cid), Some(Unit::Connection(c))) => {
                        Some((stable_hash(cid), c.tokens().digests().to_vec()))
                    }
                    _ => None,
                })
                .collect();
            cluster.machine.handle(
                Input::Loaded {
                    p,
                    op,
                    logs: Ok(logs),
                },
                now,
            )
        } else {
            return;
        };
        self.run_actions(actions).await;
        self.after_step().await;
    }
}
