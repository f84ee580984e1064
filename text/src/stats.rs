//! Corpus statistics for BM25: what one index holds for a query's terms, merged across the
//! shards of a collection so each shard scores as one index over all of them would.

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
