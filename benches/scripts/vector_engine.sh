#!/usr/bin/env bash
# quiver's vector engine beside hnswlib and faiss, in one run, on the same files.
#
#   benches/scripts/vector_engine.sh DATA_DIR [l2|cosine|dot] [extra quiver-bench/peer flags...]
#
# DATA_DIR holds base.fvecs, query.fvecs and groundtruth.ivecs (../shared/data/gen_clustered.py
# makes them). Creates a virtual environment (VENV, default /tmp/quiver-peers-venv) with numpy,
# faiss-cpu and hnswlib from PyPI, builds quiver-bench in release, then runs quiver, hnswlib and
# faiss interleaved ROUNDS times (default 3) — HNSW with M=16, efConstruction=200 on 2 build
# threads and one search thread, then flat search — and prints one table (peers/table.py).
# quiver also runs with its quantized graphs (QUANTIZED, default "int8 fp16"; rescoring
# 10 × OVERSAMPLING candidates, default 3), rows `hnsw-int8` and `hnsw-fp16`.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: vector_engine.sh DATA_DIR [metric] [flags...]}
METRIC=${2:-l2}
shift $(( $# >= 2 ? 2 : 1 ))
VENV=${VENV:-/tmp/quiver-peers-venv}
ROUNDS=${ROUNDS:-3}
EF=${EF:-16,24,32,48,64,96,128}
QUERIES=${QUERIES:-5000}
QUANTIZED=${QUANTIZED:-int8 fp16}
OVERSAMPLING=${OVERSAMPLING:-3}

if ! "$VENV/bin/python" -c 'import numpy, faiss, hnswlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy==2.4.6 faiss-cpu==1.15.1 hnswlib==0.8.0
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/quiver/target}
cargo build -q --release -p quiver-benches --bin quiver-bench
BENCH="$CARGO_TARGET_DIR/release/quiver-bench"
COMMON=(--base "$DATA/base.fvecs" --query "$DATA/query.fvecs" --gt "$DATA/groundtruth.ivecs"
        --metric "$METRIC" --limit-queries "$QUERIES" --threads 1 --json "$@")
HNSW=(--index hnsw --m 16 --ef-construction 200 --build-threads 2 --ef "$EF")
OUT=$(mktemp)
for _ in $(seq "$ROUNDS"); do
  "$BENCH" "${COMMON[@]}" "${HNSW[@]}" >>"$OUT"
  "$VENV/bin/python" benches/peers/ann_peer.py --peer hnswlib "${COMMON[@]}" "${HNSW[@]}" >>"$OUT"
  "$VENV/bin/python" benches/peers/ann_peer.py --peer faiss "${COMMON[@]}" "${HNSW[@]}" >>"$OUT"
  for q in $QUANTIZED; do
    "$BENCH" "${COMMON[@]}" "${HNSW[@]}" --quantization "$q" --oversampling "$OVERSAMPLING" >>"$OUT"
  done
done
"$BENCH" "${COMMON[@]}" --index flat >>"$OUT"
"$VENV/bin/python" benches/peers/ann_peer.py --peer faiss "${COMMON[@]}" --index flat >>"$OUT"
python3 benches/peers/table.py "$OUT"
rm -f "$OUT"
