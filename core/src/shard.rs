//! What a coordinator asks of one shard replica, and the [`ShardClient`] it asks through.
//!
//! Requests are domain values, validated once by the coordinator ([`crate::convert`]); answers
//! are the public wire messages the coordinator merges, so a shard's answer reaches the client
//! without being converted again. Two clients implement the trait: the `Shard` gRPC service of
//! another node (the router's), and a node's own replicas in its process (no network hop).
//! Failures are gRPC statuses either way, read with [`quiver_proto::wire::classify`].

use quiver_index::bm25::{CorpusStats, QueryTerm, TextMatch};
use quiver_index::filter::Filter;
use quiver_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::features::{FeaturesAnswer, FeaturesCommand, FeaturesRead};
use crate::point::{JsonMap, NewPoint, PointId};

/// How a read must relate to the group's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Confirmed with a quorum that the replica is still leader, and applied up to the commit
    /// point seen at the time of the read.
    Linearizable,
    /// The replica believes it is the leader; it may briefly be a deposed one.
    Leader,
    /// Whatever the replica has applied, which may lag.
    Any,
}

/// Which replica state a read is served from.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRead {
    pub group: u64,
    pub collection: String,
    pub consistency: ReadConsistency,
}

/// A search, validated: the vector is prepared for the metric, `top_k` and `ef` are within the
/// limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
    pub top_k: usize,
    /// None: the collection's default, else the server's.
    pub ef: Option<usize>,
    pub filter: Option<Filter>,
    pub exact: bool,
    pub with_payload: bool,
    pub with_vector: bool,
    /// Rescore a quantized collection's candidates with the full-precision vectors (None: yes).
    #[serde(default)]
    pub rescore: Option<bool>,
    /// Candidates rescored per hit wanted, at least 1 (None: [`DEFAULT_OVERSAMPLING`]).
    #[serde(default)]
    pub oversampling: Option<f32>,
}

/// Candidates a quantized search rescores per hit it returns, when the query does not say.
pub const DEFAULT_OVERSAMPLING: f32 = 3.0;
/// The most candidates per hit a query may ask to rescore.
pub const MAX_OVERSAMPLING: f32 = 16.0;

/// A full-text (BM25) search of a collection's text fields, validated: `text` has terms, the
/// `fields` are the collection's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextQuery {
    pub text: String,
    /// The text fields searched (empty: every one the collection declares).
    pub fields: Vec<String>,
    /// Candidates wanted.
    pub limit: usize,
    pub filter: Option<Filter>,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// What one shard is asked for a query: its candidates per modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardQuery {
    pub vector: Option<SearchQuery>,
    pub text: Option<TextQuery>,
}

/// One shard's candidates for a [`ShardQuery`], per modality (None where it asked for none).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardQueryAnswer {
    pub vector: Option<pb::SearchResponse>,
    pub text: Option<TextAnswer>,
}

/// One shard's text candidates: the query's terms, the shard's statistics for them, and what
/// scores each candidate with every shard's statistics merged ([`quiver_index::bm25`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextAnswer {
    pub terms: Vec<QueryTerm>,
    pub stats: CorpusStats,
    /// Best first by the shard's own statistics.
    pub hits: Vec<TextCandidate>,
}

/// A point matching a text query, with its terms' frequencies and its fields' lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCandidate {
    pub id: PointId,
    pub matched: TextMatch,
    pub payload: Option<JsonMap>,
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
}

/// A page of points in id order, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrollQuery {
    /// Start after this id (None: from the first).
    pub after: Option<PointId>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// A count, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountQuery {
    pub filter: Option<Filter>,
    /// False: an estimate from payload-index statistics or a sample may answer.
    pub exact: bool,
}

