//! The versioned encoding of everything quiver stores or logs: state-machine rows, Raft log
//! commands, and the domain requests a coordinator sends to a shard.
//!
//! Every encoded value starts with one format byte, then the value as MessagePack with named
//! fields (`rmp-serde`). Named fields are what make the format last: a field added later carries
//! `#[serde(default)]` and rows written before it decode with the default; a field a reader does
//! not know is skipped; enum variants are tagged by name, so adding one never shifts the others.
//! A value in a format this build does not read is refused with both formats named, never
//! misread. Vectors are carried as little-endian bytes ([`f32s`]), four bytes a component.
//!
//! Format 1 was bincode, positional and unversioned for rows: data written in it cannot be read
//! by this build (see [`check_format`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The format this build writes (and the only one it reads).
pub const FORMAT: u8 = 2;

/// `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT];
    rmp_serde::encode::write_named(&mut out, value)
        .map_err(|e| Error::Internal(format!("encode: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`]; `what` names it in errors (`point record`, `command`).
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => {
            rmp_serde::from_slice(body).map_err(|e| Error::Storage(format!("corrupt {what}: {e}")))
        }
        Some((&format, _)) => Err(Error::Storage(format!(
            "{what} is in encoding format {format}; this build reads format {FORMAT}"
        ))),
        None => Err(Error::Storage(format!("empty {what}"))),
    }
}

/// Checks the format a data directory's state was written in (`stored`: the format recorded
/// there, None when it records none). Data from before formats were recorded was written in
/// format 1 and is refused with a message naming both formats.
pub fn check_format(what: &str, stored: Option<&[u8]>) -> Result<()> {
    match stored {
        Some([FORMAT]) => Ok(()),
        Some([format]) => Err(Error::Storage(format!(
            "{what} was written in encoding format {format}; this build reads format {FORMAT}"
        ))),
        Some(_) => Err(Error::Storage(format!("{what}: corrupt format record"))),
        None => Err(Error::Storage(format!(
            "{what} was written by an earlier quiver (encoding format 1, before formats were \
             recorded); this build reads format {FORMAT}: export its points with that version \
             and import them into a new data directory"
        ))),
    }
}

/// A `Vec<f32>` as little-endian bytes: compact, and a single copy to decode.
pub mod f32s {
    use serde::de::{Error as _, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        struct Floats;
        impl<'de> Visitor<'de> for Floats {
            type Value = Vec<f32>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("little-endian f32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<f32>, E> {
                if !bytes.len().is_multiple_of(4) {
                    return Err(E::custom(format!(
                        "{} bytes are not a whole number of f32s",
                        bytes.len()
                    )));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<f32>, E> {
                self.visit_bytes(&bytes)
            }
        }
        d.deserialize_bytes(Floats).map_err(D::Error::custom)
    }
}

/// A `Vec<u8>` as one byte string (serde's default is a list of numbers).
pub mod bytes {
    use serde::de::{Error as _, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        d.deserialize_bytes(Bytes).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct RowV1 {
        name: String,
        #[serde(with = "f32s")]
        vector: Vec<f32>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct RowV2 {
        name: String,
        #[serde(with = "f32s")]
        vector: Vec<f32>,
        #[serde(default)]
        added: Option<u32>,
    }

    #[test]
    fn a_field_added_later_decodes_from_old_rows_and_old_readers_skip_it() {
        let old = RowV1 {
            name: "a".into(),
            vector: vec![1.5, -2.0],
        };
        let bytes = encode(&old).unwrap();
        let read: RowV2 = decode("row", &bytes).unwrap();
        assert_eq!(read.added, None);
        assert_eq!(read.vector, old.vector);
        let new = RowV2 {
            added: Some(7),
            ..read
        };
        let back: RowV1 = decode("row", &encode(&new).unwrap()).unwrap();
        assert_eq!(back, old);
    }

    #[test]
    fn other_formats_and_garbage_are_refused_by_name() {
        let mut bytes = encode(&1u32).unwrap();
        bytes[0] = 1;
        let e = decode::<u32>("command", &bytes).unwrap_err().to_string();
        assert!(e.contains("format 1") && e.contains("format 2"), "{e}");
        assert!(decode::<u32>("command", &[]).is_err());
        assert!(decode::<RowV1>("row", &[FORMAT, 0xc1]).is_err());
        assert!(check_format("meta", Some(&[FORMAT])).is_ok());
        let e = check_format("meta", None).unwrap_err().to_string();
        assert!(e.contains("format 1"), "{e}");
    }
}
