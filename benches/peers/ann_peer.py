#!/usr/bin/env python3
"""The peers of quiver-bench (faiss, hnswlib): the same files, settings and JSON line schema.

  ann_peer.py --peer faiss|hnswlib --base B.fvecs --query Q.fvecs --gt G.ivecs \
      --metric l2|cosine|dot --index flat|hnsw [--m 16 --ef-construction 200] \
      --ef 16,32,64,128 [--threads 1] [--build-threads 2] [--limit-queries N] --json

Measured like quiver-bench: one build (faiss IndexHNSWFlat with efConstruction, or IndexFlatL2 /
IndexFlatIP; hnswlib's Index with M and ef_construction), `--build-threads` threads while
building; then for each ef an unmeasured warm-up over the first 100 queries and one pass in which
every query is its own search call of one row, timed with perf_counter, on `--threads` threads
(default 1). QPS is queries over the pass's wall time; it includes the per-call Python overhead
(a few microseconds). So each row also carries `batch_qps`: the QPS of one call with every query,
on the same threads — the library's own speed, without Python in between.

index_bytes is the size of the serialised index (vectors + graph links), the closest analogue of
an in-memory footprint. Needs numpy and faiss-cpu or hnswlib.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

K = 10
WARMUP_QUERIES = 100


def read_vecs(path: str, dtype) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        sys.exit(f"{path}: no rows")
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        sys.exit(f"{path}: not a texmex file of dimension {d}")
    rows = raw.reshape(-1, d + 1)
    if not np.all(rows[:, 0] == d):
        sys.exit(f"{path}: mixed dimensions")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        sys.exit("zero vector cannot be used with metric cosine")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def measure(search, queries: np.ndarray, gt: np.ndarray) -> dict:
    """`search(rows)` returns the ids of the K nearest of each row."""
    for q in queries[:WARMUP_QUERIES]:
        search(q[None, :])
    lat = np.empty(len(queries))
    found = np.empty((len(queries), K), dtype=np.int64)
    started = time.perf_counter()
    for i in range(len(queries)):
        t = time.perf_counter()
        ids = search(queries[i:i + 1])
        lat[i] = time.perf_counter() - t
        found[i] = ids[0]
    wall = time.perf_counter() - started
    recall = np.mean([len(np.intersect1d(found[i], gt[i, :K])) / K for i in range(len(queries))])
    t = time.perf_counter()
    search(queries)
    batch_qps = len(queries) / (time.perf_counter() - t)
    lat_sorted = np.sort(lat)

    def pct(p: float) -> float:
        rank = max(1, int(np.ceil(p / 100 * len(lat_sorted))))
        return float(lat_sorted[rank - 1] * 1e6)

    return {"recall": float(recall), "qps": len(queries) / wall, "p50": pct(50), "p99": pct(99),
            "batch_qps": batch_qps}


def row(peer: str, index: str, params: dict, m: dict, build_s: float, index_bytes: int) -> dict:
    return {"engine": peer, "index": index, "params": params, "recall_at_10": round(m["recall"], 4),
            "qps": round(m["qps"], 1), "batch_qps": round(m["batch_qps"], 1),
            "p50_us": round(m["p50"], 1), "p99_us": round(m["p99"], 1),
            "build_s": round(build_s, 3), "index_bytes": int(index_bytes)}


def build_faiss(args, base: np.ndarray):
    import faiss
    d = base.shape[1]
    faiss_metric = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    faiss.omp_set_num_threads(args.build_threads)
    if args.index == "flat":
        index = faiss.IndexFlatL2(d) if args.metric == "l2" else faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, args.m, faiss_metric)
        index.hnsw.efConstruction = args.ef_construction
    index.add(base)
    faiss.omp_set_num_threads(args.threads)

    def set_ef(ef: int) -> None:
        index.hnsw.efSearch = ef

    def search(rows: np.ndarray) -> np.ndarray:
        return index.search(rows, K)[1]

    return search, set_ef, lambda: faiss.serialize_index(index).nbytes, f"faiss {faiss.__version__}"


def build_hnswlib(args, base: np.ndarray):
    import hnswlib
    if args.index != "hnsw":
        sys.exit("hnswlib has no flat index here: use --peer faiss for --index flat")
    index = hnswlib.Index(space="l2" if args.metric == "l2" else "ip", dim=base.shape[1])
    index.init_index(max_elements=len(base), ef_construction=args.ef_construction, M=args.m,
                     random_seed=100)
    index.set_num_threads(args.build_threads)
    index.add_items(base, np.arange(len(base)))
    index.set_num_threads(args.threads)

    def search(rows: np.ndarray) -> np.ndarray:
        return index.knn_query(rows, k=K)[0]

    return search, index.set_ef, index.index_file_size, f"hnswlib {getattr(hnswlib, '__version__', '0.8.0')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=["faiss", "hnswlib"], required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--metric", choices=["l2", "cosine", "dot"], required=True)
    ap.add_argument("--index", choices=["flat", "hnsw"], required=True)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128")
    ap.add_argument("--threads", type=int, default=1, help="search threads")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--limit-queries", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    base = read_vecs(args.base, np.float32)
    queries = read_vecs(args.query, np.float32)
    gt = read_vecs(args.gt, np.int32)
    if queries.shape[1] != base.shape[1]:
        sys.exit(f"dimension mismatch: base has {base.shape[1]}, query has {queries.shape[1]}")
    if args.limit_queries:
        queries = queries[:args.limit_queries]
    if len(gt) < len(queries) or gt.shape[1] < K:
        sys.exit(f"ground truth is {gt.shape[0]} x {gt.shape[1]}, need {len(queries)} x {K}")
    gt = gt[:len(queries)]
    if args.metric == "cosine":
        base, queries = normalise(base), normalise(queries)

    rss_before = rss_bytes()
    started = time.perf_counter()
    build = build_faiss if args.peer == "faiss" else build_hnswlib
    search, set_ef, index_bytes, version = build(args, base)
    build_s = time.perf_counter() - started
    grew = (rss_bytes() - rss_before) / 2**20
    print(f"{version}: base {len(base)} x {base.shape[1]}, {len(queries)} queries, metric "
          f"{args.metric}, {args.index} built in {build_s:.2f} s on {args.build_threads} thread(s), "
          f"resident memory grew {grew:.1f} MiB; {args.threads} search thread(s)", file=sys.stderr)
    size = index_bytes()

    rows = []
    if args.index == "flat":
        rows.append(row(args.peer, "flat", {}, measure(search, queries, gt), build_s, size))
    else:
        for ef in [int(x) for x in args.ef.split(",")]:
            set_ef(ef)
            params = {"m": args.m, "ef_construction": args.ef_construction, "ef": ef}
            rows.append(row(args.peer, "hnsw", params, measure(search, queries, gt), build_s, size))

    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            p = " ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            print(f"{r['engine']:<8} {r['index']:<6} {p:<28} recall@10 {r['recall_at_10']:.4f}  "
                  f"qps {r['qps']:>9.1f} (batch {r['batch_qps']:>9.1f})  "
                  f"p50 {r['p50_us']:>8.1f} us  p99 {r['p99_us']:>8.1f} us  build {r['build_s']:.3f} s  "
                  f"{r['index_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
