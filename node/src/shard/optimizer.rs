//! The optimizer: builds sealed segments off the write path, one job at a time per collection,
//! on a thread of its own.
//!
//! Jobs, looked for after every change the state machine installs and after each job:
//! - **vacuum**: a sealed segment at least a fifth of whose nodes are retired is rebuilt from
//!   its live nodes (one with none left is dropped). This is what frees retired slots' memory;
//! - **merge**: the two smallest sealed segments become one when they fit in
//!   `max_segment_points` together and the larger is at most [`SIZE_RATIO`] times the smaller's
//!   live points (vacuums and idle seals leave small segments): the live nodes of the smaller
//!   are inserted into a copy of the larger's graph, a copy worth its cost only when the two are
//!   of comparable size;
//! - **seal**: once the appendable segment holds `seal_points` points (or at least
//!   [`IDLE_SEAL_POINTS`], once the collection has had no write for `idle_seal`: a watcher thread
//!   waits for that while points wait; fewer are scanned as fast as a graph walks), the points
//!   it holds when the job starts are indexed: appended to a copy of the newest sealed segment's graph while
//!   that stays within `max_segment_points` (the copy costs a memory copy, the new points their
//!   inserts only; an idle seal extends only a segment at most [`SIZE_RATIO`] times its
//!   points), else built into a new segment. A quantized collection's new segment trains its
//!   encoding on the points it starts with (at least `IDLE_SEAL_POINTS` of them, but for a
//!   collection that small); its extensions keep that encoding.
//!
//! A job reads its input under the read lock, builds without any lock (searches and writes go
//! on; points retired meanwhile are marked when it installs), writes the segment's file, then
//! installs it in one step under the write lock: the new segment replaces its source segment,
//! and the appendable copies of the points it took are dropped. Then the manifest is rewritten
//! and files it no longer names are removed. Memory during a build is the new segment plus the
//! old one it copies (reported by `collection info` as the building segment). Jobs run at a
//! lower priority (nice 10), so indexing yields the cores to writes, searches and Raft.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use quiver_index::hnsw::{HnswGraph, HnswParams};
use quiver_index::quantize::Encoding;
use quiver_index::Slot;
use tracing::{info, warn};

use super::segment::Sealed;
use super::{persist, Collection, InForce};
use quiver_core::point::IndexKind;

/// A segment is vacuumed once this share of its nodes (1 / N) is retired.
const VACUUM_SHARE: usize = 5;
/// A graph is copied to take in points only when it holds at most this many times as many.
pub const SIZE_RATIO: usize = 8;
/// An idle seal waits for at least this many points.
pub const IDLE_SEAL_POINTS: usize = 1_000;

enum Job {
    /// Rebuild segment `number` from its live nodes.
    Vacuum(u64),
    /// Insert the live nodes of segment `from` into a copy of segment `into`.
    Merge { into: u64, from: u64 },
    /// Index the appendable segment's points.
    Seal,
}

