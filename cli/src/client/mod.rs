//! Client and operator commands: they talk gRPC to a running quiver (`--endpoint`).

mod cluster;
mod collection;
pub(crate) mod features;
mod import;
mod points;
mod search;
mod snapshot;

pub use cluster::{cluster, shard, ClusterCommand, ShardCommand};
pub use collection::{collection, CollectionCommand};
pub use features::{features, FeaturesCommand};
pub use points::{points, PointsCommand};
pub use search::{search, SearchArgs};

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use quiver_proto::v1 as pb;
use quiver_proto::wire::struct_to_json;
use serde_json::{json, Value};
use tonic::transport::Channel;

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:6334";

#[derive(Args, Clone)]
pub struct Endpoint {
    /// Address of a quiver node.
    #[arg(long, env = "QUIVER_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
}

impl Endpoint {
    /// The endpoint as a URL: `ip:port` or `host:port` without a scheme means `http://`.
    fn url(&self) -> String {
        if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        }
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let url = self.url();
        Channel::from_shared(url.clone())
            .map_err(|_| {
                anyhow!(
                    "`{}` is not an endpoint (expected http://HOST:PORT)",
                    self.endpoint
                )
            })?
            .connect()
            .await
            .with_context(|| format!("cannot connect to quiver at {url}"))
    }
}

/// Turns a gRPC status into a one-line error. A call cut off by a lost connection (the server
/// stopped or was killed) says so, instead of tonic's "transport error".
fn status(e: tonic::Status) -> anyhow::Error {
    let lost = matches!(e.code(), tonic::Code::Unknown | tonic::Code::Unavailable)
        && e.message().contains("transport error");
    if lost {
        return anyhow!(
            "Unavailable: the connection to quiver was lost (the server stopped or is unreachable)"
        );
    }
    anyhow!("{:?}: {}", e.code(), e.message())
}

/// Writes one line to stdout. A closed stdout (`quiver ... | head`) is an error the binary
/// ends on quietly (see `main`).
fn print_line(line: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")
}

fn id_arg(s: &str) -> pb::PointId {
    pb::PointId {
        kind: Some(match s.parse::<u64>() {
            Ok(n) => pb::point_id::Kind::Num(n),
            Err(_) => pb::point_id::Kind::Uuid(s.to_string()),
        }),
    }
}

fn id_json(id: Option<&pb::PointId>) -> Value {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => json!(n),
        Some(pb::point_id::Kind::Uuid(u)) => json!(u),
        None => Value::Null,
    }
}

fn point_json(p: &pb::Point) -> anyhow::Result<Value> {
    let mut out = json!({"id": id_json(p.id.as_ref())});
    if let Some(payload) = &p.payload {
        out["payload"] = Value::Object(struct_to_json("payload", payload)?);
    }
    if !p.vector.is_empty() {
        out["vector"] = json!(p.vector);
    }
    Ok(out)
}

/// A vector from JSON numbers, each within the range of a 32-bit float (`1e39` is refused, not
/// read as infinity).
fn vector_from_json(field: &str, values: &[Value]) -> anyhow::Result<Vec<f32>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = v
                .as_f64()
                .ok_or_else(|| anyhow!("{field}[{i}]: `{v}` is not a number"))?;
            let f = x as f32;
            if !f.is_finite() {
                bail!("{field}[{i}]: {v} is outside the range of a 32-bit float (about ±3.4e38)");
            }
            Ok(f)
        })
        .collect()
}

fn read_fvecs(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    quiver_index::vecs::parse_fvecs(&bytes).with_context(|| format!("{}", path.display()))
}

fn parse_filter(filter: Option<String>) -> anyhow::Result<String> {
    let text = filter.unwrap_or_default();
    if !text.is_empty() {
        serde_json::from_str::<Value>(&text).context("--filter is not valid JSON")?;
    }
    Ok(text)
}

/// How results are printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// Read consistency on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Leader,
    Any,
}

impl ConsistencyArg {
    fn proto(self) -> i32 {
        (match self {
            ConsistencyArg::Linearizable => pb::ReadConsistency::Linearizable,
            ConsistencyArg::Leader => pb::ReadConsistency::Leader,
            ConsistencyArg::Any => pb::ReadConsistency::Any,
        }) as i32
    }
}
