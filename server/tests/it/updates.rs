//! Partial updates (payload keys and vectors of existing points), counting, and what `get`
//! says about missing ids: through the real gRPC API, with filters and payload indexes
//! following every change, and bad requests refused without changing anything.

use std::collections::BTreeMap;

use quiver_proto::v1 as pb;
use serde_json::{json, Value};
use tonic::Code;

use crate::support::*;

type Points = pb::points_client::PointsClient<tonic::transport::Channel>;

async fn payloads(points: &mut Points, collection: &str) -> BTreeMap<u64, Value> {
    let page = points
        .scroll(pb::ScrollRequest {
            collection: collection.into(),
            limit: Some(1000),
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.points
        .iter()
        .map(|p| {
            let map = quiver_proto::wire::struct_to_json("payload", p.payload.as_ref().unwrap());
            (id_num(p.id.as_ref()), Value::Object(map.unwrap()))
        })
        .collect()
}

async fn update(
    points: &mut Points,
    ids: &[u64],
    filter_json: &str,
    change: pb::update_payload_request::Change,
) -> Result<u64, tonic::Status> {
    points
        .update_payload(pb::UpdatePayloadRequest {
            collection: "c".into(),
            ids: ids.iter().map(|n| id(*n)).collect(),
            filter_json: filter_json.into(),
            change: Some(change),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().affected)
}

async fn count(points: &mut Points, filter_json: &str, exact: bool) -> pb::CountResponse {
    points
        .count(pb::CountRequest {
            collection: "c".into(),
            filter_json: filter_json.into(),
            exact,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn object(value: Value) -> prost_types::Struct {
    payload(value).unwrap()
}

#[tokio::test]
async fn payloads_change_in_place_and_filters_follow() {
    use pb::update_payload_request::Change;
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    let mut create = create_request("c", 2, pb::Metric::L2);
    create.payload_indexes = vec![pb::PayloadIndexField {
        key: "tier".into(),
        r#type: pb::PayloadFieldType::Keyword as i32,
    }];
    collections.create(create).await.unwrap();
    let initial: Vec<pb::Point> = (1..=6)
        .map(|n| {
            let tier = if n <= 3 { "free" } else { "paid" };
            point(
                n,
                vec![n as f32, 0.0],
                json!({"tier": tier, "n": n, "meta": {"source": "import", "lang": "en"}}),
            )
        })
        .collect();
    must_upsert_all(&mut points, "c", initial, 10).await;

    // set: merges keys by id; a missing id is skipped and not counted.
    let affected = update(
        &mut points,
        &[1, 2, 99],
        "",
        Change::Set(object(json!({"tier": "paid", "flag": true}))),
    )
    .await
    .unwrap();
    assert_eq!(affected, 2);
    let now = payloads(&mut points, "c").await;
    assert_eq!(now[&1]["tier"], "paid");
    assert_eq!(now[&1]["flag"], true);
    assert_eq!(now[&1]["n"], 1, "other keys stay");
    assert_eq!(now[&3]["tier"], "free");
    // The keyword index follows: the exact count through it, and a filtered search.
    let paid = count(&mut points, r#"{"tier": "paid"}"#, true).await;
    assert_eq!((paid.count, paid.exact), (5, true));
    let mut search = search_request("c", vec![1.0, 0.0], 10);
    search.filter_json = r#"{"tier": "free"}"#.into();
    let free = points.search(search).await.unwrap().into_inner();
    assert_eq!(ids(&free), vec![3]);

    // delete keys by filter, reaching into an object.
    let affected = update(
        &mut points,
        &[],
        r#"{"tier": "paid"}"#,
        Change::DeleteKeys(pb::PayloadKeys {
            keys: vec!["flag".into(), "meta.lang".into()],
        }),
    )
    .await
    .unwrap();
    assert_eq!(affected, 5);
    let now = payloads(&mut points, "c").await;
    assert!(now[&1].get("flag").is_none());
    assert_eq!(now[&4]["meta"], json!({"source": "import"}));
    assert_eq!(now[&3]["meta"], json!({"source": "import", "lang": "en"}));

    // overwrite and clear.
    update(
        &mut points,
        &[5],
        "",
        Change::Overwrite(object(json!({"only": 1}))),
    )
    .await
    .unwrap();
    update(&mut points, &[6], "", Change::Clear(true))
        .await
        .unwrap();
    let now = payloads(&mut points, "c").await;
    assert_eq!(now[&5], json!({"only": 1}));
    assert_eq!(now[&6], json!({}));
    let paid = count(&mut points, r#"{"tier": "paid"}"#, true).await;
    assert_eq!(paid.count, 3, "5 and 6 left the index");

    // Vectors stayed where they were: the nearest point to (5, 0) is still 5.
    let near = points
        .search(search_request("c", vec![5.0, 0.0], 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&near), vec![5]);

    // The same change twice under one request id is applied once.
    let once = pb::UpdatePayloadRequest {
        collection: "c".into(),
        ids: vec![id(6)],
        change: Some(Change::Set(object(json!({"x": 1})))),
        request_id: "same".into(),
        ..Default::default()
    };
    points.update_payload(once.clone()).await.unwrap();
    update(&mut points, &[6], "", Change::Clear(true))
        .await
        .unwrap();
    points.update_payload(once).await.unwrap();
    assert_eq!(payloads(&mut points, "c").await[&6], json!({}));
}

#[tokio::test]
async fn vectors_change_and_payloads_stay() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections
        .create(create_request("c", 2, pb::Metric::L2))
        .await
        .unwrap();
    let initial = (1..=3)
        .map(|n| point(n, vec![n as f32, 0.0], json!({"n": n})))
        .collect();
    must_upsert_all(&mut points, "c", initial, 10).await;
    let affected = points
        .update_vectors(pb::UpdateVectorsRequest {
            collection: "c".into(),
            points: vec![
                pb::PointVector {
                    id: Some(id(1)),
                    vector: vec![100.0, 0.0],
                },
                pb::PointVector {
                    id: Some(id(42)),
                    vector: vec![0.0, 0.0],
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .affected;
    assert_eq!(affected, 1, "the missing id is skipped");
    let mut near = search_request("c", vec![99.0, 0.0], 1);
    near.with_payload = true;
    let hit = points.search(near).await.unwrap().into_inner();
    assert_eq!(ids(&hit), vec![1]);
    let payload =
        quiver_proto::wire::struct_to_json("p", hit.results[0].payload.as_ref().unwrap()).unwrap();
    assert_eq!(Value::Object(payload), json!({"n": 1}));
    assert_eq!(
        count(&mut points, "", true).await.count,
        3,
        "no point was added"
    );

    // Bad vectors change nothing.
    for (vector, field) in [
        (vec![1.0], "points[0].vector"),
        (vec![f32::NAN, 0.0], "points[0].vector[0]"),
    ] {
        let refused = points
            .update_vectors(pb::UpdateVectorsRequest {
                collection: "c".into(),
                points: vec![pb::PointVector {
                    id: Some(id(2)),
                    vector,
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    let twice = points
        .update_vectors(pb::UpdateVectorsRequest {
            collection: "c".into(),
            points: vec![
                pb::PointVector {
                    id: Some(id(2)),
                    vector: vec![0.0, 1.0],
                },
                pb::PointVector {
                    id: Some(id(2)),
                    vector: vec![0.0, 2.0],
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        twice.message().contains("points[1].id"),
        "{}",
        twice.message()
    );
}

#[tokio::test]
async fn counts_are_exact_or_say_they_are_estimates() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    let mut create = create_request("c", 2, pb::Metric::L2);
    create.payload_indexes = vec![pb::PayloadIndexField {
        key: "k".into(),
        r#type: pb::PayloadFieldType::Integer as i32,
    }];
    collections.create(create).await.unwrap();
    let all = (0..2000)
        .map(|n| point(n, vec![n as f32, 1.0], json!({"k": n % 10, "u": n % 4})))
        .collect();
    must_upsert_all(&mut points, "c", all, 500).await;

    assert_eq!(count(&mut points, "", false).await.count, 2000);
    // Bounded by the payload index: exact even when an estimate is allowed.
    let indexed = count(&mut points, r#"{"k": {"$lt": 3}}"#, false).await;
    assert_eq!((indexed.count, indexed.exact), (600, true));
    // Not indexed: exact on request, an estimate (said so) otherwise.
    let exact = count(&mut points, r#"{"u": 0}"#, true).await;
    assert_eq!((exact.count, exact.exact), (500, true));
    let estimate = count(&mut points, r#"{"u": 0}"#, false).await;
    assert!(!estimate.exact);
    assert!(
        (350..=650).contains(&estimate.count),
        "estimate {} is far from 500",
        estimate.count
    );

    // Re-upserting the same ids leaves the live counts as they were.
    let again = (0..2000)
        .map(|n| point(n, vec![n as f32, 2.0], json!({"k": n % 10, "u": n % 4})))
        .collect();
    must_upsert_all(&mut points, "c", again, 500).await;
    f.server.settle("c").await;
    let info = collections
        .get(pb::GetCollectionRequest { name: "c".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.points_count, 2000);
    assert_eq!(
        info.indexed_vectors + info.pending_vectors,
        2000,
        "replaced versions are not counted"
    );

    let refused = points
        .count(pb::CountRequest {
            collection: "c".into(),
            filter_json: r#"{"k": {"$gt": "x"}}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("filter_json.k.$gt"));
}

#[tokio::test]
async fn get_names_the_missing_ids_and_bad_updates_change_nothing() {
    use pb::update_payload_request::Change;
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections
        .create(create_request("c", 2, pb::Metric::L2))
        .await
        .unwrap();
    must_upsert_all(
        &mut points,
        "c",
        vec![point(1, vec![1.0, 0.0], json!({"a": 1}))],
        10,
    )
    .await;
    let got = points
        .get(pb::GetPointsRequest {
            collection: "c".into(),
            ids: vec![id(7), id(1), id(8)],
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points.len(), 1);
    let missing: Vec<u64> = got.missing.iter().map(|i| id_num(Some(i))).collect();
    assert_eq!(missing, vec![7, 8]);

    let set = || Change::Set(object(json!({"b": 2})));
    for (ids, filter, change, field) in [
        (vec![], "", Some(set()), "ids"),
        (vec![1], r#"{"a": 1}"#, Some(set()), "ids"),
        (vec![1], "", None, "change"),
        (vec![1], "", Some(Change::Clear(false)), "clear"),
        (
            vec![1],
            "",
            Some(Change::DeleteKeys(pb::PayloadKeys { keys: vec![] })),
            "delete_keys.keys",
        ),
        (
            vec![1],
            "",
            Some(Change::DeleteKeys(pb::PayloadKeys {
                keys: vec!["a..b".into()],
            })),
            "delete_keys.keys[0]",
        ),
        (vec![1], r#"{"a": {"$bad": 1}}"#, Some(set()), "filter_json"),
    ] {
        let refused = points
            .update_payload(pb::UpdatePayloadRequest {
                collection: "c".into(),
                ids: ids.into_iter().map(id).collect(),
                filter_json: filter.into(),
                change,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}",
            refused.message()
        );
        assert!(
            refused.message().contains(field),
            "`{}` does not name {field}",
            refused.message()
        );
    }
    assert_eq!(payloads(&mut points, "c").await[&1], json!({"a": 1}));

    // Each change is within the payload limit, but the merged payload would not be.
    let limit = quiver_config::Config::default().limits.max_payload_bytes;
    let half = "x".repeat(limit / 2 + 1);
    update(
        &mut points,
        &[1],
        "",
        Change::Set(object(json!({"big": half.clone()}))),
    )
    .await
    .unwrap();
    let refused = update(
        &mut points,
        &[1],
        "",
        Change::Set(object(json!({"more": half}))),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("limits.max_payload_bytes"),
        "{}",
        refused.message()
    );
    assert!(payloads(&mut points, "c").await[&1].get("more").is_none());
}

#[tokio::test]
async fn payload_indexes_are_created_and_dropped_on_a_collection_with_points() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections
        .create(create_request("c", 2, pb::Metric::L2))
        .await
        .unwrap();
    let all = (0..3000)
        .map(|n| point(n, vec![n as f32, 1.0], json!({"k": format!("v{}", n % 7)})))
        .collect();
    must_upsert_all(&mut points, "c", all, 500).await;
    // Not indexed: an approximate count is an estimate.
    assert!(!count(&mut points, r#"{"k": "v3"}"#, false).await.exact);

    let field = pb::PayloadIndexField {
        key: "k".into(),
        r#type: pb::PayloadFieldType::Keyword as i32,
    };
    let info = collections
        .create_payload_index(pb::CreatePayloadIndexRequest {
            collection: "c".into(),
            field: Some(field.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.payload_indexes, vec![field.clone()]);
    // Points written while the index builds are indexed too.
    must_upsert_all(
        &mut points,
        "c",
        vec![point(5000, vec![0.0, 0.0], json!({"k": "v3"}))],
        1,
    )
    .await;
    // Once built, the index bounds the filter: the count is exact without asking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let built = loop {
        let answer = count(&mut points, r#"{"k": "v3"}"#, false).await;
        if answer.exact || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(built.exact, "the index was not built");
    assert_eq!(
        built.count,
        3000 / 7 + 1 + 1,
        "v3: 428 of the first 3000, plus point 5000"
    );
    // Again with the same type: nothing changes. Another type: refused.
    collections
        .create_payload_index(pb::CreatePayloadIndexRequest {
            collection: "c".into(),
            field: Some(field),
        })
        .await
        .unwrap();
    let other = collections
        .create_payload_index(pb::CreatePayloadIndexRequest {
            collection: "c".into(),
            field: Some(pb::PayloadIndexField {
                key: "k".into(),
                r#type: pb::PayloadFieldType::Integer as i32,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{}", other.message());
    let bad = collections
        .create_payload_index(pb::CreatePayloadIndexRequest {
            collection: "c".into(),
            field: Some(pb::PayloadIndexField {
                key: "a..b".into(),
                r#type: pb::PayloadFieldType::Keyword as i32,
            }),
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("field.key"), "{}", bad.message());

    let info = collections
        .drop_payload_index(pb::DropPayloadIndexRequest {
            collection: "c".into(),
            key: "k".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.payload_indexes.is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count(&mut points, r#"{"k": "v3"}"#, false).await.exact {
        assert!(
            std::time::Instant::now() < deadline,
            "the index was not dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count(&mut points, r#"{"k": "v3"}"#, true).await.count, 430);
}

#[tokio::test]
async fn aliases_move_atomically_and_bad_changes_change_nothing() {
    use pb::alias_action::{Action, Create, Delete, Rename};
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    for (name, n) in [("blue", 3), ("green", 5)] {
        collections
            .create(create_request(name, 2, pb::Metric::L2))
            .await
            .unwrap();
        let all = (0..n)
            .map(|i| point(i, vec![i as f32, 0.0], json!({})))
            .collect();
        must_upsert_all(&mut points, name, all, 10).await;
    }
    let update = |actions: Vec<Action>| pb::UpdateAliasesRequest {
        actions: actions
            .into_iter()
            .map(|a| pb::AliasAction { action: Some(a) })
            .collect(),
    };
    let create = |alias: &str, collection: &str| {
        Action::Create(Create {
            alias: alias.into(),
            collection: collection.into(),
        })
    };
    let delete = |alias: &str| {
        Action::Delete(Delete {
            alias: alias.into(),
        })
    };
    let live_count = |points: &mut Points| {
        let mut points = points.clone();
        async move {
            points
                .count(pb::CountRequest {
                    collection: "live".into(),
                    exact: true,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().count)
        }
    };

    collections
        .update_aliases(update(vec![create("live", "blue")]))
        .await
        .unwrap();
    assert_eq!(live_count(&mut points).await.unwrap(), 3);
    let info = collections
        .get(pb::GetCollectionRequest {
            name: "live".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "blue", "an alias describes its collection");

    // The swap: both actions in one call.
    collections
        .update_aliases(update(vec![delete("live"), create("live", "green")]))
        .await
        .unwrap();
    assert_eq!(live_count(&mut points).await.unwrap(), 5);

    // Refused, all or nothing: the first action would apply, the second cannot.
    for (actions, code, field) in [
        (
            vec![delete("live"), create("live", "missing")],
            Code::NotFound,
            "missing",
        ),
        (vec![create("blue", "green")], Code::AlreadyExists, "blue"),
        (vec![create("live", "blue")], Code::AlreadyExists, "live"),
        (vec![delete("nope")], Code::NotFound, "nope"),
        (
            vec![Action::Rename(Rename {
                from: "live".into(),
                to: "a/b".into(),
            })],
            Code::InvalidArgument,
            "actions[0].rename.to",
        ),
        (vec![], Code::InvalidArgument, "actions"),
    ] {
        let refused = collections
            .update_aliases(update(actions))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{}", refused.message());
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    assert_eq!(live_count(&mut points).await.unwrap(), 5, "nothing changed");
    // A collection cannot take an alias's name; dropping by an alias drops nothing.
    let taken = collections
        .create(create_request("live", 2, pb::Metric::L2))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let by_alias = collections
        .delete(pb::DeleteCollectionRequest {
            name: "live".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(by_alias.code(), Code::NotFound);

    // A dropped collection's aliases go with it.
    collections
        .delete(pb::DeleteCollectionRequest {
            name: "green".into(),
        })
        .await
        .unwrap();
    let left = collections
        .list_aliases(pb::ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.aliases.is_empty(), "{left:?}");
    assert_eq!(
        live_count(&mut points).await.unwrap_err().code(),
        Code::NotFound
    );
}
