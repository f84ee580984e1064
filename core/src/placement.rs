//! Where collections live: each collection is split into shards by a hash of the point id, and
//! each shard is a Raft group of its own, replicated on distinct nodes. The meta group (group 0)
//! holds this map; nodes follow it and routers cache it.

use serde::{Deserialize, Serialize};

use crate::point::{CollectionSpec, PointId};

/// Node ids within a cluster.
pub type NodeId = u64;

/// The meta group: nodes, collections and the shard map.
pub const META_GROUP: u64 = 0;

/// The most shards a collection may have.
pub const MAX_SHARDS: u32 = 256;

/// One shard: a Raft group and the nodes holding its replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub shard: u32,
    pub group: u64,
    /// Nodes with a replica; the first formed the group.
    pub replicas: Vec<NodeId>,
    /// Bumped on every change of `replicas`.
    pub epoch: u64,
}

/// A collection as the meta group knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The meta log index that created it: distinguishes a re-created collection of the same name.
    pub id: u64,
    pub spec: CollectionSpec,
    pub replication_factor: u32,
    pub shards: Vec<ShardPlacement>,
    /// True once every shard group was formed.
    pub ready: bool,
}

/// A change of the collection aliases; a list of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AliasAction {
    /// Points a new `alias` at `collection` (refused if the alias exists: delete it first, in
    /// the same list, to move it).
    Create {
        alias: String,
        collection: String,
    },
    Delete {
        alias: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

impl Placement {
    /// The shard that holds point `id`.
    pub fn shard_of(&self, id: &PointId) -> &ShardPlacement {
        &self.shards[shard_index(id, self.shards.len())]
    }
}

/// The group id of shard `shard` of the collection created at meta index `collection_id`.
/// Never 0 (the meta group), since meta index 0 holds the first membership, not a collection.
pub fn shard_group(collection_id: u64, shard: u32) -> u64 {
    (collection_id << 10) | u64::from(shard)
}

/// The shard number within its collection of shard group `group` (see [`shard_group`]).
pub fn shard_number(group: u64) -> u32 {
    (group & 0x3ff) as u32
}

/// Which of `count` shards holds `id`: FNV-1a of the id's key, so every router and node agrees
/// and the spread is even for sequential and random ids alike.
pub fn shard_index(id: &PointId, count: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.to_key() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % count.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_spread_evenly_over_shards() {
        let mut counts = [0usize; 4];
        for n in 0..4000u64 {
            counts[shard_index(&PointId::Num(n), 4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_index(&PointId::Num(7), 1), 0);
        assert_ne!(shard_group(1, 0), META_GROUP);
        assert_eq!(shard_number(shard_group(7, 255)), 255);
    }
}
