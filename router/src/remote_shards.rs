//! Another node's shard replicas, reached through its `Shard` gRPC service: requests go in their
//! versioned encoding, answers come back as the wire messages the coordinator merges.

use quiver_core::encoding;
use quiver_core::features::{FeaturesAnswer, FeaturesCommand, FeaturesRead};
use quiver_core::point::PointId;
use quiver_core::shard::{
    consistency_to_proto, CountQuery, PointsCommand, ScrollQuery, SearchQuery, ShardClient,
    ShardCounts, ShardQuery, ShardQueryAnswer, ShardRead,
};
use quiver_proto::v1 as pb;
use quiver_proto::v1::shard_client::ShardClient as ShardGrpc;
use tonic::transport::Channel;
use tonic::Status;

/// The `Shard` service of the node at the other end of a channel.
pub struct RemoteShards {
    client: ShardGrpc<Channel>,
}

impl RemoteShards {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ShardGrpc::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }
}

#[allow(clippy::result_large_err)] // tonic's Status, as every call returns
fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    encoding::encode(value).map_err(Status::from)
}

fn read_to_proto(read: &ShardRead) -> pb::ShardRead {
    pb::ShardRead {
        group: read.group,
        collection: read.collection.clone(),
        consistency: consistency_to_proto(read.consistency) as i32,
    }
}

#[tonic::async_trait]
impl ShardClient for RemoteShards {
    async fn write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &PointsCommand,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse, Status> {
        let request = pb::ShardWriteRequest {
            group,
            idempotency_key: idempotency_key.to_string(),
            command: encode(command)?,
            wait_indexed,
        };
        Ok(self.client.clone().write(request).await?.into_inner())
    }

    async fn get(
        &self,
        read: &ShardRead,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<pb::GetPointsResponse, Status> {
        let request = pb::ShardGetRequest {
            read: Some(read_to_proto(read)),
            ids: encode(&ids)?,
            with_payload,
            with_vector,
        };
        Ok(self.client.clone().get(request).await?.into_inner())
    }

    async fn search(
        &self,
        read: &ShardRead,
        query: &SearchQuery,
    ) -> Result<pb::SearchResponse, Status> {
        let request = pb::ShardSearchRequest {
            read: Some(read_to_proto(read)),
            query: encode(query)?,
        };
        Ok(self.client.clone().search(request).await?.into_inner())
    }

    async fn search_batch(
        &self,
        read: &ShardRead,
        queries: &[SearchQuery],
    ) -> Result<Vec<pb::SearchResponse>, Status> {
        let request = pb::ShardSearchBatchRequest {
            read: Some(read_to_proto(read)),
            queries: queries.iter().map(encode).collect::<Result<_, _>>()?,
        };
        let answer = self
            .client
            .clone()
            .search_batch(request)
            .await?
            .into_inner();
        if answer.responses.len() != queries.len() {
            return Err(Status::internal(format!(
                "a replica answered {} of {} searches",
                answer.responses.len(),
                queries.len()
            )));
        }
        Ok(answer.responses)
    }

    async fn query(
        &self,
        read: &ShardRead,
        queries: &[ShardQuery],
    ) -> Result<Vec<ShardQueryAnswer>, Status> {
        let request = pb::ShardQueryRequest {
            read: Some(read_to_proto(read)),
            queries: queries.iter().map(encode).collect::<Result<_, _>>()?,
        };
        let answer = self.client.clone().query(request).await?.into_inner();
        if answer.answers.len() != queries.len() {
            return Err(Status::internal(format!(
                "a replica answered {} of {} queries",
                answer.answers.len(),
                queries.len()
            )));
        }
        answer
            .answers
            .into_iter()
            .map(|a| ShardQueryAnswer::from_proto(a).map_err(Status::from))
            .collect()
    }

    async fn scroll(
        &self,
        read: &ShardRead,
        query: &ScrollQuery,
    ) -> Result<pb::ScrollResponse, Status> {
        let request = pb::ShardScrollRequest {
            read: Some(read_to_proto(read)),
            query: encode(query)?,
        };
        Ok(self.client.clone().scroll(request).await?.into_inner())
    }

    async fn count(
        &self,
        read: &ShardRead,
        query: &CountQuery,
    ) -> Result<pb::CountResponse, Status> {
        let request = pb::ShardCountRequest {
            read: Some(read_to_proto(read)),
            query: encode(query)?,
        };
        Ok(self.client.clone().count(request).await?.into_inner())
    }

    async fn counts(&self, group: u64, collection: &str) -> Result<ShardCounts, Status> {
        let request = pb::ShardCountsRequest {
            group,
            collection: collection.to_string(),
        };
        let answer = self.client.clone().counts(request).await?.into_inner();
        Ok(ShardCounts {
            leader: answer.leader,
            points_count: answer.points_count,
            indexed_vectors: answer.indexed_vectors,
            segments: quiver_core::convert::segments_from_proto(&answer.segments),
            embedding: answer.embedding,
            text_pending: answer.text_pending,
        })
    }

    async fn freeze(
        &self,
        group: u64,
        token: &str,
        ttl_ms: u64,
        renew: bool,
    ) -> Result<u64, Status> {
        let request = pb::FreezeRequest {
            group,
            token: token.to_string(),
            ttl_ms,
            renew,
        };
        let held = self.client.clone().freeze(request).await?.into_inner();
        Ok(held.last_log_index)
    }

    async fn thaw(&self, group: u64, token: &str) -> Result<bool, Status> {
        let request = pb::ThawRequest {
            group,
            token: token.to_string(),
        };
        Ok(self.client.clone().thaw(request).await?.into_inner().held)
    }

    async fn features_write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &FeaturesCommand,
    ) -> Result<pb::WriteResponse, Status> {
        let request = pb::ShardWriteRequest {
            group,
            idempotency_key: idempotency_key.to_string(),
            command: encode(command)?,
            wait_indexed: false,
        };
        Ok(self
            .client
            .clone()
            .features_write(request)
            .await?
            .into_inner())
    }

    async fn features_read(
        &self,
        read: &ShardRead,
        request: &FeaturesRead,
    ) -> Result<FeaturesAnswer, Status> {
        let request = pb::ShardFeaturesRequest {
            read: Some(read_to_proto(read)),
            request: encode(request)?,
        };
        let answer = self
            .client
            .clone()
            .features_read(request)
            .await?
            .into_inner();
        encoding::decode("features answer", &answer.answer).map_err(Status::from)
    }
}
