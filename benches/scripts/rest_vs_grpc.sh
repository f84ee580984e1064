#!/usr/bin/env bash
# The REST API's cost per search against gRPC's: one `quiver dev` process, one collection, the
# same 1,000 queries sent one at a time by `quiver-search-latency` over gRPC and over REST
# (`POST /collections/NAME/points/search`, one kept-alive HTTP/1.1 connection), alternating
# REPEATS times so drift hits both alike. Prints one JSON line per run.
#
#   benches/scripts/rest_vs_grpc.sh BIN LATENCY_BIN BASE.fvecs QUERY.fvecs [ROWS] [REPEATS]
#
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$1 LATENCY=$2 BASE=$3 QUERY=$4 ROWS=${5:-20000} REPEATS=${6:-3}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$WORK/base.fvecs"
head -c $(( 1000 * (4 + 4 * DIM) )) "$QUERY" > "$WORK/query.fvecs"
"$BIN" dev --data-dir "$WORK/data" --listen 127.0.0.1:7401 --rest-listen 127.0.0.1:7402 > "$WORK/dev.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "REST API" "$WORK/dev.log" && break; sleep 0.1; done
"$BIN" collection create bench --dim "$DIM" --metric l2 --endpoint 127.0.0.1:7401 > /dev/null
"$BIN" points import bench --file "$WORK/base.fvecs" --endpoint 127.0.0.1:7401 > /dev/null
for r in $(seq "$REPEATS"); do
  "$LATENCY" --endpoint http://127.0.0.1:7401 --collection bench --query "$WORK/query.fvecs" --label "grpc run $r"
  "$LATENCY" --rest 127.0.0.1:7402 --collection bench --query "$WORK/query.fvecs" --label "rest run $r"
done
