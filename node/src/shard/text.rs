//! A collection's full text on one replica: its text fields' values in a tantivy index whose
//! files are rows of the replica's RocksDB ([`TextStore`]).
//!
//! - The state machine changes the index as it applies a command (a point's document is added
//!   under its slot, the slot it replaces deleted), after the command's batch is durable.
//! - What was changed becomes searchable at the next commit, made off the apply path by a
//!   thread that waits `storage.text_commit_ms` after the first change, so a burst of writes is
//!   one commit. A write may wait for the commit covering it ([`CollectionText::wait_indexed`]).
//! - The index is derived: a commit lost to a crash, or one a snapshot carried from behind its
//!   rows, is made good when the collection opens, by comparing the committed documents' slots
//!   with the stored points' ([`CollectionText::open`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use quiver_core::point::{JsonMap, PointRecord, TextAnalyzer, TextFieldSpec};
use quiver_core::{Error, Result};
use quiver_index::Slot;
use quiver_text::{Analyzer, BlobDirectory, TextError, TextField, TextIndex, TextMatches};
use tracing::{info, warn};

use crate::storage::text::TextStore;

/// Where the positions of the index's commits stand.
#[derive(Debug, Default)]
struct Progress {
    /// The log index of the last applied command that changed the index.
    changed: u64,
    /// The log index the last commit covers.
    committed: u64,
    /// A thread is waiting to commit.
    scheduled: bool,
}

/// The text index of one collection on one replica.
pub struct CollectionText {
    index: TextIndex,
    fields: Vec<String>,
    delay: Duration,
    progress: Mutex<Progress>,
    advanced: Condvar,
    /// Held by a commit, so closing waits for one under way.
    committing: Mutex<()>,
    closed: AtomicBool,
}

impl std::fmt::Debug for CollectionText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionText")
            .field("fields", &self.fields)
            .finish()
    }
}

fn text_error(e: TextError) -> Error {
    Error::Storage(format!("text index: {e}"))
}

fn analyzer(analyzer: TextAnalyzer) -> Analyzer {
    match analyzer {
        TextAnalyzer::English => Analyzer::English,
        TextAnalyzer::Simple => Analyzer::Simple,
        TextAnalyzer::Whitespace => Analyzer::Whitespace,
    }
}

/// The key prefix of a collection's text files in [`crate::storage::Table::Text`].
fn prefix(collection_id: u64) -> Vec<u8> {
    collection_id.to_be_bytes().to_vec()
}

/// The text of `payload` in each of `fields`: a string value, or the strings of an array.
fn texts<'a>(fields: &'a [String], payload: &'a JsonMap) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    for field in fields {
        match payload.get(field) {
            Some(serde_json::Value::String(s)) => out.push((field.as_str(), s.as_str())),
            Some(serde_json::Value::Array(items)) => out.extend(
                items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| (field.as_str(), s)),
            ),
            _ => {}
        }
    }
    out
}

impl CollectionText {
    /// The text index of collection `collection_id` with `fields` in `store` (None when it
    /// declares none), brought in line with `records`, its stored points: documents of points
    /// the last commit missed are added, those of points gone since are deleted. An index that
    /// cannot be opened (made with other fields, or damaged) is rebuilt from the points.
    pub fn open(
        store: TextStore,
        collection_id: u64,
        fields: &[TextFieldSpec],
        records: &[(quiver_core::point::PointId, PointRecord)],
        delay: Duration,
    ) -> Result<Option<Arc<Self>>> {
        if fields.is_empty() {
            return Ok(None);
        }
        let declared: Vec<TextField> = fields
            .iter()
            .map(|f| TextField {
                name: f.name.clone(),
                analyzer: analyzer(f.analyzer),
            })
            .collect();
        let directory = || BlobDirectory::new(Arc::new(store.clone()), prefix(collection_id));
        let index = match TextIndex::open(directory(), &declared) {
            Ok(index) => index,
            Err(e) => {
                warn!(collection_id, error = %e, "the text index does not open; rebuilding it from the points");
                store.clear(&prefix(collection_id))?;
                TextIndex::open(directory(), &declared).map_err(text_error)?
            }
        };
        let this = Self {
            index,
            fields: fields.iter().map(|f| f.name.clone()).collect(),
            delay,
            progress: Mutex::new(Progress::default()),
            advanced: Condvar::new(),
            committing: Mutex::new(()),
            closed: AtomicBool::new(false),
        };
        this.catch_up(records)?;
        Ok(Some(Arc::new(this)))
    }

