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

use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::node::Node;

/// Marks a request one node forwarded to another.
const FORWARDED: &str = "quiver-forwarded";

/// Where a cluster-wide change (collections, membership, replica moves) must run: None when this
/// node leads the meta group, else a channel to the leader. A request that was forwarded once is
/// not forwarded again (two nodes with stale views could bounce it): it fails as "not the
/// leader", naming the leader.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn meta_leader_for<T>(node: &Node, request: &Request<T>) -> Result<Option<Channel>, Status> {
    match node.meta_leader_elsewhere()? {
        Some(_) if request.metadata().contains_key(FORWARDED) => {
            let meta = node.meta();
            Err(meta.not_leader(meta.leader()).into())
        }
        other => Ok(other),
    }
}

/// `message` as a request forwarded on a client's behalf.
fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from(1u64));
    request
}
