//! The dispatcher's guarantees, through a shard group's machine (points) and the meta group's
//! (catalogue): a model check of applying, rejections, snapshots, idempotency keys.
use std::collections::BTreeMap;

use proptest::prelude::*;
use quiver_index::distance::Metric;
use quiver_index::filter::Filter;
use quiver_index::params::HnswParams;
use quiver_index::payload_index::FieldType;
use quiver_index::quantize::Quantization;

use super::points::{graph_dir, Points};
use super::*;
use crate::shard::search::PlannerConfig;
use crate::shard::SegmentConfig;
use crate::sm::snapshot::write_snapshot;
use crate::storage::MemoryStorage;
use quiver_core::placement::shard_group;
use quiver_core::point::{CollectionMeta, CollectionSpec, IndexKind, JsonMap, NewPoint, PointId};
use quiver_core::shard::PointsCommand;
use quiver_core::shard::SearchQuery;

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(u64, [i8; 2], u8)>),
    Delete(Vec<u64>),
    DeleteTag(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::btree_map(0u64..24, (any::<[i8; 2]>(), 0u8..3), 1..6)
            .prop_map(|m| Op::Upsert(m.into_iter().map(|(id, (v, t))| (id, v, t)).collect())),
        2 => prop::collection::vec(0u64..24, 1..4).prop_map(Op::Delete),
        1 => (0u8..3).prop_map(Op::DeleteTag),
    ]
}

fn vector(v: [i8; 2]) -> Vec<f32> {
    vec![v[0] as f32, v[1] as f32]
}

fn spec(index: IndexKind) -> CollectionSpec {
    quantized_spec(index, Quantization::None)
}

fn quantized_spec(index: IndexKind, quantization: Quantization) -> CollectionSpec {
    CollectionSpec {
        name: "m".into(),
        dim: 2,
        metric: Metric::L2,
        index,
        payload_indexes: vec![("tag".into(), FieldType::Integer)],
        default_ef: None,
        quantization,
        text_fields: Vec::new(),
        embed: None,
    }
}

fn command(op: &Op) -> ShardCommand {
    ShardCommand::Points(match op {
        Op::Upsert(points) => PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points: points
                .iter()
                .map(|(id, v, tag)| NewPoint {
                    id: PointId::Num(*id),
                    vector: vector(*v),
                    payload: serde_json::json!({"tag": tag})
                        .as_object()
                        .cloned()
                        .unwrap(),
                })
                .collect(),
        },
        Op::Delete(ids) => PointsCommand::Delete {
            collection: "m".into(),
            collection_id: 1,
            ids: ids.iter().map(|i| PointId::Num(*i)).collect(),
        },
        Op::DeleteTag(tag) => PointsCommand::DeleteByFilter {
            collection: "m".into(),
            collection_id: 1,
            filter: Filter::from_json(&serde_json::json!({"tag": tag})).unwrap(),
        },
    })
}

/// The model: id -> (vector, tag).
fn apply_model(model: &mut BTreeMap<u64, ([i8; 2], u8)>, op: &Op) {
    match op {
        Op::Upsert(points) => {
            for (id, v, t) in points {
                model.insert(*id, (*v, *t));
            }
        }
        Op::Delete(ids) => ids.iter().for_each(|id| {
            model.remove(id);
        }),
        Op::DeleteTag(tag) => model.retain(|_, (_, t)| t != tag),
    }
}

fn assert_matches_model(sm: &ShardMachine, model: &BTreeMap<u64, ([i8; 2], u8)>) {
    let c = sm.view().get("m").unwrap();
    assert_eq!(c.points_count(), model.len());
    let all: Vec<PointId> = (0..24).map(PointId::Num).collect();
    let got: BTreeMap<u64, (Vec<f32>, serde_json::Value)> = c
        .get(&all)
        .into_iter()
        .map(|(id, v, p)| {
            let PointId::Num(n) = id else { unreachable!() };
            (n, (v, p["tag"].clone()))
        })
        .collect();
    let want: BTreeMap<u64, (Vec<f32>, serde_json::Value)> = model
        .iter()
        .map(|(id, (v, t))| (*id, (vector(*v), serde_json::json!(t))))
        .collect();
    assert_eq!(got, want);
    // every live point is found by search, and nothing else is
    let planner = PlannerConfig {
        exact_search_threshold: 0,
        default_ef: 64,
        max_ef: 256,
    };
    for exact in [true, false] {
        let params = SearchQuery {
            vector: vec![0.0, 0.0],
            top_k: 30,
            ef: Some(64),
            filter: None,
            exact,
            with_payload: false,
            with_vector: false,
            rescore: None,
            oversampling: None,
        };
        let (hits, _) = c.search(&params, &planner);
        let mut ids: Vec<u64> = hits
            .iter()
            .map(|h| match h.id {
                PointId::Num(n) => n,
                PointId::Uuid(_) => unreachable!(),
            })
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            model.keys().copied().collect::<Vec<_>>(),
            "exact={exact}"
        );
    }
}

