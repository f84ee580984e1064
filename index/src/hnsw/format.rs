//! The on-disk form of a graph: read back as it is, never rebuilt.
//!
//! Little-endian, in this order:
//! - `QVHNSW` and the format version (u16, [`VERSION`]);
//! - the metric (u8: 0 l2, 1 cosine, 2 dot), the top layer (u8), whether there is an entry
//!   (u8), the encoding (u8: 0 f32, 1 f16, 2 int8); `dim`, `m`, `ef_construction`, the node
//!   count `n` and the entry node (u32 each); the int8 `lo` and `step` (f32 each, zero for the
//!   other encodings);
//! - the level of each node (`n` bytes);
//! - the node blocks (`n × (1 + 2m + w)` u32: the layer-0 count, `2m` link slots, the vector's
//!   `w` encoded words), then the upper-layer blocks (`1 + m` u32 per layer per node, in node
//!   order; their count follows from the levels);
//! - a CRC-32 of everything before it.
//!
//! Format 1 (written before encodings existed) is format 2 without `lo` and `step`, always f32;
//! it is still read.
//!
//! Reading checks the checksum, every size and every link, so a damaged or foreign file is an
//! error, never a graph that walks out of bounds.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

use super::search::ScratchPool;
use super::{Distance, HnswGraph, HnswParams, Layers, MAX_EF_CONSTRUCTION, MAX_LEVEL, MAX_M};
use crate::distance::Metric;
use crate::quantize::Encoding;

const MAGIC: &[u8; 6] = b"QVHNSW";
/// The format this build writes (it reads this one and format 1).
pub const VERSION: u16 = 2;
/// The header of format 1; format 2 adds two f32s.
const HEADER_V1_LEN: usize = 6 + 2 + 4 + 5 * 4;
/// The largest dimension a file may declare (quiver's own limit is lower).
const MAX_DIM: usize = 1 << 16;

/// Why bytes are not a graph.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not an HNSW graph file")]
    NotAGraph,
    #[error("HNSW graph format {found}; this build reads formats 1 to {VERSION}")]
    Version { found: u16 },
    #[error("HNSW graph file is damaged: {0}")]
    Damaged(String),
}

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::L2 => 0,
        Metric::Cosine => 1,
        Metric::Dot => 2,
    }
}

/// Feeds what is written to a checksum on the way through.
struct Summing<'a, W: Write> {
    out: &'a mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.out.write(buf)?;
        self.crc.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn write_u32s<'a>(out: &mut impl Write, values: impl Iterator<Item = u32> + 'a) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
        if buf.len() >= 64 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

