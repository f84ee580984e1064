//! The feature store through the machines: pushes through a shard group's machine (offline rows
//! appended, online values monotonic in event time, point-in-time reads pinned to a log
//! position, carried by a snapshot) and definitions through the meta group's (all or none,
//! refused when stale, kept across a reopen).
use quiver_core::features::{FeaturesAnswer, FeaturesCommand, HistoricalLookup, OnlineLookup};
use quiver_features::row::FeatureRow;
use quiver_features::{
    DefinitionSet, Entity, EntityKey, FeatureView, Field, JoinKey, Value, ValueType,
};

use super::feature_values::{read_historical, read_online};
use super::*;
use crate::sm::snapshot::write_snapshot;
use crate::storage::MemoryStorage;

const VIEW: u64 = 9;
const SECOND: i64 = 1_000_000;

fn key(user: i64) -> EntityKey {
    let keys = [JoinKey {
        name: "user_id".into(),
        value_type: ValueType::Int64,
    }];
    EntityKey::new(&keys, &[Value::Int64(user)]).unwrap()
}

fn push(rows: &[(i64, i64, i64, f64)], offline: bool, online: bool) -> ShardCommand {
    ShardCommand::Features(FeaturesCommand::Push {
        view_id: VIEW,
        version: 1,
        rows: rows
            .iter()
            .map(|&(user, event, created, value)| FeatureRow {
                key: key(user),
                event_ts: event * SECOND,
                created_ts: created * SECOND,
                values: vec![Value::Float64(value)],
            })
            .collect(),
        offline,
        online,
        fields: vec!["value".into()],
    })
}

fn online(storage: &dyn Storage, user: i64) -> Option<(i64, f64)> {
    let lookups = [OnlineLookup {
        view_id: VIEW,
        keys: vec![key(user)],
    }];
    let FeaturesAnswer::Online(found) = read_online(storage, &lookups).unwrap() else {
        panic!("an online answer")
    };
    found[0][0].as_ref().map(|v| match v.values[0] {
        Value::Float64(x) => (v.event_ts / SECOND, x),
        ref other => panic!("{other:?}"),
    })
}

/// The value of `user` as of `at` (seconds), read at log position `pinned`; and the position.
fn historical(
    storage: &dyn Storage,
    user: i64,
    at: i64,
    ttl_seconds: u64,
    pinned: Option<u64>,
) -> Result<(Option<f64>, u64)> {
    let lookups = [HistoricalLookup {
        view_id: VIEW,
        ttl_seconds,
        known_at: false,
        rows: vec![(key(user), at * SECOND)],
    }];
    let FeaturesAnswer::Historical { index, found } = read_historical(storage, &lookups, pinned)?
    else {
        panic!("a historical answer")
    };
    let value = found[0][0].as_ref().map(|v| match v.values[0] {
        Value::Float64(x) => x,
        ref other => panic!("{other:?}"),
    });
    Ok((value, index))
}

#[test]
fn online_values_follow_event_time_whatever_order_pushes_arrive_in() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), dir.path()).unwrap();
    // Within one push the newest event of each entity wins, wherever it sits.
    sm.apply(
        1,
        &push(
            &[(1, 20, 20, 2.0), (1, 10, 30, 1.0), (2, 5, 5, 5.0)],
            true,
            true,
        ),
    )
    .unwrap();
    assert_eq!(online(storage.as_ref(), 1), Some((20, 2.0)));
    assert_eq!(online(storage.as_ref(), 2), Some((5, 5.0)));
    // A late arrival of an older event never replaces a newer one online...
    sm.apply(2, &push(&[(1, 15, 40, 1.5)], true, true)).unwrap();
    assert_eq!(online(storage.as_ref(), 1), Some((20, 2.0)));
    // ... but a newer event does, and an equal event created later does too.
    sm.apply(3, &push(&[(1, 25, 41, 2.5)], false, true))
        .unwrap();
    assert_eq!(online(storage.as_ref(), 1), Some((25, 2.5)));
    sm.apply(4, &push(&[(1, 25, 42, 2.6)], false, true))
        .unwrap();
    assert_eq!(online(storage.as_ref(), 1), Some((25, 2.6)));
    assert_eq!(online(storage.as_ref(), 3), None);
    // Offline-only pushes leave the online store as it is.
    sm.apply(5, &push(&[(1, 99, 99, 9.9)], true, false))
        .unwrap();
    assert_eq!(online(storage.as_ref(), 1), Some((25, 2.6)));
    // Every offline row was kept, the late one too.
    assert_eq!(
        historical(storage.as_ref(), 1, 16, 0, None).unwrap().0,
        Some(1.5)
    );
    assert_eq!(
        historical(storage.as_ref(), 1, 100, 0, None).unwrap().0,
        Some(9.9)
    );
}

