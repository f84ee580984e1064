//! Golden files: stored rows, logged commands and shard requests as this version writes them,
//! committed under `tests/golden/`. Every later version must keep decoding them to the same
//! values; a change that cannot is a new encoding format (and these files are then kept as the
//! record of the old one).
//!
//! `QUIVER_BLESS_GOLDEN=1 cargo test -p quiver-node --test golden` writes the files afresh; only
//! do that for a value added here, never to make a failing comparison pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use openraft::{BasicNode, EntryPayload, LeaderId, LogId, Membership};
use quiver_core::encoding;
use quiver_core::placement::{AliasAction, Placement, ShardPlacement};
use quiver_core::point::{
    CollectionMeta, CollectionSpec, IndexKind, JsonMap, NewPoint, PointId, PointRecord,
};
use quiver_core::shard::{
    CountQuery, NewVector, PayloadChange, PointsCommand, ScrollQuery, SearchQuery, Selection,
};
use quiver_core::Error;
use quiver_index::distance::Metric;
use quiver_index::filter::Filter;
use quiver_index::params::HnswParams;
use quiver_index::payload_index::FieldType;
use quiver_node::raft::Entry;
use quiver_node::sm::{
    Applied, AppliedRecord, EncodedCommand, MachineKind, MetaCommand, Proposal, ShardCommand,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.bin"))
}

/// Checks that the committed file `name` decodes to `value` (or writes it when blessing).
fn golden<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: &T) {
    let file = path(name);
    if std::env::var_os("QUIVER_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, encoding::encode(value).unwrap()).unwrap();
        return;
    }
    let bytes = std::fs::read(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a new value? bless it, see the module doc)",
            file.display()
        )
    });
    let decoded: T = encoding::decode(name, &bytes).unwrap();
    assert_eq!(&decoded, value, "{name}");
}

fn spec() -> CollectionSpec {
    CollectionSpec {
        name: "docs".into(),
        dim: 3,
        metric: Metric::Cosine,
        index: IndexKind::Hnsw(HnswParams {
            m: 12,
            ef_construction: 150,
        }),
        payload_indexes: vec![
            ("category".into(), FieldType::Keyword),
            ("year".into(), FieldType::Integer),
            ("price".into(), FieldType::Float),
            ("created_at".into(), FieldType::Datetime),
        ],
        default_ef: Some(48),
        // (written before quantization and text fields existed: their absence reads as none)
        quantization: Default::default(),
        text_fields: Vec::new(),
        embed: None,
    }
}

fn payload() -> JsonMap {
    serde_json::json!({"category": "ml", "year": 2024, "tags": ["a", {"b": 1.5}], "none": null})
        .as_object()
        .cloned()
        .unwrap()
}

fn filter() -> Filter {
    Filter::from_json_str(
        r#"{"category": {"$in": ["ml", "db"]}, "year": {"$gte": 2020},
            "created_at": {"$lt": "2024-01-15T10:00:00Z"}, "$or": [{"a": true}, {"b": {"$exists": false}}],
            "$not": {"c": {"$ne": "x"}}}"#,
    )
    .unwrap()
}

fn uuid() -> PointId {
    PointId::Uuid(uuid::Uuid::from_u128(
        0x3b0f8c1e_8f1e_4c1a_9d5e_1a2b3c4d5e6f,
    ))
}

#[test]
fn stored_rows_keep_decoding() {
    golden(
        "row_point_record",
        &PointRecord {
            slot: 41,
            vector: vec![0.25, -1.5, 3.0],
            payload: payload(),
        },
    );
    golden(
        "row_collection_meta",
        &CollectionMeta {
            id: 2048,
            spec: spec(),
        },
    );
    golden(
        "row_placement",
        &Placement {
            id: 2,
            spec: CollectionSpec {
                index: IndexKind::Flat,
                default_ef: None,
                ..spec()
            },
            replication_factor: 3,
            shards: vec![ShardPlacement {
                shard: 0,
                group: 2048,
                replicas: vec![1, 2, 3],
                epoch: 4,
            }],
            ready: true,
        },
    );
    golden(
        "row_applied",
        &AppliedRecord {
            index: Some(77),
            raft_state: vec![1, 2, 3, 255],
        },
    );
    let ok: Result<Applied, Error> = Ok(Applied {
        index: 9,
        affected: 500,
        duplicate: false,
    });
    golden("row_once_outcome_ok", &ok);
    let rejected: Result<Applied, Error> = Err(Error::invalid("points[3].vector", "bad"));
    golden("row_once_outcome_rejected", &rejected);
}

