//! raft-store: Rafter's replacement for etcd. An openraft group of masters
//! whose log and key-value state machine live in RocksDB, served over gRPC.
//!
//! Map of the crate:
//! - [`types`]: openraft type configuration, `Member`, log payloads.
//! - [`db`]: the one RocksDB per master and its column families.
//! - [`log_store`]: the Raft log; appends are acknowledged after WAL fsync,
//!   the syncer thread would merge concurrent appends' fsyncs (openraft 0.9
//!   issues one append at a time).
//! - [`state_machine`] + [`apply`]: applying proposals (put, delete, txn,
//!   leases, exactly-once table) atomically per batch; snapshots.
//! - [`range`]: reads at the current or a past revision.
//! - [`read_index`]: concurrent linearizable reads share one leadership
//!   confirmation.
//! - [`lease`]: the leader's lease clock.
//! - [`elections`]: what vote requests and answers tell the leader
//!   watchdog about when, and in which term, to stand.
//! - [`network`]: the gRPC client side of Raft between masters.
//! - [`node`]: one master: opens the store, runs Raft, batches concurrent
//!   proposals into one log entry (group commit: one append, one fsync),
//!   forwards to the leader, linearizable reads, membership, compaction.
//! - [`service`]: the gRPC servers (Raft transport, KV, Cluster).
//! - [`watch`]: serving watch streams from history and live revisions.
//! - [`data_dir`]: the data directory's lock and identity checks.
//! - [`metrics`]: Prometheus metrics.

pub mod apply;
pub mod data_dir;
pub mod db;
pub mod elections;
pub mod error;
pub mod lease;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod range;
pub mod read_index;
pub mod service;
pub mod state_machine;
pub mod types;
pub mod watch;

pub use error::Error;
