//! The text index through a shard group's machine: changed by the applied commands, searchable
//! after its batched commit (which a write can wait for), made good after a restart that lost a
//! commit, and carried by a snapshot.
use std::time::Duration;

use quiver_core::point::{
    CollectionMeta, CollectionSpec, IndexKind, NewPoint, PointId, TextAnalyzer, TextFieldSpec,
};
use quiver_core::shard::{PayloadChange, PointsCommand, Selection, TextQuery};
use quiver_index::distance::Metric;
use quiver_index::filter::Filter;
use quiver_index::quantize::Quantization;

use super::points::Points;
use super::*;
use crate::shard::SegmentConfig;
use crate::sm::snapshot::write_snapshot;
use crate::storage::{RocksEnv, RocksStorage};

fn spec() -> CollectionSpec {
    CollectionSpec {
        name: "docs".into(),
        dim: 2,
        metric: Metric::Cosine,
        index: IndexKind::Flat,
        payload_indexes: Vec::new(),
        default_ef: None,
        quantization: Quantization::None,
        text_fields: vec![
            TextFieldSpec {
                name: "body".into(),
                analyzer: TextAnalyzer::English,
            },
            TextFieldSpec {
                name: "tags".into(),
                analyzer: TextAnalyzer::Whitespace,
            },
        ],
        embed: None,
    }
}

fn open(storage: &Arc<dyn Storage>, derived: &Path, commit: Duration) -> ShardMachine {
    let segments = SegmentConfig {
        text_commit: commit,
        ..SegmentConfig::default()
    };
    ShardMachine::open_with(storage.clone(), derived, Points::with_segments(segments)).unwrap()
}

fn upsert(points: &[(u64, serde_json::Value)]) -> ShardCommand {
    ShardCommand::Points(PointsCommand::Upsert {
        collection: "docs".into(),
        collection_id: 1,
        points: points
            .iter()
            .map(|(id, payload)| NewPoint {
                id: PointId::Num(*id),
                vector: vec![1.0, 0.0],
                payload: payload.as_object().cloned().unwrap(),
            })
            .collect(),
    })
}

/// The ids a text query finds, best first.
fn found(sm: &ShardMachine, text: &str, filter: Option<serde_json::Value>) -> Vec<u64> {
    let collection = sm.view().get("docs").unwrap();
    let query = TextQuery {
        text: text.into(),
        fields: Vec::new(),
        limit: 10,
        filter: filter.map(|f| Filter::from_json(&f).unwrap()),
        with_payload: true,
        with_vector: false,
    };
    let answer = collection.text_candidates(&query).unwrap();
    for hit in &answer.hits {
        assert!(hit.payload.is_some());
    }
    answer
        .hits
        .iter()
        .map(|h| match h.id {
            PointId::Num(n) => n,
            PointId::Uuid(_) => unreachable!(),
        })
        .collect()
}

fn wait_indexed(sm: &ShardMachine, index: u64) {
    let collection = sm.view().get("docs").unwrap();
    let text = collection.text().unwrap();
    text.wait_indexed(index, Duration::from_secs(10)).unwrap();
}

/// Stops the text index's writing (its commits, merges and file deletions), so the store can
/// be opened again at once.
fn close(sm: &ShardMachine) {
    sm.view().list().iter().for_each(|c| c.close());
}

