#!/usr/bin/env bash
# The router's overhead on search: a 3-node cluster, one collection of 1 shard x 3 replicas,
# searched one request at a time through the CLI, alternately at the shard leader's own front
# (in-process shard calls) and through a `quiver router` (one more gRPC hop), REPEATS times
# each, so drift of the machine hits both alike. Prints one JSON line per run and a summary with
# the medians and the overhead.
#
#   benches/scripts/router_overhead.sh BIN BASE.fvecs QUERY.fvecs [ROWS] [REPEATS]
#
# BIN is the quiver binary. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$1 BASE=$2 QUERY=$3 ROWS=${4:-20000} REPEATS=${5:-7}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$WORK/base.fvecs"
head -c $(( 1000 * (4 + 4 * DIM) )) "$QUERY" > "$WORK/query.fvecs"

start() { # name args...
  local name=$1; shift
  "$BIN" "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "serving gRPC" "$WORK/$name.log" && return; sleep 0.1; done
  echo "$name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

for i in 1 2 3; do
  printf '[node]\ndata_dir = "%s"\nlisten = "127.0.0.1:720%d"\n[cluster]\nnode_id = %d\nbootstrap = false\n' \
    "$WORK/n$i" "$i" "$i" > "$WORK/n$i.toml"
  start "n$i" serve --config "$WORK/n$i.toml"
done
"$BIN" cluster init --endpoint http://127.0.0.1:7201 > /dev/null
"$BIN" cluster join 127.0.0.1:7202 --endpoint http://127.0.0.1:7201 > /dev/null
"$BIN" cluster join 127.0.0.1:7203 --endpoint http://127.0.0.1:7201 > /dev/null
start router router --join 127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203 --listen 127.0.0.1:7204
LEADER=$("$BIN" collection create bench --dim "$DIM" --metric l2 --m 16 --ef-construction 200 \
  --shards 1 --replication-factor 3 --endpoint http://127.0.0.1:7201 \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['shards'][0]['leader'])")
"$BIN" points import bench --file "$WORK/base.fvecs" --batch-size 500 --endpoint http://127.0.0.1:7201 > /dev/null

search() { # endpoint -> seconds for the 1,000 queries
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" search bench --query-file "$WORK/query.fvecs" --top-k 10 --ef 64 --format json --endpoint "$1" > /dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$t1"
}

DIRECT=http://127.0.0.1:720$LEADER ROUTED=http://127.0.0.1:7204
search "$DIRECT" > /dev/null; search "$ROUTED" > /dev/null   # warm-up
for r in $(seq "$REPEATS"); do
  d=$(search "$DIRECT"); t=$(search "$ROUTED")
  echo "{\"run\":$r,\"direct_ms_per_search\":$(python3 -c "print(round($d, 4))"),\"router_ms_per_search\":$(python3 -c "print(round($t, 4))")}"
  echo "$d $t" >> "$WORK/runs"
done
python3 - "$WORK/runs" <<'PY'
import json, statistics, sys
runs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
d = statistics.median(r[0] for r in runs); t = statistics.median(r[1] for r in runs)
ratios = statistics.median(r[1] / r[0] for r in runs)
print(json.dumps({"direct_median_ms": round(d, 3), "router_median_ms": round(t, 3),
                  "overhead_ms": round(t - d, 3), "overhead_pct": round(100 * (t - d) / d, 1),
                  "router_over_direct_median_of_pairs": round(ratios, 3)}))
PY
