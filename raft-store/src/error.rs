//! The errors of raft-store, one variant per failure. The KV service maps
//! them to gRPC statuses in one place (`kv_service::status_of`).

/// Everything that can go wrong in raft-store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in the database: {0}")]
    Corrupt(#[source] prost::DecodeError),
    #[error(
        "compacted: required revision {requested} has been compacted; compact revision is {compact_revision}"
    )]
    Compacted {
        requested: u64,
        compact_revision: u64,
    },
    #[error("required revision {requested} is a future revision; current revision is {current}")]
    FutureRevision { requested: u64, current: u64 },
    #[error("no leader is known at the moment; retry shortly")]
    NoLeader,
    #[error("the leader at {addr} could not be reached: {message}")]
    LeaderUnreachable { addr: String, message: String },
    #[error("this master is shutting down")]
    ShuttingDown,
    #[error("raft: {0}")]
    Raft(String),
    #[error("{message}")]
    Proposal { code: i32, message: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    FailedPrecondition(String),
}
