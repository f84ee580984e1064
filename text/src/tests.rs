//! Tests of the directory over a blob store and of the text index on it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use tantivy::directory::{Lock, TerminatingWrite};
use tantivy::Directory;

use super::*;
use crate::directory::CHUNK_BYTES;

fn directory(store: &Arc<MemoryBlobStore>, prefix: &str) -> BlobDirectory {
    let store: Arc<dyn BlobStore> = store.clone();
    BlobDirectory::new(store, prefix.as_bytes())
}

fn write_file(dir: &BlobDirectory, path: &str, data: &[u8]) {
    let mut w = dir.open_write(Path::new(path)).unwrap();
    w.write_all(data).unwrap();
    w.terminate().unwrap();
}

fn read_file(dir: &BlobDirectory, path: &str) -> Vec<u8> {
    dir.open_read(Path::new(path))
        .unwrap()
        .read_bytes()
        .unwrap()
        .as_slice()
        .to_vec()
}

#[test]
fn files_are_kept_in_the_store_in_chunks_and_read_back_by_another_directory() {
    let store = Arc::new(MemoryBlobStore::default());
    let dir = directory(&store, "c1/");
    let big: Vec<u8> = (0..(2 * CHUNK_BYTES + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    write_file(&dir, "seg.idx", &big);
    write_file(&dir, "empty.pos", b"");
    // a file written cannot be written again
    assert!(dir.open_write(Path::new("seg.idx")).is_err());
    // three chunks of the big file and one for the empty one
    assert_eq!(store.scan(b"c1/").unwrap().len(), 4);

    // a directory made afresh on the same store (a restart) reads them from the store
    let reopened = directory(&store, "c1/");
    assert_eq!(read_file(&reopened, "seg.idx"), big);
    assert!(reopened.exists(Path::new("empty.pos")).unwrap());
    assert_eq!(read_file(&reopened, "empty.pos"), b"");
    assert!(!reopened.exists(Path::new("other")).unwrap());
    assert!(reopened.open_read(Path::new("other")).is_err());
    // another prefix is another directory
    assert!(!directory(&store, "c2/")
        .exists(Path::new("seg.idx"))
        .unwrap());

    reopened.delete(Path::new("seg.idx")).unwrap();
    assert!(reopened.delete(Path::new("seg.idx")).is_err());
    assert!(!directory(&store, "c1/")
        .exists(Path::new("seg.idx"))
        .unwrap());
    assert_eq!(store.scan(b"c1/").unwrap().len(), 1);
}

#[test]
fn an_atomic_write_replaces_the_whole_file() {
    let store = Arc::new(MemoryBlobStore::default());
    let dir = directory(&store, "");
    let long = vec![7u8; CHUNK_BYTES * 2 + 1];
    dir.atomic_write(Path::new("meta.json"), &long).unwrap();
    dir.atomic_write(Path::new("meta.json"), b"short").unwrap();
    assert_eq!(dir.atomic_read(Path::new("meta.json")).unwrap(), b"short");
    assert_eq!(
        directory(&store, "")
            .atomic_read(Path::new("meta.json"))
            .unwrap(),
        b"short"
    );
    assert_eq!(store.scan(b"").unwrap().len(), 1);
}

#[test]
fn the_writer_lock_is_held_in_memory_only() {
    let store = Arc::new(MemoryBlobStore::default());
    let dir = directory(&store, "");
    let lock = Lock {
        filepath: ".tantivy-writer.lock".into(),
        is_blocking: false,
    };
    let held = dir.acquire_lock(&lock).unwrap();
    assert!(dir.clone().acquire_lock(&lock).is_err());
    // nothing stored: a process that dies holding it leaves no lock behind
    assert!(store.scan(b"").unwrap().is_empty());
    drop(held);
    dir.acquire_lock(&lock).unwrap();
}

#[test]
fn a_blocking_lock_waits_for_its_holder() {
    let store = Arc::new(MemoryBlobStore::default());
    let dir = directory(&store, "");
    let lock = Lock {
        filepath: "meta.lock".into(),
        is_blocking: true,
    };
    let held = dir.acquire_lock(&lock).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
    });
    let started = std::time::Instant::now();
    dir.acquire_lock(&lock).unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(40));
    releaser.join().unwrap();
}

