//! The ownership protocol, one instance at a time (the simulation in
//! `tests/simulation.rs` drives several together).
