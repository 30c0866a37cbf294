//! Generates a client for the part of etcd's v3 API the benchmark uses
//! (KV.Range, KV.Put, Watch.Watch, Maintenance.Status) with protox, like
//! `proto/build.rs`: no system `protoc`.
//!
//! Why not the `etcd-client` crate: 0.21 matches our tonic 0.14 / prost 0.14,
//! but its build script runs `tonic_prost_build::compile_protos`, which needs
//! a system `protoc`, and DESIGN.md decision 10 keeps the workspace buildable
//! without one. The wire format is the same either way; the messages in
//! proto/etcd/ are copied field for field from etcd's rpc.proto and kv.proto.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/etcd/rpc.proto", "proto/etcd/kv.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
