//! Materialisation: one command per shard of each view, through the shard's log, so every
//! replica makes its own offline rows online (no values cross the network) and a leader change
//! or a crash part way loses nothing: an applied part is applied on every replica, a part not
//! yet applied is sent again under the same idempotency key (`<request_id>/<view>/<shard>`), and
//! running the whole again changes nothing more.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use quiver_core::features::FeaturesCommand;
use quiver_core::Error;
use quiver_features::value::Micros;
use quiver_proto::v1 as pb;
use tonic::Status;

use super::{feature_store, now_micros, registry_having, status};
use crate::coordinator::{request_id_or_new, Coordinator, Route};

/// The command each shard of a view is sent.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn range(req: &pb::MaterializeRequest) -> Result<(Option<Micros>, Micros), Status> {
    let end = req.end_micros.unwrap_or_else(now_micros);
    match (req.incremental, req.start_micros) {
        (true, Some(_)) => Err(Error::invalid(
            "start_micros",
            "an incremental run starts where the last one ended; give no start",
        )
        .into()),
        (false, None) => {
            Err(Error::invalid("start_micros", "required, unless the run is incremental").into())
        }
        (false, Some(start)) if start > end => {
            Err(Error::invalid("end_micros", format!("{end} is before the start, {start}")).into())
        }
        (_, start) => Ok((start, end)),
    }
}

pub(super) async fn run(
    coordinator: Arc<Coordinator>,
    req: pb::MaterializeRequest,
) -> Result<impl Stream<Item = Result<pb::MaterializeProgress, Status>> + Send, Status> {
    let (start, end) = range(&req)?;
    let registry = registry_having(&coordinator, |r| {
        req.feature_views
            .iter()
            .all(|v| r.feature_views.contains_key(v))
            && !r.feature_views.is_empty()
    })
    .await;
    let views: Vec<(String, u64)> = match req.feature_views.is_empty() {
        true => registry
            .feature_views
            .values()
            .map(|v| (v.name.clone(), v.id))
            .collect(),
        false => req
            .feature_views
            .iter()
            .map(|name| registry.view(name).map(|v| (v.name.clone(), v.id)))
            .collect::<Result<_, _>>()
            .map_err(status)?,
    };
    if views.is_empty() {
        return Err(Status::failed_precondition(
            "no feature view is defined: apply one first",
        ));
    }
    let placement = Arc::new(feature_store(&coordinator).await?);
    let request_id = Arc::new(request_id_or_new(&req.request_id));
    let shards = placement.shards.len();
    let total = (views.len() * shards) as u32;
    let parts: Vec<(String, u64, usize)> = views
        .into_iter()
        .flat_map(|(name, id)| (0..shards).map(move |shard| (name.clone(), id, shard)))
        .collect();
    let sends = parts.into_iter().map(move |(view, view_id, shard)| {
        let (coordinator, placement, request_id) =
            (coordinator.clone(), placement.clone(), request_id.clone());
        async move {
            let command = FeaturesCommand::Materialize {
                view_id,
                start,
                end,
            };
            let key = format!("{request_id}/{view}/{shard}");
            let (key, command) = (&key, &command);
            let answer = coordinator
                .on_shard(
                    &placement,
                    shard,
                    Route::Leader,
                    |group, client| async move { client.features_write(group, key, command).await },
                )
                .await?;
            Ok::<_, Status>(pb::MaterializeProgress {
                feature_view: view,
                shard: shard as u32,
                values: answer.affected,
                done: 0,
                total,
            })
        }
    });
    let mut done = 0;
    let progress = futures::stream::iter(sends)
        .buffer_unordered(shards.max(1))
        .map(move |part| {
            part.map(|mut p| {
                done += 1;
                p.done = done;
                p
            })
        });
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_a_range_or_incremental() {
        let req = |incremental, start, end| pb::MaterializeRequest {
            incremental,
            start_micros: start,
            end_micros: end,
            ..Default::default()
        };
        assert_eq!(range(&req(false, Some(1), Some(5))).unwrap(), (Some(1), 5));
        assert_eq!(range(&req(true, None, Some(5))).unwrap(), (None, 5));
        assert!(range(&req(true, Some(1), None)).is_err());
        assert!(range(&req(false, None, None)).is_err());
        assert!(range(&req(false, Some(9), Some(5))).is_err());
    }
}
