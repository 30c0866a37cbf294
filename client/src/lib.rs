//! The client side of Rafter's KV and Cluster gRPC services.
//!
//! Everything that talks to masters — the `rafter` CLI, node agents,
//! controllers, the jepsen workloads, benchmarks — goes through [`Client`].
//! It hides three things a caller should not have to think about:
//!
//! - **Which master to ask.** The client holds a list of master endpoints and
//!   fails over between them when one is down or cannot serve.
//! - **Retrying writes safely.** Every write carries a [`WriteId`]; a retry of
//!   the same logical write reuses it, and the masters apply it only once.
//! - **Resuming watches.** A [`WatchStream`] reconnects to another master
//!   after a break and continues at the next revision, so the caller sees
//!   every revision exactly once, in order.
//!
//! Module map:
//!
//! - `client`: [`Client`], its options and every RPC, with the failover loop.
//! - `endpoints`: the endpoint list and which endpoint is tried first.
//! - `write_id`: the per-client id and sequence numbers for exactly-once writes.
//! - `watch`: [`WatchStream`], the watch that survives master failures.
//! - `error`: [`Error`], and which server errors are worth retrying elsewhere.
//!
//! This crate depends on `rafter-proto` and tonic only, never on the storage
//! side, so it stays small enough to link into every component.

mod client;
mod endpoints;
mod error;
pub mod events;
pub mod informer;
mod nodes;
mod objects;
mod pods;
mod watch;
mod write_id;

pub use client::{Client, ClientOptions, FENCE_TERM_HEADER, MemberStatus};
pub use error::Error;
pub use objects::{DeleteOptions, ObjectList, ObjectWatch, WatchEvent};
pub use watch::WatchStream;

/// The generated request, response and message types, re-exported so users
/// of the client need not depend on `rafter-proto` themselves.
pub use rafter_proto::kv as proto;
pub use rafter_proto::kv::WriteId;
