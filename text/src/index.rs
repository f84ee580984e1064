//! One text index: the text fields of a collection's points on one shard replica, each point a
//! document keyed by its slot, BM25-scored.
//!
//! Documents are added and deleted as points are written; they become searchable when
//! [`TextIndex::commit`] publishes them, which the caller batches off its write path. A commit
//! carries a payload (the caller's position: what it has indexed up to), read back with
//! [`TextIndex::committed_payload`] after a restart so the caller re-adds only what came after.
//! A search scores with the statistics it is given — those of every shard, merged — so shards
//! rank as one index would.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use parking_lot::RwLock;
use tantivy::collector::TopDocs;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::{DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::analyzer::{tokens, Analyzer};
use crate::directory::BlobDirectory;
use crate::TextError;
use quiver_index::bm25::{CorpusStats, QueryTerm, TextMatch, TextMatches};

/// The field holding a document's slot.
const SLOT: &str = "_slot";

/// Memory the index writer may buffer before it writes a segment (tantivy's floor is 15 MB).
const WRITER_BYTES: usize = 32 << 20;

/// A text field of a collection and how its text is analyzed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TextField {
    pub name: String,
    pub analyzer: Analyzer,
}

/// One BM25 hit: a document's slot and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextHit {
    pub slot: u64,
    pub score: f32,
}

/// A tantivy index over a collection's text fields.
pub struct TextIndex {
    index: Index,
    /// None once [`TextIndex::close`]d.
    writer: RwLock<Option<IndexWriter>>,
    reader: IndexReader,
    slot: Field,
    fields: Vec<(TextField, Field)>,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("fields", &self.fields)
            .finish()
    }
}

