#!/usr/bin/env bash
# quiver's feature store beside Feast (file offline store, Redis online store), in one run, on
# the same data: materialisation, point-in-time retrieval, online serving.
#
#   benches/scripts/features_vs_feast.sh [ROWS] [ENTITIES] [ENTITY_ROWS]
#
# Defaults: 1,000,000 feature rows over 100,000 users, 100,000 entity rows; SEED (default 7),
# ROUNDS of the online measurements (default 3, interleaved), CLIENTS for the concurrent online
# run (default 4), ONLINE_SECONDS per concurrent run (default 10).
#
# Creates a virtual environment (VENV, default /tmp/quiver-feast-venv) with Feast and the Redis
# client, grpcio and grpcio-tools from PyPI; starts redis-server (Debian's package; no
# persistence) and `quiver dev` (release build) on free loopback ports; generates the data
# (peers/feature_data.py); then:
# - quiver: apply, push rows.csv offline (timed), materialise the whole window (timed, inside
#   the database), `features historical` of every entity row to CSV (timed, the CLI's whole
#   run: reading the entity file, the gRPC stream, writing the CSV);
# - Feast: apply, materialize into Redis (timed), get_historical_features(...).to_df() (timed);
# - the two training sets compared value by value (peers/feature_peer.py compare);
# - online: 100 users x 10 features per request, one client (Feast's SDK on Redis; quiver
#   through Python's grpcio), ROUNDS times alternately, then CLIENTS concurrent processes each;
# - quiver-features-bench: the same online requests through a Rust (tonic) client, one and
#   CLIENTS at a time; then the reads inside one node, without the wire.
# Prints every JSON line, then a table with the ratios. Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-1000000} ENTITIES=${2:-100000} ENTITY_ROWS=${3:-100000}
SEED=${SEED:-7} ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-4} ONLINE_SECONDS=${ONLINE_SECONDS:-10}
VENV=${VENV:-/tmp/quiver-feast-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/quiver/target}

if ! "$VENV/bin/python" -c 'import feast, redis, grpc, grpc_tools, pyarrow' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'feast[redis]==0.67.0' grpcio-tools pyarrow
fi
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build -q --release -p quiver-cli --bin quiver -p quiver-benches --bin quiver-features-bench
BIN="$CARGO_TARGET_DIR/release/quiver"
PY="$VENV/bin/python"
PEER=benches/peers/feature_peer.py
export PATH="$VENV/bin:$PATH"

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port) GRPC_PORT=$(free_port) REST_PORT=$(free_port)
export QUIVER_ENDPOINT="http://127.0.0.1:$GRPC_PORT"
OUT="$WORK/results.jsonl"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
"$BIN" dev --data-dir "$WORK/quiver" --listen "127.0.0.1:$GRPC_PORT" \
  --rest-listen "127.0.0.1:$REST_PORT" > "$WORK/quiver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do grep -q "serving gRPC" "$WORK/quiver.log" && break; sleep 0.1; done
grep -q "serving gRPC" "$WORK/quiver.log" || { cat "$WORK/quiver.log" >&2; exit 1; }

echo "generating $ROWS rows over $ENTITIES users, $ENTITY_ROWS entity rows (seed $SEED)" >&2
"$PY" benches/peers/feature_data.py --out "$WORK/data" --rows "$ROWS" --entities "$ENTITIES" \
  --entity-rows "$ENTITY_ROWS" --seed "$SEED" --redis "127.0.0.1:$REDIS_PORT"
D="$WORK/data"
read -r START END < "$D/window"
FEATURES=user_stats:f0,user_stats:f1,user_stats:f2,user_stats:f3,user_stats:f4,user_stats:n0,user_stats:n1,user_stats:n2,user_stats:r0,user_stats:s0

timed() { # system step rows command...
  local system=$1 step=$2 rows=$3; shift 3
  local began ended
  began=$(date +%s.%N)
  "$@"
  ended=$(date +%s.%N)
  "$PY" -c 'import json,sys; s=float(sys.argv[4])-float(sys.argv[3]); print(json.dumps({"system":sys.argv[1],"step":sys.argv[2],"seconds":round(s,3),"rows":int(sys.argv[5]),"rows_per_s":round(int(sys.argv[5])/s)}))' \
    "$system" "$step" "$began" "$ended" "$rows" >> "$OUT"
  tail -1 "$OUT" >&3
}
exec 3>&2

echo "quiver: apply, push, materialize, historical" >&2
"$BIN" features apply "$D/quiver.yaml" > /dev/null
timed quiver push "$ROWS" "$BIN" features push user_stats --file "$D/rows.csv" --to offline > /dev/null 2>&1
timed quiver materialize "$ROWS" "$BIN" features materialize user_stats --start $((START - 1)) --end $((END + 1)) > /dev/null 2>&1
timed quiver historical "$ENTITY_ROWS" "$BIN" features historical --entities "$D/entities.csv" \
  --features "$FEATURES" --format csv > "$D/quiver-historical.csv" 2> /dev/null

echo "feast: apply, materialize, historical" >&2
"$PY" "$PEER" feast-apply "$D"
"$PY" "$PEER" feast-materialize "$D" 2> /dev/null | tee -a "$OUT"
"$PY" "$PEER" feast-historical "$D" --out "$D/feast-historical.csv" 2> /dev/null | tee -a "$OUT"
"$PY" "$PEER" compare "$D/quiver-historical.csv" "$D/feast-historical.csv" | tee -a "$OUT" \
  || echo "the training sets differ in some values (see the compare line)" >&2

echo "online: $ROUNDS rounds, then $CLIENTS clients" >&2
for _ in $(seq "$ROUNDS"); do
  "$PY" "$PEER" online "$D" --peer feast 2> /dev/null | tee -a "$OUT"
  "$PY" "$PEER" online "$D" --peer quiver --quiver "127.0.0.1:$GRPC_PORT" | tee -a "$OUT"
done
"$PY" "$PEER" online "$D" --peer feast --clients "$CLIENTS" --seconds "$ONLINE_SECONDS" 2> /dev/null | tee -a "$OUT"
"$PY" "$PEER" online "$D" --peer quiver --quiver "127.0.0.1:$GRPC_PORT" --clients "$CLIENTS" \
  --seconds "$ONLINE_SECONDS" | tee -a "$OUT"

echo "quiver through a Rust gRPC client (tonic), then in one node without the wire" >&2
"$CARGO_TARGET_DIR/release/quiver-features-bench" --data "$D" --grpc "$QUIVER_ENDPOINT" \
  --clients "$CLIENTS" --seconds "$ONLINE_SECONDS" | tee -a "$OUT"
"$CARGO_TARGET_DIR/release/quiver-features-bench" --data "$D" | tee -a "$OUT"
cat "$OUT"
"$PY" "$PEER" report "$OUT"
