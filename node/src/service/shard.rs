//! The `Shard` gRPC service: decodes a coordinator's request and hands it to this node's
//! replicas ([`LocalShards`]), which serve in-process coordinators the same way.

use quiver_core::encoding;
use quiver_core::shard::{ShardClient, ShardRead};
use quiver_core::{convert, Error, Result};
use quiver_proto::v1 as pb;
use quiver_proto::v1::shard_server::Shard;
use tonic::{Request, Response, Status};

use crate::local_shards::LocalShards;

/// Serves shard requests from other processes' coordinators.
pub struct ShardService {
    shards: LocalShards,
}

impl ShardService {
    pub fn new(shards: LocalShards) -> Self {
        Self { shards }
    }
}

fn read(read: Option<pb::ShardRead>) -> Result<ShardRead> {
    let read = read.ok_or_else(|| Error::invalid("read", "missing"))?;
    Ok(ShardRead {
        group: read.group,
        consistency: convert::read_consistency(read.consistency)?,
        collection: read.collection,
    })
}

fn decode<T: serde::de::DeserializeOwned>(field: &str, bytes: &[u8]) -> Result<T> {
    encoding::decode(field, bytes).map_err(|e| Error::invalid(field, e.to_string()))
}

fn decode_all<T: serde::de::DeserializeOwned>(field: &str, items: &[Vec<u8>]) -> Result<Vec<T>> {
    items.iter().map(|item| decode(field, item)).collect()
}

#[tonic::async_trait]
impl Shard for ShardService {
    async fn write(
        &self,
        request: Request<pb::ShardWriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        let command = decode("command", &req.command)?;
        let answer = self
            .shards
            .write(req.group, &req.idempotency_key, &command, req.wait_indexed)
            .await?;
        Ok(Response::new(answer))
    }

    async fn get(
        &self,
        request: Request<pb::ShardGetRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let req = request.into_inner();
        let ids: Vec<quiver_core::point::PointId> = decode("ids", &req.ids)?;
        let answer = self
            .shards
            .get(&read(req.read)?, &ids, req.with_payload, req.with_vector)
            .await?;
        Ok(Response::new(answer))
    }

    async fn search(
        &self,
        request: Request<pb::ShardSearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let req = request.into_inner();
        let query = decode("query", &req.query)?;
        let answer = self.shards.search(&read(req.read)?, &query).await?;
        Ok(Response::new(answer))
    }

    async fn search_batch(
        &self,
        request: Request<pb::ShardSearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let req = request.into_inner();
        let queries = decode_all("queries", &req.queries)?;
        let responses = self.shards.search_batch(&read(req.read)?, &queries).await?;
        Ok(Response::new(pb::SearchBatchResponse { responses }))
    }

    async fn query(
        &self,
        request: Request<pb::ShardQueryRequest>,
    ) -> Result<Response<pb::ShardQueryResponse>, Status> {
        let req = request.into_inner();
        let queries = decode_all("queries", &req.queries)?;
        let answers = self.shards.query(&read(req.read)?, &queries).await?;
        let answers = answers
            .iter()
            .map(|a| a.to_proto())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ShardQueryResponse { answers }))
    }

    async fn scroll(
        &self,
        request: Request<pb::ShardScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let req = request.into_inner();
        let query = decode("query", &req.query)?;
        let answer = self.shards.scroll(&read(req.read)?, &query).await?;
        Ok(Response::new(answer))
    }

    async fn count(
        &self,
        request: Request<pb::ShardCountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let req = request.into_inner();
        let query = decode("query", &req.query)?;
        let answer = self.shards.count(&read(req.read)?, &query).await?;
        Ok(Response::new(answer))
    }

    async fn counts(
        &self,
        request: Request<pb::ShardCountsRequest>,
    ) -> Result<Response<pb::ShardCounts>, Status> {
        let req = request.into_inner();
        let counts = self.shards.shard_counts(req.group, &req.collection)?;
        Ok(Response::new(pb::ShardCounts {
            leader: counts.leader,
            points_count: counts.points_count,
            indexed_vectors: counts.indexed_vectors,
            segments: quiver_core::convert::segments_to_proto(&counts.segments),
            embedding: counts.embedding,
            text_pending: counts.text_pending,
        }))
    }

    async fn freeze(
        &self,
        request: Request<pb::FreezeRequest>,
    ) -> Result<Response<pb::FreezeResponse>, Status> {
        let req = request.into_inner();
        let last_log_index = self
            .shards
            .freeze(req.group, &req.token, req.ttl_ms, req.renew)
            .await?;
        Ok(Response::new(pb::FreezeResponse { last_log_index }))
    }

    async fn thaw(
        &self,
        request: Request<pb::ThawRequest>,
    ) -> Result<Response<pb::ThawResponse>, Status> {
        let req = request.into_inner();
        let held = self.shards.thaw(req.group, &req.token).await?;
        Ok(Response::new(pb::ThawResponse { held }))
    }

    async fn features_write(
        &self,
        request: Request<pb::ShardWriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        let command = decode("command", &req.command)?;
        let answer = self
            .shards
            .features_write(req.group, &req.idempotency_key, &command)
            .await?;
        Ok(Response::new(answer))
    }

    async fn features_read(
        &self,
        request: Request<pb::ShardFeaturesRequest>,
    ) -> Result<Response<pb::ShardFeaturesResponse>, Status> {
        let req = request.into_inner();
        let lookup = decode("request", &req.request)?;
        let answer = self.shards.features_read(&read(req.read)?, &lookup).await?;
        Ok(Response::new(pb::ShardFeaturesResponse {
            answer: encoding::encode(&answer)?,
        }))
    }
}
