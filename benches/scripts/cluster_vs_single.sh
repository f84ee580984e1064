#!/usr/bin/env bash
# Ingest and search through the gRPC API: one `quiver dev` process against a 3-node cluster
# (replication factor 3: every write is committed by a majority before it is acknowledged), on
# the same data, in the same run. Prints one JSON line per setup.
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

measure() { # setup endpoint
  local setup=$1 ep=$2
  "$BIN" collection create bench --dim "$DIM" --metric l2 --m 16 --ef-construction 200 --endpoint "$ep" > /dev/null
  local out; out=$("$BIN" points import bench --file "$DATA" --batch-size 500 --endpoint "$ep")
  local rate; rate=$(echo "$out" | sed -n 's/.*(\([0-9]*\) points\/s).*/\1/p')
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" search bench --query-file "$QUERIES" --top-k 10 --ef 64 --format json --endpoint "$ep" > /dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; s,r,a,b=sys.argv[1:]; print('{\"setup\":\"%s\",\"ingest_points_per_s\":%s,\"search_qps\":%.0f}' % (s, r, 1000/(float(b)-float(a))))" "$setup" "$rate" "$t0" "$t1"
}

start dev 0 dev --data-dir "$WORK/dev" --listen 127.0.0.1:7101
measure "quiver dev (1 process)" http://127.0.0.1:7101
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

for i in 1 2 3; do
  printf '[node]\ndata_dir = "%s"\nlisten = "127.0.0.1:710%d"\n[cluster]\nnode_id = %d\nbootstrap = false\n' \
    "$WORK/n$i" $((i + 1)) "$i" > "$WORK/n$i.toml"
  start "n$i" $((7101 + i)) serve --config "$WORK/n$i.toml"
done
"$BIN" cluster init --endpoint http://127.0.0.1:7102 > /dev/null
"$BIN" cluster join 127.0.0.1:7103 --endpoint http://127.0.0.1:7102 > /dev/null
"$BIN" cluster join 127.0.0.1:7104 --endpoint http://127.0.0.1:7102 > /dev/null
measure "3-node cluster, replication 3 (leader)" http://127.0.0.1:7102
