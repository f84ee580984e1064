#!/usr/bin/env python3
"""One table from the JSON lines of quiver-bench and ann_peer.py runs (read from stdin or files).

Rows are grouped by setting (index, ef); each engine gets its recall, QPS (one call per query),
batch QPS (the peers' library speed without per-call Python overhead), p50/p99, build time and
size, and quiver's ratios against each peer: QPS against the peer's batch QPS (the stricter of the
two), build time and size as quiver / peer. Standard library only.
"""
from __future__ import annotations

import fileinput
import json

rows = [json.loads(line) for line in fileinput.input() if line.strip().startswith("{")]
print("| engine | index | ef | recall@10 | QPS | batch QPS | p50 µs | p99 µs | build s | MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ef = r["params"].get("ef", "-")
    print(f"| {r['engine']} | {r['index']} | {ef} | {r['recall_at_10']:.4f} | {r['qps']:,.0f} | "
          f"{r['batch_qps']:,.0f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['build_s']:.2f} | "
          f"{r['index_bytes'] / 2**20:.1f} |")

quiver = {(r["index"], r["params"].get("ef")): r for r in rows if r["engine"] == "quiver"}
peers = [r for r in rows if r["engine"] != "quiver"]
if quiver and peers:
    print()
    print("| vs | index | ef | recall quiver / peer | QPS quiver / peer batch | build | size |")
    print("|---|---|---:|---|---:|---:|---:|")
    for p in peers:
        q = quiver.get((p["index"], p["params"].get("ef")))
        if q is None:
            continue
        print(f"| {p['engine']} | {p['index']} | {p['params'].get('ef', '-')} | "
              f"{q['recall_at_10']:.4f} / {p['recall_at_10']:.4f} | "
              f"{q['qps'] / p['batch_qps']:.2f}× | {q['build_s'] / p['build_s']:.2f}× | "
              f"{q['index_bytes'] / max(p['index_bytes'], 1):.2f}× |")
