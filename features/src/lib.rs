//! The feature store's logic, without I/O. The node stores and replicates what this crate
//! decides; the router validates requests with it.
//!
//! - [`value`]: the types a feature may have, typed values, timestamps and durations as
//!   users write them;
//! - [`definition`]: entities, feature views and feature services, each with a version, and the
//!   [`Registry`] that holds them: a set of definitions is planned against it (created, changed,
//!   unchanged) and applied all or none, refused if an object changed since the version it names;
//! - [`key`]: an entity's key, from its join-key values, as stored and sharded;
//! - [`layout`]: what the columns of pushed rows and entity rows mean;
//! - [`row`]: feature rows as pushed and as stored;
//! - [`pit`]: point-in-time selection of offline rows (the training-set join);
//! - [`online`]: which value online serving holds, and the status it reads with;
//! - [`stats`]: mergeable feature statistics and drift between windows.

pub mod definition;
pub mod key;
pub mod layout;
pub mod online;
pub mod pit;
pub mod row;
pub mod stats;
pub mod value;

pub use definition::{
    DefinitionSet, Entity, FeatureRef, FeatureService, FeatureView, Field, JoinKey, Plan,
    PlanAction, PlanItem, Registry, ViewVersion,
};
pub use key::EntityKey;
pub use value::{Value, ValueType};

/// What can go wrong with feature definitions and values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// The input is malformed; `field` names where (`feature_views[0].fields[1].type`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A named object does not exist (`feature view \`user_stats\``).
    #[error("{0} not found")]
    NotFound(String),
    /// An object changed since the version the change names.
    #[error("{0}")]
    Conflict(String),
}

impl FeatureError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FeatureError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Result with [`FeatureError`].
pub type Result<T, E = FeatureError> = std::result::Result<T, E>;