/// Which points a change applies to: these ids (missing ones are skipped), or every point whose
/// payload matches the filter at the moment the command is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Selection {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// How a payload changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PayloadChange {
    /// These keys replace the same keys; the others stay.
    Set(#[serde(with = "crate::point::json_text")] JsonMap),
    /// The whole payload becomes this one.
    Overwrite(#[serde(with = "crate::point::json_text")] JsonMap),
    /// These keys go; `a.b` reaches into objects.
    DeleteKeys(Vec<String>),
    /// Every key goes.
    Clear,
}

impl PayloadChange {
    /// `payload` after the change.
    pub fn apply(&self, mut payload: JsonMap) -> JsonMap {
        match self {
            PayloadChange::Set(keys) => {
                for (k, v) in keys {
                    payload.insert(k.clone(), v.clone());
                }
                payload
            }
            PayloadChange::Overwrite(new) => new.clone(),
            PayloadChange::DeleteKeys(paths) => {
                for path in paths {
                    remove_path(&mut payload, path);
                }
                payload
            }
            PayloadChange::Clear => JsonMap::new(),
        }
    }
}

/// Removes the key a dotted path names (`a.b`: key `b` of object `a`), if it is there.
fn remove_path(payload: &mut JsonMap, path: &str) {
    match path.split_once('.') {
        None => {
            payload.remove(path);
        }
        Some((head, rest)) => {
            if let Some(serde_json::Value::Object(inner)) = payload.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

/// A new vector for an existing point, prepared for the metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVector {
    pub id: PointId,
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
}

/// A mutation of one shard's points, as the shard's log carries it. Each names the collection
/// and the id it had when the request was validated (a shard's collection id is its group's id);
/// if the collection was dropped and re-created meanwhile, the command is rejected rather than
/// applied to data it was not checked against.
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
    /// Change the payloads of the selected points (their vectors stay). A payload that would
    /// grow past `max_payload_bytes` (as JSON; the limit the request was checked against, so
    /// every replica checks the same) refuses the whole command.
    UpdatePayload {
        collection: String,
        collection_id: u64,
        selection: Selection,
        change: PayloadChange,
        #[serde(default)]
        max_payload_bytes: Option<u64>,
    },
    /// Replace the vectors of existing points (their payloads stay); missing ids are skipped.
    UpdateVectors {
        collection: String,
        collection_id: u64,
        points: Vec<NewVector>,
    },
}

impl PointsCommand {
    /// The name of the collection the command is for.
    pub fn collection(&self) -> &str {
        match self {
            PointsCommand::Upsert { collection, .. }
            | PointsCommand::Delete { collection, .. }
            | PointsCommand::DeleteByFilter { collection, .. }
            | PointsCommand::UpdatePayload { collection, .. }
            | PointsCommand::UpdateVectors { collection, .. } => collection,
        }
    }
}

/// One replica's counts of its collection and the leader it knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardCounts {
    /// 0: none known.
    pub leader: u64,
    pub points_count: u64,
    pub indexed_vectors: u64,
    pub segments: Vec<SegmentInfo>,
    /// For a collection with `embed`.
    pub embedding: Option<pb::EmbeddingStatus>,
    /// Text written to this replica is not yet searchable.
    pub text_pending: bool,
}

/// What a segment of a replica is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// New points, scored exactly.
    Appendable,
    /// Being indexed by the optimizer.
    Building,
    /// Indexed: vectors and an HNSW graph, immutable.
    Sealed,
}

impl SegmentState {
    /// The state a name says (as [`as_str`](Self::as_str) spells it).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Appendable, Self::Building, Self::Sealed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Appendable => "appendable",
            SegmentState::Building => "building",
            SegmentState::Sealed => "sealed",
        }
    }
}

/// One segment of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub state: SegmentState,
    /// Live points it holds (a building one: the points it is built from).
    pub points: u64,
    /// Replaced or deleted versions still in its graph.
    pub retired: u64,
    /// Bytes it holds in memory.
    pub memory_bytes: u64,
    /// Bytes one stored vector takes in memory (its encoding), links aside.
    pub bytes_per_vector: u32,
}

