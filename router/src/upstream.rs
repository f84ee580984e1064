//! Where requests go: the cached leader of the cluster, rediscovered from the members when it
//! changes, and the rule for which failures may be retried.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};
use tracing::{debug, warn};

/// How long one request may spend following leader changes before it fails.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The cluster as the router sees it.
pub struct Upstream {
    members: Mutex<Vec<String>>,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// What a failed attempt means for the request.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Refused by a follower that named the leader: not applied, send it there.
    Redirect(String),
    /// Not applied (refused by a follower, or never sent): find the leader again and retry.
    Rediscover,
    /// Anything else, including failures after which the request may have been applied.
    Final,
}

fn classify(status: &Status) -> Failure {
    if let Some(addr) = status
        .metadata()
        .get("quiver-leader-address")
        .and_then(|v| v.to_str().ok())
    {
        return Failure::Redirect(addr.to_string());
    }
    let message = status.message();
    if status.code() == Code::Unavailable
        && (message.starts_with("not the leader")
            || message.contains("connect error")
            || message.contains("error trying to connect"))
    {
        return Failure::Rediscover;
    }
    Failure::Final
}

impl Upstream {
    /// `members`: addresses (`ip:port`) of some cluster members.
    pub fn new(members: Vec<String>) -> Self {
        Self {
            members: Mutex::new(members),
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
        }
    }

    #[allow(clippy::result_large_err)] // tonic's Status, which the caller returns as is
    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("member address `{address}`: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Asks the members who leads; refreshes the member list on the way.
    async fn discover(&self) -> Option<String> {
        let members = self.members.lock().clone();
        for member in members {
            let Ok(channel) = self.channel(&member) else {
                continue;
            };
            let status = tokio::time::timeout(
                STATUS_TIMEOUT,
                ClusterClient::new(channel).status(pb::StatusRequest {}),
            )
            .await;
            let Ok(Ok(status)) = status else {
                debug!(member, "member did not answer a status request");
                continue;
            };
            let status = status.into_inner();
            let mut known: Vec<String> = status.members.iter().map(|m| m.address.clone()).collect();
            if !known.is_empty() {
                known.sort();
                *self.members.lock() = known;
            }
            let leader = status.groups.first().map_or(0, |g| g.leader);
            if let Some(m) = status.members.iter().find(|m| m.id == leader) {
                *self.leader.lock() = Some(m.address.clone());
                return Some(m.address.clone());
            }
        }
        None
    }

    /// Sends a request to the leader, following leader changes while that is safe.
    pub async fn call<T, F, Fut>(&self, attempt: F) -> Result<Response<T>, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_DEADLINE;
        loop {
            let cached = self.leader.lock().clone();
            let leader = match cached {
                Some(l) => Some(l),
                None => self.discover().await,
            };
            let failure = match leader {
                None => Status::unavailable("no leader is known: the cluster may be electing one"),
                Some(leader) => match attempt(self.channel(&leader)?).await {
                    Ok(response) => return Ok(response),
                    Err(status) => match classify(&status) {
                        Failure::Final => return Err(status),
                        Failure::Redirect(addr) => {
                            *self.leader.lock() = Some(addr);
                            status
                        }
                        Failure::Rediscover => {
                            *self.leader.lock() = None;
                            status
                        }
                    },
                },
            };
            if tokio::time::Instant::now() >= deadline {
                warn!(error = %failure.message(), "giving up on a request");
                return Err(failure);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certainly_unapplied_failures_are_retried() {
        let mut redirect = Status::unavailable("not the leader; the leader is node 2 at 1.2.3.4:5");
        redirect
            .metadata_mut()
            .insert("quiver-leader-address", "127.0.0.1:7002".parse().unwrap());
        assert_eq!(
            classify(&redirect),
            Failure::Redirect("127.0.0.1:7002".into())
        );
        assert_eq!(
            classify(&Status::unavailable("not the leader")),
            Failure::Rediscover
        );
        assert_eq!(
            classify(&Status::unavailable(
                "error trying to connect: connection refused"
            )),
            Failure::Rediscover
        );
        let ambiguous = Status::unavailable("unavailable: the write was not confirmed in time");
        assert_eq!(classify(&ambiguous), Failure::Final);
        assert_eq!(
            classify(&Status::invalid_argument("vector")),
            Failure::Final
        );
    }
}
