//! Commands: every mutation of node state, namespaced by table.
//!
//! A command is what a Raft log entry carries ([`EncodedCommand`]), so its encoding is versioned:
//! one version byte, then bincode. Decoding rejects versions it does not know rather than misreading them. New
//! tables (text, features, registry) add a namespace variant at the end; existing variants never
//! change shape within a version.

use quiver_index::filter::Filter;
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};
use crate::point::{CollectionSpec, NewPoint, PointId};
use crate::raft::NodeId;

/// The encoding version written by this build.
pub const COMMAND_VERSION: u8 = 1;

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

/// Mutations of one collection's points. Each names the collection and the id it had when the
/// request was validated; if the collection was dropped and re-created meanwhile, the command is
/// rejected rather than applied to data it was not checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PointsCommand {
    /// Insert or replace whole points; ids are unique within the batch.
    Upsert {
        collection: String,
        collection_id: u64,
        points: Vec<NewPoint>,
    },
    /// Delete points by id; missing ids are ignored.
    Delete {
        collection: String,
        collection_id: u64,
        ids: Vec<PointId>,
    },
    /// Delete every point whose payload matches the filter at the moment the command is
    /// applied, so every replica deletes the same points.
    DeleteByFilter {
        collection: String,
        collection_id: u64,
        filter: Filter,
    },
}

/// A command in its versioned encoding: what a Raft log entry carries, so an entry written by
/// one build is read by another or refused, never misread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedCommand(pub Vec<u8>);

impl Command {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![COMMAND_VERSION];
        bincode::serialize_into(&mut out, self)
            .map_err(|e| NodeError::Internal(format!("encode command: {e}")))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&COMMAND_VERSION, body)) => bincode::deserialize(body)
                .map_err(|e| NodeError::Internal(format!("decode command: {e}"))),
            Some((v, _)) => Err(NodeError::Internal(format!(
                "command encoding version {v} is not supported (this build reads {COMMAND_VERSION})"
            ))),
            None => Err(NodeError::Internal("empty command".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::IndexKind;
    use quiver_index::distance::Metric;
    use quiver_index::hnsw::HnswParams;
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
            assert_eq!(bytes[0], COMMAND_VERSION);
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
            .contains("version 99"));
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[COMMAND_VERSION, 250, 1]).is_err());
    }
}