/// A shard machine whose collections seal their appendable segment at `seal_points` points
/// (segments of at most `max_segment_points`), building on one thread.
fn open_sealing_at(
    storage: Arc<dyn Storage>,
    derived: &std::path::Path,
    seal_points: usize,
    max_segment_points: usize,
) -> ShardMachine {
    let segments = SegmentConfig {
        seal_points,
        max_segment_points,
        build_threads: 1,
        idle_seal: None,
        ..SegmentConfig::default()
    };
    ShardMachine::open_with(storage, derived, Points::with_segments(segments)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The optimizer seals, extends and vacuums segments (every few points) while commands
    /// apply; searches, exact or not, always find exactly the model's points, and a point's
    /// vector is returned exactly, whatever the segments' encoding.
    #[test]
    fn random_upserts_and_deletes_match_a_model(
        ops in prop::collection::vec(op(), 1..30),
        index in 0..4,
        seal_points in 1usize..8,
    ) {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = tempfile::tempdir().unwrap();
        let mut sm = open_sealing_at(storage.clone(), graphs.path(), seal_points, 16);
        let hnsw = IndexKind::Hnsw(HnswParams { m: 8, ef_construction: 32 });
        let spec = match index {
            0 => spec(IndexKind::Flat),
            1 => spec(hnsw),
            2 => quantized_spec(hnsw, Quantization::F16),
            _ => quantized_spec(hnsw, Quantization::Int8),
        };
        sm.apply(1, &serve(1, spec)).unwrap();
        let mut model = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let index = i as u64 + 2;
            sm.apply(index, &command(op)).unwrap();
            apply_model(&mut model, op);
            // re-delivering the same entry changes nothing
            let again = sm.apply(index, &command(op)).unwrap();
            prop_assert!(again.duplicate);
            assert_matches_model(&sm, &model);
        }
        let collection = sm.view().get("m").unwrap();
        wait_until(|| !collection.optimizing());
        assert_matches_model(&sm, &model);
        // memory is derivable from storage (and segment files): a reopened state machine agrees
        drop(sm);
        let reopened = open_sealing_at(storage, graphs.path(), seal_points, 16);
        prop_assert_eq!(reopened.last_applied(), Some(ops.len() as u64 + 1));
        assert_matches_model(&reopened, &model);
    }
}

#[test]
fn rejected_commands_consume_their_index_and_change_nothing() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let graphs = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), graphs.path()).unwrap();
    let create = serve(1, spec(IndexKind::Flat));
    sm.apply(1, &create).unwrap();
    // The same collection again changes nothing; another one is refused.
    assert_eq!(sm.apply(2, &create).unwrap().affected, 0);
    let other = CollectionSpec {
        name: "other".into(),
        ..spec(IndexKind::Flat)
    };
    assert!(matches!(
        sm.apply(3, &serve(3, other)),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(sm.last_applied(), Some(3));
    let wrong_dim = ShardCommand::Points(PointsCommand::Upsert {
        collection: "m".into(),
        collection_id: 1,
        points: vec![NewPoint {
            id: PointId::Num(1),
            vector: vec![1.0; 3],
            payload: JsonMap::new(),
        }],
    });
    assert!(matches!(
        sm.apply(4, &wrong_dim),
        Err(Error::InvalidArgument { .. })
    ));
    let missing = ShardCommand::Points(PointsCommand::Delete {
        collection: "nope".into(),
        collection_id: 1,
        ids: vec![PointId::Num(1)],
    });
    assert!(matches!(sm.apply(5, &missing), Err(Error::NotFound(_))));
    assert_eq!(sm.last_applied(), Some(5));
    // a command checked against another incarnation of the collection (another id) is refused
    let stale = ShardCommand::Points(PointsCommand::Upsert {
        collection: "m".into(),
        collection_id: 6,
        points: vec![NewPoint {
            id: PointId::Num(1),
            vector: vec![1.0; 2],
            payload: JsonMap::new(),
        }],
    });
    assert!(matches!(sm.apply(7, &stale), Err(Error::NotFound(_))));
    assert_eq!(sm.view().get("m").unwrap().points_count(), 0);
    assert_eq!(sm.view().get("m").unwrap().points_count(), 0);
    let reopened = ShardMachine::open(storage, graphs.path()).unwrap();
    assert_eq!(reopened.last_applied(), Some(7));
}

#[test]
fn applying_leaves_durability_to_the_synced_raft_log() {
    let memory = Arc::new(MemoryStorage::default());
    let storage: Arc<dyn Storage> = memory.clone();
    let graphs = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), graphs.path()).unwrap();
    let opened = memory.synced_writes();
    sm.apply(1, &serve(1, spec(IndexKind::Flat))).unwrap();
    sm.apply(2, &upsert_one(1, 0.5)).unwrap();
    let missing = ShardCommand::Points(PointsCommand::Delete {
        collection: "nope".into(),
        collection_id: 1,
        ids: vec![PointId::Num(1)],
    });
    assert!(sm.apply(3, &missing).is_err());
    apply_once(&mut sm, 4, &once("k", upsert_one(2, 0.5))).unwrap();
    apply_once(&mut sm, 5, &once("k", upsert_one(2, 0.5))).unwrap();
    sm.apply_entry(6, None, Some(b"raft".to_vec())).unwrap();
    // applied, rejected, repeated and blank entries alike: none syncs on its own
    assert_eq!(memory.synced_writes(), opened);
    let reopened = ShardMachine::open(storage, graphs.path()).unwrap();
    assert_eq!(reopened.last_applied(), Some(6));
    assert_eq!(reopened.view().get("m").unwrap().points_count(), 2);
}

