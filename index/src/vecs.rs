//! The texmex vector file formats, parsed from bytes: `.fvecs` (per row: an i32 dimension, then
//! that many f32) and `.ivecs` (the same with i32 values, used for ground-truth neighbour ids).
//! All values are little-endian.

use thiserror::Error;

/// A malformed vector file.
#[derive(Debug, Error, PartialEq)]
pub enum VecsError {
    #[error("row {row}: truncated (needs {needed} more bytes)")]
    Truncated { row: usize, needed: usize },
    #[error("row {row}: dimension {dim} is not positive")]
    BadDimension { row: usize, dim: i32 },
    #[error("row {row}: dimension {dim} differs from the first row's {first}")]
    MixedDimensions {
        row: usize,
        dim: usize,
        first: usize,
    },
}

fn parse_rows<T>(bytes: &[u8], decode: fn([u8; 4]) -> T) -> Result<Vec<Vec<T>>, VecsError> {
    let mut rows = Vec::new();
    let mut at = 0;
    let mut first = None;
    while at < bytes.len() {
        let row = rows.len();
        let head: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| VecsError::Truncated {
                row,
                needed: at + 4 - bytes.len(),
            })?;
        let dim = i32::from_le_bytes(head);
        if dim <= 0 {
            return Err(VecsError::BadDimension { row, dim });
        }
        let dim = dim as usize;
        if let Some(first) = first.filter(|f| *f != dim) {
            return Err(VecsError::MixedDimensions { row, dim, first });
        }
        first = Some(dim);
        let body = bytes
            .get(at + 4..at + 4 + dim * 4)
            .ok_or_else(|| VecsError::Truncated {
                row,
                needed: (at + 4 + dim * 4).saturating_sub(bytes.len()),
            })?;
        rows.push(
            body.chunks_exact(4)
                .map(|c| decode([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        at += 4 + dim * 4;
    }
    Ok(rows)
}

/// Parses `.fvecs` bytes into rows.
pub fn parse_fvecs(bytes: &[u8]) -> Result<Vec<Vec<f32>>, VecsError> {
    parse_rows(bytes, f32::from_le_bytes)
}

/// Parses `.ivecs` bytes into rows.
pub fn parse_ivecs(bytes: &[u8]) -> Result<Vec<Vec<i32>>, VecsError> {
    parse_rows(bytes, i32::from_le_bytes)
}

/// Encodes rows as `.fvecs` bytes.
pub fn encode_fvecs(rows: &[Vec<f32>]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(&(row.len() as i32).to_le_bytes());
        for x in row {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let rows = vec![vec![1.0, 2.0], vec![3.5, -1.0]];
        let bytes = encode_fvecs(&rows);
        assert_eq!(parse_fvecs(&bytes).unwrap(), rows);
        assert!(matches!(
            parse_fvecs(&bytes[..bytes.len() - 1]),
            Err(VecsError::Truncated { row: 1, .. })
        ));
        let mut mixed = bytes.clone();
        mixed.extend_from_slice(&encode_fvecs(&[vec![1.0]]));
        assert!(matches!(
            parse_fvecs(&mixed),
            Err(VecsError::MixedDimensions { row: 2, .. })
        ));
        assert!(matches!(
            parse_fvecs(&0i32.to_le_bytes()),
            Err(VecsError::BadDimension { .. })
        ));
        assert_eq!(parse_ivecs(&[]).unwrap(), Vec::<Vec<i32>>::new());
    }
}
