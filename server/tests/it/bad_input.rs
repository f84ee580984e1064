//! Bad input gets a clear status naming the field, and changes nothing.

use quiver_proto::v1 as pb;
use quiver_server::testing::{test_config, TestServer};
use serde_json::json;
use tonic::Code;

use crate::support::*;

/// Asserts `result` failed with `code` and a message starting with (or containing) `field`.
fn must_reject<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, field: &str) {
    let status = result.expect_err(&format!("expected {code:?} naming `{field}`"));
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(field),
        "message `{}` does not name `{field}`",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_batch_points = 50;
    config.limits.max_payload_bytes = 1024;
    config.limits.max_request_bytes = 64 * 1024;
    config.limits.max_top_k = 100;
    let server = TestServer::must_start(config).await;
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;

    // collections
    let good = create_request("c", 3, pb::Metric::Cosine);
    let with = |f: &dyn Fn(&mut pb::CreateCollectionRequest)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    must_reject(
        collections.create(with(&|r| r.name.clear())).await,
        Code::InvalidArgument,
        "name",
    );
    must_reject(
        collections.create(with(&|r| r.name = "a/b".into())).await,
        Code::InvalidArgument,
        "name",
    );
    must_reject(
        collections.create(with(&|r| r.dim = 0)).await,
        Code::InvalidArgument,
        "dim",
    );
    must_reject(
        collections.create(with(&|r| r.dim = 100_000)).await,
        Code::InvalidArgument,
        "dim",
    );
    must_reject(
        collections.create(with(&|r| r.metric = 0)).await,
        Code::InvalidArgument,
        "metric",
    );
    must_reject(
        collections.create(with(&|r| r.metric = 42)).await,
        Code::InvalidArgument,
        "metric",
    );
    let text = |name: &str, analyzer: i32| pb::TextField {
        name: name.into(),
        analyzer,
    };
    must_reject(
        collections
            .create(with(&|r| r.text_fields = vec![text(" ", 0)]))
            .await,
        Code::InvalidArgument,
        "text_fields[0].name",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.text_fields = vec![text("body", 0), text("body", 2)]
            }))
            .await,
        Code::InvalidArgument,
        "text_fields[1].name",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.text_fields = vec![text("body", 0), text("title", 7)]
            }))
            .await,
        Code::InvalidArgument,
        "text_fields[1].analyzer",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.text_fields = (0..17).map(|i| text(&format!("f{i}"), 0)).collect()
            }))
            .await,
        Code::InvalidArgument,
        "text_fields",
    );
    must_reject(
        collections.create(with(&|r| r.quantization = 9)).await,
        Code::InvalidArgument,
        "quantization",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.quantization = pb::Quantization::Int8 as i32;
                r.index = Some(pb::IndexConfig {
                    kind: Some(pb::index_config::Kind::Flat(pb::FlatConfig {})),
                });
            }))
            .await,
        Code::InvalidArgument,
        "quantization",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.index = Some(pb::IndexConfig {
                    kind: Some(pb::index_config::Kind::Hnsw(pb::HnswConfig {
                        m: Some(1000),
                        ef_construction: Some(0),
                    })),
                })
            }))
            .await,
        Code::InvalidArgument,
        "index.hnsw.m",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.payload_indexes = vec![pb::PayloadIndexField {
                    key: "k".into(),
                    r#type: 0,
                }]
            }))
            .await,
        Code::InvalidArgument,
        "payload_indexes[0].type",
    );
    must_reject(
        collections.create(with(&|r| r.name = "n".repeat(65))).await,
        Code::InvalidArgument,
        "name",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.payload_indexes = vec![pb::PayloadIndexField {
                    key: "a..b".into(),
                    r#type: pb::PayloadFieldType::Keyword as i32,
                }]
            }))
            .await,
        Code::InvalidArgument,
        "payload_indexes[0].key",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.search_defaults = Some(pb::SearchDefaults {
                    ef: Some(1_000_000),
                })
            }))
            .await,
        Code::InvalidArgument,
        "search_defaults.ef",
    );
    must_reject(
        collections
            .create(with(&|r| r.shard_count = Some(300)))
            .await,
        Code::InvalidArgument,
        "shard_count",
    );
    // Zero is refused, not read as "the default".
    let hnsw = |m: Option<u32>, ef_construction: Option<u32>| {
        Some(pb::IndexConfig {
            kind: Some(pb::index_config::Kind::Hnsw(pb::HnswConfig {
                m,
                ef_construction,
            })),
        })
    };
    must_reject(
        collections
            .create(with(&|r| r.index = hnsw(Some(0), None)))
            .await,
        Code::InvalidArgument,
        "index.hnsw.m",
    );
    must_reject(
        collections
            .create(with(&|r| r.index = hnsw(None, Some(0))))
            .await,
        Code::InvalidArgument,
        "index.hnsw.ef_construction",
    );
    must_reject(
        collections.create(with(&|r| r.shard_count = Some(0))).await,
        Code::InvalidArgument,
        "shard_count",
    );
    must_reject(
        collections
            .create(with(&|r| r.replication_factor = Some(0)))
            .await,
        Code::InvalidArgument,
        "replication_factor",
    );
    must_reject(
        collections
            .create(with(&|r| {
                r.search_defaults = Some(pb::SearchDefaults { ef: Some(0) })
            }))
            .await,
        Code::InvalidArgument,
        "search_defaults.ef",
    );
    // One node cannot hold two replicas of a shard.
    must_reject(
        collections
            .create(with(&|r| r.replication_factor = Some(2)))
            .await,
        Code::InvalidArgument,
        "replication_factor",
    );
    let none = collections
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        none.collections.is_empty(),
        "rejected creates created nothing"
    );
    must_reject(
        collections
            .get(pb::GetCollectionRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    must_reject(
        collections
            .delete(pb::DeleteCollectionRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    collections.create(good.clone()).await.unwrap();

    // cluster operations on shards
    let mut cluster =
        quiver_proto::v1::cluster_client::ClusterClient::new(server.must_channel().await);
    let group = collections
        .get(pb::GetCollectionRequest { name: "c".into() })
        .await
        .unwrap()
        .into_inner()
        .shards[0]
        .group;
    must_reject(
        cluster
            .move_shard(pb::MoveShardRequest {
                group: 12345,
                from: 1,
                to: 2,
            })
            .await,
        Code::NotFound,
        "shard group 12345",
    );
    must_reject(
        cluster
            .move_shard(pb::MoveShardRequest {
                group,
                from: 7,
                to: 1,
            })
            .await,
        Code::InvalidArgument,
        "from",
    );
    must_reject(
        cluster
            .move_shard(pb::MoveShardRequest {
                group,
                from: 1,
                to: 9,
            })
            .await,
        Code::InvalidArgument,
        "to",
    );
    must_reject(
        cluster.remove_node(pb::RemoveNodeRequest { id: 1 }).await,
        Code::InvalidArgument,
        "last voter",
    );
    let stale = pb::ShardGetRequest {
        read: Some(pb::ShardRead {
            group: 999,
            collection: "c".into(),
            consistency: pb::ReadConsistency::Leader as i32,
        }),
        ids: quiver_core::encoding::encode(&vec![quiver_core::point::PointId::Num(1)]).unwrap(),
        ..Default::default()
    };
    let mut shard = quiver_proto::v1::shard_client::ShardClient::new(server.must_channel().await);
    must_reject(shard.get(stale).await, Code::Unavailable, "shard group 999");
    points
        .upsert(pb::UpsertRequest {
            collection: "c".into(),
            points: vec![point(1, vec![1.0, 0.0, 0.0], json!({"k": "v"}))],
            ..Default::default()
        })
        .await
        .unwrap();

    // upserts: each bad batch also carries a good point, which must not be written
    let upsert = |pts: Vec<pb::Point>| pb::UpsertRequest {
        collection: "c".into(),
        points: pts,
        ..Default::default()
    };
    let ok = || point(100, vec![0.0, 1.0, 0.0], json!({}));
    let cases: Vec<(Vec<pb::Point>, &str)> = vec![
        (
            vec![ok(), point(2, vec![1.0, 2.0], json!({}))],
            "points[1].vector",
        ),
        (
            vec![ok(), point(2, vec![1.0, f32::NAN, 0.0], json!({}))],
            "points[1].vector[1]",
        ),
        (
            vec![point(2, vec![f32::INFINITY, 0.0, 0.0], json!({})), ok()],
            "points[0].vector[0]",
        ),
        (
            vec![ok(), point(2, vec![0.0, 0.0, 0.0], json!({}))],
            "points[1].vector",
        ),
        (vec![], "points"),
        (
            vec![ok(), point(100, vec![1.0, 0.0, 0.0], json!({}))],
            "points[1].id",
        ),
        (
            vec![
                ok(),
                pb::Point {
                    id: None,
                    vector: vec![1.0, 0.0, 0.0],
                    payload: None,
                },
            ],
            "points[1].id",
        ),
        (
            vec![
                ok(),
                pb::Point {
                    id: Some(pb::PointId {
                        kind: Some(pb::point_id::Kind::Uuid("not-a-uuid".into())),
                    }),
                    vector: vec![1.0, 0.0, 0.0],
                    payload: None,
                },
            ],
            "points[1].id",
        ),
        (
            (0..51)
                .map(|i| point(200 + i, vec![1.0, 0.0, 0.0], json!({})))
                .collect(),
            "points",
        ),
        (
            vec![
                ok(),
                point(2, vec![1.0, 0.0, 0.0], json!({"big": "x".repeat(2000)})),
            ],
            "points[1].payload",
        ),
    ];
    for (pts, field) in cases {
        must_reject(
            points.upsert(upsert(pts)).await,
            Code::InvalidArgument,
            field,
        );
    }
    let mut nan_payload = point(2, vec![1.0, 0.0, 0.0], json!({}));
    nan_payload.payload.as_mut().unwrap().fields.insert(
        "score".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
        },
    );
    must_reject(
        points.upsert(upsert(vec![ok(), nan_payload])).await,
        Code::InvalidArgument,
        "points[1].payload.score",
    );
    must_reject(
        points
            .upsert(pb::UpsertRequest {
                collection: "nope".into(),
                points: vec![ok()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nope",
    );
    // an oversized request is refused by the transport before it reaches the node
    let huge: Vec<pb::Point> = (0..40)
        .map(|i| {
            point(
                300 + i,
                vec![1.0, 0.0, 0.0],
                json!({"pad": "y".repeat(2000)}),
            )
        })
        .collect();
    let status = points
        .upsert(upsert(huge))
        .await
        .expect_err("oversized request");
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );

    // searches
    let search = |f: &dyn Fn(&mut pb::SearchRequest)| {
        let mut r = search_request("c", vec![1.0, 0.0, 0.0], 5);
        f(&mut r);
        r
    };
    must_reject(
        points.search(search(&|r| r.vector = vec![1.0])).await,
        Code::InvalidArgument,
        "vector",
    );
    must_reject(
        points
            .search(search(&|r| r.vector = vec![f32::NAN, 0.0, 0.0]))
            .await,
        Code::InvalidArgument,
        "vector[0]",
    );
    must_reject(
        points.search(search(&|r| r.vector = vec![0.0; 3])).await,
        Code::InvalidArgument,
        "vector",
    );
    must_reject(
        points.search(search(&|r| r.top_k = Some(0))).await,
        Code::InvalidArgument,
        "top_k",
    );
    must_reject(
        points.search(search(&|r| r.ef = Some(0))).await,
        Code::InvalidArgument,
        "ef",
    );
    for oversampling in [0.5, 17.0, f32::NAN, f32::INFINITY] {
        must_reject(
            points
                .search(search(&|r| r.oversampling = Some(oversampling)))
                .await,
            Code::InvalidArgument,
            "oversampling",
        );
    }
    must_reject(
        points.search(search(&|r| r.top_k = Some(101))).await,
        Code::InvalidArgument,
        "top_k",
    );
    must_reject(
        points.search(search(&|r| r.ef = Some(1_000_000))).await,
        Code::InvalidArgument,
        "ef",
    );
    must_reject(
        points
            .search(search(&|r| r.filter_json = "{not json".into()))
            .await,
        Code::InvalidArgument,
        "filter_json",
    );
    must_reject(
        points
            .search(search(&|r| {
                r.filter_json = r#"{"$and": [{"k": {"$regex": "x"}}]}"#.into()
            }))
            .await,
        Code::InvalidArgument,
        "filter_json.$and[0].k.$regex",
    );
    must_reject(
        points
            .search(search(&|r| {
                r.filter_json = r#"{"k": "v"}"#.into();
                r.filter = Some(pb::Filter::default());
            }))
            .await,
        Code::InvalidArgument,
        "filter",
    );
    must_reject(
        points.search(search(&|r| r.consistency = 9)).await,
        Code::InvalidArgument,
        "consistency",
    );
    must_reject(
        points
            .search(search(&|r| r.collection = "nope".into()))
            .await,
        Code::NotFound,
        "nope",
    );

    // get, delete, scroll
    must_reject(
        points
            .get(pb::GetPointsRequest {
                collection: "c".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ids",
    );
    must_reject(
        points
            .delete(pb::DeletePointsRequest {
                collection: "c".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ids",
    );
    must_reject(
        points
            .delete(pb::DeletePointsRequest {
                collection: "c".into(),
                ids: vec![id(1)],
                filter_json: r#"{"k": "v"}"#.into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ids",
    );
    must_reject(
        points
            .delete(pb::DeletePointsRequest {
                collection: "c".into(),
                filter_json: r#"{"k": {"$gt": true}}"#.into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "filter_json.k.$gt",
    );
    must_reject(
        points
            .scroll(pb::ScrollRequest {
                collection: "c".into(),
                cursor: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "cursor",
    );
    must_reject(
        points
            .scroll(pb::ScrollRequest {
                collection: "c".into(),
                limit: Some(1_000_000),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "limit",
    );

    must_reject(
        points
            .delete(pb::DeletePointsRequest {
                collection: "c".into(),
                filter_json: "{}".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "filter",
    );
    must_reject(
        points
            .search(search(&|r| r.collection = String::new()))
            .await,
        Code::InvalidArgument,
        "collection",
    );

    // nothing changed: still exactly the one good point
    let info = collections
        .get(pb::GetCollectionRequest { name: "c".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.points_count, 1);
    let got = points
        .get(pb::GetPointsRequest {
            collection: "c".into(),
            ids: vec![id(1), id(2), id(100), id(200), id(300)],
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points.len(), 1);
    assert_eq!(id_num(got.points[0].id.as_ref()), 1);
    server.stop().await;
}
