//! Search results enriched with features in the same call: each result's entity key is read
//! from a payload field, and the views' online values for those entities are joined on (one
//! online read, one call per feature store shard).

use std::collections::HashMap;
use std::sync::Arc;

use quiver_core::Error;
use quiver_features::definition::ViewSelection;
use quiver_features::Registry;
use quiver_proto::v1 as pb;
use quiver_proto::wire::struct_to_json;
use serde_json::Value as Json;
use tonic::Status;

use super::online;
use super::selections;
use crate::coordinator::Coordinator;

/// A search's `with_features`, checked before the search runs.
pub struct Enrichment {
    with: pb::WithFeatures,
    /// What `with` names, as resolved when it was checked.
    registry: Arc<Registry>,
    selections: Vec<ViewSelection>,
    /// The join key every view read is keyed by.
    join_key: String,
    /// Whether the client asked for payloads (they are read for the key either way).
    keep_payload: bool,
}

impl Enrichment {
    /// Checks `with` (None: no enrichment); the search must then read payloads, so
    /// `with_payload` is set (and the payloads dropped again unless the client asked).
    pub async fn prepare(
        coordinator: &Coordinator,
        with: Option<pb::WithFeatures>,
        with_payload: &mut bool,
    ) -> Result<Option<Self>, Status> {
        let Some(with) = with else {
            return Ok(None);
        };
        if with.key_field.is_empty() {
            return Err(Error::invalid(
                "with_features.key_field",
                "required: the payload field that holds each point's entity key",
            )
            .into());
        }
        let service = (!with.feature_service.is_empty()).then_some(with.feature_service.as_str());
        let (registry, selections) = selections(
            coordinator,
            "with_features.features",
            &with.features,
            service,
        )
        .await?;
        let mut join_key: Option<String> = None;
        for s in &selections {
            let [key] = s.keys.as_slice() else {
                return Err(Error::invalid(
                    "with_features.features",
                    format!(
                        "view `{}` is keyed by {} join keys; key_field can give one",
                        s.view,
                        s.keys.len()
                    ),
                )
                .into());
            };
            match &join_key {
                Some(k) if *k != key.name => {
                    return Err(Error::invalid(
                        "with_features.features",
                        format!(
                            "the views are keyed by different join keys (`{k}`, `{}`)",
                            key.name
                        ),
                    )
                    .into())
                }
                _ => join_key = Some(key.name.clone()),
            }
        }
        let keep_payload = *with_payload;
        *with_payload = true;
        Ok(Some(Self {
            with,
            registry,
            selections,
            join_key: join_key.unwrap_or_default(),
            keep_payload,
        }))
    }

    /// Joins the features onto `results`.
    pub async fn apply(
        self,
        coordinator: &Coordinator,
        results: &mut [pb::ScoredPoint],
    ) -> Result<(), Status> {
        // The key of each result that has one.
        let mut keyed: Vec<(usize, pb::FeatureValue)> = Vec::new();
        for (i, point) in results.iter().enumerate() {
            let Some(payload) = &point.payload else {
                continue;
            };
            let payload = struct_to_json("payload", payload).unwrap_or_default();
            let kind = match payload.get(&self.with.key_field) {
                Some(Json::String(s)) => pb::feature_value::Kind::StringValue(s.clone()),
                Some(Json::Number(n)) => match n.as_i64() {
                    Some(i) => pb::feature_value::Kind::Int64Value(i),
                    None => continue,
                },
                _ => continue,
            };
            keyed.push((i, pb::FeatureValue { kind: Some(kind) }));
        }
        if !self.keep_payload {
            for point in results.iter_mut() {
                point.payload = None;
            }
        }
        if keyed.is_empty() {
            return Ok(());
        }
        let entities = HashMap::from([(
            self.join_key.clone(),
            pb::FeatureValues {
                values: keyed.iter().map(|(_, v)| v.clone()).collect(),
            },
        )]);
        let req = pb::GetOnlineFeaturesRequest {
            features: self.with.features,
            feature_service: self.with.feature_service,
            entities,
            full_feature_names: false,
            consistency: 0,
        };
        let answer = online::serve(coordinator, &self.registry, &self.selections, &req)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => {
                    Status::invalid_argument(format!("with_features: {}", status.message()))
                }
                _ => status,
            })?;
        for (column, reference) in answer.results.iter().zip(&answer.references).skip(1) {
            for (e, (i, _)) in keyed.iter().enumerate() {
                let present = column.statuses.get(e) == Some(&(pb::FeatureStatus::Present as i32));
                if present {
                    results[*i]
                        .features
                        .insert(reference.clone(), column.values[e].clone());
                }
            }
        }
        Ok(())
    }
}
