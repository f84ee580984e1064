//! Where catalogue and cluster requests go from a front that cannot serve them itself: the meta
//! group's leader, cached, rediscovered from the members when it changes. These requests carry
//! no idempotency key, so one is sent again only when it certainly was not applied
//! ([`quiver_proto::wire::classify`]).

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::wire::{classify, Channels, Failure};
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::{debug, warn};

/// How long one request may spend following leader changes before it fails.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The cluster as the router sees it.
pub struct Upstream {
    members: Mutex<Vec<String>>,
    leader: Mutex<Option<String>>,
    channels: Channels,
}

impl Upstream {
    /// `members`: addresses (`ip:port`) of some cluster members.
    pub fn new(members: Vec<String>, channels: Channels) -> Self {
        Self {
            members: Mutex::new(members),
            leader: Mutex::new(None),
            channels,
        }
    }

    #[allow(clippy::result_large_err)] // tonic's Status, which the caller returns as is
    fn channel(&self, address: &str) -> Result<Channel, Status> {
        self.channels
            .channel(address)
            .map_err(|e| Status::invalid_argument(format!("member address `{address}`: {e}")))
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
                        // Not sent again (it may have been applied), but the next request asks
                        // the members who leads instead of trying a leader that did not answer.
                        Failure::Unknown => {
                            *self.leader.lock() = None;
                            return Err(status);
                        }
                        Failure::Redirect(addr) => {
                            *self.leader.lock() = Some(addr);
                            status
                        }
                        Failure::NotApplied => {
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
