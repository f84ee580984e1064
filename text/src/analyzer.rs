//! The analyzers a text field may declare, as tantivy tokenizer chains.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    WhitespaceTokenizer,
};

/// Tokens of this many bytes or more are dropped (encoded blobs, not words).
const TOKEN_LIMIT_BYTES: usize = 40;

/// How a text field's text becomes terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Analyzer {
    /// Words (split on anything not alphanumeric), lowercased, English stop words removed,
    /// stemmed (Snowball English).
    #[default]
    English,
    /// Words, lowercased.
    Simple,
    /// Whatever whitespace separates, as written (case kept): codes, SKUs, identifiers.
    Whitespace,
}

impl Analyzer {
    pub const ALL: [Analyzer; 3] = [Analyzer::English, Analyzer::Simple, Analyzer::Whitespace];

    /// Its name, as configured and as registered with tantivy.
    pub fn name(self) -> &'static str {
        match self {
            Analyzer::English => "english",
            Analyzer::Simple => "simple",
            Analyzer::Whitespace => "whitespace",
        }
    }

    /// The tokenizer chain.
    pub fn text_analyzer(self) -> TextAnalyzer {
        match self {
            Analyzer::English => TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(TOKEN_LIMIT_BYTES))
                .filter(LowerCaser)
                .filter(StopWordFilter::new(Language::English).expect("English stop words"))
                .filter(Stemmer::new(Language::English))
                .build(),
            Analyzer::Simple => TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(TOKEN_LIMIT_BYTES))
                .filter(LowerCaser)
                .build(),
            Analyzer::Whitespace => TextAnalyzer::builder(WhitespaceTokenizer::default())
                .filter(RemoveLongFilter::limit(TOKEN_LIMIT_BYTES))
                .build(),
        }
    }

    /// The terms of `text`, in order (repeats kept). (Builds the chain each call: an index keeps
    /// its analyzers built.)
    pub fn terms(self, text: &str) -> Vec<String> {
        tokens(&mut self.text_analyzer(), text)
    }
}

/// The terms `analyzer` makes of `text`, in order.
pub(crate) fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while let Some(token) = stream.next() {
        terms.push(token.text.clone());
    }
    terms
}

impl fmt::Display for Analyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Analyzer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Analyzer::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown analyzer {s:?} (english, simple or whitespace)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_analyzer_makes_the_terms_it_says() {
        let text = "The Mitochondria are RUNNING; error E-404 at SKU-17b";
        assert_eq!(
            Analyzer::English.terms(text),
            ["mitochondria", "run", "error", "e", "404", "sku", "17b"]
        );
        assert_eq!(
            Analyzer::Simple.terms(text),
            [
                "the",
                "mitochondria",
                "are",
                "running",
                "error",
                "e",
                "404",
                "at",
                "sku",
                "17b"
            ]
        );
        assert_eq!(
            Analyzer::Whitespace.terms(text),
            [
                "The",
                "Mitochondria",
                "are",
                "RUNNING;",
                "error",
                "E-404",
                "at",
                "SKU-17b"
            ]
        );
        assert!(Analyzer::English.terms(&"x".repeat(41)).is_empty());
    }

    #[test]
    fn analyzers_are_named_as_configured() {
        for a in Analyzer::ALL {
            assert_eq!(a.name().parse::<Analyzer>(), Ok(a));
        }
        assert!("klingon"
            .parse::<Analyzer>()
            .unwrap_err()
            .contains("klingon"));
    }
}
