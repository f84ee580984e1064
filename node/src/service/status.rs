//! The one place node errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::NodeError;

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::InvalidArgument { .. } => Code::InvalidArgument,
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::AlreadyExists(_) => Code::AlreadyExists,
            NodeError::NotLeader { .. } | NodeError::Unavailable(_) | NodeError::Storage(_) => {
                Code::Unavailable
            }
            NodeError::Serve(_) | NodeError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
