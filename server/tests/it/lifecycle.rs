//! The full life of a collection through the gRPC API.

use quiver_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::*;

fn keyword_and_year_indexes(mut req: pb::CreateCollectionRequest) -> pb::CreateCollectionRequest {
    req.payload_indexes = vec![
        pb::PayloadIndexField {
            key: "category".into(),
            r#type: pb::PayloadFieldType::Keyword as i32,
        },
        pb::PayloadIndexField {
            key: "year".into(),
            r#type: pb::PayloadFieldType::Integer as i32,
        },
    ];
    req
}

fn category(i: u64) -> &'static str {
    ["a", "b", "c"][(i % 3) as usize]
}

fn vector_of(i: u64) -> Vec<f32> {
    let x = i as f32;
    vec![
        1.0 + x.sin(),
        1.0 + (2.0 * x).cos(),
        0.5 + (x / 7.0).sin(),
        1.0,
    ]
}

#[tokio::test]
async fn collection_and_points_lifecycle() {
    let fx = must_start().await;
    let mut collections = fx.server.must_collections().await;
    let mut points = fx.server.must_points().await;

    // health and create
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(fx.server.must_channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");
    let mut req = keyword_and_year_indexes(create_request("docs", 4, pb::Metric::Cosine));
    let text_field = |name: &str, analyzer: pb::TextAnalyzer| pb::TextField {
        name: name.into(),
        analyzer: analyzer as i32,
    };
    req.text_fields = vec![
        text_field("body", pb::TextAnalyzer::Unspecified),
        text_field("sku", pb::TextAnalyzer::Whitespace),
    ];
    let info = collections.create(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        (info.name.as_str(), info.dim, info.points_count),
        ("docs", 4, 0)
    );
    // text fields as declared, an unset analyzer read as english; the same when asked again
    let declared = vec![
        text_field("body", pb::TextAnalyzer::English),
        text_field("sku", pb::TextAnalyzer::Whitespace),
    ];
    assert_eq!(info.text_fields, declared);
    let got = collections
        .get(pb::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.text_fields, declared);
    let again = collections.create(req).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let list = collections
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.collections.len(), 1);

    // upsert 100 points
    let batch: Vec<pb::Point> = (0..100)
        .map(|i| {
            point(
                i,
                vector_of(i),
                json!({"category": category(i), "year": 2000 + i % 10, "meta": {"author": format!("au{}", i % 4)}}),
            )
        })
        .collect();
    let written = points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: batch,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.affected, 100);

    // get: present ids in request order, missing skipped, cosine vectors come back normalised
    let got = points
        .get(pb::GetPointsRequest {
            collection: "docs".into(),
            ids: vec![id(2), id(999), id(1)],
            with_payload: true,
            with_vector: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points.len(), 2);
    assert_eq!(id_num(got.points[0].id.as_ref()), 2);
    let norm: f32 = got.points[0]
        .vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    let payload = got.points[1].payload.as_ref().unwrap();
    assert!(payload.fields.contains_key("meta"));

    // search finds the point itself first
    let resp = points
        .search(search_request("docs", vector_of(7), 5))
        .await
        .unwrap()
        .into_inner();
    // 100 points are below the exact-search threshold: a scan, which never misses
    assert_eq!(resp.plan, "exact");
    assert_eq!(ids(&resp)[0], 7);
    assert!((resp.results[0].score - 1.0).abs() < 1e-4);

    // filtered search, JSON and typed forms agree and every hit matches
    let mut req = search_request("docs", vector_of(7), 10);
    req.filter_json =
        r#"{"category": "b", "year": {"$gte": 2005}, "meta.author": {"$ne": "au0"}}"#.into();
    req.with_payload = true;
    let by_json = points.search(req.clone()).await.unwrap().into_inner();
    assert_eq!(by_json.results.len(), 10);
    for r in &by_json.results {
        let i = id_num(r.id.as_ref());
        assert!(
            category(i) == "b" && i % 10 >= 5 && !i.is_multiple_of(4),
            "{i} does not match"
        );
    }
    req.filter_json.clear();
    let value = |v: pb::filter_value::Kind| Some(pb::FilterValue { kind: Some(v) });
    let cond = |key: &str, test| pb::Filter {
        condition: Some(pb::Condition {
            key: key.into(),
            test: Some(test),
        }),
        ..Default::default()
    };
    req.filter = Some(pb::Filter {
        must: vec![
            cond(
                "category",
                pb::condition::Test::Eq(value(pb::filter_value::Kind::String("b".into())).unwrap()),
            ),
            cond(
                "year",
                pb::condition::Test::Range(pb::Range {
                    gte: Some(pb::RangeBound {
                        kind: Some(pb::range_bound::Kind::Number(2005.0)),
                    }),
                    ..Default::default()
                }),
            ),
        ],
        must_not: vec![cond(
            "meta.author",
            pb::condition::Test::Eq(value(pb::filter_value::Kind::String("au0".into())).unwrap()),
        )],
        ..Default::default()
    });
    let by_typed = points.search(req).await.unwrap().into_inner();
    assert_eq!(ids(&by_json), ids(&by_typed));

    // replacing a point: the old version never shows up again
    points
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![point(
                7,
                vec![-1.0, 0.0, 0.0, 0.0],
                json!({"category": "z"}),
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let resp = points
        .search(search_request("docs", vector_of(7), 100))
        .await
        .unwrap()
        .into_inner();
    let hits: Vec<u64> = ids(&resp);
    assert_eq!(hits.iter().filter(|i| **i == 7).count(), 1);
    assert!((resp.results[0].score - 1.0).abs() > 1e-3 || hits[0] != 7);
    let mut req = search_request("docs", vector_of(7), 10);
    req.filter_json = r#"{"category": {"$in": ["z"]}}"#.into();
    let only_z = points.search(req).await.unwrap().into_inner();
    assert_eq!(ids(&only_z), vec![7]);
    assert_eq!(only_z.plan, "exact-filtered");

    // delete by ids, then by filter
    let deleted = points
        .delete(pb::DeletePointsRequest {
            collection: "docs".into(),
            ids: vec![id(1), id(2), id(5000)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.affected, 2);
    let deleted = points
        .delete(pb::DeletePointsRequest {
            collection: "docs".into(),
            filter_json: r#"{"category": "a"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.affected, 34);
    let resp = points
        .search(search_request("docs", vector_of(1), 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 64);
    assert!(ids(&resp)
        .iter()
        .all(|i| *i != 1 && *i != 2 && category(*i) != "a" || *i == 7));

    // scroll pages through every remaining point in id order exactly once
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = points
            .scroll(pb::ScrollRequest {
                collection: "docs".into(),
                limit: Some(10),
                cursor: cursor.clone(),
                with_payload: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.points.iter().map(|p| id_num(p.id.as_ref())));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 64);
    let info = collections
        .get(pb::GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.points_count, 64);

    // drop: gone, and a re-created collection of the same name starts empty
    collections
        .delete(pb::DeleteCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap();
    let gone = points
        .search(search_request("docs", vector_of(1), 10))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    collections
        .create(create_request("docs", 4, pb::Metric::Cosine))
        .await
        .unwrap();
    let resp = points
        .search(search_request("docs", vector_of(1), 10))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results.is_empty());
    fx.server.stop().await;
}

#[tokio::test]
async fn flat_collections_with_uuid_ids_and_every_metric() {
    let fx = must_start().await;
    let mut collections = fx.server.must_collections().await;
    let mut points = fx.server.must_points().await;
    for (name, metric) in [
        ("l2", pb::Metric::L2),
        ("dot", pb::Metric::Dot),
        ("cos", pb::Metric::Cosine),
    ] {
        let mut req = create_request(name, 2, metric);
        req.index = Some(pb::IndexConfig {
            kind: Some(pb::index_config::Kind::Flat(pb::FlatConfig {})),
        });
        collections.create(req).await.unwrap();
        let uuid = |n: u128| pb::PointId {
            kind: Some(pb::point_id::Kind::Uuid(
                uuid::Uuid::from_u128(n).to_string(),
            )),
        };
        let pts = vec![
            pb::Point {
                id: Some(uuid(1)),
                vector: vec![1.0, 0.0],
                payload: None,
            },
            pb::Point {
                id: Some(uuid(2)),
                vector: vec![3.0, 3.0],
                payload: None,
            },
            pb::Point {
                id: Some(uuid(3)),
                vector: vec![-1.0, 0.2],
                payload: None,
            },
        ];
        points
            .upsert(pb::UpsertRequest {
                collection: name.into(),
                points: pts,
                ..Default::default()
            })
            .await
            .unwrap();
        let resp = points
            .search(search_request(name, vec![1.0, 0.1], 3))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.plan, "exact");
        let order: Vec<String> = resp
            .results
            .iter()
            .map(|r| match r.id.as_ref().and_then(|i| i.kind.as_ref()) {
                Some(pb::point_id::Kind::Uuid(u)) => u.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let first = match metric {
            pb::Metric::Dot => uuid::Uuid::from_u128(2).to_string(),
            _ => uuid::Uuid::from_u128(1).to_string(),
        };
        assert_eq!(order[0], first, "{name}");
        let scores: Vec<f32> = resp.results.iter().map(|r| r.score).collect();
        match metric {
            pb::Metric::L2 => assert!(scores.windows(2).all(|w| w[0] <= w[1])),
            _ => assert!(scores.windows(2).all(|w| w[0] >= w[1])),
        }
    }
    fx.server.stop().await;
}

/// Replaced and deleted points never come out of the HNSW graph: with the exact-search threshold
/// at 0 every search walks the graph, over live points and tombstones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_searches_never_return_replaced_or_deleted_points() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quiver_server::testing::test_config(dir.path());
    config.search.exact_search_threshold = 0;
    let server = quiver_server::testing::TestServer::must_start(config).await;
    server
        .must_collections()
        .await
        .create(create_request("g", 8, pb::Metric::L2))
        .await
        .unwrap();
    let mut points = server.must_points().await;
    let data = clustered(600, 8, 6, 21);
    let first: Vec<pb::Point> = data[..500]
        .iter()
        .enumerate()
        .map(|(i, v)| point(i as u64, v.clone(), json!({"version": 1})))
        .collect();
    must_upsert_all(&mut points, "g", first, 100).await;
    // replace 0..100 with new vectors, delete 100..200
    let replaced: Vec<pb::Point> = (0..100)
        .map(|i| point(i, data[500 + i as usize].clone(), json!({"version": 2})))
        .collect();
    must_upsert_all(&mut points, "g", replaced, 100).await;
    points
        .delete(pb::DeletePointsRequest {
            collection: "g".into(),
            ids: (100..200).map(id).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.settle("g").await;
    // query at every original vector: the old versions of 0..100 and all of 100..200 are gone
    for (i, q) in data[..200].iter().enumerate() {
        let mut req = search_request("g", q.clone(), 10);
        req.with_payload = true;
        let resp = points.search(req).await.unwrap().into_inner();
        assert_eq!(resp.plan, "hnsw");
        assert_eq!(resp.results.len(), 10);
        for r in &resp.results {
            let n = id_num(r.id.as_ref());
            assert!(
                !(100..200).contains(&n),
                "deleted point {n} returned for query {i}"
            );
            if n < 100 {
                let version = &r.payload.as_ref().unwrap().fields["version"];
                assert_eq!(
                    version.kind,
                    Some(prost_types::value::Kind::NumberValue(2.0)),
                    "an old version of point {n} was returned"
                );
            }
        }
    }
    server.stop().await;
}