/// Every row of the state-machine tables of `storage`.
fn rows(storage: &dyn Storage) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    for table in Table::STATE_MACHINE {
        storage
            .for_each(table, b"", &mut |k, v| {
                rows.push((table, k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
    }
    rows
}

#[test]
fn a_snapshot_installs_whole_or_is_finished_when_the_state_is_next_opened() {
    let dir = tempfile::tempdir().unwrap();
    // a source state of several install batches (payloads of 20 kB)
    let source: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = ShardMachine::open(source.clone(), &dir.path().join("g1")).unwrap();
    sm.apply(1, &serve(1, spec(IndexKind::Flat))).unwrap();
    let text = serde_json::Value::String("x".repeat(20_000));
    let points = (0..500)
        .map(|id| NewPoint {
            id: PointId::Num(id),
            vector: vec![id as f32, 1.0],
            payload: JsonMap::from_iter([("text".to_string(), text.clone())]),
        })
        .collect();
    sm.apply(
        2,
        &ShardCommand::Points(PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points,
        }),
    )
    .unwrap();
    let snapshot = dir.path().join("s.snap");
    let mut out = std::fs::File::create(&snapshot).unwrap();
    write_snapshot(source.as_ref(), &dir.path().join("none"), &mut out).unwrap();
    drop(out);
    let bytes = std::fs::read(&snapshot).unwrap();
    assert!(bytes.len() > 2 * INSTALL_BATCH_BYTES);
    let applied = AppliedRecord {
        index: Some(2),
        raft_state: b"position".to_vec(),
    };

    // a target with a state of its own
    let target: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let graphs = dir.path().join("g2");
    let mut sm = ShardMachine::open(target.clone(), &graphs).unwrap();
    let other = CollectionSpec {
        name: "other".into(),
        ..spec(IndexKind::Flat)
    };
    sm.apply(7, &serve(7, other)).unwrap();
    let before = rows(target.as_ref());

    // a file cut short, with a byte changed, or with bytes after its end changes nothing
    let cut = dir.path().join("cut.snap");
    for broken in [
        bytes[..bytes.len() - 1].to_vec(),
        bytes[..bytes.len() - 13].to_vec(),
        [&bytes[..], b"x"].concat(),
        {
            let mut b = bytes.clone();
            b[bytes.len() / 2] ^= 1;
            b
        },
    ] {
        std::fs::write(&cut, broken).unwrap();
        let err = sm.import(&cut, applied.clone()).unwrap_err();
        assert!(err.to_string().contains("corrupt snapshot"), "{err}");
        assert_eq!(rows(target.as_ref()), before);
        assert_eq!(sm.last_applied(), Some(7));
        assert!(sm.view().get("other").is_ok());
    }

    // a whole file replaces the state
    sm.import(&snapshot, applied.clone()).unwrap();
    assert_eq!(sm.last_applied(), Some(2));
    assert_eq!(sm.raft_state(), b"position");
    assert!(sm.view().get("other").is_err());
    assert_eq!(sm.view().get("m").unwrap().points_count(), 500);
    let installed = rows(target.as_ref());
    assert_eq!(
        installed.iter().filter(|r| r.0 == Table::Points).count(),
        500
    );

    // a crash part-way leaves the install record and a partial state: opening finishes it
    let crashed: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut partial = WriteBatch::default();
    for (table, k, v) in installed.iter().take(40) {
        partial.put(*table, k.clone(), v.clone());
    }
    partial.put(Table::Points, b"stale".to_vec(), b"row".to_vec());
    let installing = Installing {
        snapshot: snapshot.clone(),
        applied,
    };
    partial.put(Table::Meta, INSTALLING_KEY, encode(&installing).unwrap());
    crashed.write(partial).unwrap();
    let reopened = ShardMachine::open(crashed.clone(), &dir.path().join("g3")).unwrap();
    assert_eq!(rows(crashed.as_ref()), installed);
    assert_eq!(reopened.last_applied(), Some(2));
    assert_eq!(reopened.view().get("m").unwrap().points_count(), 500);
}

#[test]
fn a_snapshot_carries_the_segments_and_the_follower_indexes_only_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let derived = dir.path().join("source-derived");
    let mut sm = open_sealing_at(source.clone(), &derived, 100, 10_000);
    let hnsw = spec(IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    }));
    sm.apply(1, &serve(1, hnsw)).unwrap();
    let upsert = |ids: std::ops::Range<u64>| {
        ShardCommand::Points(PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points: ids
                .map(|id| NewPoint {
                    id: PointId::Num(id),
                    vector: vec![id as f32, (id % 7) as f32],
                    payload: JsonMap::new(),
                })
                .collect(),
        })
    };
    sm.apply(2, &upsert(0..200)).unwrap();
    let collection = sm.view().get("m").unwrap();
    wait_until(|| collection.indexed_vectors() == 200);
    // (the manifest naming the segment is written just after the segment is installed)
    wait_until(|| graph_dir(&derived, 1).join("segments.json").exists());
    sm.apply(3, &upsert(200..220)).unwrap();
    // deleted after the segment was sealed: still in its graph, never found
    sm.apply(
        4,
        &ShardCommand::Points(PointsCommand::Delete {
            collection: "m".into(),
            collection_id: 1,
            ids: vec![PointId::Num(50)],
        }),
    )
    .unwrap();

    let checkpoint = sm.checkpoint(&dir.path().join("checkpoint")).unwrap();
    // a segment that replaces the linked one after the checkpoint does not change it
    sm.apply(5, &upsert(220..400)).unwrap();
    wait_until(|| collection.indexed_vectors() == 399);
    let snapshot = dir.path().join("s.snap");
    let mut out = std::fs::File::create(&snapshot).unwrap();
    write_snapshot(checkpoint.state.as_ref(), &checkpoint.derived, &mut out).unwrap();
    drop(out);

    let target: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut follower = ShardMachine::open(target, &dir.path().join("target-graphs")).unwrap();
    follower.import(&snapshot, checkpoint.applied).unwrap();
    assert_eq!(follower.last_applied(), Some(4));
    let installed = follower.view().get("m").unwrap();
    assert_eq!(installed.points_count(), 219);
    // the sealed segment came with the snapshot (its deleted point retired); the 20 points
    // written after it are in the appendable segment
    let states: Vec<(&str, u64, u64)> = installed
        .segments()
        .iter()
        .map(|s| (s.state.as_str(), s.points, s.retired))
        .collect();
    assert_eq!(states, [("sealed", 199, 1), ("appendable", 20, 0)]);
    let search = |query: Vec<f32>| nearest(&installed, query).0;
    assert_eq!(search(vec![210.0, 0.0]), PointId::Num(210));
    let near_deleted = search(vec![50.0, 1.0]);
    assert!(
        [PointId::Num(49), PointId::Num(51)].contains(&near_deleted),
        "{near_deleted:?}"
    );
}

