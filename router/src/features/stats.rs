//! Feature statistics and drift: each shard's daily summaries of a window, merged (they are
//! mergeable, so no row is read), and the drift of each feature from a reference window.

use std::collections::BTreeMap;

use quiver_core::features::{day_of, FeaturesAnswer, FeaturesRead};
use quiver_core::Error;
use quiver_features::stats::{drift, Summary};
use quiver_features::value::Micros;
use quiver_proto::v1 as pb;
use tonic::Status;

use super::{feature_store, now_micros, read_every_shard, registry_having, status};
use crate::coordinator::Coordinator;

/// The z-score above which a mean or std has drifted, unless the request says.
pub const DEFAULT_Z_THRESHOLD: f64 = 2.0;

/// Every shard's summaries of days `from..=to` of view `view_id`, merged.
async fn window(
    coordinator: &Coordinator,
    view_id: u64,
    from: Micros,
    to: Micros,
) -> Result<BTreeMap<String, Summary>, Status> {
    let placement = feature_store(coordinator).await?;
    let request = FeaturesRead::Stats {
        view_id,
        from_day: day_of(from),
        to_day: day_of(to),
    };
    let mut merged: BTreeMap<String, Summary> = BTreeMap::new();
    for answer in read_every_shard(coordinator, &placement, &request).await? {
        let FeaturesAnswer::Stats(summaries) = answer else {
            return Err(Status::internal(
                "a shard answered a stats read with another kind",
            ));
        };
        for (field, summary) in summaries {
            merged.entry(field).or_default().merge(&summary);
        }
    }
    Ok(merged)
}

fn stats_to_proto(feature: &str, s: &Summary) -> pb::FeatureStats {
    let q = |q: f64| s.sketch.quantile(q).unwrap_or(0.0);
    pb::FeatureStats {
        feature: feature.to_string(),
        count: s.count,
        nulls: s.nulls,
        numeric: s.numeric,
        mean: s.mean,
        std: s.std(),
        min: s.min,
        max: s.max,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
    }
}

#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn bounds(field: &str, start: Micros, end: Option<Micros>) -> Result<(Micros, Micros), Status> {
    let end = end.unwrap_or_else(now_micros);
    if end < start {
        return Err(
            Error::invalid(field, format!("ends ({end}) before it starts ({start})")).into(),
        );
    }
    Ok((start, end))
}

pub(super) async fn get(
    coordinator: &Coordinator,
    req: pb::FeatureStatsRequest,
) -> Result<pb::FeatureStatsResponse, Status> {
    let registry = registry_having(coordinator, |r| {
        r.feature_views.contains_key(&req.feature_view)
    })
    .await;
    let view = registry.view(&req.feature_view).map_err(status)?;
    for (i, f) in req.features.iter().enumerate() {
        if !view.fields.iter().any(|field| &field.name == f) {
            return Err(Error::invalid(
                format!("features[{i}]"),
                format!("feature view `{}` has no feature `{f}`", view.name),
            )
            .into());
        }
    }
    let threshold = req.z_threshold.unwrap_or(DEFAULT_Z_THRESHOLD);
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(Error::invalid("z_threshold", "must be above 0").into());
    }
    let wanted = |name: &String| req.features.is_empty() || req.features.contains(name);
    let (from, to) = bounds("end_micros", req.start_micros, req.end_micros)?;
    let current = window(coordinator, view.id, from, to).await?;
    let mut response = pb::FeatureStatsResponse {
        window: current
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, s)| stats_to_proto(name, s))
            .collect(),
        ..Default::default()
    };
    if let Some(start) = req.reference_start_micros {
        let (from, to) = bounds("reference_end_micros", start, req.reference_end_micros)?;
        let reference = window(coordinator, view.id, from, to).await?;
        for (name, r) in reference.iter().filter(|(name, _)| wanted(name)) {
            response.reference.push(stats_to_proto(name, r));
            let Some(c) = current.get(name) else {
                continue;
            };
            if let Some(d) = drift(c, r, threshold) {
                response.drift.push(pb::FeatureDrift {
                    feature: name.clone(),
                    z_mean: d.z_mean,
                    z_std: d.z_std,
                    psi: d.psi,
                    ks: d.ks,
                    ks_critical: d.ks_critical,
                    drifted: d.drifted,
                });
            }
        }
    }
    Ok(response)
}