impl TextIndex {
    /// Opens the index in `directory`, creating it when there is none. An index made with other
    /// fields is refused.
    pub fn open(directory: BlobDirectory, fields: &[TextField]) -> Result<Self, TextError> {
        if fields.is_empty() {
            return Err(TextError::NoFields);
        }
        let mut builder = Schema::builder();
        let slot = builder.add_u64_field(SLOT, INDEXED | FAST);
        let mut declared = Vec::new();
        for field in fields {
            if field.name == SLOT
                || declared
                    .iter()
                    .any(|(f, _): &(TextField, _)| f.name == field.name)
            {
                return Err(TextError::FieldName(field.name.clone()));
            }
            let options = TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(field.analyzer.name())
                    .set_index_option(IndexRecordOption::WithFreqs),
            );
            declared.push((field.clone(), builder.add_text_field(&field.name, options)));
        }
        let index = Index::open_or_create(directory, builder.build())?;
        for analyzer in Analyzer::ALL {
            index
                .tokenizers()
                .register(analyzer.name(), analyzer.text_analyzer());
        }
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            writer: RwLock::new(Some(writer)),
            reader,
            slot,
            fields: declared,
        })
    }

    /// The fields it indexes.
    pub fn fields(&self) -> impl Iterator<Item = &TextField> {
        self.fields.iter().map(|(f, _)| f)
    }

    fn field(&self, name: &str) -> Result<&(TextField, Field), TextError> {
        self.fields
            .iter()
            .find(|(f, _)| f.name == name)
            .ok_or_else(|| TextError::UnknownField(name.to_owned()))
    }

    /// Adds the document of `slot`: `texts` as `(field, text)`. Fields not declared are
    /// refused, and nothing is added.
    pub fn add(&self, slot: u64, texts: &[(&str, &str)]) -> Result<(), TextError> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.slot, slot);
        for (name, text) in texts {
            doc.add_text(self.field(name)?.1, text);
        }
        self.writer
            .read()
            .as_ref()
            .ok_or(TextError::Closed)?
            .add_document(doc)?;
        Ok(())
    }

    /// Deletes the document of `slot` (if there is one).
    pub fn delete(&self, slot: u64) {
        if let Some(writer) = self.writer.read().as_ref() {
            writer.delete_term(Term::from_field_u64(self.slot, slot));
        }
    }

    /// Publishes what was added and deleted since the last commit, with `payload` as the
    /// commit's payload, and makes it searchable.
    pub fn commit(&self, payload: &str) -> Result<(), TextError> {
        {
            let mut guard = self.writer.write();
            let writer = guard.as_mut().ok_or(TextError::Closed)?;
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Stops writing: what was not committed is dropped, and the writer's merges are waited for,
    /// so nothing writes to the directory after this returns. Searches go on over what was
    /// committed; adds and commits are refused ([`TextError::Closed`]).
    pub fn close(&self) {
        let writer = self.writer.write().take();
        if let Some(mut writer) = writer {
            let _ = writer.rollback();
            let _ = writer.wait_merging_threads();
        }
    }

    /// The slots of the documents committed and not deleted, in no order: what a restart
    /// compares with the stored points to index only what the last commit missed.
    pub fn slots(&self) -> Result<Vec<u64>, TextError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64(SLOT)?;
            for doc in segment.doc_ids_alive() {
                out.extend(column.first(doc));
            }
        }
        Ok(out)
    }

    /// The payload of the last commit (None before the first).
    pub fn committed_payload(&self) -> Result<Option<String>, TextError> {
        Ok(self.index.load_metas()?.payload)
    }

    /// Documents searchable now.
    pub fn docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The terms of `query` in each of `fields` (all fields when None), deduplicated.
    fn terms(&self, query: &str, fields: Option<&[&str]>) -> Result<Vec<Term>, TextError> {
        let chosen: Vec<&(TextField, Field)> = match fields {
            None => self.fields.iter().collect(),
            Some(names) => names
                .iter()
                .map(|n| self.field(n))
                .collect::<Result<_, _>>()?,
        };
        let mut terms = BTreeSet::new();
        for (field, handle) in chosen {
            // the analyzer registered at open (a clone: built once, not per query)
            let mut analyzer = self
                .index
                .tokenizers()
                .get(field.analyzer.name())
                .expect("every analyzer is registered at open");
            for text in tokens(&mut analyzer, query) {
                terms.insert(Term::from_field_text(*handle, &text));
            }
        }
        if terms.is_empty() {
            return Err(TextError::EmptyQuery);
        }
        Ok(terms.into_iter().collect())
    }

    /// This index's statistics for the terms of `query` in `fields` (all when None): merged
    /// across shards, they are what [`TextIndex::search`] scores with.
    pub fn stats(&self, query: &str, fields: Option<&[&str]>) -> Result<CorpusStats, TextError> {
        let terms = self.terms(query, fields)?;
        self.stats_of(&self.reader.searcher(), &terms)
    }

    /// The statistics of `terms` in what `searcher` sees.
    fn stats_of(
        &self,
        searcher: &tantivy::Searcher,
        terms: &[Term],
    ) -> Result<CorpusStats, TextError> {
        let mut stats = CorpusStats {
            docs: searcher.total_num_docs()?,
            ..CorpusStats::default()
        };
        for term in terms {
            let name = self.name_of(term.field());
            if !stats.tokens.contains_key(name) {
                let tokens = searcher.total_num_tokens(term.field())?;
                stats.tokens.insert(name.to_owned(), tokens);
            }
            let text = term_text(term);
            let df = searcher.doc_freq(term)?;
            stats
                .doc_freq
                .entry(name.to_owned())
                .or_default()
                .insert(text, df);
        }
        Ok(stats)
    }

    fn name_of(&self, field: Field) -> &str {
        self.fields
            .iter()
            .find(|(_, f)| *f == field)
            .map_or("", |(f, _)| f.name.as_str())
    }

    /// The best `limit` documents for `query` (any of its terms, in `fields`, all when None),
    /// BM25-scored with `stats` (this index's own when None), best first. Statistics that do not
    /// cover every term of the query are refused ([`TextError::Statistics`]).
    pub fn search(
        &self,
        query: &str,
        fields: Option<&[&str]>,
        limit: usize,
        stats: Option<&CorpusStats>,
    ) -> Result<Vec<TextHit>, TextError> {
        let terms = self.terms(query, fields)?;
        let merged = stats
            .map(|stats| Merged::new(self, stats, &terms))
            .transpose()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = any_of(&terms);
        let searcher = self.reader.searcher();
        let collector = TopDocs::with_limit(limit).order_by_score();
        let found = match &merged {
            None => searcher.search(&query, &collector)?,
            Some(merged) => searcher.search_with_statistics_provider(&query, &collector, merged)?,
        };
        // each segment's slot column, opened once
        let mut columns = HashMap::new();
        let mut hits = Vec::with_capacity(found.len());
        for (score, address) in found {
            let slots = match columns.entry(address.segment_ord) {
                Entry::Occupied(c) => c.into_mut(),
                Entry::Vacant(v) => v.insert(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .u64(SLOT)?,
                ),
            };
            if let Some(slot) = slots.first(address.doc_id) {
                hits.push(TextHit { slot, score });
            }
        }
        Ok(hits)
    }
}

