//! Checkers: decide from a history whether the system behaved correctly.
//!
//! `model` is the sequential specification (a register per key);
//! `linearizability` searches a history for a linearization of it.

pub mod linearizability;
pub mod model;