/// A client of shard replicas: another node's, over gRPC, or this process's own.
#[tonic::async_trait]
pub trait ShardClient: Send + Sync {
    /// Applies `command` through group `group`'s log, once per `idempotency_key`; with
    /// `wait_indexed`, answers once its text changes are searchable.
    async fn write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &PointsCommand,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse, Status>;

    async fn get(
        &self,
        read: &ShardRead,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<pb::GetPointsResponse, Status>;

    async fn search(
        &self,
        read: &ShardRead,
        query: &SearchQuery,
    ) -> Result<pb::SearchResponse, Status>;

    /// Several searches in one call (one round trip to a remote replica), answers in order.
    async fn search_batch(
        &self,
        read: &ShardRead,
        queries: &[SearchQuery],
    ) -> Result<Vec<pb::SearchResponse>, Status> {
        let mut answers = Vec::with_capacity(queries.len());
        for query in queries {
            answers.push(self.search(read, query).await?);
        }
        Ok(answers)
    }

    /// Queries' candidates per modality, answers in order (one round trip to a remote replica).
    async fn query(
        &self,
        read: &ShardRead,
        queries: &[ShardQuery],
    ) -> Result<Vec<ShardQueryAnswer>, Status>;

    async fn scroll(
        &self,
        read: &ShardRead,
        query: &ScrollQuery,
    ) -> Result<pb::ScrollResponse, Status>;

    async fn count(
        &self,
        read: &ShardRead,
        query: &CountQuery,
    ) -> Result<pb::CountResponse, Status>;

    /// The replica's counts of `collection` (a nearest-replica read).
    async fn counts(&self, group: u64, collection: &str) -> Result<ShardCounts, Status>;

    /// Holds `group`'s writes at its leader under `token`, for at most `ttl_ms`; answers, with
    /// the leader's last log index, once the writes accepted before are applied. With `renew`,
    /// extends the hold `token` instead, which must be in force.
    async fn freeze(
        &self,
        group: u64,
        token: &str,
        ttl_ms: u64,
        renew: bool,
    ) -> Result<u64, Status>;

    /// Lifts the hold `token`; true if this replica held it, as leader, from freeze until now.
    async fn thaw(&self, group: u64, token: &str) -> Result<bool, Status>;

    /// Applies a feature-store command (a push of rows) through group `group`'s log, once per
    /// `idempotency_key`.
    async fn features_write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &FeaturesCommand,
    ) -> Result<pb::WriteResponse, Status>;

    /// Reads a feature-store replica: online values, or point-in-time rows at a log position.
    async fn features_read(
        &self,
        read: &ShardRead,
        request: &FeaturesRead,
    ) -> Result<FeaturesAnswer, Status>;
}

/// Wire form of a read's consistency.
pub fn consistency_to_proto(c: ReadConsistency) -> pb::ReadConsistency {
    match c {
        ReadConsistency::Linearizable => pb::ReadConsistency::Linearizable,
        ReadConsistency::Leader => pb::ReadConsistency::Leader,
        ReadConsistency::Any => pb::ReadConsistency::Any,
    }
}

impl ShardQueryAnswer {
    /// Its wire form (the text part in its versioned encoding).
    pub fn to_proto(&self) -> crate::Result<pb::ShardQueryAnswer> {
        Ok(pb::ShardQueryAnswer {
            vector: self.vector.clone(),
            text: match &self.text {
                Some(text) => crate::encoding::encode(text)?,
                None => Vec::new(),
            },
        })
    }

    /// Reads its wire form.
    pub fn from_proto(answer: pb::ShardQueryAnswer) -> crate::Result<Self> {
        Ok(Self {
            vector: answer.vector,
            text: match answer.text.is_empty() {
                true => None,
                false => Some(crate::encoding::decode("text candidates", &answer.text)?),
            },
        })
    }
}
