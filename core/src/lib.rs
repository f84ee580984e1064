//! What quiver's nodes and routers share: the domain types and how they cross the wire.
//!
//! - [`error`] and [`status`]: the error type and its one mapping to a gRPC status;
//! - [`point`]: point ids, payloads, records and collection specs; [`placement`]: the shard map;
//! - [`convert`]: wire <-> domain conversion, with every validation a request needs;
//! - [`shard`]: what a coordinator asks of a shard replica, and the [`shard::ShardClient`] trait;
//! - [`features`]: what a coordinator asks of a feature-store shard;
//! - [`directory`]: where shards are, and who changes the catalogue;
//! - [`encoding`]: the versioned encoding of stored rows, logged commands and shard requests;
//! - [`snapshot_file`]: the file a collection snapshot is saved as.
//!
//! No storage, no consensus, no index graph: a router links this without them.

pub mod convert;
pub mod directory;
pub mod encoding;
pub mod error;
pub mod features;
pub mod placement;
pub mod point;
pub mod shard;
pub mod snapshot_file;
pub mod status;

pub use error::{Error, Result};
