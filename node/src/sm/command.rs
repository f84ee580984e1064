//! Commands: every mutation of node state, namespaced by table.
//!
//! A command is what a Raft log entry carries ([`EncodedCommand`]), in the versioned encoding of
//! [`quiver_core::encoding`]: a command written by one build is read by another or refused with
//! both formats named, never misread. Variants are tagged by name, so new tables (text, features,
//! registry) add a namespace variant without disturbing the others, and a field added to a
//! command carries a default.

use quiver_core::encoding;
pub use quiver_core::shard::PointsCommand;
use serde::{Deserialize, Serialize};

use quiver_core::placement::NodeId;
use quiver_core::point::CollectionSpec;
use quiver_core::Result;

/// A mutation, applied by the state machine in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Collections(CollectionsCommand),
    Points(PointsCommand),
    /// Changes of the shard map; only the meta group applies them.
    Meta(MetaCommand),
    /// `command`, applied at most once per `key`: a re-proposal with a key already applied
    /// returns the first outcome and changes nothing (a client's retried batch).
    Once {
        key: String,
        command: Box<Command>,
    },
}

/// Changes of the shard map (see [`crate::placement`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A new collection, with the replicas chosen for each shard.
    CreateCollection {
        spec: CollectionSpec,
        replication_factor: u32,
        replicas: Vec<Vec<NodeId>>,
    },
    /// Every shard group of collection `id` has been formed.
    MarkReady {
        name: String,
        id: u64,
    },
    DropCollection {
        name: String,
    },
    /// A shard's replicas changed (a replica moved). Rejected unless the shard is still at
    /// `epoch`, so two changes planned from the same map cannot overwrite each other.
    SetReplicas {
        group: u64,
        epoch: u64,
        replicas: Vec<NodeId>,
    },
}

/// Mutations of the collection catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CollectionsCommand {
    Create(CollectionSpec),
    Drop { name: String },
}

/// A command in its versioned encoding: what a Raft log entry carries, so an entry written by
/// one build is read by another or refused, never misread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedCommand(#[serde(with = "quiver_core::encoding::bytes")] pub Vec<u8>);

impl Command {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encoding::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        encoding::decode("command", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::point::{IndexKind, NewPoint, PointId};
    use quiver_index::distance::Metric;
    use quiver_index::filter::Filter;
    use quiver_index::params::HnswParams;
    use quiver_index::payload_index::FieldType;

    fn samples() -> Vec<Command> {
        let mut payload = serde_json::Map::new();
        payload.insert("tags".into(), serde_json::json!(["a", {"b": 1.5}]));
        vec![
            Command::Collections(CollectionsCommand::Create(CollectionSpec {
                name: "docs".into(),
                dim: 3,
                metric: Metric::Cosine,
                index: IndexKind::Hnsw(HnswParams::default()),
                payload_indexes: vec![("tags".into(), FieldType::Keyword)],
                default_ef: Some(32),
            })),
            Command::Collections(CollectionsCommand::Drop { name: "x".into() }),
            Command::Points(PointsCommand::Upsert {
                collection: "docs".into(),
                collection_id: 3,
                points: vec![NewPoint {
                    id: PointId::Uuid(uuid::Uuid::from_u128(42)),
                    vector: vec![0.5, -1.0, 2.0],
                    payload,
                }],
            }),
            Command::Points(PointsCommand::Delete {
                collection: "docs".into(),
                collection_id: 3,
                ids: vec![PointId::Num(1)],
            }),
            Command::Points(PointsCommand::DeleteByFilter {
                collection: "docs".into(),
                collection_id: 3,
                filter: Filter::from_json_str(r#"{"a":{"$gt":1},"b":{"$in":["x",true]}}"#).unwrap(),
            }),
            Command::Meta(MetaCommand::SetReplicas {
                group: 2048,
                epoch: 4,
                replicas: vec![1, 3],
            }),
            Command::Once {
                key: "batch-7".into(),
                command: Box::new(Command::Meta(MetaCommand::DropCollection {
                    name: "x".into(),
                })),
            },
        ]
    }

    #[test]
    fn commands_round_trip() {
        for c in samples() {
            let bytes = c.encode().unwrap();
            assert_eq!(bytes[0], encoding::FORMAT);
            assert_eq!(Command::decode(&bytes).unwrap(), c);
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_rejected() {
        let mut bytes = samples()[0].encode().unwrap();
        bytes[0] = 99;
        assert!(Command::decode(&bytes)
            .unwrap_err()
            .to_string()
            .contains("format 99"));
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[encoding::FORMAT, 0xc1, 1]).is_err());
    }
}
