//! A sealed segment: an immutable set of vector versions (slots) with the HNSW graph built over
//! them, and its file.
//!
//! The graph's node ids are local (`0..len`); `slots[local]` is the slot a node holds, and
//! `by_slot` finds a slot's node. A segment never changes once built: points it holds that are
//! replaced or deleted are marked retired beside it (in [`super::Points`]), and the optimizer
//! replaces the segment by a new one to drop them.
//!
//! File (`segment-N.qvseg`), little-endian: `QVSEG`, the format version (u16), the node count
//! `n` (u32), the `n` slots (u32 each), a CRC-32 of all that, then the graph in its own format
//! ([`quiver_index::hnsw::format`], checksummed too). It is written to a temporary name, synced
//! and renamed, so a file under its final name is whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use quiver_index::hnsw::HnswGraph;
use quiver_index::Slot;
use roaring::RoaringBitmap;

use quiver_core::{Error, Result};

const MAGIC: &[u8; 5] = b"QVSEG";
const VERSION: u16 = 1;

/// An immutable, indexed segment.
pub struct Sealed {
    /// Its number, unique within the collection (and its file's name).
    pub number: u64,
    /// The slot of each node.
    pub slots: Vec<Slot>,
    /// `(slot, node)` sorted by slot.
    by_slot: Vec<(Slot, u32)>,
    pub graph: HnswGraph,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("number", &self.number)
            .field("len", &self.slots.len())
            .finish()
    }
}

impl Sealed {
    pub fn new(number: u64, slots: Vec<Slot>, graph: HnswGraph) -> Self {
        debug_assert_eq!(slots.len(), graph.len());
        let mut by_slot: Vec<(Slot, u32)> = slots
            .iter()
            .enumerate()
            .map(|(node, slot)| (*slot, node as u32))
            .collect();
        by_slot.sort_unstable();
        Self {
            number,
            slots,
            by_slot,
            graph,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The node holding `slot`, if this segment holds it.
    pub fn node_of(&self, slot: Slot) -> Option<u32> {
        self.by_slot
            .binary_search_by_key(&slot, |(s, _)| *s)
            .ok()
            .map(|i| self.by_slot[i].1)
    }

    /// Calls `f(node, slot)` for each slot of `slots` this segment holds, in slot order: one
    /// forward pass over the slot map, galloping from each slot to the next, for the slots of
    /// `slots` within this segment's range.
    pub fn for_each_node_of(&self, slots: &RoaringBitmap, mut f: impl FnMut(u32, Slot)) {
        let by_slot = &self.by_slot;
        let (Some(&(first, _)), Some(&(last, _))) = (by_slot.first(), by_slot.last()) else {
            return;
        };
        let mut at = 0;
        let mut within = slots.iter();
        within.advance_to(first);
        for slot in within.take_while(|slot| *slot <= last) {
            let rest = &by_slot[at..];
            // the first entry at or after `slot` lies in (bound / 2, bound]
            let mut bound = 1;
            while bound < rest.len() && rest[bound].0 < slot {
                bound *= 2;
            }
            let lo = bound / 2;
            let hi = (bound + 1).min(rest.len());
            at += lo + rest[lo..hi].partition_point(|(s, _)| *s < slot);
            match by_slot.get(at) {
                Some(&(s, node)) if s == slot => {
                    f(node, slot);
                    at += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
    }

    /// Bytes held in memory: the graph (vectors and links) and the slot maps.
    pub fn memory_bytes(&self) -> usize {
        self.graph.memory_bytes() + self.slots.len() * 4 + self.by_slot.len() * 8
    }

    /// The file of segment `number` under `dir`.
    pub fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(format!("segment-{number}.qvseg"))
    }

    /// Writes the segment's file under `dir` (created if missing), whole or not at all.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = Self::path(dir, self.number);
        let tmp = path.with_extension("tmp");
        let mut header = Vec::with_capacity(11 + self.slots.len() * 4 + 4);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(self.slots.len() as u32).to_le_bytes());
        for slot in &self.slots {
            header.extend_from_slice(&slot.to_le_bytes());
        }
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io)?;
        self.graph.write_to(&mut out).map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads segment `number` from `dir`. A missing, damaged or foreign file is an error.
    pub fn read(dir: &Path, number: u64) -> Result<Self> {
        let path = Self::path(dir, number);
        let damaged = |what: &str| Error::Storage(format!("{}: {what}", path.display()));
        let bytes = std::fs::read(&path).map_err(|e| damaged(&e.to_string()))?;
        if bytes.len() < 15 || &bytes[..5] != MAGIC {
            return Err(damaged("not a segment file"));
        }
        let version = u16::from_le_bytes([bytes[5], bytes[6]]);
        if version != VERSION {
            return Err(damaged(&format!(
                "segment format {version}; this build reads format {VERSION}"
            )));
        }
        let n = u32::from_le_bytes(bytes[7..11].try_into().expect("4 bytes")) as usize;
        let end = 11 + n * 4;
        if bytes.len() < end + 4 {
            return Err(damaged("truncated"));
        }
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..end]) != crc {
            return Err(damaged("checksum mismatch"));
        }
        let slots: Vec<Slot> = bytes[11..end]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let graph = HnswGraph::read_from(&bytes[end + 4..]).map_err(|e| damaged(&e.to_string()))?;
        if graph.len() != n {
            return Err(damaged("slot count differs from the graph's"));
        }
        Ok(Self::new(number, slots, graph))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_index::distance::Metric;
    use quiver_index::hnsw::HnswParams;

    #[test]
    fn each_node_of_a_set_is_found_once_in_slot_order() {
        // slots 0, 3, 6, ... in a shuffled node order
        let slots: Vec<Slot> = (0..300u32).map(|i| (i * 7 % 300) * 3).collect();
        let vectors = (0..300).map(|i| i as f32).collect();
        let graph = HnswGraph::build(Metric::L2, 1, HnswParams::default(), vectors, 1, 7);
        let segment = Sealed::new(1, slots, graph);
        for set in [
            RoaringBitmap::new(),
            (0..1000).collect::<RoaringBitmap>(),
            [0u32, 1, 3, 4, 897, 900, 5000].into_iter().collect(),
            (0..1000).step_by(97).collect(),
            (600..=897).collect(),
        ] {
            let mut found = Vec::new();
            segment.for_each_node_of(&set, |node, slot| found.push((slot, node)));
            let expected: Vec<(Slot, u32)> = set
                .iter()
                .filter_map(|slot| Some((slot, segment.node_of(slot)?)))
                .collect();
            assert_eq!(found, expected, "{set:?}");
        }
    }
}
