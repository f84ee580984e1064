//! Replication: every node's state machine sits under openraft.
//!
//! A write is a [`Command`](crate::command::Command) proposed to a Raft group; it is acknowledged once committed by a
//! majority and applied. Storage for both halves is the node's [`Storage`](crate::storage):
//! - [`log_store`]: the Raft log, vote and purge marks in their own tables;
//! - [`state_machine`]: the adapter that applies entries to the [`StateMachine`](crate::state_machine::StateMachine)
//!   and builds and installs snapshots;
//! - [`network`]: how a group reaches its peers.
//!
//! openraft 0.9 is its stable line; the multi-raft and gRPC examples of the 0.10 alphas are
//! sketches we learn from rather than an API to build on.

// openraft's `StorageError` is large by design, and every storage function returns it.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod network;
#[allow(clippy::result_large_err)]
pub mod state_machine;

use crate::command::EncodedCommand;
use crate::state_machine::Applied;
use crate::NodeError;

/// Node ids within a cluster.
pub type NodeId = u64;

/// What applying one entry produced: the command's outcome (blank and membership entries
/// produce `Ok` with nothing affected).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApplyResponse(pub Result<Applied, NodeError>);

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
