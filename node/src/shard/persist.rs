//! Opening a collection from its stored points and its segment files, and the manifest that
//! names the segments in force.
//!
//! A collection's directory holds `segments.json` (the numbers of the sealed segments in force)
//! and their files ([`Sealed::write`]). Segment files are written whole before the manifest
//! names them, and never change after; the manifest is replaced by rename, then files it no
//! longer names are removed. A crash at any point leaves a manifest whose files are whole.
//!
//! Everything here is derived: a segment holds vector versions by slot, slots are assigned in
//! log order (the same on every replica) and never reused, so any segment file is valid on any
//! replica. On open, each stored point is served by the segment that holds its slot, or else
//! goes to the appendable segment (and the optimizer indexes it again); segment nodes whose
//! slots are no longer live are retired. A missing or damaged file only costs a rebuild. Raft
//! snapshots carry the files ([`link_segments`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::segment::Sealed;
use super::{Collection, InForce, SegmentConfig};
use quiver_core::point::{CollectionMeta, IndexKind, PointId, PointRecord};
use quiver_core::{Error, Result};

const MANIFEST: &str = "segments.json";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    segments: Vec<u64>,
}

/// What opening a collection did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub points: usize,
    /// Sealed segments loaded from their files.
    pub segments_loaded: usize,
    /// Points in the appendable segment (not in a loaded segment): indexed again by the optimizer.
    pub appendable: usize,
    pub elapsed_ms: u128,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{}: {e}", path.display()))
}

impl Collection {
    /// Rebuilds a collection from its stored `records`, loading the segments named in `dir`'s
    /// manifest.
    pub fn open(
        meta: CollectionMeta,
        records: Vec<(PointId, PointRecord)>,
        dir: &Path,
        config: SegmentConfig,
    ) -> Result<(Self, OpenReport)> {
        let started = Instant::now();
        let collection = Collection::new(meta, dir.to_path_buf(), config);
        let numbers = read_manifest(dir).map(|m| m.segments).unwrap_or_default();
        let mut loaded: Vec<Sealed> = Vec::new();
        if let IndexKind::Hnsw(params) = collection.meta.spec.index {
            for &number in &numbers {
                match Sealed::read(dir, number) {
                    Ok(s)
                        if s.graph.dim() == collection.meta.spec.dim as usize
                            && s.graph.metric() == collection.meta.spec.metric
                            && s.graph.params() == params
                            && s.graph.encoding().quantization()
                                == collection.meta.spec.quantization =>
                    {
                        loaded.push(s)
                    }
                    Ok(_) => {
                        warn!(collection = %collection.name(), segment = number, "segment file of another shape, left out")
                    }
                    Err(e) => {
                        warn!(collection = %collection.name(), error = %e, "segment file unusable, its points are indexed again")
                    }
                }
            }
        }
        // A slot is served by one segment: one that holds a slot an earlier one holds (or one
        // slot twice) is left out, and its points are indexed again.
        let mut claimed = RoaringBitmap::new();
        loaded.retain(|s| {
            let slots: RoaringBitmap = s.slots.iter().copied().collect();
            let disjoint = slots.len() as usize == s.len() && claimed.is_disjoint(&slots);
            if disjoint {
                claimed |= slots;
            } else {
                warn!(collection = %collection.name(), segment = s.number, "segment overlaps another, left out");
            }
            disjoint
        });
        let next = numbers.iter().max().map_or(1, |n| n + 1);
        collection.next_segment.store(next, Ordering::SeqCst);
        {
            let mut p = collection.points.write();
            for (id, rec) in records {
                if claimed.contains(rec.slot) {
                    p.record(id, rec.slot, rec.payload);
                } else {
                    p.put(id, rec.slot, &rec.vector, rec.payload);
                }
            }
            for segment in loaded {
                let in_force = InForce::new(Arc::new(segment), &p.live);
                if in_force.live_count() > 0 {
                    p.sealed.push(in_force);
                }
            }
        }
        let in_force: Vec<u64> = collection
            .points
            .read()
            .sealed
            .iter()
            .map(|s| s.segment.number)
            .collect();
        if in_force != numbers || read_manifest(dir).is_none() {
            if let Err(e) = write_manifest(dir, &in_force) {
                warn!(collection = %collection.name(), error = %e, "segment manifest not written");
            }
        } else {
            remove_unnamed(dir, &in_force);
        }
        let report = {
            let p = collection.points.read();
            OpenReport {
                points: p.len(),
                segments_loaded: p.sealed.len(),
                appendable: p.appendable_slots.len() as usize,
                elapsed_ms: started.elapsed().as_millis(),
            }
        };
        Ok((collection, report))
    }
}

/// Writes the manifest naming `numbers` (by rename), then removes other segment files and
/// anything else in `dir` that is not the manifest.
pub fn write_manifest(dir: &Path, numbers: &[u64]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let bytes = serde_json::to_vec(&Manifest {
        segments: numbers.to_vec(),
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let tmp = dir.join("segments.json.tmp");
    write_synced(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(|e| io_err(dir, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    remove_unnamed(dir, numbers);
    Ok(())
}

/// Hard-links the segments in force in `dir` (their files and the manifest) into `to`, which
/// then holds a directory of its own that no later change touches. Returns false when there is
/// no manifest, or its files were replaced while being linked twice over (the receiver then
/// indexes the points again).
pub fn link_segments(dir: &Path, to: &Path) -> Result<bool> {
    for _ in 0..2 {
        let Some(manifest) = read_manifest(dir) else {
            return Ok(false);
        };
        std::fs::create_dir_all(to).map_err(|e| io_err(to, e))?;
        let linked = manifest.segments.iter().try_for_each(|&number| {
            let target = Sealed::path(to, number);
            if target.exists() {
                return Ok(());
            }
            std::fs::hard_link(Sealed::path(dir, number), target)
        });
        if linked.is_ok() {
            let bytes =
                serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
            std::fs::write(to.join(MANIFEST), bytes).map_err(|e| io_err(to, e))?;
            remove_unnamed(to, &manifest.segments);
            return Ok(true);
        }
        // a job replaced a segment meanwhile: link the new manifest's files
    }
    let _ = std::fs::remove_dir_all(to);
    Ok(false)
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes from `dir` every entry but the manifest and the files of segments `numbers` (older
/// segment files, temporary files, and graph dumps of earlier builds).
fn remove_unnamed(dir: &Path, numbers: &[u64]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep: Vec<String> = numbers
        .iter()
        .map(|n| format!("segment-{n}.qvseg"))
        .chain([MANIFEST.to_string()])
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}
