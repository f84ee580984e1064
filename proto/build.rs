//! Compiles the .proto files with protox (pure Rust, no system protoc) and generates the tonic
//! code plus a file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/quiver/v1/common.proto",
        "proto/quiver/v1/collections.proto",
        "proto/quiver/v1/points.proto",
        "proto/quiver/v1/raft.proto",
        "proto/quiver/v1/cluster.proto",
        "proto/quiver/v1/shard.proto",
        "proto/quiver/v1/snapshots.proto",
        "proto/quiver/v1/features.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("quiver_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