impl HnswGraph {
    /// Writes the graph in the format above.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let layers = &self.layers;
        let mut out = Summing {
            out,
            crc: crc32fast::Hasher::new(),
        };
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let (encoding, lo, step) = match self.encoding {
            Encoding::F32 => (0, 0.0, 0.0),
            Encoding::F16 => (1, 0.0, 0.0),
            Encoding::Int8 { lo, step } => (2, lo, step),
        };
        out.write_all(&[
            metric_code(self.metric),
            self.top_level,
            self.entry.is_some() as u8,
            encoding,
        ])?;
        for v in [
            layers.dim as u32,
            layers.m as u32,
            self.params.ef_construction as u32,
            layers.len() as u32,
            self.entry.unwrap_or(0),
            f32::to_bits(lo),
            f32::to_bits(step),
        ] {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&layers.levels)?;
        let load = |a: &AtomicU32| a.load(Ordering::Acquire);
        write_u32s(&mut out, layers.nodes.iter().map(load))?;
        write_u32s(&mut out, layers.upper.iter().map(load))?;
        let crc = out.crc.clone().finalize();
        out.out.write_all(&crc.to_le_bytes())
    }

    /// Reads a graph written by [`write_to`](Self::write_to).
    pub fn read_from(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_V1_LEN + 4 || &bytes[..6] != MAGIC {
            return Err(FormatError::NotAGraph);
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        let header_len = match version {
            1 => HEADER_V1_LEN,
            VERSION => HEADER_V1_LEN + 8,
            found => return Err(FormatError::Version { found }),
        };
        if bytes.len() < header_len + 4 {
            return Err(FormatError::NotAGraph);
        }
        let damaged = |what: &str| FormatError::Damaged(what.to_string());
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(damaged("checksum mismatch"));
        }
        let metric = match bytes[8] {
            0 => Metric::L2,
            1 => Metric::Cosine,
            2 => Metric::Dot,
            _ => return Err(damaged("unknown metric")),
        };
        let top_level = bytes[9];
        let has_entry = bytes[10] == 1;
        let word = |i: usize| {
            let at = 12 + 4 * i;
            u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
        };
        let (dim, m, ef_construction, n, entry) = (word(0), word(1), word(2), word(3), word(4));
        let float = |i: usize| f32::from_bits(word(i) as u32);
        let encoding = match (version, bytes[11]) {
            (1, _) | (_, 0) => Encoding::F32,
            (_, 1) => Encoding::F16,
            (_, 2) if float(5).is_finite() && float(6).is_finite() && float(6) > 0.0 => {
                Encoding::Int8 {
                    lo: float(5),
                    step: float(6),
                }
            }
            _ => return Err(damaged("unknown encoding")),
        };
        if !(1..=MAX_DIM).contains(&dim)
            || !(2..=MAX_M).contains(&m)
            || !(1..=MAX_EF_CONSTRUCTION).contains(&ef_construction)
        {
            return Err(damaged("parameters out of range"));
        }
        let mut rest = &body[header_len..];
        let levels = take(&mut rest, n).ok_or_else(|| damaged("truncated levels"))?;
        if levels.iter().any(|&l| l > MAX_LEVEL) {
            return Err(damaged("level out of range"));
        }
        let levels = levels.to_vec();
        let mut upper_start = Vec::with_capacity(n);
        let mut upper_len = 0usize;
        for &level in &levels {
            upper_start.push(u32::try_from(upper_len).map_err(|_| damaged("too many links"))?);
            upper_len += level as usize * (1 + m);
        }
        let words = encoding.words(dim);
        let stride = 1 + 2 * m + words;
        let node_words = n
            .checked_mul(stride)
            .ok_or_else(|| damaged("sizes out of range"))?;
        let nodes = take_u32s(&mut rest, node_words).ok_or_else(|| damaged("truncated nodes"))?;
        let upper = take_u32s(&mut rest, upper_len).ok_or_else(|| damaged("truncated links"))?;
        if !rest.is_empty() {
            return Err(damaged("trailing bytes"));
        }
        let layer0 = nodes.chunks_exact(stride).map(|node| &node[..1 + 2 * m]);
        if !layer0.into_iter().all(|block| block_is_valid(block, n)) {
            return Err(damaged("a link out of range"));
        }
        // an upper block of layer L links only nodes that reach layer L
        let mut blocks = upper.chunks_exact(1 + m);
        for &level in &levels {
            for layer in 1..=level {
                let block = blocks.next().ok_or_else(|| damaged("truncated links"))?;
                if !block_is_valid(block, n)
                    || block[1..=block[0] as usize]
                        .iter()
                        .any(|&id| levels[id as usize] < layer)
                {
                    return Err(damaged("a link out of range"));
                }
            }
        }
        let entry = match (has_entry, n) {
            (false, 0) => None,
            (true, n) if entry < n && levels[entry] == top_level => Some(entry as u32),
            _ => return Err(damaged("entry node")),
        };
        let atomics =
            |v: Vec<u32>| -> Box<[AtomicU32]> { v.into_iter().map(AtomicU32::new).collect() };
        Ok(HnswGraph {
            metric,
            params: HnswParams { m, ef_construction },
            encoding,
            distance: Distance::of(metric, encoding),
            layers: Layers {
                dim,
                words,
                m,
                nodes: atomics(nodes),
                levels,
                upper_start,
                upper: atomics(upper),
            },
            entry,
            top_level,
            scratch: ScratchPool::default(),
        })
    }
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Some(head)
}

fn take_u32s(rest: &mut &[u8], count: usize) -> Option<Vec<u32>> {
    let bytes = take(rest, count.checked_mul(4)?)?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

/// The block's count fits it and every id it holds names a node.
fn block_is_valid(block: &[u32], n: usize) -> bool {
    let count = block[0] as usize;
    count < block.len() && block[1..=count].iter().all(|&id| (id as usize) < n)
}
