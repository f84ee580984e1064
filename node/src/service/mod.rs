//! gRPC services (`quiver.v1`), plus the conversions and error mapping they share.

pub mod cluster;
pub mod collections;
pub mod convert;
pub mod points;
pub mod raft;
mod status;

pub use cluster::ClusterService;
pub use collections::CollectionsService;
pub use points::PointsService;
pub use raft::RaftService;