fn body() -> Vec<TextField> {
    vec![
        TextField {
            name: "title".into(),
            analyzer: Analyzer::Simple,
        },
        TextField {
            name: "body".into(),
            analyzer: Analyzer::English,
        },
    ]
}

fn slots(hits: &[TextHit]) -> Vec<u64> {
    hits.iter().map(|h| h.slot).collect()
}

#[test]
fn an_index_is_searchable_after_a_commit_and_survives_a_reopen() {
    let store = Arc::new(MemoryBlobStore::default());
    let index = TextIndex::open(directory(&store, "t/"), &body()).unwrap();
    index
        .add(
            1,
            &[
                ("title", "Gene expression"),
                ("body", "Cells express genes."),
            ],
        )
        .unwrap();
    index
        .add(2, &[("body", "Mitochondria power the cell")])
        .unwrap();
    index
        .add(3, &[("body", "Error E-404 in the pipeline")])
        .unwrap();
    // not searchable until committed
    assert_eq!(index.docs(), 0);
    index.commit("applied=3").unwrap();
    assert_eq!(index.docs(), 3);

    // stemmed: "cells" finds "cell" and "Cells"
    let hits = index.search("cells", None, 10, None).unwrap();
    assert_eq!(slots(&hits).len(), 2);
    assert!(hits[0].score >= hits[1].score && hits[1].score > 0.0);
    // one field only: the title is not stemmed
    assert_eq!(
        slots(&index.search("genes", Some(&["title"]), 10, None).unwrap()),
        [] as [u64; 0]
    );
    assert_eq!(
        slots(&index.search("gene", Some(&["title"]), 10, None).unwrap()),
        [1]
    );
    assert_eq!(
        slots(&index.search("cells", None, 1, None).unwrap()).len(),
        1
    );

    index.delete(2);
    index.add(4, &[("body", "A cell divides")]).unwrap();
    index.commit("applied=5").unwrap();
    let mut found = slots(&index.search("cell", None, 10, None).unwrap());
    found.sort();
    assert_eq!(found, [1, 4]);
    // added after the last commit: lost with the process, which re-adds from its payload
    index.add(5, &[("body", "cell cell cell")]).unwrap();
    drop(index);

    let reopened = TextIndex::open(directory(&store, "t/"), &body()).unwrap();
    assert_eq!(
        reopened.committed_payload().unwrap().as_deref(),
        Some("applied=5")
    );
    assert_eq!(reopened.docs(), 3);
    let mut found = slots(&reopened.search("cell", None, 10, None).unwrap());
    found.sort();
    assert_eq!(found, [1, 4]);
}

