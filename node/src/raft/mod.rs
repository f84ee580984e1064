//! Replication: every node's state machine sits under openraft.
//!
//! A write is a [`Proposal`](crate::sm::Proposal) to a Raft group; it is acknowledged once
//! committed by a majority and applied. Storage for both halves is the node's
//! [`Storage`](crate::storage):
//! - [`log_store`]: the Raft log, vote and purge marks in their own tables;
//! - [`machine_store`]: the adapter that applies entries to a group's
//!   [`StateMachine`](crate::sm::StateMachine) and builds and installs snapshots;
//! - [`network`]: how a group reaches its peers.
//!
//! openraft 0.9 is its stable line; the multi-raft and gRPC examples of the 0.10 alphas are
//! sketches we learn from rather than an API to build on.

// openraft's `StorageError` is large by design, and every storage function returns it.
#[allow(clippy::result_large_err)]
pub mod log_store;
#[allow(clippy::result_large_err)]
pub mod machine_store;
pub mod network;

use crate::sm::Applied;
use crate::sm::EncodedCommand;
use quiver_core::Error;

pub use quiver_core::placement::NodeId;

/// What applying one entry produced: the command's outcome (blank and membership entries
/// produce `Ok` with nothing affected).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApplyResponse(pub Result<Applied, Error>);

openraft::declare_raft_types!(
    /// openraft's types for quiver's groups.
    pub TypeConfig:
        D = EncodedCommand,
        R = ApplyResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
