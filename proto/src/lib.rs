//! Rafter's wire types: the client-facing KV and Cluster services
//! (`kv`), the master-to-master Raft transport (`raft`) and the object API
//! (`api`), generated from `proto/rafter/**/*.proto` at build time, plus what
//! every user of the objects shares: the [`object::Object`] trait, the
//! JSON/YAML view ([`json`]), quantities, selectors and time formats.

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

/// Cluster objects (Pod, Deployment, ...) and the Objects service.
pub mod api {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rafter.api.v1");
    include!(concat!(env!("OUT_DIR"), "/rafter.api.v1.serde.rs"));
}

pub mod age;
pub mod json;
pub mod object;
pub mod quantity;
pub mod selector;
pub mod wellknown;
