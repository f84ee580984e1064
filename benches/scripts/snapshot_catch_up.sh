#!/usr/bin/env bash
# How long a replica whose data directory was wiped takes to catch up by Raft snapshot, when the
# snapshot carries the leader's sealed segments ("graph in snapshot": segments seal at 1 point)
# and when the leader has none to send (they seal above ROWS points, so every point stays in the
# appendable segment).
# Same binary, same data, same run. Per setup: 3 `quiver serve` nodes, one shard x 3 replicas,
# ROWS points imported, then a few single-point writes so the leader takes a snapshot after its
# periodic dump; a follower is killed (-9), wiped and restarted, and timed from its start until
# its replica of the shard has applied the leader's whole log. Prints one JSON line per setup.
#
#   benches/scripts/snapshot_catch_up.sh BIN BASE.fvecs [ROWS]
#
# BIN is the quiver binary. Everything listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
BIN=$1 BASE=$2 ROWS=${3:-50000}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DIM=$(python3 -c "import struct,sys; print(struct.unpack('<i', open(sys.argv[1],'rb').read(4))[0])" "$BASE")
DATA=$WORK/base.fvecs
head -c $(( ROWS * (4 + 4 * DIM) )) "$BASE" > "$DATA"
python3 - "$DIM" > "$WORK/tail.jsonl" <<'EOF'
import json, sys
dim = int(sys.argv[1])
for i in range(40):
    print(json.dumps({"id": 10_000_000 + i, "vector": [float(i)] * dim}))
EOF

start() { # node-index port-base seal-points
  local i=$1 base=$2 every=$3
  printf '[node]\ndata_dir = "%s"\nlisten = "127.0.0.1:%d"\n[cluster]\nnode_id = %d\nbootstrap = false\nsnapshot_every_entries = 20\nlog_entries_kept = 0\n[storage]\nsegment_seal_points = %d\n' \
    "$WORK/$base/n$i" $((base + i)) "$i" "$every" > "$WORK/$base-n$i.toml"
  "$BIN" serve --config "$WORK/$base-n$i.toml" >> "$WORK/$base-n$i.log" 2>&1 &
  PIDS[$((base + i))]=$!
  for _ in $(seq 200); do grep -q "serving gRPC" "$WORK/$base-n$i.log" && return; sleep 0.05; done
  echo "node $i did not start" >&2; cat "$WORK/$base-n$i.log" >&2; exit 1
}

measure() { # setup port-base seal-points
  local setup=$1 base=$2 every=$3
  mkdir -p "$WORK/$base"
  for i in 1 2 3; do start "$i" "$base" "$every"; done
  local ep=http://127.0.0.1:$((base + 1))
  "$BIN" cluster init --endpoint "$ep" > /dev/null
  "$BIN" cluster join 127.0.0.1:$((base + 2)) --endpoint "$ep" > /dev/null
  "$BIN" cluster join 127.0.0.1:$((base + 3)) --endpoint "$ep" > /dev/null
  "$BIN" collection create bench --dim "$DIM" --metric l2 --m 16 --ef-construction 200 \
    --shards 1 --replication-factor 3 --endpoint "$ep" > /dev/null
  "$BIN" points import bench --file "$DATA" --batch-size 500 --endpoint "$ep" > /dev/null
  sleep 4 # the optimizer seals on each replica
  "$BIN" points import bench --file "$WORK/tail.jsonl" --batch-size 1 --endpoint "$ep" > /dev/null
  local leader; leader=$("$BIN" collection info bench --endpoint "$ep" | python3 -c "import json,sys; print(json.load(sys.stdin)['shards'][0]['leader'])")
  local victim=$(( leader % 3 + 1 ))
  kill -9 "${PIDS[$((base + victim))]}"; wait "${PIDS[$((base + victim))]}" 2>/dev/null || true
  rm -rf "$WORK/$base/n$victim"
  local t0; t0=$(date +%s.%N)
  start "$victim" "$base" "$every"
  local lep=http://127.0.0.1:$((base + leader))
  while :; do
    local caught
    caught=$("$BIN" cluster status --endpoint "$lep" | python3 -c "
import json, sys
s = json.load(sys.stdin)
g = [g for g in s['groups'] if g['collection'] == 'bench'][0]
head = max(r['last_log_index'] for r in g['replicas'])
mine = [r for r in g['replicas'] if r['node'] == $victim]
print(1 if mine and mine[0]['last_applied_index'] >= head else 0)")
    [ "$caught" = 1 ] && break
    sleep 0.1
  done
  local t1; t1=$(date +%s.%N)
  local graph; graph=$(grep -c 'segments_loaded=[1-9]' "$WORK/$base-n$victim.log" || true)
  python3 -c "import sys; s,a,b,g,n=sys.argv[1:]; print('{\"setup\":\"%s\",\"points\":%s,\"catch_up_s\":%.2f,\"graph_loaded\":%s}' % (s, n, float(b)-float(a), 'true' if int(g) > 0 else 'false'))" \
    "$setup" "$t0" "$t1" "$graph" "$ROWS"
  for i in 1 2 3; do kill "${PIDS[$((base + i))]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

measure "graph in snapshot" 7200 1
measure "graph rebuilt" 7300 1000000000
