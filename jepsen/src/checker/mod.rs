//! Checkers: decide from a history whether the system behaved correctly.
//!
//! `model` is the sequential specification (a register per key);
//! `linearizability` searches a history for a linearization of it. `set`
//! checks the exactly-once set workload, `durability` the durability
//! workload, `watch` the watch workload, `lease` the lease workload.

pub mod durability;
pub mod lease;
pub mod linearizability;
pub mod model;
pub mod set;
pub mod watch;