impl TextIndex {
    /// The best `limit` documents for `query` whose slot `accept` takes (scored here with this
    /// index's own statistics), as [`TextMatches`]: scored again, with every shard's
    /// statistics, by whoever merges them.
    pub fn matches(
        &self,
        query: &str,
        fields: Option<&[&str]>,
        limit: usize,
        accept: std::sync::Arc<dyn Fn(u64) -> bool + Send + Sync>,
    ) -> Result<TextMatches, TextError> {
        let terms = self.terms(query, fields)?;
        // (one searcher for the statistics and the matches: a commit between cannot split them)
        let searcher = self.reader.searcher();
        let stats = self.stats_of(&searcher, &terms)?;
        let named: Vec<QueryTerm> = terms
            .iter()
            .map(|t| QueryTerm {
                field: self.name_of(t.field()).to_owned(),
                text: term_text(t),
            })
            .collect();
        if limit == 0 {
            return Ok(TextMatches {
                terms: named,
                stats,
                matches: Vec::new(),
            });
        }
        let collector = tantivy::collector::FilterCollector::new(
            SLOT.to_owned(),
            move |slot: u64| accept(slot),
            TopDocs::with_limit(limit).order_by_score(),
        );
        let mut found = searcher.search(&any_of(&terms), &collector)?;
        // each segment's documents in order, so its postings are read forward once
        found.sort_by_key(|(_, a)| (a.segment_ord, a.doc_id));
        let mut scored: Vec<(f32, TextMatch)> = Vec::with_capacity(found.len());
        let mut i = 0;
        while i < found.len() {
            let ord = found[i].1.segment_ord;
            let segment = searcher.segment_reader(ord);
            let slots = segment.fast_fields().u64(SLOT)?;
            let mut postings = Vec::with_capacity(terms.len());
            let mut norms = Vec::with_capacity(terms.len());
            for term in &terms {
                postings.push(
                    segment
                        .inverted_index(term.field())?
                        .read_postings(term, IndexRecordOption::WithFreqs)
                        .map_err(tantivy::TantivyError::from)?,
                );
                norms.push(segment.get_fieldnorms_reader(term.field())?);
            }
            while i < found.len() && found[i].1.segment_ord == ord {
                let (score, address) = found[i];
                i += 1;
                let Some(slot) = slots.first(address.doc_id) else {
                    continue;
                };
                let mut freqs = Vec::with_capacity(terms.len());
                for p in postings.iter_mut() {
                    let freq = match p {
                        // (seek only forward: past the document, the term is not in it)
                        Some(p) if p.doc() > address.doc_id => 0,
                        Some(p) => match p.seek(address.doc_id) == address.doc_id {
                            true => tantivy::postings::Postings::term_freq(p),
                            false => 0,
                        },
                        None => 0,
                    };
                    freqs.push(freq);
                }
                let lengths = norms.iter().map(|n| n.fieldnorm(address.doc_id)).collect();
                let matched = TextMatch {
                    slot,
                    freqs,
                    lengths,
                };
                scored.push((score, matched));
            }
        }
        // best first again, as tantivy ranked them here
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let matches = scored.into_iter().map(|(_, m)| m).collect();
        Ok(TextMatches {
            terms: named,
            stats,
            matches,
        })
    }
}

/// The query for documents holding any of `terms`.
fn any_of(terms: &[Term]) -> BooleanQuery {
    let clauses: Vec<(Occur, Box<dyn Query>)> = terms
        .iter()
        .map(|t| {
            let q: Box<dyn Query> =
                Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs));
            (Occur::Should, q)
        })
        .collect();
    BooleanQuery::new(clauses)
}

/// The text of a term of a text field.
fn term_text(term: &Term) -> String {
    term.value().as_str().unwrap_or_default().to_owned()
}

/// BM25 statistics from merged [`CorpusStats`], checked to cover a query's terms.
struct Merged<'a> {
    index: &'a TextIndex,
    stats: &'a CorpusStats,
}

impl<'a> Merged<'a> {
    /// `stats` for scoring `terms`: refused unless they hold every term's field and document
    /// frequency (at most their document count), as merging every shard's [`TextIndex::stats`]
    /// for the same query does.
    fn new(
        index: &'a TextIndex,
        stats: &'a CorpusStats,
        terms: &[Term],
    ) -> Result<Self, TextError> {
        for term in terms {
            let field = index.name_of(term.field());
            let text = term_text(term);
            let df = stats.doc_freq.get(field).and_then(|t| t.get(&text));
            let problem = match (stats.tokens.get(field), df) {
                (None, _) => format!("no token count for field {field:?}"),
                (_, None) => format!("no document frequency for {text:?} in field {field:?}"),
                (_, Some(df)) if *df > stats.docs => {
                    format!(
                        "{df} documents hold {text:?} but only {} are counted",
                        stats.docs
                    )
                }
                _ => continue,
            };
            return Err(TextError::Statistics(problem));
        }
        Ok(Self { index, stats })
    }
}

impl Bm25StatisticsProvider for Merged<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        Ok(self
            .stats
            .tokens
            .get(self.index.name_of(field))
            .copied()
            .unwrap_or(0))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.stats.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self
            .stats
            .doc_freq(self.index.name_of(term.field()), &term_text(term)))
    }
}
