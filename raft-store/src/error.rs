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

impl Error {
    /// A copy for one of several waiters sharing an outcome (a read-index
    /// round, a forwarded batch): `Error` is not `Clone`, as it can hold a
    /// RocksDB error. The variants shared outcomes produce keep their kind;
    /// others become `Raft` with the same message.
    pub(crate) fn copy(&self) -> Error {
        match self {
            Error::NoLeader => Error::NoLeader,
            Error::ShuttingDown => Error::ShuttingDown,
            Error::LeaderUnreachable { addr, message } => Error::LeaderUnreachable {
                addr: addr.clone(),
                message: message.clone(),
            },
            Error::Timeout(m) => Error::Timeout(m.clone()),
            Error::Proposal { code, message } => Error::Proposal {
                code: *code,
                message: message.clone(),
            },
            other => Error::Raft(other.to_string()),
        }
    }
}
