#!/usr/bin/env bash
# Search latency when one node leads several shards of a collection: `quiver dev --nodes 3`
# (three node processes behind a router), collections of 1, 3 and 6 shards x 3 replicas (with 6,
# every node leads two shards), each searched one request at a time through the router with
# `quiver-search-latency`, from the shard leaders and from any replica. Every BIN given runs the
# same steps in the same run, so a before/after pair is compared on one machine state. Prints one
# JSON line per (binary, shards, consistency).
#
#   benches/scripts/shard_spread.sh LATENCY_BIN BASE.fvecs QUERY.fvecs ROWS BIN [BIN...]
#
# LATENCY_BIN is quiver-search-latency; each BIN a quiver binary. Everything listens on 127.0.0.1
# and is stopped at the end.
set -euo pipefail
LATENCY=$1 BASE=$2 QUERY=$3 ROWS=$4; shift 4
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$WORK/base.fvecs"
head -c $(( 1000 * (4 + 4 * DIM) )) "$QUERY" > "$WORK/query.fvecs"
ENDPOINT=http://127.0.0.1:7304

for BIN in "$@"; do
  rm -rf "$WORK/data"
  "$BIN" dev --nodes 3 --data-dir "$WORK/data" --listen 127.0.0.1:7304 --rest-listen 127.0.0.1:0 > "$WORK/dev.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do grep -q "local cluster ready" "$WORK/dev.log" && break; sleep 0.1; done
  grep -q "local cluster ready" "$WORK/dev.log" || { echo "dev did not start" >&2; tail "$WORK/dev.log" >&2; exit 1; }
  for SHARDS in 1 3 6; do
    "$BIN" collection create "s$SHARDS" --dim "$DIM" --metric l2 --shards "$SHARDS" \
      --replication-factor 3 --endpoint "$ENDPOINT" > /dev/null
    "$BIN" points import "s$SHARDS" --file "$WORK/base.fvecs" --batch-size 500 --endpoint "$ENDPOINT" > /dev/null
    for ANY in "" --any-replica; do
      "$LATENCY" --endpoint "$ENDPOINT" --collection "s$SHARDS" --query "$WORK/query.fvecs" \
        --queries 1000 $ANY --label "$BIN shards=$SHARDS ${ANY:---leader}"
    done
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
