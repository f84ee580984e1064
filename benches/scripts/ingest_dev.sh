#!/usr/bin/env bash
# Ingest through `quiver dev` over gRPC, one client: how long until every point is acknowledged,
# and until the optimizer has indexed them, then recall@10 of the collection's HNSW searches.
#
#   benches/scripts/ingest_dev.sh BIN DATA_DIR [BATCH] [--nodes N]
#
# BIN is the quiver binary; DATA_DIR holds base.fvecs, query.fvecs and groundtruth.ivecs (L2).
# `quiver points import --batch-size BATCH` (default 256) keeps PARALLEL batches in flight (default
# 4, the CLI's default; PARALLEL=1 sends them one after another);
# "indexed" is when `collection info` shows no segment building and fewer points pending than
# storage.segment_seal_points (10,000: those stay in the appendable segment, searched exactly).
# Recall is measured over the first 1,000 queries (`quiver search --query-file`, SearchBatch),
# and how long those searches took. QUANTIZATION=int8|fp16 creates a quantized collection (its
# searches rescore from the stored vectors). Prints one JSON line. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$(realpath "${1:?usage: ingest_dev.sh BIN DATA_DIR [BATCH] [--nodes N]}")
DATA=$(realpath "${2:?data dir}")
BATCH=${3:-256}
shift $(( $# >= 3 ? 3 : 2 ))
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export QUIVER_ENDPOINT="http://127.0.0.1:$PORT"
"$BIN" dev --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --rest-listen "127.0.0.1:$((PORT + 1))" "$@" \
  >"$WORK/dev.log" 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 600); do
  "$BIN" collection list >/dev/null 2>&1 && break
  sleep 0.1
done
DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$DATA/base.fvecs")
"$BIN" collection create bench --dim "$DIM" --metric l2 --index hnsw --m 16 --ef-construction 200 \
  --quantization "${QUANTIZATION:-none}" >/dev/null
now() { date +%s.%N; }
START=$(now)
"$BIN" points import bench --file "$DATA/base.fvecs" --batch-size "$BATCH" --parallel "${PARALLEL:-4}" >/dev/null 2>&1
ACKED=$(now)
while :; do
  INFO=$("$BIN" collection info bench 2>/dev/null || true)
  python3 -c '
import json, sys
info = json.loads(sys.argv[1])
building = any(g["state"] == "building" for s in info["shards"] for g in s["segments"])
sys.exit(0 if not building and info["pending_vectors"] < 10000 else 1)' "$INFO" 2>/dev/null && break
  sleep 0.05
done
INDEXED=$(now)
python3 - "$DATA/query.fvecs" "$WORK/q.fvecs" <<'PY'
import sys
raw = open(sys.argv[1], "rb").read()
d = int.from_bytes(raw[:4], "little")
open(sys.argv[2], "wb").write(raw[: 1000 * 4 * (d + 1)])
PY
SEARCH_START=$(now)
"$BIN" search bench --query-file "$WORK/q.fvecs" --top-k 10 --format json >"$WORK/hits.jsonl"
SEARCHED=$(now)
python3 - "$DATA/groundtruth.ivecs" "$WORK/hits.jsonl" "$START" "$ACKED" "$INDEXED" "$INFO" \
  "$SEARCH_START" "$SEARCHED" <<'PY'
import json, struct, sys
gt_raw = open(sys.argv[1], "rb").read()
k = struct.unpack("<i", gt_raw[:4])[0]
hits = [json.loads(l)["results"] for l in open(sys.argv[2])]
found = 0
for i, h in enumerate(hits):
    row = struct.unpack(f"<{k}i", gt_raw[i * 4 * (k + 1) + 4:(i + 1) * 4 * (k + 1)])[:10]
    found += len({r["id"] for r in h} & set(row))
start, acked, indexed = map(float, sys.argv[3:6])
info = json.loads(sys.argv[6])
search_s = float(sys.argv[8]) - float(sys.argv[7])
n = info["points"]
sealed = [g for s in info["shards"] for g in s["segments"] if g["state"] == "sealed"]
print(json.dumps({"points": n, "quantization": info.get("quantization"),
                  "acked_s": round(acked - start, 2),
                  "acked_points_per_s": round(n / (acked - start)),
                  "indexed_s": round(indexed - start, 2),
                  "pending_after": info["pending_vectors"],
                  "sealed_mib": round(sum(g["memory_bytes"] for g in sealed) / 2**20, 1),
                  "bytes_per_vector": sorted({g["bytes_per_vector"] for g in sealed}),
                  "recall_at_10": round(found / (10 * len(hits)), 4),
                  "searches_per_s": round(len(hits) / search_s)}))
PY
