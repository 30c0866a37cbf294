//! Workloads: what the client processes do during a run, and how their
//! outcomes are classified as ok / fail / info.

pub mod durability;
pub mod register;
pub mod set;
