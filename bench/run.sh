#!/usr/bin/env bash
# Engine and batch-scoring figures for issue 3, Vigil and its Python peers back to back on
# the same machine (the machine is shared and noisy: compare ratios within one run only).
#
# usage: bench/run.sh [WELD_DATA_DIR]     (default: ../shared/data/weld)
# needs: python3 with onnxruntime==1.32.0 numpy pillow onnx (set PYTHON=/path/to/venv/python)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$root/../shared/data/weld}"
py="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
scripts/setup-onnxruntime
cargo build --release --locked -p vigil-cli >&2
cargo build --release --locked -p vigil-engine --example bench >&2
vigil="$root/target/release/vigil"
bench="$root/target/release/examples/bench"

echo "== models"
cp testdata/weldnet-s.onnx "$work/"
if [[ -f "$root/../shared/bench/make_models.py" ]]; then
  "$py" "$root/../shared/bench/make_models.py" "$work" >/dev/null
fi
ls "$work"/*.onnx

echo "== engine latency (ms, median of 30): Vigil (ort crate) vs onnxruntime in Python"
for model in "$work"/*.onnx; do
  for threads in 1 2; do
    "$bench" latency "$model" "$threads" 1 8
    "$py" bench/engine_ort.py "$model" "$threads" 1 8
  done
done

echo "== batch scoring over $(($(wc -l < "$data/manifest.csv") - 1)) weld tiles"
"$vigil" -q bundle create --model "$work/weldnet-s.onnx" --name bench --version 1 \
  --labels ok,porosity,crack,undercut --preprocess bench/bench-preprocess.toml --out "$work/bundle" >/dev/null
for procs in 1 2; do
  "$py" bench/score_python.py "$data/manifest.csv" "$work/weldnet-s.onnx" "$procs"
done
for threads in 0 1 2; do
  VIGIL__ENGINE__THREADS=$threads "$vigil" -q score "$data/manifest.csv" --bundle "$work/bundle" \
    --out "$work/scores-$threads.csv" --overwrite --batch-size 16 --json 2>/dev/null \
    | "$py" -c "import json,sys; s=json.load(sys.stdin); n=s['scored']+s['failed']; print(json.dumps({'scorer':'vigil','engine_threads':$threads,'images':n,'seconds':round(s['seconds'],3),'images_per_s':round(n/s['seconds'],1)}))"
done
for threads in 2; do
  "$bench" ceiling "$data/manifest.csv" "$work/weldnet-s.onnx" bench/bench-preprocess.toml "$threads" 16
done