impl Collection {
    /// Starts the optimizer's background work when a job is due and none is running. Called by
    /// the state machine after it opens a collection and after each change it installs.
    pub fn optimize(this: &Arc<Self>) {
        if this.graph_params().is_none() {
            return;
        }
        Self::watch_idle(this);
        if this.due().is_none() {
            return;
        }
        if this.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let collection = this.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("optimize {}", this.name()))
            .spawn(move || collection.run_jobs());
        if let Err(e) = spawned {
            this.busy.store(false, Ordering::SeqCst);
            warn!(error = %e, "cannot start the optimizer; the points stay in the appendable segment");
        }
    }

    fn graph_params(&self) -> Option<HnswParams> {
        match self.meta.spec.index {
            IndexKind::Flat => None,
            IndexKind::Hnsw(params) => Some(params),
        }
    }

    /// Runs jobs while one is due, then frees the job slot (a job due by then is run too: a
    /// change installed while the slot was taken found it taken).
    fn run_jobs(self: Arc<Self>) {
        lower_priority();
        /// Frees the job slot however the thread ends (a panic included).
        struct Done<'a>(&'a Collection);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                *self.0.building.lock() = None;
                self.0.busy.store(false, Ordering::SeqCst);
            }
        }
        loop {
            {
                let _done = Done(&self);
                while let Some(job) = self.due() {
                    match job {
                        Job::Vacuum(number) => self.vacuum(number),
                        Job::Merge { into, from } => self.merge(into, from),
                        Job::Seal => self.seal(),
                    }
                }
            }
            if self.due().is_none() || self.busy.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    fn due(&self) -> Option<Job> {
        if self.is_closed() {
            return None;
        }
        let p = self.points.read();
        if let Some(s) = p
            .sealed
            .iter()
            .find(|s| s.retired_count > 0 && s.retired_count * VACUUM_SHARE >= s.segment.len())
        {
            return Some(Job::Vacuum(s.segment.number));
        }
        let mut by_size: Vec<&InForce> = p.sealed.iter().collect();
        by_size.sort_by_key(|s| s.live_count());
        if let [small, large, ..] = by_size[..] {
            // (the larger's graph is copied whole, its retired nodes too)
            let fits = large.segment.len() + small.live_count() <= self.config.max_segment_points;
            if fits && large.segment.len() <= SIZE_RATIO * small.live_count() {
                return Some(Job::Merge {
                    into: large.segment.number,
                    from: small.segment.number,
                });
            }
        }
        let waiting = p.appendable_slots.len() as usize;
        let idle = waiting >= IDLE_SEAL_POINTS.min(self.config.seal_points) && self.is_idle();
        (waiting >= self.config.seal_points || idle).then_some(Job::Seal)
    }

    /// Whether the collection has had no write for `idle_seal`.
    fn is_idle(&self) -> bool {
        self.config
            .idle_seal
            .is_some_and(|idle| self.last_write.lock().elapsed() >= idle)
    }

    /// Whether enough points wait in the appendable segment for an idle seal.
    fn waits_for_idle(&self) -> bool {
        let enough = IDLE_SEAL_POINTS.min(self.config.seal_points) as u64;
        self.config.idle_seal.is_some()
            && !self.is_closed()
            && self.points.read().appendable_slots.len() >= enough
    }

    /// Starts a thread, unless one runs, that waits until the collection is idle and then runs
    /// the optimizer, while points wait in the appendable segment.
    fn watch_idle(this: &Arc<Self>) {
        let Some(idle) = this.config.idle_seal else {
            return;
        };
        if !this.waits_for_idle() || this.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let collection = this.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("idle {}", this.name()))
            .spawn(move || loop {
                let quiet = collection.last_write.lock().elapsed();
                if quiet < idle && !collection.is_closed() {
                    std::thread::sleep(idle - quiet);
                    continue;
                }
                if collection.waits_for_idle() {
                    // a seal, unless a job runs (its end looks for due jobs: this seal too)
                    Collection::optimize(&collection);
                    std::thread::sleep(idle);
                    continue;
                }
                collection.watching.store(false, Ordering::SeqCst);
                // (a write between the check and the flag found the flag set)
                if !collection.waits_for_idle() || collection.watching.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            });
        if let Err(e) = spawned {
            this.watching.store(false, Ordering::SeqCst);
            warn!(error = %e, "cannot start the idle watcher; points wait for the next seal");
        }
    }

    fn seal(&self) {
        let Some(params) = self.graph_params() else {
            return;
        };
        let started = Instant::now();
        let (slots, vectors, base) = {
            let p = self.points.read();
            let mut slots = Vec::with_capacity(p.appendable_slots.len() as usize);
            let mut vectors = Vec::with_capacity(slots.capacity() * self.meta.spec.dim as usize);
            for slot in &p.appendable_slots {
                if let Some(v) = p.appendable.get(slot) {
                    slots.push(slot);
                    vectors.extend_from_slice(v);
                }
            }
            // (an idle seal of a few points does not copy a large graph)
            let idle = slots.len() < self.config.seal_points;
            let base = p
                .sealed
                .last()
                .filter(|s| s.segment.len() + slots.len() <= self.config.max_segment_points)
                .filter(|s| !idle || s.segment.len() <= SIZE_RATIO * slots.len())
                .map(|s| s.segment.clone());
            (slots, vectors, base)
        };
        self.report_building(slots.len(), base.as_deref());
        let number = self.next_segment.fetch_add(1, Ordering::SeqCst);
        let threads = self.config.build_threads;
        let (graph, mut all_slots) = match &base {
            Some(b) => (b.graph.extend(vectors, threads, number), b.slots.clone()),
            None => {
                let dim = self.meta.spec.dim as usize;
                let encoding = Encoding::train(self.meta.spec.quantization, &vectors, dim);
                let metric = self.meta.spec.metric;
                let graph = HnswGraph::build_encoded(
                    metric, dim, params, encoding, vectors, threads, number,
                );
                (graph, Vec::new())
            }
        };
        all_slots.extend_from_slice(&slots);
        let sealed = Arc::new(Sealed::new(number, all_slots, graph));
        let replaced: Vec<u64> = base.iter().map(|b| b.number).collect();
        self.install(sealed.clone(), &replaced, &slots);
        info!(
            collection = %self.name(),
            segment = number,
            added = slots.len(),
            nodes = sealed.len(),
            memory_bytes = sealed.memory_bytes() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "appendable points indexed"
        );
    }

    fn vacuum(&self, number: u64) {
        if self.graph_params().is_none() {
            return;
        }
        let started = Instant::now();
        // (the segment is immutable: only which nodes are live is read under the lock)
        let (source, live) = {
            let p = self.points.read();
            let Some(source) = p.sealed.iter().find(|s| s.segment.number == number) else {
                return;
            };
            let live: Vec<u32> = (0..source.segment.len() as u32)
                .filter(|node| !source.is_retired(*node))
                .collect();
            (source.segment.clone(), live)
        };
        let slots: Vec<Slot> = live.iter().map(|n| source.slots[*n as usize]).collect();
        if slots.is_empty() {
            self.install_replacing(None, &[number], &[]);
            return;
        }
        self.report_building(slots.len(), None);
        let fresh = self.next_segment.fetch_add(1, Ordering::SeqCst);
        // (the live nodes' stored vectors, in the source's encoding)
        let graph = source.graph.subset(&live, self.config.build_threads, fresh);
        drop(source);
        let sealed = Arc::new(Sealed::new(fresh, slots, graph));
        self.install(sealed.clone(), &[number], &[]);
        info!(
            collection = %self.name(),
            segment = fresh,
            replaced = number,
            nodes = sealed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "segment vacuumed"
        );
    }

    fn merge(&self, into: u64, from: u64) {
        let started = Instant::now();
        let (large, small, live) = {
            let p = self.points.read();
            let find = |number| p.sealed.iter().find(|s| s.segment.number == number);
            let (Some(large), Some(small)) = (find(into), find(from)) else {
                return;
            };
            let live: Vec<u32> = (0..small.segment.len() as u32)
                .filter(|node| !small.is_retired(*node))
                .collect();
            (large.segment.clone(), small.segment.clone(), live)
        };
        self.report_building(live.len(), Some(&large));
        let fresh = self.next_segment.fetch_add(1, Ordering::SeqCst);
        let threads = self.config.build_threads;
        let graph = large.graph.absorb(&small.graph, &live, threads, fresh);
        let mut slots = large.slots.clone();
        slots.extend(live.iter().map(|n| small.slots[*n as usize]));
        let sealed = Arc::new(Sealed::new(fresh, slots, graph));
        self.install(sealed.clone(), &[into, from], &[]);
        info!(
            collection = %self.name(),
            segment = fresh,
            merged = ?[into, from],
            nodes = sealed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "segments merged"
        );
    }

    /// Says what is being built: the points being indexed, and the memory the new segment
    /// takes beside the one it copies.
    fn report_building(&self, points: usize, base: Option<&Sealed>) {
        let estimate = match base {
            Some(b) if !b.is_empty() => b.memory_bytes() / b.len() * (b.len() + points),
            _ => {
                let m = self.graph_params().map_or(16, |p| p.m);
                points * (self.encoded_bytes_per_vector() + (2 * m + 1) * 4 + 16)
            }
        };
        *self.building.lock() = Some((points, estimate));
    }

    /// Writes `sealed`'s file, then installs it (see [`install_replacing`](Self::install_replacing)).
    fn install(&self, sealed: Arc<Sealed>, replaces: &[u64], taken: &[Slot]) {
        if self.is_closed() {
            return;
        }
        if let Err(e) = sealed.write(&self.dir) {
            // the segment serves from memory; a restart builds it again
            warn!(collection = %self.name(), error = %e, "segment file not written");
        }
        self.install_replacing(Some(sealed), replaces, taken);
    }

    /// In one step under the write lock: `sealed` (if any) takes the place of the segments
    /// `replaces` (at the first one's place), with its nodes whose slots are no longer live
    /// retired, and the appendable copies of the `taken` slots are dropped. Then the manifest
    /// names the segments in force and other segment files are removed.
    fn install_replacing(&self, sealed: Option<Arc<Sealed>>, replaces: &[u64], taken: &[Slot]) {
        let numbers: Vec<u64> = {
            let mut p = self.points.write();
            *self.building.lock() = None;
            if self.is_closed() {
                // replaced by a snapshot's state or dropped: its directory is not ours now
                return;
            }
            let position = p
                .sealed
                .iter()
                .position(|s| replaces.contains(&s.segment.number));
            p.sealed.retain(|s| !replaces.contains(&s.segment.number));
            for &slot in taken {
                if p.appendable_slots.remove(slot) {
                    p.appendable.remove(slot);
                }
            }
            if let Some(sealed) = sealed {
                let in_force = InForce::new(sealed, &p.live);
                let at = position.unwrap_or(p.sealed.len());
                p.sealed.insert(at, in_force);
            }
            p.sealed.iter().map(|s| s.segment.number).collect()
        };
        if let Err(e) = persist::write_manifest(&self.dir, &numbers) {
            warn!(collection = %self.name(), error = %e, "segment manifest not written");
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), so graph builds (whose threads
/// inherit it) yield the cores to Raft, writes and searches. On Linux a nice value belongs to
/// a thread; elsewhere this may lower the whole process, which is harmless too.
fn lower_priority() {
    #[cfg(unix)]
    // SAFETY: setpriority only reads its integer arguments; who = 0 is the caller.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