#[test]
fn bad_fields_and_empty_queries_are_refused() {
    let store = Arc::new(MemoryBlobStore::default());
    assert!(matches!(
        TextIndex::open(directory(&store, "a/"), &[]),
        Err(TextError::NoFields)
    ));
    let twice = [body()[0].clone(), body()[0].clone()];
    assert!(matches!(
        TextIndex::open(directory(&store, "b/"), &twice),
        Err(TextError::FieldName(_))
    ));
    let index = TextIndex::open(directory(&store, "c/"), &body()).unwrap();
    assert!(matches!(
        index.add(1, &[("nope", "x")]),
        Err(TextError::UnknownField(f)) if f == "nope"
    ));
    index.commit("").unwrap();
    assert_eq!(index.docs(), 0);
    assert!(matches!(
        index.search("the of and", Some(&["body"]), 10, None),
        Err(TextError::EmptyQuery)
    ));
    assert!(matches!(
        index.search("  ", None, 10, None),
        Err(TextError::EmptyQuery)
    ));
    assert!(matches!(
        index.search("cell", Some(&["nope"]), 10, None),
        Err(TextError::UnknownField(_))
    ));
    // statistics that do not cover the query are refused, not half used
    let mut partial = index.stats("cell gene", None).unwrap();
    assert!(index.search("cell gene", None, 10, Some(&partial)).is_ok());
    assert!(matches!(
        index.search("cell gene mitochondria", None, 10, Some(&partial)),
        Err(TextError::Statistics(s)) if s.contains("mitochondria")
    ));
    partial.docs = 0;
    partial
        .doc_freq
        .get_mut("body")
        .unwrap()
        .insert("cell".into(), 3);
    assert!(matches!(
        index.search("cell", Some(&["body"]), 10, Some(&partial)),
        Err(TextError::Statistics(_))
    ));
    assert!(matches!(
        index.search("cell", None, 10, Some(&CorpusStats::default())),
        Err(TextError::Statistics(_))
    ));
    // an index with other fields is not opened over this one
    let other = [TextField {
        name: "summary".into(),
        analyzer: Analyzer::English,
    }];
    assert!(TextIndex::open(directory(&store, "c/"), &other).is_err());
}

/// A generated corpus: documents of words drawn unevenly from a vocabulary (deterministic).
fn corpus(n: usize) -> Vec<String> {
    let vocabulary: Vec<String> = (0..300).map(|i| format!("w{i}x")).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let len = 5 + (next() % 60) as usize;
            (0..len)
                .map(|_| {
                    // skewed towards the first words, as text is
                    let r = (next() % 10_000) as f64 / 10_000.0;
                    vocabulary[(r * r * r * 300.0) as usize].as_str()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The generated corpus of `n` documents in one index and, dealt round, in four, all committed
/// (with the store they are in).
fn whole_and_four_shards(n: usize) -> (Arc<MemoryBlobStore>, TextIndex, Vec<TextIndex>) {
    let fields = [TextField {
        name: "body".into(),
        analyzer: Analyzer::Simple,
    }];
    let store = Arc::new(MemoryBlobStore::default());
    let whole = TextIndex::open(directory(&store, "whole/"), &fields).unwrap();
    let shards: Vec<TextIndex> = (0..4)
        .map(|s| TextIndex::open(directory(&store, &format!("shard{s}/")), &fields).unwrap())
        .collect();
    for (i, doc) in corpus(n).iter().enumerate() {
        whole.add(i as u64, &[("body", doc)]).unwrap();
        shards[i % 4].add(i as u64, &[("body", doc)]).unwrap();
    }
    whole.commit("").unwrap();
    shards.iter().for_each(|s| s.commit("").unwrap());
    (store, whole, shards)
}

#[test]
fn shards_scored_with_merged_statistics_rank_as_one_index() {
    let (_store, whole, shards) = whole_and_four_shards(800);
    let mut differ_locally = 0;
    for query in [
        "w3x w40x",
        "w120x",
        "w7x w8x w250x",
        "w0x w1x w2x w299x",
        "w60x w61x",
    ] {
        let expected = whole.search(query, None, 10, None).unwrap();
        assert_eq!(expected.len(), 10, "{query}");
        let mut merged = CorpusStats::default();
        for shard in &shards {
            merged.merge(&shard.stats(query, None).unwrap());
        }
        assert_eq!(merged, whole.stats(query, None).unwrap());
        let fused = |stats: Option<&CorpusStats>| {
            let mut all: Vec<TextHit> = shards
                .iter()
                .flat_map(|s| s.search(query, None, 10, stats).unwrap())
                .collect();
            all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slot.cmp(&b.slot)));
            all.truncate(10);
            all
        };
        let got = fused(Some(&merged));
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g.score - e.score).abs() < 1e-4,
                "{query}: {got:?} vs {expected:?}"
            );
        }
        // the same order wherever scores are not tied
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let tied = |j: usize| (expected[j].score - e.score).abs() < 1e-4;
            let alone = (i == 0 || !tied(i - 1)) && (i + 1 == expected.len() || !tied(i + 1));
            if alone {
                assert_eq!(g.slot, e.slot, "{query} at {i}");
            }
        }
        let local = fused(None);
        if local
            .iter()
            .zip(&expected)
            .any(|(l, e)| (l.score - e.score).abs() > 1e-3)
        {
            differ_locally += 1;
        }
    }
    // (each shard's own statistics would not do)
    assert!(differ_locally > 0);
}

