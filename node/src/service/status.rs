//! The one place node errors become gRPC statuses.
//!
//! A "not the leader" answer also carries the leader in metadata (`quiver-leader-id`,
//! `quiver-leader-address`), so clients can follow it without parsing the message; a request for
//! a shard replica this node does not hold carries `quiver-stale-shard`.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::NodeError;

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::InvalidArgument { .. } => Code::InvalidArgument,
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::AlreadyExists(_) => Code::AlreadyExists,
            NodeError::Conflict(_) => Code::Aborted,
            NodeError::NotLeader { .. }
            | NodeError::Unavailable(_)
            | NodeError::NoReplica { .. } => Code::Unavailable,
            NodeError::Storage(_) | NodeError::Serve(_) | NodeError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let NodeError::NotLeader { leader, address } = &e {
            let metadata = status.metadata_mut();
            if let Some(id) = leader {
                metadata.insert("quiver-leader-id", MetadataValue::from(*id));
            }
            if let Some(value) = address.as_deref().and_then(|a| a.parse().ok()) {
                metadata.insert("quiver-leader-address", value);
            }
        }
        if let NodeError::NoReplica { group } = &e {
            status
                .metadata_mut()
                .insert("quiver-stale-shard", MetadataValue::from(*group));
        }
        status
    }
}
