//! BM25 across shards: the corpus statistics of a query's terms, merged across the shards of a
//! collection, and the score of a shard's match computed from them as tantivy computes it, so
//! shards rank as one index would, in one round trip (each shard answers with its statistics and
//! its matches' term frequencies; the coordinator merges, then scores).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The BM25 statistics of a corpus for a set of terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusStats {
    /// Documents, as tantivy counts them for BM25 (a deleted one until its segment is merged).
    pub docs: u64,
    /// Tokens indexed per field, over every document.
    pub tokens: BTreeMap<String, u64>,
    /// Documents holding each term, per field (`field -> term -> count`).
    pub doc_freq: BTreeMap<String, BTreeMap<String, u64>>,
}

impl CorpusStats {
    /// The statistics of the union of the corpora `self` and `other` describe (disjoint
    /// documents, as shards hold).
    pub fn merge(&mut self, other: &CorpusStats) {
        self.docs += other.docs;
        for (field, n) in &other.tokens {
            *self.tokens.entry(field.clone()).or_default() += n;
        }
        for (field, terms) in &other.doc_freq {
            let mine = self.doc_freq.entry(field.clone()).or_default();
            for (term, n) in terms {
                *mine.entry(term.clone()).or_default() += n;
            }
        }
    }

    /// Documents of `field` holding `term` (0 when not gathered).
    pub fn doc_freq(&self, field: &str, term: &str) -> u64 {
        self.doc_freq
            .get(field)
            .and_then(|t| t.get(term))
            .copied()
            .unwrap_or(0)
    }
}

/// A term of a query: the text of one of its tokens, as analyzed for one field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryTerm {
    pub field: String,
    pub text: String,
}

/// What BM25 needs of one document matching a query: for each of the query's terms (in the order
/// of [`TextMatches::terms`]) its frequency in the document and the length of its field there
/// (tantivy's field norm, as tantivy scores with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextMatch {
    pub slot: u64,
    pub freqs: Vec<u32>,
    pub lengths: Vec<u32>,
}

/// One index's best documents for a query, with what scores them anywhere: the query's terms,
/// this index's statistics for them, and each document's term frequencies and field lengths. A
/// coordinator merges the statistics of every shard and scores every shard's matches with them
/// ([`bm25`]), so shards rank as one index, in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextMatches {
    pub terms: Vec<QueryTerm>,
    pub stats: CorpusStats,
    pub matches: Vec<TextMatch>,
}

/// BM25's term-saturation and length-normalisation parameters (tantivy's, Lucene's defaults).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// The BM25 score of `matched` for the query of `terms`, with corpus statistics `stats` (the
/// merged statistics of every shard): computed as tantivy computes it, so one shard's scores are
/// tantivy's own. A term absent from `stats` counts as in no document.
pub fn bm25(stats: &CorpusStats, terms: &[QueryTerm], matched: &TextMatch) -> f32 {
    let docs = stats.docs;
    let mut score = 0.0;
    for (i, term) in terms.iter().enumerate() {
        let tf = matched.freqs.get(i).copied().unwrap_or(0);
        if tf == 0 || docs == 0 {
            continue;
        }
        let df = stats.doc_freq(&term.field, &term.text).min(docs);
        let tokens = stats.tokens.get(&term.field).copied().unwrap_or(0);
        let average = tokens as f32 / docs as f32;
        let idf = (1.0 + ((docs - df) as f32 + 0.5) / (df as f32 + 0.5)).ln();
        let length = matched.lengths.get(i).copied().unwrap_or(0) as f32;
        let norm = K1 * (1.0 - B + B * length / average);
        let tf = tf as f32;
        score += idf * (1.0 + K1) * (tf / (tf + norm));
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_field_by_field_and_term_by_term() {
        let stats = |docs, tokens, df: &[(&str, u64)]| CorpusStats {
            docs,
            tokens: [("body".to_string(), tokens)].into(),
            doc_freq: [(
                "body".to_string(),
                df.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            )]
            .into(),
        };
        let mut a = stats(3, 30, &[("cell", 2)]);
        a.merge(&stats(5, 70, &[("cell", 1), ("gene", 4)]));
        assert_eq!(a, stats(8, 100, &[("cell", 3), ("gene", 4)]));
        assert_eq!(a.doc_freq("body", "gene"), 4);
        assert_eq!(a.doc_freq("body", "none"), 0);
        assert_eq!(a.doc_freq("title", "gene"), 0);
    }
}
