//! Opening a collection from its stored points, and dumping its HNSW graph so the next open does
//! not rebuild it.
//!
//! A graph directory holds `manifest.json` and one `dump-N/` directory. A dump is written to a
//! fresh `dump-N/`, then the manifest is replaced by rename, then older dumps are removed; a crash
//! at any point leaves the previous manifest and its dump intact. The manifest records
//! `indexed_upto`: on open, live points with a higher slot are inserted into the loaded graph.
//! A missing or unreadable dump only costs a rebuild: the graph is always derivable from the
//! points. Slots are assigned in log order, the same on every replica, so a dump is valid on any
//! replica whose state is at or past its `indexed_upto`: Raft snapshots carry one.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use quiver_index::hnsw_rs_graph::HnswIndex;
use quiver_index::Slot;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Collection, GraphProgress};
use quiver_core::point::{CollectionMeta, IndexKind, PointId, PointRecord};
use quiver_core::{Error, Result};

const MANIFEST: &str = "manifest.json";
const BASENAME: &str = "graph";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    dump_dir: String,
    basename: String,
    indexed_upto: Option<Slot>,
}

/// What opening a collection did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub points: usize,
    /// Whether the graph came from a dump (false: built from the points).
    pub graph_loaded: bool,
    /// Points the graph misses at open (all of them when there was no dump), inserted in the
    /// background.
    pub graph_inserts: usize,
    pub elapsed_ms: u128,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{}: {e}", path.display()))
}

impl Collection {
    /// Rebuilds a collection from its stored `records`, loading its graph from `graph_dir` when a
    /// dump is there.
    pub fn open(
        meta: CollectionMeta,
        records: Vec<(PointId, PointRecord)>,
        graph_dir: &Path,
    ) -> Result<(Self, OpenReport)> {
        let started = Instant::now();
        let loaded = match meta.spec.index {
            IndexKind::Flat => None,
            IndexKind::Hnsw(params) => match read_manifest(graph_dir) {
                Some(m) => match HnswIndex::load(
                    &graph_dir.join(&m.dump_dir),
                    &m.basename,
                    meta.spec.metric,
                    meta.spec.dim as usize,
                    params,
                ) {
                    Ok(graph) => Some((graph, m.indexed_upto)),
                    Err(e) => {
                        warn!(collection = %meta.spec.name, error = %e, "graph dump unusable, rebuilding");
                        None
                    }
                },
                None => None,
            },
        };
        let graph_loaded = loaded.is_some();
        let collection = match loaded {
            Some((graph, indexed_upto)) => Collection::with_graph(
                meta,
                Some(graph),
                GraphProgress {
                    indexed_upto,
                    inserts_since_dump: 0,
                },
            ),
            None => Collection::new(meta),
        };
        let resume_after = collection.progress.lock().indexed_upto;
        let has_graph = collection.meta.spec.index != IndexKind::Flat;
        let mut pending = 0;
        {
            let mut seg = collection.segment.write();
            for (id, rec) in records {
                if has_graph && resume_after.is_none_or(|w| rec.slot > w) {
                    pending += 1;
                }
                seg.put(id, rec.slot, &rec.vector, rec.payload);
            }
            if let (true, Some(upto)) = (graph_loaded, resume_after) {
                // The dump holds every slot up to `upto`, including versions retired since.
                let mut dead = roaring::RoaringBitmap::new();
                dead.insert_range(0..=upto);
                dead -= &seg.live;
                seg.dead = dead;
            }
        }
        // The points the graph misses are inserted in the background, once the state machine
        // calls `maintain_graph`; searches score them exactly meanwhile.
        if pending > 0 {
            collection.catching_up.store(true, Ordering::SeqCst);
        }
        let report = OpenReport {
            points: collection.points_count(),
            graph_loaded,
            graph_inserts: pending,
            elapsed_ms: started.elapsed().as_millis(),
        };
        Ok((collection, report))
    }

    /// Inserts since the graph was last dumped (0 for flat collections).
    pub fn graph_inserts_since_dump(&self) -> usize {
        self.progress.lock().inserts_since_dump
    }

