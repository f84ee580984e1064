//! The gRPC services a node serves (tonic impls only): `Raft` (consensus traffic), `Shard`
//! (shard-level reads and writes for coordinators) and `Cluster` (membership, placement, replica
//! moves). Clients' `Collections` and `Points` are served by the router's front.

pub mod cluster;
pub mod raft;
pub mod shard;

pub use cluster::ClusterService;
pub use raft::RaftService;
pub use shard::ShardService;

use quiver_proto::wire::headers::FORWARDED;

use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::cluster::node::Node;

/// Where a cluster-wide change (membership, replica moves) must run: None when this
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