fn upsert_one(id: u64, x: f32) -> ShardCommand {
    ShardCommand::Points(PointsCommand::Upsert {
        collection: "m".into(),
        collection_id: 1,
        points: vec![NewPoint {
            id: PointId::Num(id),
            vector: vec![x, 0.0],
            payload: JsonMap::new(),
        }],
    })
}

fn once(key: &str, command: ShardCommand) -> Proposal<ShardCommand> {
    Proposal::new(MachineKind::Shard, key, command)
}

/// Applies a proposal with its idempotency key.
fn apply_once(
    sm: &mut ShardMachine,
    index: u64,
    proposal: &Proposal<ShardCommand>,
) -> Result<Applied> {
    sm.apply_entry(index, Some(proposal), None)
}

/// The command that makes a shard's state serve collection `spec` under `id`.
fn serve(id: u64, spec: CollectionSpec) -> ShardCommand {
    ShardCommand::Serve(CollectionMeta { id, spec })
}

#[test]
fn a_keyed_command_applies_once_until_its_key_is_forgotten() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let graphs = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), graphs.path()).unwrap();
    sm.apply(1, &serve(1, spec(IndexKind::Flat))).unwrap();
    let first = apply_once(&mut sm, 2, &once("k", upsert_one(7, 1.0))).unwrap();
    assert_eq!((first.affected, first.duplicate), (1, false));
    // The same key again, even with other content: the first outcome, nothing changed.
    let again = apply_once(&mut sm, 3, &once("k", upsert_one(7, 5.0))).unwrap();
    assert_eq!((again.index, again.duplicate), (2, true));
    let vector = |sm: &ShardMachine| {
        sm.view().get("m").unwrap().get(&[PointId::Num(7)])[0]
            .1
            .clone()
    };
    assert_eq!(vector(&sm), vec![1.0, 0.0]);
    // A rejected keyed command is remembered as rejected.
    let missing = once(
        "gone",
        ShardCommand::Points(PointsCommand::Delete {
            collection: "nope".into(),
            collection_id: 1,
            ids: vec![PointId::Num(1)],
        }),
    );
    assert!(apply_once(&mut sm, 4, &missing).is_err());
    assert!(matches!(
        apply_once(&mut sm, 5, &missing),
        Err(Error::NotFound(_))
    ));
    // Remembered across a reopen.
    let mut sm = ShardMachine::open(storage.clone(), graphs.path()).unwrap();
    assert!(
        apply_once(&mut sm, 6, &once("k", upsert_one(7, 5.0)))
            .unwrap()
            .duplicate
    );
    // Forgotten once ONCE_WINDOW entries have passed (pruned when later keys are applied).
    let later = 2 + ONCE_WINDOW + 10;
    apply_once(&mut sm, later, &once("other", upsert_one(9, 1.0))).unwrap();
    let fresh = apply_once(&mut sm, later + 1, &once("k", upsert_one(7, 5.0))).unwrap();
    assert!(!fresh.duplicate);
    assert_eq!(vector(&sm), vec![5.0, 0.0]);
}

