#!/usr/bin/env bash
# Real-time serving figures for issue 4: `vigil serve` and the Python peers back to back, same
# model, same PNG body (the peers' multipart body, and a raw body), same load generator (oha
# via the peers' bench.py), concurrency 8 and 32. The machine is shared and noisy: compare
# ratios within one run only.
#
# MODEL=weldnet-s (default): 128×128 grey; the peer is the tuned one (FastAPI, 2 workers,
#   onnxruntime with 1 intra-op thread each).
# MODEL=resnet18: 224×224 RGB, ImageNet normalisation; the peers are FastAPI with 1 worker
#   (onnxruntime's default threads: the best resnet18 peer in RESULTS.md) and the 2-worker,
#   1-thread tuning. resnet18.onnx (44 MB) is made by ../shared/bench/make_models.py into
#   $PEERS_HOME/models the first time (it needs the `onnx` package in venv-fastapi).
#
# usage: [MODEL=resnet18] bench/serve.sh [CONC=8,32] [DURATION=20]
# needs: ../shared/bench/peers (bench.py, fastapi_app.py, common.py, data/), oha on PATH or OHA=,
#        PEERS_HOME with venv-fastapi (fastapi, uvicorn[standard], onnxruntime==1.32.0, pillow,
#        numpy, python-multipart; onnx for resnet18).
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
pids=""
rss_kb() { local t=0; for p in ${pids//,/ }; do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo "$t kB"; }
cd "$root"
scripts/setup-onnxruntime
cargo build --release --locked -p vigil-cli >&2
vigil="$root/target/release/vigil"

model="${MODEL:-weldnet-s}"
case "$model" in
  weldnet-s)
    onnx="testdata/weldnet-s.onnx"; preprocess="bench/bench-preprocess.toml"
    image="$peers/data/weld_128_gray.png"; body="$peers/data/body_weld_128_gray.multipart"
    peer_models="$root/testdata"
    peer_configs="fastapi-2w-ort1:2:1" ;;
  resnet18)
    peer_models="$PEERS_HOME/models"; onnx="$peer_models/resnet18.onnx"
    if [[ ! -f "$onnx" ]]; then
      mkdir -p "$peer_models"
      tmp_models="$(mktemp -d)"
      "$PEERS_HOME/venv-fastapi/bin/python" "$peers/../make_models.py" "$tmp_models" >&2
      mv "$tmp_models/resnet18.onnx" "$onnx"; rm -rf "$tmp_models"
    fi
    preprocess="bench/bench-preprocess-resnet18.toml"
    image="$peers/data/weld_224_rgb.png"; body="$peers/data/body_weld_224_rgb.multipart"
    peer_configs="fastapi-1w:1:0 fastapi-2w-ort1:2:1" ;;
  *) echo "MODEL must be weldnet-s or resnet18" >&2; exit 2 ;;
esac

echo "== vigil serve ($model, the peers' preprocessing)"
export VIGIL__STORE__DATA_DIR="$work/data" VIGIL__LOG__LEVEL=warn
"$vigil" -q bundle create --model "$onnx" --name weldnet --version 1.0.0 \
  --labels no_defect,porosity,crack,lack_of_fusion --preprocess "$preprocess" \
  --golden "$image" --out "$work/bundle" >/dev/null
"$vigil" -q models push "$work/bundle" >/dev/null
"$vigil" -q models alias set weldnet production 1.0.0 --reason bench >/dev/null
start_ns=$(date +%s%N)
"$vigil" serve --port 8201 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
until curl -sf http://127.0.0.1:8201/readyz >/dev/null; do sleep 0.01; done
echo "ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
echo "resident memory with $model loaded: $(awk '/VmRSS/ {print $2, $3}' /proc/$server_pid/status)"
python3 "$peers/bench.py" http://127.0.0.1:8201/v1/models/weldnet/predict "$body" \
  --content-type "multipart/form-data; boundary=----peerbenchboundary7MA4YWxkTrZu0gW" \
  --label "vigil-$model-multipart" --conc "$conc" --duration "$dur" --server-pids "$server_pid" \
  --out "$out" --oha "$oha"
python3 "$peers/bench.py" http://127.0.0.1:8201/v1/models/weldnet/predict "$image" \
  --content-type image/png \
  --label "vigil-$model-raw" --conc "$conc" --duration "$dur" --server-pids "$server_pid" \
  --out "$out" --oha "$oha"
echo "resident memory after the load: $(awk '/VmRSS/ {print $2, $3}' /proc/$server_pid/status)"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

for cfg in $peer_configs; do
  IFS=: read -r label workers threads <<<"$cfg"
  echo "== peer $label: FastAPI, $workers worker(s), onnxruntime intra-op threads ${threads/#0/default}"
  # Started here rather than with run_peer.sh (whose pytriton branch does not parse as
  # shipped), exactly as run_peer.sh's fastapi cases do, plus PEER_ORT_THREADS.
  start_ns=$(date +%s%N)
  (cd "$peers" && PEER_MODEL="$model" PEER_MODELS_DIR="$peer_models" PEER_ORT_THREADS="$threads" \
    exec "$PEERS_HOME/venv-fastapi/bin/uvicorn" fastapi_app:app --host 127.0.0.1 --port 8101 \
    --workers "$workers" --no-access-log) >"$work/peer.log" 2>&1 &
  server_pid=$!
  until curl -sf http://127.0.0.1:8101/health >/dev/null; do sleep 0.05; done
  echo "ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
  pids="$server_pid,$(pgrep -d, -P "$server_pid" || true)"
  echo "resident memory (all processes) with $model loaded: $(rss_kb)"
  python3 "$peers/bench.py" http://127.0.0.1:8101/predict "$body" \
    --content-type "multipart/form-data; boundary=----peerbenchboundary7MA4YWxkTrZu0gW" \
    --label "$label-$model-multipart" --conc "$conc" --duration "$dur" --server-pids "$pids" \
    --out "$out" --oha "$oha"
  python3 "$peers/bench.py" http://127.0.0.1:8101/predict_raw "$image" \
    --content-type image/png --label "$label-$model-raw" --conc "$conc" --duration "$dur" \
    --server-pids "$pids" --out "$out" --oha "$oha"
  echo "resident memory (all processes) after the load: $(rss_kb)"
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
done
