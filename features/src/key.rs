//! An entity's key: its join-key values, in the order of the view's entities and their join
//! keys, encoded so equal keys are equal bytes. Rows are stored under it and shards chosen by it.

use serde::{Deserialize, Serialize};

use crate::definition::JoinKey;
use crate::value::{Value, ValueType};

/// The encoded join-key values of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityKey(pub Vec<u8>);

impl EntityKey {
    /// The key of `values`, typed as `keys` say (checked: an error names the join key).
    pub fn new(keys: &[JoinKey], values: &[Value]) -> Result<Self, String> {
        if keys.len() != values.len() {
            return Err(format!(
                "{} join key values for {} join keys",
                values.len(),
                keys.len()
            ));
        }
        let mut out = Vec::with_capacity(16 * keys.len());
        for (key, value) in keys.iter().zip(values) {
            match (key.value_type, value) {
                (ValueType::Int64, Value::Int64(i)) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_be_bytes());
                }
                (ValueType::String, Value::String(s)) => {
                    out.push(2);
                    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                (_, Value::Null) => return Err(format!("join key `{}` is missing", key.name)),
                (t, _) => {
                    return Err(format!(
                        "join key `{}` is {}, not this value",
                        key.name,
                        t.name()
                    ))
                }
            }
        }
        Ok(Self(out))
    }

    /// The join-key values it encodes, as the keys' types read them.
    pub fn values(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut rest = self.0.as_slice();
        while let Some((&tag, tail)) = rest.split_first() {
            match tag {
                1 if tail.len() >= 8 => {
                    let (n, tail) = tail.split_at(8);
                    out.push(Value::Int64(i64::from_be_bytes(
                        n.try_into().unwrap_or([0; 8]),
                    )));
                    rest = tail;
                }
                2 if tail.len() >= 4 => {
                    let (len, tail) = tail.split_at(4);
                    let len = u32::from_be_bytes(len.try_into().unwrap_or([0; 4])) as usize;
                    let (s, tail) = tail.split_at(len.min(tail.len()));
                    out.push(Value::String(String::from_utf8_lossy(s).into_owned()));
                    rest = tail;
                }
                _ => break,
            }
        }
        out
    }

    /// Which of `count` shards holds the key: FNV-1a, as points are placed.
    pub fn shard(&self, count: usize) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in &self.0 {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % count.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<JoinKey> {
        vec![
            JoinKey {
                name: "user_id".into(),
                value_type: ValueType::Int64,
            },
            JoinKey {
                name: "country".into(),
                value_type: ValueType::String,
            },
        ]
    }

    #[test]
    fn keys_round_trip_and_refuse_wrong_types() {
        let values = vec![Value::Int64(-7), Value::String("fr".into())];
        let key = EntityKey::new(&keys(), &values).unwrap();
        assert_eq!(key.values(), values);
        assert!(EntityKey::new(&keys(), &[Value::Int64(1)]).is_err());
        let err = EntityKey::new(&keys(), &[Value::String("1".into()), Value::Null]).unwrap_err();
        assert!(err.contains("user_id"), "{err}");
        let err = EntityKey::new(&keys(), &[Value::Int64(1), Value::Null]).unwrap_err();
        assert!(err.contains("country") && err.contains("missing"), "{err}");
        let spread: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| {
                EntityKey::new(&keys(), &[Value::Int64(i), Value::String("x".into())])
                    .unwrap()
                    .shard(4)
            })
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
