//! The wire contract every quiver process follows, in one place: the metadata header names, the
//! rule for which failed calls may be sent again, the shared pool of connections, and payloads
//! (JSON objects) as `google.protobuf.Struct`.
//!
//! What an error *is* lives in `quiver-core` (its error type and the one mapping to a status);
//! this module is what a caller can read off a status without knowing the error type.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost_types::value::Kind;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Metadata header names.
pub mod headers {
    /// On a refusal by a replica that does not lead its group (value `1`), whether or not the
    /// leader is known: the request was not applied there.
    pub const NOT_LEADER: &str = "quiver-not-leader";
    /// With [`NOT_LEADER`]: the leader's node id, when known.
    pub const LEADER_ID: &str = "quiver-leader-id";
    /// With [`NOT_LEADER`]: the leader's address (`ip:port`), when known.
    pub const LEADER_ADDRESS: &str = "quiver-leader-address";
    /// On a refusal for a shard group the node holds no replica of (value: the group): the
    /// sender's shard map is stale.
    pub const STALE_SHARD: &str = "quiver-stale-shard";
    /// On an invalid-argument refusal: the field at fault, as the request spells it
    /// (`points[3].vector`), so a client can point at its own input without parsing the message.
    pub const FIELD: &str = "quiver-field";
    /// Marks a request one front forwarded to another on a client's behalf; it is not forwarded
    /// again (two fronts with stale views could bounce it).
    pub const FORWARDED: &str = "quiver-forwarded";
}

/// What a failed call means for sending it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Refused by a replica that named the leader: certainly not applied; send it there.
    Redirect(String),
    /// Certainly not applied (refused by a replica that is not the leader, sent for a replica
    /// that is not there, or never sent because the connection failed): safe to send anywhere.
    NotApplied,
    /// The outcome is unknown (no quorum in time, no answer, cancelled): sending it again is
    /// safe only for a request carrying an idempotency key.
    Unknown,
    /// The request itself was refused (bad input, not found, ...): sending it again is futile.
    Final,
}

/// The leader address (`ip:port`) a "not the leader" refusal names, if any.
pub fn leader_address(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(headers::LEADER_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Classifies a failed call (see [`Failure`]).
pub fn classify(status: &Status) -> Failure {
    if let Some(address) = leader_address(status) {
        return Failure::Redirect(address);
    }
    let metadata = status.metadata();
    if metadata.contains_key(headers::NOT_LEADER)
        || metadata.contains_key(headers::STALE_SHARD)
        || is_connect_failure(status)
    {
        return Failure::NotApplied;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Unknown
        }
        _ => Failure::Final,
    }
}

/// A call that never reached the peer: the transport could not connect. tonic reports it as
/// UNAVAILABLE with its transport's message, the only mark it carries.
fn is_connect_failure(status: &Status) -> bool {
    let message = status.message();
    status.code() == Code::Unavailable
        && (message.contains("connect error") || message.contains("error trying to connect"))
}

/// Lazily connected channels by address, shared by everything in a process that calls other
/// processes (Raft traffic, shard requests, forwarded requests), so each peer has one HTTP/2
/// connection.
#[derive(Clone, Default)]
pub struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Where to dial instead of an advertised address (`cluster.peer_routes`).
    routes: Arc<BTreeMap<String, String>>,
}

impl Channels {
    /// Channels dialled through `routes` (advertised address to the address to connect to).
    pub fn with_routes(routes: BTreeMap<String, String>) -> Self {
        Self {
            channels: Arc::default(),
            routes: Arc::new(routes),
        }
    }

    /// A lazily connected channel to `address` (`ip:port`), reused across calls.
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let dial = self.routes.get(address).map_or(address, String::as_str);
        // HTTP/2 pings find a peer that stopped answering (paused, cut off) within about two
        // seconds, failing its calls in flight instead of leaving them to hang.
        let channel = Endpoint::from_shared(format!("http://{dial}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(500))
            .keep_alive_timeout(Duration::from_millis(1500))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// A JSON object.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Why a `Struct` is not a payload: `field` names the place (`points[3].payload.price`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

/// How deep a payload may nest.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// A protobuf `Struct` as a JSON object; `field` names it in errors. Integral numbers within
/// ±2^53 become JSON integers so integer payload indexes see them; non-finite numbers are
/// rejected.
pub fn struct_to_json(field: &str, s: &prost_types::Struct) -> Result<JsonMap, PayloadError> {
    let mut out = JsonMap::new();
    // `fields` is a BTreeMap, so the first bad field reported is always the same one.
    for (k, v) in &s.fields {
        out.insert(k.clone(), value_to_json(&format!("{field}.{k}"), v, 0)?);
    }
    Ok(out)
}

fn value_to_json(
    field: &str,
    v: &prost_types::Value,
    depth: usize,
) -> Result<serde_json::Value, PayloadError> {
    use serde_json::Value as J;
    let invalid = |message: String| PayloadError {
        field: field.to_string(),
        message,
    };
    if depth > MAX_PAYLOAD_DEPTH {
        return Err(invalid(format!(
            "nests deeper than {MAX_PAYLOAD_DEPTH} levels"
        )));
    }
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                return Err(invalid(format!("{n} is not a finite number")));
            }
            if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        Some(Kind::ListValue(l)) => J::Array(
            l.values
                .iter()
                .enumerate()
                .map(|(i, x)| value_to_json(&format!("{field}[{i}]"), x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => {
            let mut m = JsonMap::new();
            for (k, x) in &s.fields {
                m.insert(
                    k.clone(),
                    value_to_json(&format!("{field}.{k}"), x, depth + 1)?,
                );
            }
            J::Object(m)
        }
    })
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(map: &JsonMap) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn refusals_by_followers_and_connect_failures_are_certainly_not_applied() {
        let mut redirect = Status::unavailable("not the leader; the leader is node 2");
        redirect
            .metadata_mut()
            .insert(headers::LEADER_ADDRESS, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(
            classify(&redirect),
            Failure::Redirect("127.0.0.1:7002".into())
        );
        let mut refused = Status::unavailable("whatever the message says");
        refused
            .metadata_mut()
            .insert(headers::NOT_LEADER, MetadataValue::from(1u64));
        assert_eq!(classify(&refused), Failure::NotApplied);
        let mut stale = Status::unavailable("stale");
        stale
            .metadata_mut()
            .insert(headers::STALE_SHARD, MetadataValue::from(9u64));
        assert_eq!(classify(&stale), Failure::NotApplied);
        assert_eq!(
            classify(&Status::unavailable(
                "error trying to connect: connection refused"
            )),
            Failure::NotApplied
        );
        // A message alone does not make a refusal.
        assert_eq!(
            classify(&Status::unavailable("not the leader")),
            Failure::Unknown
        );
        assert_eq!(
            classify(&Status::unavailable("the write was not confirmed in time")),
            Failure::Unknown
        );
        assert_eq!(
            classify(&Status::invalid_argument("vector")),
            Failure::Final
        );
        assert_eq!(classify(&Status::not_found("collection")), Failure::Final);
    }

    #[test]
    fn payload_numbers_keep_integers() {
        let s = prost_types::Struct {
            fields: [
                ("n".to_string(), json_to_value(&serde_json::json!(3))),
                ("f".to_string(), json_to_value(&serde_json::json!(2.5))),
            ]
            .into_iter()
            .collect(),
        };
        let j = struct_to_json("payload", &s).unwrap();
        assert_eq!(
            serde_json::Value::Object(j),
            serde_json::json!({"n": 3, "f": 2.5})
        );
    }
}