#[test]
fn a_point_in_time_read_pinned_to_a_log_position_reads_the_same_after_more_rows() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), dir.path()).unwrap();
    sm.apply(1, &push(&[(1, 10, 10, 1.0), (1, 20, 20, 2.0)], true, false))
        .unwrap();
    let s = storage.as_ref();
    // The greatest event at or before the entity row's time; none before the first.
    assert_eq!(historical(s, 1, 15, 0, None).unwrap(), (Some(1.0), 1));
    assert_eq!(historical(s, 1, 20, 0, None).unwrap().0, Some(2.0));
    assert_eq!(historical(s, 1, 9, 0, None).unwrap().0, None);
    // A ttl bounds how old the row may be (inclusive).
    assert_eq!(historical(s, 1, 30, 10, None).unwrap().0, Some(2.0));
    assert_eq!(historical(s, 1, 31, 10, None).unwrap().0, None);
    // A late row for t=12 arrives at position 2: a new read sees it, a read pinned at 1 not.
    sm.apply(2, &push(&[(1, 12, 40, 1.2)], true, false))
        .unwrap();
    let s = storage.as_ref();
    assert_eq!(historical(s, 1, 15, 0, None).unwrap(), (Some(1.2), 2));
    assert_eq!(historical(s, 1, 15, 0, Some(1)).unwrap(), (Some(1.0), 1));
    // A position not yet applied here is refused as unavailable (the leader may have it).
    assert!(matches!(
        historical(s, 1, 15, 0, Some(3)),
        Err(Error::Unavailable(_))
    ));
}

#[test]
fn a_snapshot_carries_the_feature_values() {
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut sm = ShardMachine::open(source.clone(), &dir.path().join("a")).unwrap();
    sm.apply(1, &push(&[(1, 10, 10, 1.0), (2, 20, 20, 2.0)], true, true))
        .unwrap();
    let file = dir.path().join("s.snap");
    let mut out = std::fs::File::create(&file).unwrap();
    write_snapshot(source.as_ref(), &dir.path().join("none"), &mut out).unwrap();
    drop(out);
    let target: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let mut installed = ShardMachine::open(target.clone(), &dir.path().join("b")).unwrap();
    let applied = AppliedRecord {
        index: Some(1),
        raft_state: Vec::new(),
    };
    installed.import(&file, applied).unwrap();
    assert_eq!(online(target.as_ref(), 2), Some((20, 2.0)));
    assert_eq!(
        historical(target.as_ref(), 1, 10, 0, Some(1)).unwrap(),
        (Some(1.0), 1)
    );
}

fn definitions(ttl_seconds: u64, view_version: u64) -> DefinitionSet {
    DefinitionSet {
        entities: vec![Entity {
            name: "user".into(),
            join_keys: vec![JoinKey {
                name: "user_id".into(),
                value_type: ValueType::Int64,
            }],
            version: view_version.min(1),
            ..Entity::default()
        }],
        feature_views: vec![FeatureView {
            name: "user_stats".into(),
            entities: vec!["user".into()],
            fields: vec![Field {
                name: "clicks".into(),
                value_type: ValueType::Int64,
            }],
            ttl_seconds,
            version: view_version,
            ..FeatureView::default()
        }],
        feature_services: Vec::new(),
    }
}

