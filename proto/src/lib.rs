//! quiver's gRPC API, package `quiver.v1`: the code generated from `proto/quiver/v1/*.proto`
//! (the public `Collections`, `Points`, `Features` and `Cluster` services, and the internal `Shard` and
//! `Raft`), and the wire contract every process follows ([`wire`]).
//!
//! Wire types only; conversions to domain types live in `quiver-core`.

pub mod wire;

/// Generated messages, clients and servers of `quiver.v1`.
pub mod v1 {
    tonic::include_proto!("quiver.v1");
}

/// The encoded file descriptor set of every quiver proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quiver_descriptor");
