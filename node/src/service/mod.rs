//! gRPC services (`quiver.v1`), plus the conversions and error mapping they share; [`shard`]
//! holds the requests one shard replica serves.

pub mod cluster;
pub mod collections;
pub mod convert;
pub mod points;
pub mod raft;
pub mod shard;
mod status;

pub use cluster::ClusterService;
pub use collections::CollectionsService;
pub use points::PointsService;
pub use raft::RaftService;
