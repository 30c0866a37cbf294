//! [`Driver`]: what the load generator needs from a system's client, so the
//! same workloads run against etcd and Rafter.
//!
//! A driver holds several *connections*; connection `c` starts at member
//! `c % members` and fails over to the others the way its client library
//! does. Workers rotate over the connections op by op, so every member gets
//! an equal share of the requests whatever the number of clients.

use std::future::Future;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::error::BenchError;

/// One member's view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    /// 0 when the member knows no leader.
    pub leader: u64,
    pub term: u64,
}

/// A key seen by a watch, with the time it arrived.
pub type Seen = (Vec<u8>, Instant);

/// A system's client as the workloads use it.
pub trait Driver: Clone + Send + Sync + 'static {
    /// Number of connections.
    fn conns(&self) -> usize;

    /// Writes `key` through connection `conn`; returns the Raft term in the
    /// response header.
    fn put(
        &self,
        conn: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<u64, BenchError>> + Send;

    /// Reads `key` through connection `conn`.
    fn get(
        &self,
        conn: usize,
        key: Vec<u8>,
        serializable: bool,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Status of member `member`, asked of it alone.
    fn status(
        &self,
        member: usize,
    ) -> impl Future<Output = Result<MemberStatus, BenchError>> + Send;

    /// Watches every key under `prefix` at member `member` alone, from now
    /// on; keys arrive on the channel as their events do.
    fn watch(
        &self,
        member: usize,
        prefix: Vec<u8>,
    ) -> impl Future<Output = Result<mpsc::UnboundedReceiver<Seen>, BenchError>> + Send;
}