    /// Whether the graph is due for a dump: `every_inserts` inserts since the last one, or a
    /// quarter of the graph if that is fewer (so writing dumps costs a bounded multiple of
    /// building the graph, and after a crash the graph misses at most a quarter of its points plus
    /// the inserts of one check interval).
    pub fn graph_dump_due(&self, every_inserts: usize) -> bool {
        let Some(graph) = self.graph() else {
            return false;
        };
        let inserts = self.graph_inserts_since_dump();
        inserts > 0 && (inserts >= every_inserts || inserts * 4 >= graph.len())
    }

    /// Dumps the graph into `graph_dir` if it changed since the last dump. Graph inserts (and so
    /// writes to this collection) wait while the dump runs.
    pub fn dump_graph(&self, graph_dir: &Path) -> Result<bool> {
        let mut progress = self.progress.lock();
        let Some(graph) = self.graph() else {
            return Ok(false);
        };
        if progress.inserts_since_dump == 0 && read_manifest(graph_dir).is_some() {
            return Ok(false);
        }
        let started = Instant::now();
        std::fs::create_dir_all(graph_dir).map_err(|e| io_err(graph_dir, e))?;
        let previous = read_manifest(graph_dir).map(|m| m.dump_dir);
        let dump_dir = next_dump_dir(previous.as_deref());
        let dump_path = graph_dir.join(&dump_dir);
        if dump_path.exists() {
            std::fs::remove_dir_all(&dump_path).map_err(|e| io_err(&dump_path, e))?;
        }
        std::fs::create_dir_all(&dump_path).map_err(|e| io_err(&dump_path, e))?;
        let basename = graph
            .dump(&dump_path, BASENAME)
            .map_err(|e| Error::Storage(e.to_string()))?;
        sync_dir_files(&dump_path)?;
        let manifest = Manifest {
            dump_dir: dump_dir.clone(),
            basename,
            indexed_upto: progress.indexed_upto,
        };
        let tmp = graph_dir.join("manifest.json.tmp");
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, graph_dir.join(MANIFEST)).map_err(|e| io_err(graph_dir, e))?;
        progress.inserts_since_dump = 0;
        drop(progress);
        remove_stale_dumps(graph_dir, &dump_dir);
        info!(
            collection = %self.name(),
            nodes = graph.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph dumped"
        );
        Ok(true)
    }
}

/// Hard-links the current dump of the graph in `graph_dir` (its manifest and files) into `to`,
/// which then holds a graph directory of its own that no later dump changes. Returns false when
/// there is no dump, or it was replaced while being linked (the graph is then rebuilt from the
/// points by whoever opens `to`).
pub fn link_graph_dump(graph_dir: &Path, to: &Path) -> Result<bool> {
    let Some(manifest) = read_manifest(graph_dir) else {
        return Ok(false);
    };
    let from = graph_dir.join(&manifest.dump_dir);
    let into = to.join(&manifest.dump_dir);
    std::fs::create_dir_all(&into).map_err(|e| io_err(&into, e))?;
    let linked = std::fs::read_dir(&from).and_then(|entries| {
        for entry in entries {
            let entry = entry?;
            std::fs::hard_link(entry.path(), into.join(entry.file_name()))?;
        }
        Ok(())
    });
    if linked.is_err() {
        // a newer dump removed this one meanwhile
        let _ = std::fs::remove_dir_all(to);
        return Ok(false);
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(to.join(MANIFEST), bytes).map_err(|e| io_err(to, e))?;
    Ok(true)
}

fn read_manifest(graph_dir: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(graph_dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn next_dump_dir(previous: Option<&str>) -> String {
    let n = previous
        .and_then(|p| p.strip_prefix("dump-"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    format!("dump-{}", n + 1)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path: PathBuf = entry.map_err(|e| io_err(dir, e))?.path();
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&path, e))?;
    }
    Ok(())
}

fn remove_stale_dumps(graph_dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(graph_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("dump-") && name != keep {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