#[test]
fn writes_change_the_text_index_and_are_searchable_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksEnv::for_tests();
    let storage: Arc<dyn Storage> =
        Arc::new(RocksStorage::open(&dir.path().join("db"), &env).unwrap());
    let derived = dir.path().join("derived");
    let mut sm = open(&storage, &derived, Duration::from_millis(50));
    let meta = CollectionMeta {
        id: 1,
        spec: spec(),
    };
    sm.apply(1, &ShardCommand::Serve(meta)).unwrap();
    sm.apply(
        2,
        &upsert(&[
            (
                1,
                serde_json::json!({"body": "Mutations of BRCA1 raise cancer risk", "n": 1}),
            ),
            (
                2,
                serde_json::json!({"body": "The disk is full: error E42", "n": 2}),
            ),
            (3, serde_json::json!({"tags": ["cancer", "Genes"], "n": 3})),
            (
                4,
                serde_json::json!({"title": "not a text field: cancer", "n": 4}),
            ),
        ]),
    )
    .unwrap();
    wait_indexed(&sm, 2);
    let mut cancer = found(&sm, "cancer", None);
    cancer.sort();
    assert_eq!(cancer, [1, 3]);
    // stemmed in `body`; split on whitespace only in `tags`, which holds "cancer" as is
    assert_eq!(found(&sm, "cancers", None), [1]);
    assert_eq!(found(&sm, "e42", None), [2]);
    // a filter applies to text candidates
    assert_eq!(found(&sm, "cancer", Some(serde_json::json!({"n": 3}))), [3]);

    // an upsert replaces the point's text
    sm.apply(
        3,
        &upsert(&[(1, serde_json::json!({"body": "now about disks"}))]),
    )
    .unwrap();
    wait_indexed(&sm, 3);
    assert_eq!(found(&sm, "cancer", None), [3]);
    let mut disks = found(&sm, "disk", None);
    disks.sort();
    assert_eq!(disks, [1, 2]);

    // a payload change re-indexes; a delete removes
    let change = PointsCommand::UpdatePayload {
        collection: "docs".into(),
        collection_id: 1,
        selection: Selection::Ids(vec![PointId::Num(2)]),
        change: PayloadChange::Set(
            serde_json::json!({"body": "cancer again"})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        max_payload_bytes: None,
    };
    sm.apply(4, &ShardCommand::Points(change)).unwrap();
    let delete = PointsCommand::Delete {
        collection: "docs".into(),
        collection_id: 1,
        ids: vec![PointId::Num(3)],
    };
    sm.apply(5, &ShardCommand::Points(delete)).unwrap();
    wait_indexed(&sm, 5);
    assert_eq!(found(&sm, "cancer", None), [2]);
    assert_eq!(found(&sm, "disk", None), [1]);

    // a query of stop words only has no terms
    let collection = sm.view().get("docs").unwrap();
    let empty = TextQuery {
        text: "the of and".into(),
        fields: vec!["body".into()],
        limit: 10,
        filter: None,
        with_payload: false,
        with_vector: false,
    };
    assert!(matches!(
        collection.text_candidates(&empty),
        Err(quiver_core::Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_restart_indexes_what_the_last_commit_missed_and_a_snapshot_carries_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksEnv::for_tests();
    let db = dir.path().join("db");
    let derived = dir.path().join("derived");
    {
        let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(&db, &env).unwrap());
        let mut sm = open(&storage, &derived, Duration::from_millis(20));
        let meta = CollectionMeta {
            id: 1,
            spec: spec(),
        };
        sm.apply(1, &ShardCommand::Serve(meta)).unwrap();
        sm.apply(
            2,
            &upsert(&[(1, serde_json::json!({"body": "alpha beta"}))]),
        )
        .unwrap();
        wait_indexed(&sm, 2);
        close(&sm);
        drop(sm);
        crate::storage::release(storage);
    }
    {
        // commits so rare that none happens before the process "dies"
        let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(&db, &env).unwrap());
        let mut sm = open(&storage, &derived, Duration::from_secs(3600));
        assert_eq!(found(&sm, "alpha", None), [1]);
        sm.apply(
            3,
            &upsert(&[(2, serde_json::json!({"body": "alpha gamma"}))]),
        )
        .unwrap();
        sm.apply(4, &upsert(&[(1, serde_json::json!({"body": "delta"}))]))
            .unwrap();
        assert_eq!(
            found(&sm, "alpha", None),
            Vec::<u64>::new(),
            "not committed yet"
        );
        // (what was not committed is dropped, as by a crash)
        close(&sm);
        drop(sm);
        crate::storage::release(storage);
    }
    let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(&db, &env).unwrap());
    let sm = open(&storage, &derived, Duration::from_millis(20));
    assert_eq!(found(&sm, "alpha", None), [2]);
    assert_eq!(found(&sm, "delta", None), [1]);

    // a snapshot holds the text index's rows; the follower finds what the leader does
    let checkpoint = sm.checkpoint(&dir.path().join("checkpoint")).unwrap();
    let snapshot = dir.path().join("s.snap");
    let mut out = std::fs::File::create(&snapshot).unwrap();
    write_snapshot(checkpoint.state.as_ref(), &checkpoint.derived, &mut out).unwrap();
    drop(out);
    let target: Arc<dyn Storage> =
        Arc::new(RocksStorage::open(&dir.path().join("follower"), &env).unwrap());
    let mut follower = open(
        &target,
        &dir.path().join("follower-derived"),
        Duration::from_millis(20),
    );
    follower.import(&snapshot, checkpoint.applied).unwrap();
    assert_eq!(found(&follower, "alpha", None), [2]);
    assert_eq!(found(&follower, "delta", None), [1]);
}