fn accept_all() -> Arc<dyn Fn(u64) -> bool + Send + Sync> {
    Arc::new(|_| true)
}

#[test]
fn matches_scored_with_merged_statistics_are_tantivy_scores_of_one_index() {
    let (_store, whole, shards) = whole_and_four_shards(800);
    for query in ["w3x w40x", "w120x", "w7x w8x w250x", "w0x w1x w2x w299x"] {
        let expected = whole.search(query, None, 10, None).unwrap();
        // one index: bm25 over its own matches is tantivy's score, in tantivy's order
        let own = whole.matches(query, None, 10, accept_all()).unwrap();
        assert_eq!(own.matches.len(), 10);
        for (m, e) in own.matches.iter().zip(&expected) {
            assert_eq!(m.slot, e.slot, "{query}");
            let score = bm25(&own.stats, &own.terms, m);
            assert!(
                (score - e.score).abs() < 1e-5,
                "{query}: {score} vs {}",
                e.score
            );
        }
        // four shards, one round trip each: their statistics merged, their matches rescored
        let answers: Vec<TextMatches> = shards
            .iter()
            .map(|s| s.matches(query, None, 30, accept_all()).unwrap())
            .collect();
        let mut merged = CorpusStats::default();
        answers.iter().for_each(|a| merged.merge(&a.stats));
        let mut scored: Vec<(u64, f32)> = answers
            .iter()
            .flat_map(|a| {
                let merged = &merged;
                a.matches
                    .iter()
                    .map(move |m| (m.slot, bm25(merged, &a.terms, m)))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for ((slot, score), e) in scored.iter().zip(&expected) {
            assert!((score - e.score).abs() < 1e-4, "{query}: {scored:?}");
            let tied = expected
                .iter()
                .filter(|x| (x.score - e.score).abs() < 1e-4)
                .count();
            if tied == 1 {
                assert_eq!(*slot, e.slot, "{query}");
            }
        }
    }
    // only what `accept` takes
    let even = whole
        .matches("w3x w40x", None, 10, Arc::new(|slot| slot % 2 == 0))
        .unwrap();
    assert_eq!(even.matches.len(), 10);
    assert!(even.matches.iter().all(|m| m.slot % 2 == 0));
}

#[test]
fn slots_are_what_is_committed_and_a_closed_index_writes_nothing() {
    let store = Arc::new(MemoryBlobStore::default());
    let index = TextIndex::open(directory(&store, "t/"), &body()).unwrap();
    for slot in 0..5 {
        index.add(slot, &[("body", "some cells")]).unwrap();
    }
    index.commit("").unwrap();
    index.delete(3);
    index.add(9, &[("body", "more cells")]).unwrap();
    let mut slots = index.slots().unwrap();
    slots.sort();
    assert_eq!(slots, [0, 1, 2, 3, 4]);
    index.commit("").unwrap();
    let mut slots = index.slots().unwrap();
    slots.sort();
    assert_eq!(slots, [0, 1, 2, 4, 9]);

    index.add(10, &[("body", "lost cells")]).unwrap();
    index.close();
    let bytes = store.bytes();
    assert!(matches!(
        index.add(11, &[("body", "x")]),
        Err(TextError::Closed)
    ));
    assert!(matches!(index.commit(""), Err(TextError::Closed)));
    index.delete(0);
    assert_eq!(store.bytes(), bytes);
    // searches go on over what was committed
    assert_eq!(index.search("cells", None, 10, None).unwrap().len(), 5);
}
