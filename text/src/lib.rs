//! Full text for quiver: BM25 over tantivy, with its files in quiver's own storage.
//!
//! - [`store`]: the blob-store trait the files are kept in (the node implements it on a shard
//!   replica's RocksDB), and an in-memory one;
//! - [`directory`]: the tantivy `Directory` over it;
//! - [`analyzer`]: the analyzers a text field may declare (`english`, `simple`, `whitespace`);
//! - [`index`]: one index of a collection's text fields, documents keyed by slot, commits
//!   that carry the caller's position;
//! - BM25's corpus statistics and cross-shard scoring are [`quiver_index::bm25`]'s (re-exported),
//!   pure, for coordinators that hold no index.

pub mod analyzer;
pub mod directory;
pub mod index;
pub mod store;

pub use analyzer::Analyzer;
pub use directory::BlobDirectory;
pub use index::{TextField, TextHit, TextIndex};
pub use quiver_index::bm25::{bm25, CorpusStats, QueryTerm, TextMatch, TextMatches};
pub use store::{BlobStore, MemoryBlobStore};

/// What can go wrong with a text index.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("a text index needs at least one text field")]
    NoFields,
    #[error("text field {0:?} is declared twice or has a reserved name")]
    FieldName(String),
    #[error("unknown text field {0:?}")]
    UnknownField(String),
    #[error("the query has no terms to search for")]
    EmptyQuery,
    #[error("corpus statistics do not cover the query: {0}")]
    Statistics(String),
    #[error("the text index is closed")]
    Closed,
    #[error("text index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

#[cfg(test)]
mod tests;