#[test]
fn shard_map_changes_are_checked_against_the_map() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let graphs = tempfile::tempdir().unwrap();
    let mut sm = MetaMachine::open(storage.clone(), graphs.path()).unwrap();
    let create = MetaCommand::CreateCollection {
        spec: spec(IndexKind::Flat),
        replication_factor: 2,
        replicas: vec![vec![1, 2], vec![2, 3]],
    };
    sm.apply(5, &create).unwrap();
    let placements = sm.view();
    let placed = placements.get("m").unwrap();
    assert_eq!((placed.id, placed.ready), (5, false));
    assert_eq!(placed.shards[1].group, shard_group(5, 1));
    assert!(matches!(sm.apply(6, &create), Err(Error::AlreadyExists(_))));
    // Marking ready names the incarnation it formed.
    let ready = |id| MetaCommand::MarkReady {
        name: "m".into(),
        id,
    };
    assert!(sm.apply(7, &ready(99)).is_err());
    sm.apply(8, &ready(5)).unwrap();
    // A replica change planned from an old epoch is refused.
    let group = shard_group(5, 0);
    let set = |epoch, replicas: Vec<u64>| MetaCommand::SetReplicas {
        group,
        epoch,
        replicas,
    };
    sm.apply(9, &set(0, vec![1, 2, 3])).unwrap();
    assert!(matches!(
        sm.apply(10, &set(0, vec![2, 3])),
        Err(Error::Conflict(_))
    ));
    sm.apply(11, &set(1, vec![2, 3])).unwrap();
    let reopened = MetaMachine::open(storage, graphs.path()).unwrap();
    let shard = reopened.view().get("m").unwrap().shards[0].clone();
    assert_eq!((shard.replicas, shard.epoch), (vec![2, 3], 2));
    sm.apply(12, &MetaCommand::DropCollection { name: "m".into() })
        .unwrap();
    assert!(sm.view().list().is_empty());
}

