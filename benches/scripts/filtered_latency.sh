#!/usr/bin/env bash
# Filtered against unfiltered search through `quiver dev`: time per query of the same 1,000
# queries, and recall@10 of the first TRUTH of them (default 100: the exact searches giving the
# truth scan every point), with no filter and with filters keeping 50%, 10% and 1% of the points, on
# an indexed (sealed) and an unindexed payload field, and a two-field AND.
#
#   benches/scripts/filtered_latency.sh BIN DATA_DIR
#
# BIN is the quiver binary; DATA_DIR holds base.fvecs and query.fvecs (L2). Each point gets the
# payload {"bucket": i*7919 % 100, "shadow": the same, "tier": i*31 % 10}; `bucket` has a
# payload index, `shadow` does not. Truth is the same search with --exact. Times are the wall
# time of one `quiver search --query-file` (SearchBatch calls of 256) divided by the queries.
# Prints one JSON line per filter. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$(realpath "${1:?usage: filtered_latency.sh BIN DATA_DIR}")
DATA=$(realpath "${2:?data dir}")
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export QUIVER_ENDPOINT="http://127.0.0.1:$PORT"
"$BIN" dev --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --rest-listen "127.0.0.1:$((PORT + 1))" \
  >"$WORK/dev.log" 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 600); do
  "$BIN" collection list >/dev/null 2>&1 && break
  sleep 0.1
done
python3 - "$DATA/base.fvecs" "$DATA/query.fvecs" "$WORK" "${TRUTH:-100}" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
d = struct.unpack("<i", raw[:4])[0]
row = 4 * (d + 1)
with open(f"{sys.argv[3]}/points.jsonl", "w") as out:
    for i in range(len(raw) // row):
        v = struct.unpack(f"<{d}f", raw[i * row + 4:(i + 1) * row])
        b = i * 7919 % 100
        out.write(json.dumps({"id": i, "vector": v, "payload": {"bucket": b, "shadow": b, "tier": i * 31 % 10}}) + "\n")
q = open(sys.argv[2], "rb").read()
open(f"{sys.argv[3]}/q.fvecs", "wb").write(q[: 1000 * row])
open(f"{sys.argv[3]}/truth.fvecs", "wb").write(q[: int(sys.argv[4]) * row])
PY
DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$DATA/base.fvecs")
"$BIN" collection create bench --dim "$DIM" --metric l2 --index hnsw --m 16 --ef-construction 200 \
  --payload-index bucket:integer >/dev/null
"$BIN" points import bench --file "$WORK/points.jsonl" --batch-size 256 >/dev/null 2>&1
while :; do
  INFO=$("$BIN" collection info bench 2>/dev/null || true)
  python3 -c '
import json, sys
info = json.loads(sys.argv[1])
building = any(g["state"] == "building" for s in info["shards"] for g in s["segments"])
sys.exit(0 if not building and info["pending_vectors"] == 0 else 1)' "$INFO" 2>/dev/null && break
  sleep 0.2
done
now() { date +%s.%N; }
search() { "$BIN" search bench --top-k 10 --format json "$@"; }
for filter in "" '{"bucket": {"$lt": 50}}' '{"bucket": {"$lt": 10}}' '{"bucket": 42}' \
  '{"shadow": {"$lt": 10}}' '{"shadow": 42}' '{"bucket": {"$lt": 30}, "tier": {"$lt": 5}}'; do
  args=()
  [ -n "$filter" ] && args=(--filter "$filter")
  search --query-file "$WORK/truth.fvecs" "${args[@]}" --exact >"$WORK/truth.jsonl"
  START=$(now)
  search --query-file "$WORK/q.fvecs" "${args[@]}" >"$WORK/hits.jsonl"
  END=$(now)
  python3 - "$WORK/truth.jsonl" "$WORK/hits.jsonl" "$START" "$END" "$filter" <<'PY'
import json, sys
truth = [json.loads(l)["results"] for l in open(sys.argv[1])]
hits = [json.loads(l)["results"] for l in open(sys.argv[2])]
# (zip: the first len(truth) answers)
found = sum(len({h["id"] for h in a} & {t["id"] for t in b}) for a, b in zip(hits, truth))
wanted = sum(len(b) for b in truth)
print(json.dumps({"filter": sys.argv[5] or None, "recall_at_10": round(found / wanted, 4),
                  "us_per_query": round((float(sys.argv[4]) - float(sys.argv[3])) / len(hits) * 1e6, 1)}))
PY
done
