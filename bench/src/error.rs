//! [`BenchError`]: everything that can stop a benchmark run.

use std::path::PathBuf;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A server binary is missing.
    #[error("{what} not found at {path}: {hint}")]
    MissingBinary {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    /// A server process could not be started.
    #[error("cannot start {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A Rafter request failed for good.
    #[error("rafter request failed")]
    Rafter(#[from] rafter_client::Error),
    /// An etcd request failed for good.
    #[error("etcd request failed: {0}")]
    Etcd(#[from] tonic::Status),
    /// An endpoint string is malformed.
    #[error("invalid endpoint {0}")]
    Endpoint(String),
    /// A cluster did not reach the state waited for.
    #[error("{0}")]
    Timeout(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}
