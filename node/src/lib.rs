//! A quiver storage node.
//!
//! - [`storage`]: the key-value layer (RocksDB, and an in-memory engine for tests);
//! - [`command`] and [`state_machine`]: every mutation as a command, applied in log order;
//! - [`raft`]: openraft over that state machine: log store, adapter, gRPC transport;
//! - [`collection`]: a collection's points, HNSW graph, payload indexes and search planner;
//! - [`group`]: one Raft group's replica (its RocksDB, state machine and openraft instance);
//! - [`placement`]: the shard map the meta group holds; [`node`]: the groups a node hosts and
//!   the cluster operations that move them;
//! - [`coordinator`]: splits requests by shard, sends them to the shard leaders (or nearest
//!   replicas) and merges the answers; nodes and routers both use it;
//! - [`service`]: the gRPC services; [`server`]: running them;
//! - `testing` (feature): a server fixture and a fault-injecting TCP proxy.

pub mod collection;
pub mod command;
pub mod coordinator;
pub mod error;
pub mod group;
pub mod node;
pub mod placement;
pub mod point;
pub mod raft;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{NodeError, Result};
pub use node::Node;
pub use server::{run, serve};
