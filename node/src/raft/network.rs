//! The Raft transport: openraft's RPCs over gRPC (`quiver.v1.Raft`), on the process's shared
//! connection per peer address ([`Channels`]), each request naming its group.
//!
//! Payloads are openraft's own request and result types encoded with bincode. A transport
//! failure is reported as `Unreachable` (the peer is down or cut off: openraft backs off) or as a
//! network error; an error the peer's Raft returned comes back as a remote error.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use quiver_proto::v1::raft_client::RaftClient;
use quiver_proto::v1::RaftRequest;
use quiver_proto::wire::Channels;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{NodeId, TypeConfig};

/// Creates connections for one group.
#[derive(Clone)]
pub struct GrpcNetwork {
    group: u64,
    peers: Channels,
}

impl GrpcNetwork {
    pub fn new(group: u64, peers: Channels) -> Self {
        Self { group, peers }
    }
}

/// One group's connection to one peer.
pub struct PeerConnection {
    group: u64,
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        let client = self
            .peers
            .channel(&node.addr)
            .map(|c| RaftClient::new(c).max_decoding_message_size(usize::MAX))
            .map_err(|e| format!("bad address `{}` of node {target}: {e}", node.addr));
        PeerConnection {
            group: self.group,
            target,
            client,
        }
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

fn io_error(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&io_error(
                    e.clone(),
                ))))
            }
        };
        let payload =
            bincode::serialize(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = RaftRequest {
            group: self.group,
            payload,
        };
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                let e = io_error(format!("no reply from node {} in time", self.target));
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&status))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = bincode::deserialize(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