#[test]
fn a_state_from_before_formats_were_recorded_is_refused_by_name() {
    // What an earlier build left: rows, no format record.
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut batch = WriteBatch::default();
    batch.put(Table::Meta, APPLIED_KEY, vec![1, 0, 0, 0, 7]);
    storage.write(batch).unwrap();
    let derived = tempfile::tempdir().unwrap();
    let refused = ShardMachine::open(storage.clone(), derived.path())
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("format 1") && message.contains("format 2"),
        "{message}"
    );
    // ... and left as it was.
    assert_eq!(
        storage.get(Table::Meta, APPLIED_KEY).unwrap(),
        Some(vec![1, 0, 0, 0, 7])
    );
    assert_eq!(storage.get(Table::Meta, FORMAT_KEY).unwrap(), None);
    // A new state records the format; it opens again.
    let fresh: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    ShardMachine::open(fresh.clone(), derived.path()).unwrap();
    assert_eq!(
        fresh.get(Table::Meta, FORMAT_KEY).unwrap(),
        Some(vec![encoding::FORMAT])
    );
    MetaMachine::open(fresh, derived.path()).unwrap();
}

#[test]
fn a_meta_command_in_a_shard_log_is_refused_not_applied() {
    let entry = Proposal::new(
        MachineKind::Meta,
        "",
        MetaCommand::DropCollection { name: "m".into() },
    )
    .encode()
    .unwrap();
    let refused = Proposal::<ShardCommand>::decode(MachineKind::Shard, &entry).unwrap_err();
    assert!(refused.to_string().contains("Meta"), "{refused}");
}

/// Waits (up to 10 s) for a collection's background work to reach `done`.
fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "background work did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Upserts points `ids` at `(id, round)`: a new version of each, so a new slot.
fn upsert_round(ids: std::ops::Range<u64>, round: u64) -> ShardCommand {
    ShardCommand::Points(PointsCommand::Upsert {
        collection: "m".into(),
        collection_id: 1,
        points: ids
            .map(|id| NewPoint {
                id: PointId::Num(id),
                vector: vec![id as f32, round as f32],
                payload: JsonMap::new(),
            })
            .collect(),
    })
}

/// The nearest point to `query` through the planner (graph walks allowed at any size, ef 64),
/// and the plan that found it.
fn nearest(collection: &crate::shard::Collection, query: Vec<f32>) -> (PointId, &'static str) {
    let params = SearchQuery {
        vector: query,
        top_k: 1,
        ef: Some(64),
        filter: None,
        exact: false,
        with_payload: false,
        with_vector: false,
        rescore: None,
        oversampling: None,
    };
    let planner = PlannerConfig {
        exact_search_threshold: 0,
        default_ef: 64,
        max_ef: 256,
    };
    let (hits, plan) = collection.search(&params, &planner);
    (hits[0].id, plan.as_str())
}

#[test]
fn re_upserting_the_same_points_keeps_the_segments_bounded() {
    let graphs = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = open_sealing_at(storage, graphs.path(), 100, 10_000);
    let hnsw = spec(IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    }));
    sm.apply(1, &serve(1, hnsw)).unwrap();
    let live = 300;
    let mut index = 2;
    for round in 0..30 {
        sm.apply(index, &upsert_round(0..live, round)).unwrap();
        index += 1;
        let collection = sm.view().get("m").unwrap();
        // every point is found at its latest version, whatever the optimizer is doing
        assert_eq!(
            nearest(&collection, vec![7.0, round as f32]).0,
            PointId::Num(7)
        );
        assert!(collection.indexed_vectors() <= live as usize);
    }
    let collection = sm.view().get("m").unwrap();
    wait_until(|| !collection.optimizing());
    // 9,000 versions of 300 points: vacuums keep at most a fifth of the nodes retired, and the
    // appendable segment holds only the latest versions
    let segments = collection.segments();
    let nodes: u64 = segments.iter().map(|s| s.points + s.retired).sum();
    assert!(nodes <= live * 5 / 4 + 1, "{segments:?}");
    assert_eq!(collection.indexed_vectors(), live as usize);
    for id in [0, 150, 299] {
        assert_eq!(
            nearest(&collection, vec![id as f32, 29.0]),
            (PointId::Num(id), "hnsw")
        );
    }
}

