#!/usr/bin/env python3
"""One table from the JSON lines of quiver-bench and ann_peer.py runs (read from stdin or files).

Rows of the same engine and setting (index, ef) from several rounds are folded into their
median (recall, QPS, batch QPS, p50/p99, build time; the number of rounds is shown). Then
quiver's ratios against each peer at equal ef: QPS against the peer's batch QPS (its library's
speed without per-call Python overhead, the stricter comparison), build time and size as
quiver / peer. Standard library only.
"""
from __future__ import annotations

import fileinput
import json
import statistics
from collections import defaultdict

groups: dict[tuple, list[dict]] = defaultdict(list)
for line in fileinput.input():
    if line.strip().startswith("{"):
        r = json.loads(line)
        groups[(r["engine"], r["index"], r["params"].get("ef"))].append(r)

FIELDS = ["recall_at_10", "qps", "batch_qps", "p50_us", "p99_us", "build_s", "index_bytes"]
rows = []
for (engine, index, ef), runs in groups.items():
    row = {"engine": engine, "index": index, "ef": ef, "rounds": len(runs)}
    row.update({f: statistics.median(r[f] for r in runs) for f in FIELDS})
    rows.append(row)

print("| engine | index | ef | rounds | recall@10 | QPS | batch QPS | p50 µs | p99 µs | build s | MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['engine']} | {r['index']} | {r['ef'] if r['ef'] is not None else '-'} | {r['rounds']} | "
          f"{r['recall_at_10']:.4f} | {r['qps']:,.0f} | {r['batch_qps']:,.0f} | {r['p50_us']:.1f} | "
          f"{r['p99_us']:.1f} | {r['build_s']:.2f} | {r['index_bytes'] / 2**20:.1f} |")

quiver = {(r["index"], r["ef"]): r for r in rows if r["engine"] == "quiver"}
peers = [r for r in rows if r["engine"] != "quiver"]
if quiver and peers:
    print()
    print("| vs | index | ef | recall quiver / peer | QPS quiver / peer batch | build | size |")
    print("|---|---|---:|---|---:|---:|---:|")
    for p in peers:
        q = quiver.get((p["index"], p["ef"]))
        if q is None:
            continue
        print(f"| {p['engine']} | {p['index']} | {p['ef'] if p['ef'] is not None else '-'} | "
              f"{q['recall_at_10']:.4f} / {p['recall_at_10']:.4f} | "
              f"{q['qps'] / p['batch_qps']:.2f}× | {q['build_s'] / p['build_s']:.2f}× | "
              f"{q['index_bytes'] / max(p['index_bytes'], 1):.2f}× |")