    /// Indexes what the committed index lacks of `records`, and deletes what it holds beyond
    /// them; commits if anything changed.
    fn catch_up(&self, records: &[(quiver_core::point::PointId, PointRecord)]) -> Result<()> {
        let started = Instant::now();
        let committed: HashSet<u64> = self
            .index
            .slots()
            .map_err(text_error)?
            .into_iter()
            .collect();
        let mut wanted = HashSet::with_capacity(records.len());
        let mut added = 0;
        for (_, record) in records {
            let texts = texts(&self.fields, &record.payload);
            if texts.is_empty() {
                continue;
            }
            let slot = u64::from(record.slot);
            wanted.insert(slot);
            if !committed.contains(&slot) {
                self.index.add(slot, &texts).map_err(text_error)?;
                added += 1;
            }
        }
        let mut deleted = 0;
        for slot in committed.difference(&wanted) {
            self.index.delete(*slot);
            deleted += 1;
        }
        if added + deleted > 0 {
            self.index.commit("").map_err(text_error)?;
            info!(
                added,
                deleted,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "text index caught up with the stored points"
            );
        }
        Ok(())
    }

    /// The point at `slot` with `payload` replaces the one at `old` (if any).
    pub fn upsert(&self, old: Option<Slot>, slot: Slot, payload: &JsonMap) {
        if let Some(old) = old {
            self.index.delete(u64::from(old));
        }
        let texts = texts(&self.fields, payload);
        if !texts.is_empty() {
            if let Err(e) = self.index.add(u64::from(slot), &texts) {
                warn!(error = %e, "a point's text was not indexed");
            }
        }
    }

    /// The point at `slot` is deleted.
    pub fn delete(&self, slot: Slot) {
        self.index.delete(u64::from(slot));
    }

    /// The changes of the command applied at log position `index` are made: they are
    /// committed within the delay.
    pub fn changed(self: &Arc<Self>, index: u64) {
        let mut progress = self.progress.lock();
        progress.changed = progress.changed.max(index);
        if progress.scheduled || self.closed.load(Ordering::SeqCst) {
            return;
        }
        progress.scheduled = true;
        drop(progress);
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("text commit".into())
            .spawn(move || this.commit_when_due());
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a text commit");
            self.progress.lock().scheduled = false;
        }
    }

    /// Commits once the delay has passed, again while changes keep coming.
    fn commit_when_due(&self) {
        loop {
            std::thread::sleep(self.delay);
            let upto = self.progress.lock().changed;
            {
                let _committing = self.committing.lock();
                if self.closed.load(Ordering::SeqCst) {
                    self.progress.lock().scheduled = false;
                    self.advanced.notify_all();
                    return;
                }
                match self.index.commit(&upto.to_string()) {
                    Ok(()) => {
                        let mut progress = self.progress.lock();
                        progress.committed = progress.committed.max(upto);
                        self.advanced.notify_all();
                    }
                    Err(e) => warn!(error = %e, "text commit failed; trying again"),
                }
            }
            let mut progress = self.progress.lock();
            if progress.changed == progress.committed {
                progress.scheduled = false;
                return;
            }
        }
    }

    /// Waits until what the command applied at log position `index` changed is searchable,
    /// for at most `timeout`.
    pub fn wait_indexed(&self, index: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut progress = self.progress.lock();
        loop {
            if progress.committed >= index.min(progress.changed) {
                return Ok(());
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Unavailable(
                    "the collection closed before the write was searchable by text".into(),
                ));
            }
            if self
                .advanced
                .wait_until(&mut progress, deadline)
                .timed_out()
            {
                return Err(Error::Unavailable(format!(
                    "the write is applied, but was not searchable by text within {} ms",
                    timeout.as_millis()
                )));
            }
        }
    }

    /// Stops committing and writing: once this returns nothing writes the index's rows.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _committing = self.committing.lock();
        self.index.close();
        self.advanced.notify_all();
    }

    /// The best `limit` documents for `query` in `fields` (all when empty) whose slot `accept`
    /// takes, with what scores them across shards.
    pub fn matches(
        &self,
        query: &str,
        fields: &[String],
        limit: usize,
        accept: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    ) -> Result<TextMatches> {
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        let fields = (!names.is_empty()).then_some(names.as_slice());
        self.index
            .matches(query, fields, limit, accept)
            .map_err(|e| match e {
                TextError::EmptyQuery => Error::invalid(
                    "text",
                    "the query has no terms to search for once analyzed (only stop words or \
                     punctuation)",
                ),
                TextError::UnknownField(name) => Error::invalid(
                    "text_fields",
                    format!("`{name}` is not a text field of the collection"),
                ),
                other => text_error(other),
            })
    }

    /// Whether changes applied are not yet searchable.
    pub fn pending(&self) -> bool {
        let progress = self.progress.lock();
        progress.changed > progress.committed
    }

    /// Documents searchable now.
    pub fn docs(&self) -> u64 {
        self.index.docs()
    }
}
