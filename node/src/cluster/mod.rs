//! The cluster as one node takes part in it: its replicas of Raft groups, the shard map it
//! follows, and the operations that move shards between nodes.
//!
//! - [`group`]: one group's replica on this node (RocksDB, state machine, openraft instance);
//! - [`node`]: the meta group's replica and the shard replicas placed here, kept in line with the
//!   shard map (`node/reconcile.rs`), and the cluster operations (create, drop; move and remove
//!   in `node/moves.rs`);
//! - [`membership`]: a group's voters and learners changed, each step bounded in time;
//! - [`placement`]: where a new collection's replicas go;
//! - [`fence`]: a leader's hold on its group's writes, the cut of a snapshot.

pub mod fence;
pub mod group;
pub mod membership;
pub mod node;
pub mod placement;
