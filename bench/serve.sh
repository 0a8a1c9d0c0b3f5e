#!/usr/bin/env bash
# Real-time serving figures for issue 4: `vigil serve` and the tuned Python peer (FastAPI,
# 2 workers, onnxruntime with 1 intra-op thread each) back to back, same model (weldnet-s),
# same PNG body (the peers' multipart body, and a raw body), same load generator (oha via the
# peers' bench.py), concurrency 8 and 32. The machine is shared and noisy: compare ratios
# within one run only.
#
# usage: bench/serve.sh [CONC=8,32] [DURATION=20]
# needs: ../shared/bench/peers (bench.py, fastapi_app.py, common.py, data/), oha on PATH or OHA=,
#        PEERS_HOME with venv-fastapi (fastapi, uvicorn[standard], onnxruntime==1.32.0, pillow,
#        numpy, python-multipart).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="$root/../shared/bench/peers"
conc="${1:-8,32}"
dur="${2:-20}"
oha="${OHA:-$(command -v oha)}"
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/peers}"
out="${OUT:-$root/target/bench-serve}"
mkdir -p "$out"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$root"
scripts/setup-onnxruntime
cargo build --release --locked -p vigil-cli >&2
vigil="$root/target/release/vigil"

echo "== vigil serve (weldnet-s, the peers' preprocessing)"
export VIGIL__STORE__DATA_DIR="$work/data" VIGIL__LOG__LEVEL=warn
"$vigil" -q bundle create --model testdata/weldnet-s.onnx --name weldnet --version 1.0.0 \
  --labels no_defect,porosity,crack,lack_of_fusion --preprocess bench/bench-preprocess.toml \
  --golden "$peers/data/weld_128_gray.png" --out "$work/bundle" >/dev/null
"$vigil" -q models push "$work/bundle" >/dev/null
"$vigil" -q models alias set weldnet production 1.0.0 --reason bench >/dev/null
start_ns=$(date +%s%N)
"$vigil" serve --port 8201 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
until curl -sf http://127.0.0.1:8201/readyz >/dev/null; do sleep 0.01; done
echo "ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
echo "resident memory with weldnet-s loaded: $(awk '/VmRSS/ {print $2, $3}' /proc/$server_pid/status)"
python3 "$peers/bench.py" http://127.0.0.1:8201/v1/models/weldnet/predict \
  "$peers/data/body_weld_128_gray.multipart" \
  --content-type "multipart/form-data; boundary=----peerbenchboundary7MA4YWxkTrZu0gW" \
  --label vigil-multipart --conc "$conc" --duration "$dur" --server-pids "$server_pid" \
  --out "$out" --oha "$oha"
python3 "$peers/bench.py" http://127.0.0.1:8201/v1/models/weldnet/predict \
  "$peers/data/weld_128_gray.png" --content-type image/png \
  --label vigil-raw --conc "$conc" --duration "$dur" --server-pids "$server_pid" \
  --out "$out" --oha "$oha"
echo "resident memory after the load: $(awk '/VmRSS/ {print $2, $3}' /proc/$server_pid/status)"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

echo "== the tuned peer: FastAPI, 2 workers, onnxruntime 1 intra-op thread each"
# Started here rather than with run_peer.sh (whose pytriton branch does not parse as shipped),
# exactly as run_peer.sh's fastapi-2w case does, plus PEER_ORT_THREADS=1.
start_ns=$(date +%s%N)
(cd "$peers" && PEER_MODEL=weldnet-s PEER_ORT_THREADS=1 exec "$PEERS_HOME/venv-fastapi/bin/uvicorn" \
  fastapi_app:app --host 127.0.0.1 --port 8101 --workers 2 --no-access-log) >"$work/peer.log" 2>&1 &
server_pid=$!
until curl -sf http://127.0.0.1:8101/health >/dev/null; do sleep 0.05; done
echo "ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
pids="$server_pid,$(pgrep -d, -P "$server_pid" || true)"
rss_kb() { local t=0; for p in ${pids//,/ }; do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo "$t kB"; }
echo "resident memory (all processes) with weldnet-s loaded: $(rss_kb)"
python3 "$peers/bench.py" http://127.0.0.1:8101/predict "$peers/data/body_weld_128_gray.multipart" \
  --content-type "multipart/form-data; boundary=----peerbenchboundary7MA4YWxkTrZu0gW" \
  --label fastapi-2w-ort1-multipart --conc "$conc" --duration "$dur" --server-pids "$pids" \
  --out "$out" --oha "$oha"
python3 "$peers/bench.py" http://127.0.0.1:8101/predict_raw "$peers/data/weld_128_gray.png" \
  --content-type image/png --label fastapi-2w-ort1-raw --conc "$conc" --duration "$dur" \
  --server-pids "$pids" --out "$out" --oha "$oha"
echo "resident memory (all processes) after the load: $(rss_kb)"