#[test]
fn an_open_with_damaged_or_half_written_segment_files_searches_at_once_and_indexes_again() {
    let graphs = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = open_sealing_at(storage.clone(), graphs.path(), 1000, 10_000);
    let hnsw = spec(IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    }));
    sm.apply(1, &serve(1, hnsw)).unwrap();
    sm.apply(2, &upsert_round(0..3000, 0)).unwrap();
    let collection = sm.view().get("m").unwrap();
    wait_until(|| collection.indexed_vectors() == 3000 && !collection.optimizing());
    drop((sm, collection));

    // a kill -9 during a build leaves a temporary file; a disk fault damages the sealed one
    let dir = graph_dir(graphs.path(), 1);
    std::fs::write(dir.join("segment-7.tmp"), b"half a segment").unwrap();
    let sealed = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "qvseg"))
        .unwrap();
    let mut bytes = std::fs::read(&sealed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&sealed, bytes).unwrap();

    let mut reopened = open_sealing_at(storage, graphs.path(), 1000, 10_000);
    let collection = reopened.view().get("m").unwrap();
    assert_eq!(collection.points_count(), 3000);
    assert!(!dir.join("segment-7.tmp").exists());
    // neither file is used: every point is found at once (scored exactly), and so is a point
    // written meanwhile
    assert_eq!(
        nearest(&collection, vec![1234.0, 0.0]).0,
        PointId::Num(1234)
    );
    reopened.apply(3, &upsert_round(3000..3001, 5)).unwrap();
    assert_eq!(
        nearest(&collection, vec![3000.0, 5.0]).0,
        PointId::Num(3000)
    );
    // the points are indexed again: the 3,000 the open found, with the new one if it was written
    // before the seal job began (else it waits in the appendable segment for the next seal)
    wait_until(|| collection.indexed_vectors() >= 3000 && !collection.optimizing());
    assert_eq!(
        nearest(&collection, vec![2999.0, 0.0]),
        (PointId::Num(2999), "hnsw")
    );
    assert_eq!(
        nearest(&collection, vec![3000.0, 5.0]).0,
        PointId::Num(3000)
    );
}

#[test]
fn a_quantized_collection_rescores_with_the_stored_vectors_and_returns_them_exactly() {
    let graphs = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = open_sealing_at(storage.clone(), graphs.path(), 500, 10_000);
    let hnsw = IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    });
    sm.apply(1, &serve(1, quantized_spec(hnsw, Quantization::Int8)))
        .unwrap();
    // points on a curve, so near neighbours differ by less than an int8 step of the range
    let point = |id: u64| {
        let t = id as f32 / 100.0;
        vec![t.sin() * 100.0, t.cos() * 37.0 + t]
    };
    let upsert = ShardCommand::Points(PointsCommand::Upsert {
        collection: "m".into(),
        collection_id: 1,
        points: (0..2_000)
            .map(|id| NewPoint {
                id: PointId::Num(id),
                vector: point(id),
                payload: JsonMap::new(),
            })
            .collect(),
    });
    sm.apply(2, &upsert).unwrap();
    let collection = sm.view().get("m").unwrap();
    wait_until(|| collection.indexed_vectors() == 2_000 && !collection.optimizing());
    let sealed = &collection.segments()[0];
    assert_eq!(sealed.state, quiver_core::shard::SegmentState::Sealed);
    assert_eq!(sealed.bytes_per_vector, 8, "one word of codes, one of bias");

    let planner = PlannerConfig {
        exact_search_threshold: 0,
        default_ef: 64,
        max_ef: 256,
    };
    let query = |rescore: Option<bool>, exact: bool| SearchQuery {
        vector: vec![point(1_234)[0] + 0.01, point(1_234)[1]],
        top_k: 5,
        ef: Some(64),
        filter: None,
        exact,
        with_payload: false,
        with_vector: true,
        rescore,
        oversampling: Some(4.0),
    };
    for exact in [false, true] {
        let (hits, _) = collection.search(&query(None, exact), &planner);
        assert_eq!(hits[0].id, PointId::Num(1_234), "exact={exact}");
        // rescored: the true distance, and the full-precision vector from the stored row
        assert!((hits[0].score - 0.01).abs() < 1e-4, "{}", hits[0].score);
        assert_eq!(hits[0].vector.as_deref(), Some(point(1_234).as_slice()));
        assert!(hits.windows(2).all(|w| w[0].score <= w[1].score));
    }
    // without rescoring the scores are the codes' (one step of the range apart, not 0.01)
    let (approximate, _) = collection.search(&query(Some(false), false), &planner);
    assert!(approximate.iter().any(|h| (h.score - 0.01).abs() > 1e-3));
    // get returns stored vectors exactly
    let got = collection.get(&[PointId::Num(7)]);
    assert_eq!(got[0].1, point(7));

    // a reopened state loads the int8 segment from its file and still rescores
    drop((sm, collection));
    let reopened = open_sealing_at(storage, graphs.path(), 500, 10_000);
    let collection = reopened.view().get("m").unwrap();
    assert_eq!(collection.indexed_vectors(), 2_000);
    let (hits, plan) = collection.search(&query(None, false), &planner);
    assert_eq!((hits[0].id, plan.as_str()), (PointId::Num(1_234), "hnsw"));
    assert!((hits[0].score - 0.01).abs() < 1e-4);
}

