//! Placing a new collection's shards on nodes: [`place`] spreads replicas evenly, least loaded
//! first. (The map itself: [`quiver_core::placement`]; the copy a node's meta replica applied:
//! [`crate::sm::catalogue::Placements`].)

use std::collections::{BTreeMap, BTreeSet};

use quiver_core::placement::NodeId;
use quiver_core::{Error, Result};

/// Chooses `replication_factor` distinct nodes for each of `shard_count` shards. Nodes that
/// answered (`live`) come before those that did not, then nodes carrying fewer replicas (in
/// `load`, which is updated), and ties rotate with the shard. Of each shard's live nodes, the one
/// that is first for the fewest shards becomes its first replica, which forms the group: a node
/// that is down gets replicas (they catch up when it returns) but never forms a group.
pub fn place(
    nodes: &[NodeId],
    live: &BTreeSet<NodeId>,
    load: &mut BTreeMap<NodeId, usize>,
    shard_count: u32,
    replication_factor: u32,
) -> Result<Vec<Vec<NodeId>>> {
    let rf = replication_factor as usize;
    if rf > nodes.len() {
        return Err(Error::invalid(
            "replication_factor",
            format!(
                "{rf} replicas need {rf} nodes; the cluster has {}",
                nodes.len()
            ),
        ));
    }
    let mut firsts: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut shards = Vec::with_capacity(shard_count as usize);
    for shard in 0..shard_count as usize {
        let mut candidates: Vec<(bool, usize, usize, NodeId)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let rotation = (i + nodes.len() - shard % nodes.len()) % nodes.len();
                let down = !live.contains(n);
                (down, load.get(n).copied().unwrap_or(0), rotation, *n)
            })
            .collect();
        candidates.sort_unstable();
        let mut chosen: Vec<NodeId> = candidates.iter().take(rf).map(|c| c.3).collect();
        // The first replica forms the group and usually leads it: of the chosen live nodes, the
        // one that is first for the fewest shards so far.
        if let Some(at) = (0..chosen.len())
            .filter(|&i| live.contains(&chosen[i]))
            .min_by_key(|&i| firsts.get(&chosen[i]).copied().unwrap_or(0))
        {
            chosen.swap(0, at);
            *firsts.entry(chosen[0]).or_default() += 1;
        }
        for n in &chosen {
            *load.entry(*n).or_default() += 1;
        }
        shards.push(chosen);
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_replicas_and_first_replicas_evenly() {
        let nodes = [1, 2, 3];
        let mut load = BTreeMap::new();
        let all = BTreeSet::from(nodes);
        let shards = place(&nodes, &all, &mut load, 6, 2).unwrap();
        for s in &shards {
            assert_eq!(s.len(), 2);
            assert_ne!(s[0], s[1]);
        }
        assert!(load.values().all(|&n| n == 4), "{load:?}");
        let mut firsts = BTreeMap::new();
        for s in &shards {
            *firsts.entry(s[0]).or_insert(0) += 1;
        }
        let (most, least) = (firsts.values().max(), firsts.values().min());
        assert!(
            firsts.len() == 3 && most.zip(least).is_some_and(|(a, b)| a - b <= 1),
            "{firsts:?}"
        );
        // A new collection fills the least loaded node first.
        let mut load = BTreeMap::from([(1, 5), (2, 5), (3, 0)]);
        assert_eq!(place(&nodes, &all, &mut load, 1, 1).unwrap(), vec![vec![3]]);
        let err = place(&nodes, &all, &mut BTreeMap::new(), 1, 4).unwrap_err();
        assert!(err.to_string().contains("replication_factor"), "{err}");
    }

    #[test]
    fn a_node_that_is_down_gets_replicas_but_forms_no_group() {
        let nodes = [1, 2, 3, 4];
        let live = BTreeSet::from([1, 2, 4]);
        // every node is needed: node 3 still holds a replica of each shard, never the first
        let shards = place(&nodes[..3], &live, &mut BTreeMap::new(), 6, 3).unwrap();
        for s in &shards {
            assert_eq!(s.len(), 3);
            assert!(s.contains(&3) && s[0] != 3, "{shards:?}");
        }
        // with a node to spare, the live ones are chosen
        let shards = place(&nodes, &live, &mut BTreeMap::new(), 4, 3).unwrap();
        assert!(shards.iter().all(|s| !s.contains(&3)), "{shards:?}");
    }
}
