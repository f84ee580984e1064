//! The error type node and router share. Every failure a request can meet is one variant here; it
//! becomes a gRPC status in exactly one place ([`crate::status`]).

/// Errors of quiver's libraries.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// The request is malformed; `field` names where (e.g. `points[3].vector`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A named thing does not exist (e.g. `collection \`docs\``).
    #[error("{0} not found")]
    NotFound(String),
    /// A named thing exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// This replica cannot serve the request; `leader` (and its address) is where to send it,
    /// when known.
    #[error("not the leader{}", match (leader, address) {
        (Some(l), Some(a)) => format!("; the leader is node {l} at {a}"),
        (Some(l), None) => format!("; the leader is node {l}"),
        _ => String::new(),
    })]
    NotLeader {
        leader: Option<u64>,
        address: Option<String>,
    },
    /// No quorum, or the group is not ready; the write may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The storage engine failed; the write did not happen.
    #[error("storage: {0}")]
    Storage(String),
    /// The server could not start or serve (e.g. the address is taken).
    #[error("server: {0}")]
    Serve(String),
    /// A bug or an impossible state.
    #[error("internal: {0}")]
    Internal(String),
    /// The request was planned against a state that has changed meanwhile (another change got
    /// there first); it changed nothing and may be planned again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request for a shard group this node holds no replica of: the sender's shard map is
    /// stale (the replica moved), so it should refresh it and retry.
    #[error("unavailable: shard group {group} has no replica on this node (stale shard map)")]
    NoReplica { group: u64 },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
