#!/usr/bin/env bash
# A collection snapshot's round trip: `quiver dev` (one process), a collection of ROWS rows of
# BASE in SHARDS shards, then the seconds each step takes: import (for scale), snapshot create,
# download, restore into a new collection; and the file's size. One JSON line per run.
#
#   benches/scripts/snapshot_round_trip.sh BIN BASE.fvecs ROWS SHARDS [RUNS]
#
# Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$1 BASE=$2 ROWS=$3 SHARDS=$4 RUNS=${5:-3}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$WORK/base.fvecs"
E=(--endpoint http://127.0.0.1:7324)
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$t0" "$t1"; }

"$BIN" dev --data-dir "$WORK/data" --listen 127.0.0.1:7324 --rest-listen 127.0.0.1:0 > "$WORK/dev.log" 2>&1 &
PID=$!
for _ in $(seq 300); do grep -q "serving gRPC" "$WORK/dev.log" && break; sleep 0.1; done
"$BIN" collection create s --dim "$DIM" --metric l2 --shards "$SHARDS" "${E[@]}" > /dev/null
IMPORT=$(secs "$BIN" points import s --file "$WORK/base.fvecs" --batch-size 1000 "${E[@]}")
for RUN in $(seq "$RUNS"); do
  CREATE=$(secs "$BIN" collection snapshot create s "${E[@]}")
  NAME=$("$BIN" collection snapshot list s "${E[@]}" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])')
  rm -f "$WORK/s.snapshot"
  DOWNLOAD=$(secs "$BIN" collection snapshot download s "$NAME" --out "$WORK/s.snapshot" "${E[@]}")
  RESTORE=$(secs "$BIN" collection snapshot restore "$WORK/s.snapshot" --name "r$RUN" --batch-size 1000 "${E[@]}")
  SIZE=$(stat -c %s "$WORK/s.snapshot")
  echo "{\"run\": $RUN, \"points\": $ROWS, \"shards\": $SHARDS, \"import_s\": $IMPORT, \"create_s\": $CREATE, \"download_s\": $DOWNLOAD, \"restore_s\": $RESTORE, \"file_mb\": $(( SIZE / 1000000 ))}"
done
