//! A deterministic simulation of several connres instances sharing partitions: the
//! real ownership state machine (the `ownership` crate) in each, and simulated
//! everything else: the key-value bucket (revisions, compare-and-set, watches), the
//! NATS server (each message delivered to each instance with its own delay, in order
//! per publisher), publishers (an auth service, a gateway, a backend, and one that
//! sends all three kinds), a gateway's cache, and a small model of the engine (a token
//! per connection, a written value, and the log of every message applied to it).
//!
//! Every source of chance is one seeded generator, so a seed replays exactly. Faults:
//! pauses, kills and restarts of instances, failed, slow and lost bucket writes, NATS
//! outages, watch entries delivered twice, server clock jumps, duplicate token events.
//! Checked on every step: at most one instance serves a partition, and no instance
//! applies a partition under an older lease after another applied it under a newer one;
//! at the end: each publisher's messages were applied in the order sent and at most
//! once, no acknowledged write is lost, a connection's token is the last one sent (or
//! unconfirmed, to be filled in by the gateway), and the gateway's cache equals the
//! final state.

mod model;
mod world;

pub use world::{run, SimConfig};
