//! `quiver cluster` and `quiver shard`: form a cluster, change its members, move replicas.

use clap::Subcommand;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::wire::leader_address;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::{print_line, status, Endpoint};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Form a new cluster of the node at --endpoint alone (once, on the first node; nodes for a
    /// cluster run with cluster.bootstrap = false).
    Init {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Add the node listening at ADDR (ip:port) to the cluster that --endpoint belongs to.
    Join {
        address: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Remove node NODE (by id) from the cluster.
    Remove {
        node: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Members, groups, leaders, and how far each replica has come.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// The leader's endpoint from a "not the leader" answer (its `quiver-leader-address` metadata).
fn leader_endpoint(e: &tonic::Status) -> Option<Endpoint> {
    Some(Endpoint {
        endpoint: format!("http://{}", leader_address(e)?),
    })
}

/// Runs a membership call, following a "not the leader" answer once.
async fn on_leader<F, Fut, T>(endpoint: &Endpoint, call: F) -> anyhow::Result<T>
where
    F: Fn(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match call(ClusterClient::new(endpoint.channel().await?)).await {
        Ok(r) => Ok(r.into_inner()),
        Err(e) => match leader_endpoint(&e) {
            Some(leader) => call(ClusterClient::new(leader.channel().await?))
                .await
                .map(tonic::Response::into_inner)
                .map_err(status),
            None => Err(status(e)),
        },
    }
}

/// The cluster as every member sees it: members, then each group (the meta group is 0) with
/// its leader and each replica's role, log and applied index, and lag behind the leader's log.
async fn cluster_view(first: pb::ClusterStatus) -> anyhow::Result<Value> {
    let mut views = Vec::new();
    for member in &first.members {
        // A member that does not answer within 2 s (down, paused, cut off) is shown unreachable.
        let answer = async {
            let channel = Endpoint {
                endpoint: format!("http://{}", member.address),
            }
            .channel()
            .await?;
            let status = ClusterClient::new(channel)
                .status(pb::StatusRequest {})
                .await?;
            anyhow::Ok(status.into_inner())
        };
        let answer = tokio::time::timeout(std::time::Duration::from_secs(2), answer).await;
        views.push((member.clone(), answer.ok().and_then(Result::ok)));
    }
    let mut groups: std::collections::BTreeMap<u64, Value> = std::collections::BTreeMap::new();
    for (_, view) in &views {
        for g in view.iter().flat_map(|v| &v.groups) {
            let entry = groups.entry(g.group).or_insert_with(|| {
                json!({"group": g.group, "collection": g.collection, "shard": g.shard,
                       "leader": 0, "term": 0, "replicas": []})
            });
            if g.leader != 0 && g.term >= entry["term"].as_u64().unwrap_or(0) {
                entry["leader"] = json!(g.leader);
                entry["term"] = json!(g.term);
            }
        }
    }
    for (member, view) in &views {
        for g in view.iter().flat_map(|v| &v.groups) {
            let entry = groups.get_mut(&g.group).expect("group seen above");
            entry["replicas"]
                .as_array_mut()
                .expect("array")
                .push(json!({
                    "node": member.id,
                    "role": g.role,
                    "last_log_index": g.last_log_index,
                    "last_applied_index": g.last_applied_index,
                }));
        }
    }
    // Lag: how far each replica's applied index trails the furthest log of its group.
    for entry in groups.values_mut() {
        let replicas = entry["replicas"].as_array_mut().expect("array");
        let head = replicas
            .iter()
            .filter_map(|r| r["last_log_index"].as_u64())
            .max()
            .unwrap_or(0);
        for r in replicas.iter_mut() {
            r["lag"] = json!(head.saturating_sub(r["last_applied_index"].as_u64().unwrap_or(0)));
        }
    }
    let members: Vec<Value> = views
        .iter()
        .map(|(m, v)| json!({"id": m.id, "address": m.address, "reachable": v.is_some()}))
        .collect();
    Ok(json!({
        "node": first.node.as_ref().map(|n| json!({"id": n.id, "address": n.address})),
        "members": members,
        "groups": groups.into_values().collect::<Vec<_>>(),
    }))
}

pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    let status = match cmd {
        ClusterCommand::Init { endpoint } => ClusterClient::new(endpoint.channel().await?)
            .init(pb::InitRequest {})
            .await
            .map_err(status)?
            .into_inner(),
        ClusterCommand::Join { address, endpoint } => {
            on_leader(&endpoint, |mut c| {
                let address = address.clone();
                async move { c.add_node(pb::AddNodeRequest { address }).await }
            })
            .await?
        }
        ClusterCommand::Remove { node, endpoint } => {
            on_leader(&endpoint, |mut c| async move {
                c.remove_node(pb::RemoveNodeRequest { id: node }).await
            })
            .await?
        }
        ClusterCommand::Status { endpoint } => ClusterClient::new(endpoint.channel().await?)
            .status(pb::StatusRequest {})
            .await
            .map_err(status)?
            .into_inner(),
    };
    let view = cluster_view(status).await?;
    print_line(serde_json::to_string_pretty(&view)?)?;
    Ok(())
}

#[derive(Subcommand)]
pub enum ShardCommand {
    /// Move shard group GROUP's replica from node --from to node --to (the new replica catches
    /// up before the old one leaves). Group ids are listed by `quiver collection info`.
    Move {
        group: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub async fn shard(cmd: ShardCommand) -> anyhow::Result<()> {
    match cmd {
        ShardCommand::Move {
            group,
            from,
            to,
            endpoint,
        } => {
            let moved = on_leader(&endpoint, |mut c| async move {
                c.move_shard(pb::MoveShardRequest { group, from, to }).await
            })
            .await?;
            print_line(json!({"group": group, "replicas": moved.replicas}))?;
        }
    }
    Ok(())
}