#[test]
fn segments_shrunk_by_vacuums_are_merged() {
    let graphs = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = open_sealing_at(storage.clone(), graphs.path(), 100, 300);
    let hnsw = spec(IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    }));
    sm.apply(1, &serve(1, hnsw)).unwrap();
    let collection = sm.view().get("m").unwrap();
    let sealed = |c: &crate::shard::Collection| {
        c.segments()
            .into_iter()
            .filter(|s| s.state == quiver_core::shard::SegmentState::Sealed)
            .map(|s| (s.points, s.retired))
            .collect::<Vec<_>>()
    };
    sm.apply(2, &upsert_round(0..250, 0)).unwrap();
    wait_until(|| collection.indexed_vectors() == 250 && !collection.optimizing());
    // 250 + 200 do not fit in 300: a second segment
    sm.apply(3, &upsert_round(250..450, 0)).unwrap();
    wait_until(|| collection.indexed_vectors() == 450 && !collection.optimizing());
    assert_eq!(sealed(&collection), vec![(250, 0), (200, 0)]);
    // most of the first deleted: vacuumed to 50 points, which then fit beside the 200
    let delete = ShardCommand::Points(PointsCommand::Delete {
        collection: "m".into(),
        collection_id: 1,
        ids: (0..200).map(PointId::Num).collect(),
    });
    sm.apply(4, &delete).unwrap();
    wait_until(|| !collection.optimizing() && sealed(&collection).len() == 1);
    assert_eq!(sealed(&collection), vec![(250, 0)]);
    for id in [200, 333, 449] {
        assert_eq!(
            nearest(&collection, vec![id as f32, 0.0]),
            (PointId::Num(id), "hnsw")
        );
    }
    // the merged segment is what a restart loads
    drop((sm, collection));
    let reopened = open_sealing_at(storage, graphs.path(), 100, 300);
    let collection = reopened.view().get("m").unwrap();
    assert_eq!(sealed(&collection), vec![(250, 0)]);
    assert_eq!(collection.points_count(), 250);
}

#[test]
fn an_idle_collection_indexes_the_points_it_holds() {
    let graphs = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let segments = SegmentConfig {
        seal_points: 10_000,
        max_segment_points: 100_000,
        build_threads: 1,
        idle_seal: Some(std::time::Duration::from_millis(300)),
        ..SegmentConfig::default()
    };
    let mut sm =
        ShardMachine::open_with(storage, graphs.path(), Points::with_segments(segments)).unwrap();
    let hnsw = spec(IndexKind::Hnsw(HnswParams {
        m: 8,
        ef_construction: 32,
    }));
    sm.apply(1, &serve(1, hnsw)).unwrap();
    let collection = sm.view().get("m").unwrap();
    let idle_points = crate::shard::optimizer::IDLE_SEAL_POINTS as u64;
    // writes keep coming for a while: nothing is sealed meanwhile
    let mut last_write = std::time::Instant::now();
    for round in 0..5 {
        sm.apply(2 + round, &upsert_round(0..idle_points, round))
            .unwrap();
        last_write = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(collection.indexed_vectors(), 0);
    }
    // then quiet: the points are indexed, well before 10,000 arrive
    wait_until(|| collection.indexed_vectors() == idle_points as usize && !collection.optimizing());
    assert!(last_write.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        nearest(&collection, vec![17.0, 4.0]),
        (PointId::Num(17), "hnsw")
    );
    // a few more wait (they are scanned as fast); enough more are indexed again
    sm.apply(7, &upsert_round(idle_points..idle_points + 5, 0))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(collection.indexed_vectors(), idle_points as usize);
    let more = idle_points..2 * idle_points + 5;
    sm.apply(8, &upsert_round(more, 0)).unwrap();
    wait_until(|| {
        collection.indexed_vectors() == 2 * idle_points as usize + 5 && !collection.optimizing()
    });
}
