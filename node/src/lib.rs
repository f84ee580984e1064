//! A quiver storage node.
//!
//! - [`storage`]: the key-value layer (RocksDB, and an in-memory engine for tests);
//! - [`command`] and [`state_machine`]: every mutation as a command, applied in log order;
//! - [`raft`]: openraft over that state machine: log store, adapter, gRPC transport;
//! - [`collection`]: a collection's points, HNSW graph, payload indexes and search planner;
//! - [`node`]: the write path (through Raft) and reads over the collections;
//! - [`service`]: the gRPC services; [`server`]: running them;
//! - `testing` (feature): a server fixture and a fault-injecting TCP proxy.

pub mod collection;
pub mod command;
pub mod error;
pub mod node;
pub mod point;
pub mod raft;
pub mod server;
pub mod service;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{NodeError, Result};
pub use node::Node;
pub use server::{run, serve};