#[test]
fn definitions_apply_all_or_none_are_refused_when_stale_and_survive_a_reopen() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sm = MetaMachine::open(storage.clone(), dir.path()).unwrap();
    let apply = |set| MetaCommand::ApplyFeatures { set };
    sm.apply(3, &apply(definitions(60, 0))).unwrap();
    let registry = sm.view().feature_registry();
    let view = registry.view("user_stats").unwrap();
    assert_eq!((view.version, view.id), (1, 3));
    // The same file again changes nothing.
    assert_eq!(sm.apply(4, &apply(definitions(60, 0))).unwrap().affected, 0);
    // A change names the version it replaces; a second writer that read version 1 too is
    // refused, and nothing of its set is applied.
    sm.apply(5, &apply(definitions(120, 1))).unwrap();
    let mut stale = definitions(300, 1);
    stale.entities[0].description = "changed too".into();
    assert!(matches!(
        sm.apply(6, &apply(stale)),
        Err(Error::Conflict(_))
    ));
    let registry = sm.view().feature_registry();
    assert_eq!(registry.view("user_stats").unwrap().ttl_seconds, 120);
    assert_eq!(registry.entities["user"].description, "");
    // Kept across a reopen, with the schema of each version.
    let reopened = MetaMachine::open(storage, dir.path()).unwrap();
    let registry = reopened.view().feature_registry();
    let view = registry.view("user_stats").unwrap();
    assert_eq!((view.version, view.id), (2, 3));
    assert_eq!(view.at(Some(1)).unwrap().ttl_seconds, 60);
}

fn materialize(start: Option<i64>, end: i64) -> ShardCommand {
    ShardCommand::Features(FeaturesCommand::Materialize {
        view_id: VIEW,
        start: start.map(|s| s * SECOND),
        end: end * SECOND,
    })
}

#[test]
fn materialisation_makes_the_newest_offline_rows_online_and_never_moves_a_value_back() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(storage.clone(), dir.path()).unwrap();
    let s = storage.as_ref();
    sm.apply(
        1,
        &push(
            &[(1, 10, 10, 1.0), (1, 20, 20, 2.0), (2, 5, 5, 5.0)],
            true,
            false,
        ),
    )
    .unwrap();
    assert_eq!(
        online(s, 1),
        None,
        "offline rows are not online until materialised"
    );
    // a range: each entity's newest event within it
    sm.apply(2, &materialize(Some(0), 15)).unwrap();
    assert_eq!(online(s, 1), Some((10, 1.0)));
    assert_eq!(online(s, 2), Some((5, 5.0)));
    // incremental: what waits, up to the end
    sm.apply(3, &materialize(None, 100)).unwrap();
    assert_eq!(online(s, 1), Some((20, 2.0)));
    // a late row with an older event never moves the value back; a range over the past neither
    sm.apply(4, &push(&[(1, 12, 50, 1.2)], true, false))
        .unwrap();
    sm.apply(5, &materialize(None, 100)).unwrap();
    sm.apply(6, &materialize(Some(0), 15)).unwrap();
    assert_eq!(online(s, 1), Some((20, 2.0)));
    // a row from the future waits for a run whose end reaches it
    sm.apply(7, &push(&[(2, 200, 60, 7.0)], true, false))
        .unwrap();
    sm.apply(8, &materialize(None, 100)).unwrap();
    assert_eq!(online(s, 2), Some((5, 5.0)));
    sm.apply(9, &materialize(None, 300)).unwrap();
    assert_eq!(online(s, 2), Some((200, 7.0)));
}

#[test]
fn a_materialisation_interrupted_and_resumed_ends_as_one_uninterrupted_run() {
    let rows: Vec<(i64, i64, i64, f64)> = (0..40)
        .map(|i| (i % 7, 10 + (i * 13) % 50, i, i as f64))
        .collect();
    // one run over everything
    let whole: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    let mut sm = ShardMachine::open(whole.clone(), dir.path()).unwrap();
    sm.apply(1, &push(&rows[..20], true, false)).unwrap();
    sm.apply(2, &push(&rows[20..], true, false)).unwrap();
    sm.apply(3, &materialize(None, 1000)).unwrap();

    // the same rows; a run that ends part way, a restart, and the run again
    let parts: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = ShardMachine::open(parts.clone(), dir.path()).unwrap();
        sm.apply(1, &push(&rows[..20], true, false)).unwrap();
        sm.apply(2, &materialize(None, 30)).unwrap();
        sm.apply(3, &push(&rows[20..], true, false)).unwrap();
    }
    let mut sm = ShardMachine::open(parts.clone(), dir.path()).unwrap();
    sm.apply(4, &materialize(None, 1000)).unwrap();
    // (a replay of the last run after a crash changes nothing more)
    sm.apply(5, &materialize(None, 1000)).unwrap();
    for user in 0..7 {
        assert_eq!(
            online(parts.as_ref(), user),
            online(whole.as_ref(), user),
            "user {user}"
        );
        assert!(online(whole.as_ref(), user).is_some());
    }
}
