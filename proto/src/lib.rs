//! Rafter's wire types: the client-facing KV and Cluster services
//! (`kv`) and the master-to-master Raft transport (`raft`), generated from
//! `proto/rafter/*.proto` at build time.

/// The etcd-like key-value API and the cluster membership API.
pub mod kv {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rafter.kv.v1");
}

/// The Raft transport between masters.
pub mod raft {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rafter.raft.v1");
}
