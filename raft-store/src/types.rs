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
    #[serde(with = "byte_strings")]
    pub proposals: Vec<Vec<u8>>,
}

/// Serde for a list of byte strings as byte strings, not as sequences of
/// numbers. serde's own `Vec<u8>` impl visits one byte at a time, and every
/// proposal is encoded and decoded several times on its way through the log
/// and to the followers (bincode: append, replication reads, AppendEntries
/// both ways). With bincode the bytes on disk and on the wire are the same
/// either way (a u64 length, then the bytes), so logs written before read
/// back unchanged.
mod byte_strings {
    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;
    use serde_bytes::ByteBuf;

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|p| serde_bytes::Bytes::new(p)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<ByteBuf>::deserialize(d)?;
        Ok(list.into_iter().map(ByteBuf::into_vec).collect())
    }
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

    /// The layout `LogCommand` had before its proposals were encoded as
    /// byte strings (serde's default for `Vec<Vec<u8>>`).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldLogCommand {
        proposals: Vec<Vec<u8>>,
    }

    #[test]
    fn log_commands_keep_their_bincode_bytes_both_ways() {
        let proposals = vec![b"first proposal".to_vec(), Vec::new(), vec![0u8, 255, 7]];
        let new = bincode::serialize(&LogCommand {
            proposals: proposals.clone(),
        })
        .unwrap();
        let old = bincode::serialize(&OldLogCommand {
            proposals: proposals.clone(),
        })
        .unwrap();
        // Logs written by earlier masters read back, and the other way.
        assert_eq!(new, old);
        let back: LogCommand = bincode::deserialize(&old).unwrap();
        assert_eq!(back.proposals, proposals);
    }

    #[test]
    fn log_commands_round_trip_through_a_self_describing_format() {
        let cmd = LogCommand {
            proposals: vec![b"abc".to_vec(), vec![1, 2, 3]],
        };
        let json = serde_json::to_string(&cmd).unwrap();
        let back: LogCommand = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id_of("m1"), node_id_of("m1"));
        assert_ne!(node_id_of("m1"), node_id_of("m2"));
        assert_ne!(node_id_of(""), 0);
    }
}
