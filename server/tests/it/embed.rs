//! Server-side embeddings with the real all-MiniLM-L6-v2: points written with text and no
//! vector are acknowledged at once and embedded in the background by the shard leader (through
//! the log, so every replica has the vector), found by vector search once embedded, also after
//! a restart that cut the backlog short; a query's text is embedded for it; and what cannot work
//! (no model, a dimension other than the model's, a point with neither vector nor text) is
//! refused by field.

use std::time::{Duration, Instant};

use quiver_proto::v1 as pb;
use quiver_server::testing::{test_config, TestServer};
use serde_json::json;
use tonic::Code;

use crate::support::*;

fn embedding_collection(name: &str, dim: u32, shards: u32) -> pb::CreateCollectionRequest {
    let mut create = create_request(name, dim, pb::Metric::Cosine);
    create.shard_count = Some(shards);
    create.text_fields = vec![pb::TextField {
        name: "text".into(),
        analyzer: pb::TextAnalyzer::English as i32,
    }];
    create.embed = "text".into();
    create
}

const SENTENCES: [&str; 12] = [
    "Mitochondria are the powerhouse of the cell.",
    "The disk is full: error code E42.",
    "BRCA1 mutations raise the risk of breast cancer.",
    "A red fox jumps over the lazy dog.",
    "Quarterly revenue grew by twelve percent.",
    "Photosynthesis turns light into chemical energy.",
    "The train to Lyon leaves at nine.",
    "Insulin regulates blood sugar levels.",
    "The database replicates every write with Raft.",
    "Volcanic ash grounded flights across Europe.",
    "Vaccines train the immune system.",
    "The recipe needs two eggs and flour.",
];

