//! What a coordinator asks of a feature-store shard: pushes of feature rows through the
//! group's log, and online and point-in-time reads of its replica. Feature values live in the
//! shard groups of the feature store's placement ([`FEATURE_STORE`]), sharded by entity key.

use std::collections::BTreeMap;

use quiver_features::online::OnlineValue;
use quiver_features::row::FeatureRow;
use quiver_features::stats::Summary;
use quiver_features::value::Micros;
use quiver_features::{EntityKey, FeatureError};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The name of the feature store's placement in the shard map: a name no collection can take
/// (collection names never start with `.`).
pub const FEATURE_STORE: &str = ".features";

/// A change of a feature-store shard, as its log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeaturesCommand {
    /// Rows of view `view_id`, checked against its version `version`: appended to the offline
    /// store and/or held online (where each replaces the held value only if its event is newer).
    Push {
        view_id: u64,
        version: u64,
        rows: Vec<FeatureRow>,
        offline: bool,
        online: bool,
        /// The names of the version's fields, in order: offline rows are summarised by them
        /// ([`quiver_features::stats`]).
        #[serde(default)]
        fields: Vec<String>,
    },
    /// Offline rows of view `view_id` made online, inside each replica: each entity's newest
    /// row with an event in `start..=end`, held only if newer than the value held. Without
    /// `start` (incremental), the entities pushed offline-only since the last incremental run.
    Materialize {
        view_id: u64,
        start: Option<Micros>,
        end: Micros,
    },
}

/// The online values of some entities of one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineLookup {
    pub view_id: u64,
    pub keys: Vec<EntityKey>,
}

/// Point-in-time lookups of some entity rows in one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoricalLookup {
    pub view_id: u64,
    pub ttl_seconds: u64,
    /// Only rows created by the entity row's time.
    pub known_at: bool,
    /// Entity keys and their `event_timestamp`s.
    pub rows: Vec<(EntityKey, Micros)>,
}

/// A read of a feature-store shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeaturesRead {
    /// The statistics of view `view_id`'s offline rows with events in days `from_day..=to_day`
    /// (days since the epoch, UTC), merged, by feature.
    Stats {
        view_id: u64,
        from_day: i64,
        to_day: i64,
    },
    Online(Vec<OnlineLookup>),
    /// Read as of log position `at_index` (None: the replica's applied position now).
    Historical {
        lookups: Vec<HistoricalLookup>,
        at_index: Option<u64>,
    },
}

/// A shard's answer, lookup by lookup, key by key (None: nothing found).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeaturesAnswer {
    Stats(BTreeMap<String, Summary>),
    Online(Vec<Vec<Option<OnlineValue>>>),
    /// The rows selected, and the log position they were read at.
    Historical {
        index: u64,
        found: Vec<Vec<Option<OnlineValue>>>,
    },
}

impl From<FeatureError> for Error {
    fn from(e: FeatureError) -> Self {
        match e {
            FeatureError::Invalid { field, message } => Error::InvalidArgument { field, message },
            FeatureError::NotFound(what) => Error::NotFound(what),
            FeatureError::Conflict(message) => Error::Conflict(message),
        }
    }
}

/// The day (since the epoch, UTC) of a time: the window statistics are kept by.
pub fn day_of(micros: quiver_features::value::Micros) -> i64 {
    micros.div_euclid(86_400 * 1_000_000)
}
