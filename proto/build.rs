//! Generates the Rust code for Rafter's .proto files with protox (a pure-Rust
//! protobuf compiler), so building needs no system `protoc`. The object API
//! (`rafter.api.v1`) also gets serde impls following the proto3 JSON mapping
//! (pbjson), which is how objects read and print as YAML/JSON.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/rafter/kv.proto",
        "proto/rafter/raft.proto",
        "proto/rafter/api/v1/objects.proto",
        "proto/rafter/api/v1/api.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let descriptors = fds.encode_to_vec();
    tonic_prost_build::configure()
        // Sorted maps: labels and data print in a stable order.
        .btree_map(".rafter.api")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map([".rafter.api"])
        .build(&[".rafter.api"])?;
    Ok(())
}
