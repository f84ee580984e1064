#!/usr/bin/env bash
# Memory and graph size when the same points are imported again and again: `quiver dev` (one
# process), an HNSW collection, ROWS rows of BASE imported ROUNDS times with the same ids (row
# numbers), so every round replaces every point. After each round, and once more after a pause
# for background work, prints the collection's live and indexed points and the process's resident
# memory. Every BIN given runs the same steps in the same run. One JSON line per (binary, round).
#
#   benches/scripts/reupsert_growth.sh BASE.fvecs ROWS ROUNDS BIN [BIN...]
#
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BASE=$1 ROWS=$2 ROUNDS=$3; shift 3
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$WORK/base.fvecs"
ENDPOINT=http://127.0.0.1:7314

report() { # BIN ROUND
  local info rss
  info=$("$1" collection info g --endpoint "$ENDPOINT")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  python3 -c 'import json,sys; i=json.loads(sys.argv[1]); print(json.dumps({"bin": sys.argv[2], "round": sys.argv[3], "points": i["points"], "indexed_vectors": i["indexed_vectors"], "rss_mb": round(int(sys.argv[4]) / 1024)}))' "$info" "$1" "$2" "$rss"
}

for BIN in "$@"; do
  rm -rf "$WORK/data"
  "$BIN" dev --data-dir "$WORK/data" --listen 127.0.0.1:7314 --rest-listen 127.0.0.1:0 > "$WORK/dev.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do grep -q "serving gRPC" "$WORK/dev.log" && break; sleep 0.1; done
  "$BIN" collection create g --dim "$DIM" --metric l2 --index hnsw --endpoint "$ENDPOINT" > /dev/null
  for ROUND in $(seq "$ROUNDS"); do
    "$BIN" points import g --file "$WORK/base.fvecs" --batch-size 500 --endpoint "$ENDPOINT" > /dev/null
    report "$BIN" "$ROUND"
  done
  sleep 15
  report "$BIN" "after 15 s"
  { grep -c "graph rebuilt" "$WORK/dev.log" || true; } | sed 's/^/graph rebuilds: /' >&2
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
