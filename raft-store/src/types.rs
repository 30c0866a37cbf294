//! The openraft type configuration for Rafter and the small types that travel
//! in the Raft log: a master's identity (`Member`) and a log entry's payload
//! (`LogCommand`, a batch of prost-encoded client proposals).

use std::fmt;
use std::io::Cursor;

use serde::Deserialize;
use serde::Serialize;

openraft::declare_raft_types!(
    /// Rafter's openraft configuration: u64 node ids, `Member` nodes,
    /// batches of proposals as entries, snapshots in memory.
    pub TypeConfig:
        D = LogCommand,
        R = LogResponse,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Node id in the Raft group.
pub type NodeId = u64;
/// The openraft handle for Rafter.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;

/// A master as recorded in the Raft membership: its name and the address of
/// its gRPC listener (which carries Raft, KV and Cluster services).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// One Raft log entry's application payload: several client proposals that
/// arrived together and share one append and one fsync (group commit). Each
/// proposal is a prost-encoded `rafter.kv.v1.Proposal` and gets its own
/// revision when applied, as if it had been its own entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    pub proposals: Vec<Vec<u8>>,
}

/// What applying a `LogCommand` produced: one prost-encoded
/// `rafter.kv.v1.ProposalResult` per proposal, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogResponse {
    pub results: Vec<Vec<u8>>,
}

/// The node id of a master, derived from its name so that every member and
/// every client agrees on it without coordination (FNV-1a, never 0).
pub fn node_id_of(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h == 0 { 1 } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id_of("m1"), node_id_of("m1"));
        assert_ne!(node_id_of("m1"), node_id_of("m2"));
        assert_ne!(node_id_of(""), 0);
    }
}