#[test]
fn logged_commands_keep_decoding() {
    let shard = |key: &str, command| Proposal::new(MachineKind::Shard, key, command);
    golden(
        "command_shard_serve",
        &shard(
            "",
            ShardCommand::Serve(CollectionMeta {
                id: 2048,
                spec: spec(),
            }),
        ),
    );
    golden(
        "command_shard_upsert",
        &shard(
            "request-7/0",
            ShardCommand::Points(PointsCommand::Upsert {
                collection: "docs".into(),
                collection_id: 2048,
                points: vec![
                    NewPoint {
                        id: PointId::Num(1),
                        vector: vec![0.5, -1.0, 2.0],
                        payload: payload(),
                    },
                    NewPoint {
                        id: uuid(),
                        vector: vec![0.0, 1.0, 0.0],
                        payload: JsonMap::new(),
                    },
                ],
            }),
        ),
    );
    golden(
        "command_shard_delete",
        &shard(
            "",
            ShardCommand::Points(PointsCommand::Delete {
                collection: "docs".into(),
                collection_id: 2048,
                ids: vec![PointId::Num(1), uuid()],
            }),
        ),
    );
    golden(
        "command_shard_delete_by_filter",
        &shard(
            "k",
            ShardCommand::Points(PointsCommand::DeleteByFilter {
                collection: "docs".into(),
                collection_id: 2048,
                filter: filter(),
            }),
        ),
    );
    golden(
        "command_shard_set_payload",
        &shard(
            "k/1",
            ShardCommand::Points(PointsCommand::UpdatePayload {
                collection: "docs".into(),
                collection_id: 2048,
                selection: Selection::Ids(vec![PointId::Num(1), uuid()]),
                change: PayloadChange::Set(payload()),
                max_payload_bytes: Some(65536),
            }),
        ),
    );
    golden(
        "command_shard_delete_payload_keys",
        &shard(
            "k/2",
            ShardCommand::Points(PointsCommand::UpdatePayload {
                collection: "docs".into(),
                collection_id: 2048,
                selection: Selection::Filter(filter()),
                change: PayloadChange::DeleteKeys(vec!["tags".into(), "meta.source".into()]),
                max_payload_bytes: None,
            }),
        ),
    );
    golden(
        "command_shard_update_vectors",
        &shard(
            "k/3",
            ShardCommand::Points(PointsCommand::UpdateVectors {
                collection: "docs".into(),
                collection_id: 2048,
                points: vec![NewVector {
                    id: PointId::Num(1),
                    vector: vec![1.0, 0.0, -0.5],
                }],
            }),
        ),
    );
    golden(
        "command_shard_set_payload_indexes",
        &shard(
            "",
            ShardCommand::SetPayloadIndexes {
                collection_id: 2048,
                indexes: vec![("tags".into(), FieldType::Keyword)],
            },
        ),
    );
    let meta = |command| Proposal::new(MachineKind::Meta, "create-1", command);
    golden(
        "command_meta_create",
        &meta(MetaCommand::CreateCollection {
            spec: spec(),
            replication_factor: 2,
            replicas: vec![vec![1, 2], vec![2, 3]],
        }),
    );
    golden(
        "command_meta_mark_ready",
        &meta(MetaCommand::MarkReady {
            name: "docs".into(),
            id: 2,
        }),
    );
    golden(
        "command_meta_drop",
        &meta(MetaCommand::DropCollection {
            name: "docs".into(),
        }),
    );
    golden(
        "command_meta_set_payload_index",
        &meta(MetaCommand::SetPayloadIndex {
            name: "docs".into(),
            id: 2,
            key: "year".into(),
            field_type: Some(FieldType::Integer),
        }),
    );
    golden(
        "command_meta_update_aliases",
        &meta(MetaCommand::UpdateAliases {
            actions: vec![
                AliasAction::Delete {
                    alias: "live".into(),
                },
                AliasAction::Create {
                    alias: "live".into(),
                    collection: "docs".into(),
                },
                AliasAction::Rename {
                    from: "old".into(),
                    to: "new".into(),
                },
            ],
        }),
    );
    golden(
        "command_meta_set_replicas",
        &meta(MetaCommand::SetReplicas {
            group: 2048,
            epoch: 3,
            replicas: vec![2, 3, 4],
        }),
    );
}

#[test]
fn raft_log_entries_keep_decoding() {
    let log_id = LogId::new(LeaderId::new(3, 2), 41);
    let command = Proposal::new(
        MachineKind::Shard,
        "",
        ShardCommand::Points(PointsCommand::Delete {
            collection: "docs".into(),
            collection_id: 2048,
            ids: vec![PointId::Num(5)],
        }),
    )
    .encode()
    .unwrap();
    golden(
        "log_entry_normal",
        &Entry {
            log_id,
            payload: EntryPayload::Normal(command),
        },
    );
    golden(
        "log_entry_blank",
        &Entry {
            log_id,
            payload: EntryPayload::Blank,
        },
    );
    let nodes = BTreeMap::from([
        (1, BasicNode::new("127.0.0.1:7001")),
        (2, BasicNode::new("127.0.0.1:7002")),
    ]);
    golden(
        "log_entry_membership",
        &Entry {
            log_id,
            payload: EntryPayload::Membership(Membership::new(vec![[1, 2].into()], nodes)),
        },
    );
    // The command inside a normal entry decodes for the machine it was proposed to, only.
    let bytes = std::fs::read(path("log_entry_normal")).unwrap();
    let entry: Entry = encoding::decode("entry", &bytes).unwrap();
    let EntryPayload::Normal(encoded) = entry.payload else {
        panic!("not a normal entry");
    };
    assert!(Proposal::<ShardCommand>::decode(MachineKind::Shard, &encoded).is_ok());
    let refused = Proposal::<MetaCommand>::decode(MachineKind::Meta, &encoded).unwrap_err();
    assert!(refused.to_string().contains("Shard"), "{refused}");
    let _: &EncodedCommand = &encoded;
}

#[test]
fn shard_requests_keep_decoding() {
    golden(
        "request_search",
        &SearchQuery {
            vector: vec![0.1, 0.9, 0.0],
            top_k: 10,
            ef: Some(64),
            filter: Some(filter()),
            exact: false,
            with_payload: true,
            with_vector: false,
            rescore: None,
            oversampling: None,
        },
    );
    golden(
        "request_scroll",
        &ScrollQuery {
            after: Some(uuid()),
            limit: 100,
            filter: None,
            with_payload: true,
            with_vector: true,
        },
    );
    golden("request_ids", &vec![PointId::Num(7), uuid()]);
    golden(
        "request_count",
        &CountQuery {
            filter: Some(filter()),
            exact: false,
        },
    );
}
