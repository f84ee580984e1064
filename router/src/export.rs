//! Reading a whole collection at one point in time, for a snapshot.
//!
//! Every shard's leader first holds its writes (`Shard.Freeze`, answered once the writes it
//! accepted before are applied); with all of them held, the state of the collection is one
//! point in time across its shards. Each shard is then read page by page from its leader, and
//! the holds are lifted (`Shard.Thaw`) however the reading went. A hold that did not last (it
//! expired, or the leader changed, so writes may have gone in meanwhile) fails the export.

use std::time::Duration;

use futures::future::join_all;
use quiver_core::convert;
use quiver_core::placement::Placement;
use quiver_core::shard::{ReadConsistency, ScrollQuery};
use quiver_proto::v1 as pb;
use tonic::Status;

use crate::coordinator::{Coordinator, Route};

/// How long a hold lasts unless renewed; the holds are renewed every quarter of it while the
/// points are read, so a coordinator that dies stalls a shard's writes this long at most.
const HOLD: Duration = Duration::from_secs(20);
/// Points read per page.
const PAGE: usize = 1_000;

impl Coordinator {
    /// Hands every point of collection `name` to `sink`, shard after shard, as they all were at
    /// one moment. Returns the collection's placement and the number of points.
    pub async fn export<F>(&self, name: &str, mut sink: F) -> Result<(Placement, u64), Status>
    where
        F: FnMut(&pb::Point) -> Result<(), Status>,
    {
        #![allow(clippy::result_large_err)] // tonic's Status, which the caller returns as is
        let placement = self.placement("collection", name).await?;
        let token = uuid::Uuid::new_v4().to_string();
        let shards = 0..placement.shards.len();
        let ttl_ms = HOLD.as_millis() as u64;
        let freeze_all = |renew: bool| {
            let (token, placement) = (&token, &placement);
            join_all(shards.clone().map(move |shard| {
                self.on_shard(placement, shard, Route::Leader, move |group, client| async move {
                    client.freeze(group, token, ttl_ms, renew).await
                })
            }))
        };
        let holds = freeze_all(false).await;
        let read = async {
            for hold in holds {
                hold?;
            }
            let mut points = 0u64;
            for shard in shards.clone() {
                points += self.read_shard(&placement, shard, &mut sink).await?;
            }
            Ok::<u64, Status>(points)
        };
        // (a renewal fails where the hold lapsed or the leader changed: the export then stops)
        let renewals = async {
            loop {
                tokio::time::sleep(HOLD / 4).await;
                for renewed in freeze_all(true).await {
                    if let Err(e) = renewed {
                        return Err::<u64, Status>(e);
                    }
                }
            }
        };
        let read = tokio::select! {
            read = read => read,
            failed = renewals => failed,
        };
        let thaws = join_all(shards.map(|shard| {
            let token = &token;
            self.on_shard(
                &placement,
                shard,
                Route::Leader,
                move |group, client| async move { client.thaw(group, token).await },
            )
        }))
        .await;
        let points = read?;
        if !thaws.into_iter().all(|held| matches!(held, Ok(true))) {
            return Err(Status::aborted(format!(
                "a shard of `{}` changed leader (or its hold on writes expired) while the \
                 snapshot was taken, so it may not be one point in time; nothing was saved; try \
                 again",
                placement.spec.name
            )));
        }
        Ok((placement, points))
    }

    /// Hands shard `shard`'s points to `sink`, a page at a time from its leader.
    async fn read_shard<F>(
        &self,
        placement: &Placement,
        shard: usize,
        sink: &mut F,
    ) -> Result<u64, Status>
    where
        F: FnMut(&pb::Point) -> Result<(), Status>,
    {
        #![allow(clippy::result_large_err)]
        let read = Self::read(placement, shard, ReadConsistency::Leader);
        let mut after = None;
        let mut points = 0;
        loop {
            let query = ScrollQuery {
                after,
                limit: PAGE,
                filter: None,
                with_payload: true,
                with_vector: true,
            };
            let (read, query) = (&read, &query);
            let page = self
                .on_shard(
                    placement,
                    shard,
                    Route::Leader,
                    move |_, client| async move { client.scroll(read, query).await },
                )
                .await?;
            for point in &page.points {
                sink(point)?;
                points += 1;
            }
            if page.next_cursor.is_empty() {
                return Ok(points);
            }
            after = Some(convert::decode_cursor(&page.next_cursor)?);
        }
    }
}
