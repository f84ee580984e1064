//! A quiver storage node: replicated storage, read from the bottom layer up.
//!
//! - [`storage`]: the key-value layer (RocksDB, and an in-memory engine for tests);
//! - [`shard`]: a collection's points in memory: its appendable and sealed (HNSW) segments, the
//!   optimizer that builds them, segment files, payload indexes and the search planner;
//! - [`sm`]: the state machines: every mutation a command of its group's namespace
//!   ([`sm::ShardCommand`], [`sm::MetaCommand`]), applied in log order onto storage and then
//!   onto memory; snapshots of them;
//! - [`raft`]: openraft over that state machine: log store, adapter, gRPC transport;
//! - [`cluster`]: one Raft group's replica ([`cluster::group`]), the node that hosts the meta
//!   group and its shard replicas and follows the shard map ([`cluster::node`]), and placement;
//! - [`local_shards`]: the shard requests this node's replicas serve, as a
//!   [`quiver_core::shard::ShardClient`];
//! - [`service`]: the gRPC services a node serves (`Raft`, `Shard`, `Cluster`);
//! - `testing` (feature): a fault-injecting TCP proxy and loopback addresses for cluster tests.
//!
//! Clients are served by the router's front (`quiver-router`), which every `quiver serve`
//! process runs beside its node.

pub mod cluster;
pub mod local_shards;
pub mod raft;
pub mod service;
pub mod shard;
pub mod sm;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::node::Node;
pub use local_shards::LocalShards;
