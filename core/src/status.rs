//! The one place errors become gRPC statuses.
//!
//! A "not the leader" answer is marked ([`headers::NOT_LEADER`]) and carries the leader when
//! known ([`headers::LEADER_ID`], [`headers::LEADER_ADDRESS`]), so callers follow it without
//! parsing the message; a request for a shard replica the node does not hold carries
//! [`headers::STALE_SHARD`]. [`quiver_proto::wire::classify`] reads these back.

use quiver_proto::wire::headers;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Conflict(_) => Code::Aborted,
            Error::NotLeader { .. } | Error::Unavailable(_) | Error::NoReplica { .. } => {
                Code::Unavailable
            }
            Error::Storage(_) | Error::Serve(_) | Error::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let Error::NotLeader { leader, address } = &e {
            let metadata = status.metadata_mut();
            metadata.insert(headers::NOT_LEADER, MetadataValue::from(1u64));
            if let Some(id) = leader {
                metadata.insert(headers::LEADER_ID, MetadataValue::from(*id));
            }
            if let Some(value) = address.as_deref().and_then(|a| a.parse().ok()) {
                metadata.insert(headers::LEADER_ADDRESS, value);
            }
        }
        if let Error::InvalidArgument { field, .. } = &e {
            if let Ok(value) = field.parse() {
                status.metadata_mut().insert(headers::FIELD, value);
            }
        }
        if let Error::NoReplica { group } = &e {
            status
                .metadata_mut()
                .insert(headers::STALE_SHARD, MetadataValue::from(*group));
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::wire::{classify, Failure};

    use super::*;

    #[test]
    fn refusals_read_back_as_not_applied() {
        let named = Status::from(Error::NotLeader {
            leader: Some(2),
            address: Some("127.0.0.1:7002".into()),
        });
        assert_eq!(classify(&named), Failure::Redirect("127.0.0.1:7002".into()));
        let unnamed = Status::from(Error::NotLeader {
            leader: None,
            address: None,
        });
        assert_eq!(classify(&unnamed), Failure::NotApplied);
        assert_eq!(
            classify(&Status::from(Error::NoReplica { group: 9 })),
            Failure::NotApplied
        );
        assert_eq!(
            classify(&Status::from(Error::Unavailable("no quorum".into()))),
            Failure::Unknown
        );
        assert_eq!(
            classify(&Status::from(Error::invalid("vector", "bad"))),
            Failure::Final
        );
    }
}