async fn embedding_status(
    collections: &mut pb::collections_client::CollectionsClient<tonic::transport::Channel>,
    name: &str,
) -> pb::EmbeddingStatus {
    collections
        .get(pb::GetCollectionRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .embedding
        .expect("a collection with embed reports its embedding")
}

/// The best `limit` points for `text` by its embedding alone.
async fn dense(
    points: &mut pb::points_client::PointsClient<tonic::transport::Channel>,
    text: &str,
    limit: u32,
) -> pb::SearchResponse {
    points
        .query(pb::QueryRequest {
            collection: "notes".into(),
            text: text.into(),
            mode: pb::QueryMode::Dense as i32,
            limit: Some(limit),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until no point of `name` waits for its vector.
async fn wait_embedded(
    collections: &mut pb::collections_client::CollectionsClient<tonic::transport::Channel>,
    name: &str,
) -> pb::EmbeddingStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = embedding_status(collections, name).await;
        if status.pending == 0 {
            return status;
        }
        assert!(Instant::now() < deadline, "still waiting: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_without_vectors_are_embedded_in_the_background_and_queries_are_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.embedder.model_dir = minilm_dir();
    let server = TestServer::must_start(config.clone()).await;
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;
    collections
        .create(embedding_collection("notes", 384, 2))
        .await
        .unwrap();
    let pts: Vec<pb::Point> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| point(i as u64, vec![], json!({"text": s, "n": i})))
        .collect();
    let written = points
        .upsert(pb::UpsertRequest {
            collection: "notes".into(),
            points: pts,
            wait_indexed: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.affected, SENTENCES.len() as u64);
    let status = wait_embedded(&mut collections, "notes").await;
    assert_eq!(status.failed, 0, "{status:?}");
    assert_eq!(status.from_cache, 0, "{status:?}");
    assert!(status.last_error.is_empty(), "{status:?}");

    // the same texts in another collection come from the embedding cache
    collections
        .create(embedding_collection("copy", 384, 1))
        .await
        .unwrap();
    let copies: Vec<pb::Point> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| point(i as u64, vec![], json!({ "text": s })))
        .collect();
    points
        .upsert(pb::UpsertRequest {
            collection: "copy".into(),
            points: copies,
            ..Default::default()
        })
        .await
        .unwrap();
    let copied = wait_embedded(&mut collections, "copy").await;
    assert_eq!(copied.from_cache, SENTENCES.len() as u64, "{copied:?}");

    // each point has a unit vector now, and its own text's embedding finds it first
    let got = points
        .get(pb::GetPointsRequest {
            collection: "notes".into(),
            ids: vec![id(2)],
            with_vector: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let v = &got.points[0].vector;
    assert_eq!(v.len(), 384);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    for (i, sentence) in SENTENCES.iter().enumerate() {
        let found = dense(&mut points, sentence, 3).await;
        assert_eq!(ids(&found)[0], i as u64, "{sentence}");
        assert!(found.results[0].score > 0.999, "{}", found.results[0].score);
    }
    // text only, no mode: hybrid, the text embedded beside BM25 over the text field
    let hybrid = points
        .query(pb::QueryRequest {
            collection: "notes".into(),
            text: "breast cancer genes".into(),
            explain: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hybrid.plan.ends_with("+bm25+rrf"), "{}", hybrid.plan);
    assert_eq!(ids(&hybrid)[0], 2);
    let explain = hybrid.results[0].explain.as_ref().unwrap();
    assert!(explain.vector.is_some() && explain.text.is_some());

    // a re-written point is embedded again from its new text; a point with a vector keeps it
    points
        .upsert(pb::UpsertRequest {
            collection: "notes".into(),
            points: vec![
                point(
                    3,
                    vec![],
                    json!({"text": "Insulin and glucose in diabetes."}),
                ),
                point(100, vec![0.5; 384], json!({"text": "given a vector"})),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    wait_embedded(&mut collections, "notes").await;
    let found = dense(&mut points, "Insulin and glucose in diabetes.", 1).await;
    assert_eq!(ids(&found), [3]);

    // a backlog cut short by a restart is embedded after it
    let backlog: Vec<pb::Point> = (0..200u64)
        .map(|i| {
            let text = format!("{} (note {i})", SENTENCES[i as usize % SENTENCES.len()]);
            point(1_000 + i, vec![], json!({ "text": text }))
        })
        .collect();
    points
        .upsert(pb::UpsertRequest {
            collection: "notes".into(),
            points: backlog,
            ..Default::default()
        })
        .await
        .unwrap();
    server.stop().await;
    let server = TestServer::must_start(config).await;
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;
    wait_embedded(&mut collections, "notes").await;
    let count = points
        .count(pb::CountRequest {
            collection: "notes".into(),
            exact: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 213);
    // (the copies' vectors are the originals')
    let copy = points
        .get(pb::GetPointsRequest {
            collection: "copy".into(),
            ids: vec![id(2)],
            with_vector: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&copy.points[0].vector, v);
    let found = points
        .search(pb::SearchRequest {
            collection: "notes".into(),
            vector: v.clone(),
            top_k: Some(20),
            exact: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // point 2 and the 17 backlog notes that repeat its sentence, all embedded
    assert_eq!(found.results.len(), 20);
    assert!(ids(&found).contains(&2));
    assert!(
        found.results[..18].iter().all(|r| r.score > 0.8),
        "{:?}",
        found.results
    );

    // refused by field, changing nothing
    let status = points
        .upsert(pb::UpsertRequest {
            collection: "notes".into(),
            points: vec![point(5_000, vec![], json!({"title": "no text"}))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("points[0].vector: "),
        "{}",
        status.message()
    );
    let status = collections
        .create(embedding_collection("wrong", 128, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("dim: "),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_embedding_is_refused_and_the_rest_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.embedder.model_dir = dir.path().join("no-model-here");
    let server = TestServer::must_start(config).await;
    let mut collections = server.must_collections().await;
    let status = collections
        .create(embedding_collection("e", 384, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with("embed: "),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("model.safetensors"),
        "{}",
        status.message()
    );
    // nothing was created; a collection without embed is
    let list = collections
        .list(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.collections.is_empty(), "{list:?}");
    let mut plain = embedding_collection("plain", 384, 1);
    plain.embed.clear();
    collections.create(plain).await.unwrap();
    let mut points = server.must_points().await;
    let status = points
        .upsert(pb::UpsertRequest {
            collection: "plain".into(),
            points: vec![point(1, vec![], json!({"text": "no vector"}))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("points[0].vector: "),
        "{}",
        status.message()
    );
    server.stop().await;
}
