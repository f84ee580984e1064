#!/usr/bin/env bash
# Ingest and search through the gRPC API, on the same data in the same run, for:
#   1. one `quiver dev` process;
#   2. a 3-node cluster, one shard replicated 3 times, clients talking to a node directly;
#   3. the same kind of collection (1 shard x 3 replicas) imported and searched through a
#      `quiver router` (router overhead = 3 vs 2);
#   4. a collection of 3 shards x 3 replicas (shard leaders spread over the nodes), through the
#      router.
# Every cluster write is committed by a majority of its shard's replicas before it is
# acknowledged. Prints one JSON line per setup.
#
#   benches/scripts/cluster_vs_single.sh BIN BASE.fvecs QUERY.fvecs [ROWS]
#
# BIN is the quiver binary. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$1 BASE=$2 QUERY=$3 ROWS=${4:-0}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
DATA=$BASE
if [ "$ROWS" -gt 0 ]; then
  DATA=$WORK/base.fvecs
  head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$DATA"
fi
QUERIES=$WORK/query.fvecs
head -c $(( 1000 * (4 + 4 * DIM) )) "$QUERY" > "$QUERIES"

start() { # name port args...
  local name=$1 port=$2; shift 2
  "$BIN" "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "serving gRPC" "$WORK/$name.log" && return; sleep 0.1; done
  echo "$name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

measure() { # setup endpoint collection [create args...]
  local setup=$1 ep=$2 name=$3; shift 3
  "$BIN" collection create "$name" --dim "$DIM" --metric l2 --m 16 --ef-construction 200 "$@" --endpoint "$ep" > /dev/null
  local out; out=$("$BIN" points import "$name" --file "$DATA" --batch-size 500 --endpoint "$ep")
  local rate; rate=$(echo "$out" | sed -n 's/.*(\([0-9]*\) points\/s).*/\1/p')
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" search "$name" --query-file "$QUERIES" --top-k 10 --ef 64 --format json --endpoint "$ep" > /dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; s,r,a,b=sys.argv[1:]; t=float(b)-float(a); print('{\"setup\":\"%s\",\"ingest_points_per_s\":%s,\"search_qps\":%.0f,\"mean_latency_ms\":%.3f}' % (s, r, 1000/t, t))" "$setup" "$rate" "$t0" "$t1"
}

start dev 0 dev --data-dir "$WORK/dev" --listen 127.0.0.1:7101 --rest-listen 127.0.0.1:0
measure "quiver dev (1 process)" http://127.0.0.1:7101 bench
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

for i in 1 2 3; do
  printf '[node]\ndata_dir = "%s"\nlisten = "127.0.0.1:710%d"\n[cluster]\nnode_id = %d\nbootstrap = false\n' \
    "$WORK/n$i" $((i + 1)) "$i" > "$WORK/n$i.toml"
  start "n$i" $((7101 + i)) serve --config "$WORK/n$i.toml"
done
"$BIN" cluster init --endpoint http://127.0.0.1:7102 > /dev/null
"$BIN" cluster join 127.0.0.1:7103 --endpoint http://127.0.0.1:7102 > /dev/null
"$BIN" cluster join 127.0.0.1:7104 --endpoint http://127.0.0.1:7102 > /dev/null
LEADER=$("$BIN" collection create probe --dim 2 --metric l2 --endpoint http://127.0.0.1:7102 | python3 -c "import json,sys; print(json.load(sys.stdin)['shards'][0]['leader'])")
measure "3 nodes, 1 shard x 3 replicas, direct to the shard leader" "http://127.0.0.1:710$((LEADER + 1))" bench --shards 1 --replication-factor 3
start router 0 router --join 127.0.0.1:7102,127.0.0.1:7103,127.0.0.1:7104 --listen 127.0.0.1:7105
measure "3 nodes, 1 shard x 3 replicas, through the router" http://127.0.0.1:7105 routed --shards 1 --replication-factor 3
measure "3 nodes, 3 shards x 3 replicas, through the router" http://127.0.0.1:7105 sharded --shards 3 --replication-factor 3
