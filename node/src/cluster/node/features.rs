//! Feature definitions, applied on the meta leader: planned against the registry, applied all or
//! none through the meta log, and, the first time a feature view is defined, the feature store's
//! shards placed (one per voter, as a hidden placement its values are sharded over).

use quiver_core::features::FEATURE_STORE;
use quiver_core::point::{CollectionSpec, IndexKind};
use quiver_core::{Error, Result};
use quiver_features::{DefinitionSet, Plan};
use quiver_index::distance::Metric;
use quiver_index::quantize::Quantization;

use super::Node;
use crate::sm::MetaCommand;

impl Node {
    /// Plans `set` against the registry and, unless `dry_run`, applies it, once per
    /// `request_id` when one is given. The plan answered is the one checked before the apply;
    /// the apply checks every version again, so a change that raced it is refused whole.
    pub async fn apply_features(
        &self,
        set: DefinitionSet,
        dry_run: bool,
        request_id: &str,
    ) -> Result<Plan> {
        set.validate()?;
        let plan = self.placements().feature_registry().plan(&set)?;
        if dry_run {
            return Ok(plan);
        }
        self.meta.check_writable()?;
        if !set.feature_views.is_empty() {
            self.place_feature_store().await?;
        }
        self.meta
            .write(request_id, MetaCommand::ApplyFeatures { set })
            .await?;
        Ok(plan)
    }

    /// Places the feature store's shards unless they are placed; returns once each has a
    /// leader.
    async fn place_feature_store(&self) -> Result<()> {
        match self.placements().get(FEATURE_STORE) {
            Ok(placement) if placement.ready => return Ok(()),
            Ok(placement) => return self.finish_create(&placement).await,
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let shards = self.meta.membership().voter_ids().count().max(1) as u32;
        let spec = CollectionSpec {
            name: FEATURE_STORE.to_string(),
            dim: 1,
            metric: Metric::L2,
            index: IndexKind::Flat,
            payload_indexes: Vec::new(),
            default_ef: None,
            quantization: Quantization::None,
            text_fields: Vec::new(),
            embed: None,
        };
        match self.create_collection(spec, shards, None, "").await {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
