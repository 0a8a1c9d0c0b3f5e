#!/usr/bin/env bash
# Vigil's drift windows through Alibi Detect and Evidently on the same embeddings: which tool
# flags which window, and how long each takes (bench/README.md, "Drift detection against
# Alibi Detect and Evidently on the weld embeddings").
#
#  1. `vigil drift simulate --bundle models/weldnet.tar --data data/weld/manifest.csv
#     --split val --export $OUT/export` runs the monitoring acceptance test on the validation
#     tiles and exports the embeddings of its windows with Vigil's verdict on each: the first
#     100 in-distribution windows of the false-alarm stream and 50 windows of changed images
#     per simulated change (new detector, exposure change), plus the reference sample the MMD
#     signal compares with (crates/cli/src/drift_export.rs).
#  2. bench/drift_peers.py runs, per window against that same reference sample, Alibi Detect
#     KSDrift (Bonferroni) and MMDDrift (pytorch, 100 permutations) in venv-alibi, and
#     Evidently's DataDriftPreset and embeddings drift in venv-evidently, then prints one
#     markdown table with Vigil's own verdicts.
#
# Builds nothing. VIGIL=path/to/vigil (default target/release/vigil, else target/debug/vigil).
# Evidently takes seconds per window: EVIDENTLY_MAX (default 20) limits it to the first N
# windows of each kind (0: all). SIM_ARGS adds arguments to `vigil drift simulate`.
# Results: $OUT (default target/drift-peers): export/, alibi.json, evidently.json, peers.json.
#
# The venvs, under ${PEERS_HOME:-$HOME/.cache/peers} (Python 3.11; as the peers' drift
# anchors in shared/bench/peers, RESULTS.md):
#   python3.11 -m venv venv-alibi
#   venv-alibi/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu \
#     || venv-alibi/bin/pip install torch          # PyPI's wheel pulls the CUDA libraries
#   venv-alibi/bin/pip install alibi-detect==0.13.0 numpy==1.26.4 scipy
#   python3.11 -m venv venv-evidently
#   venv-evidently/bin/pip install evidently==0.7.23 "pandas<3"   # 0.7.23 breaks on pandas 3
#
# usage: [VIGIL=...] [OUT=...] [EVIDENTLY_MAX=20] bench/drift-peers.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
peers="${PEERS_HOME:-$HOME/.cache/peers}"
out="${OUT:-$root/target/drift-peers}"
evidently_max="${EVIDENTLY_MAX:-20}"
vigil="${VIGIL:-}"
if [[ -z "$vigil" ]]; then
  if [[ -x target/release/vigil ]]; then vigil=target/release/vigil; else vigil=target/debug/vigil; fi
fi
[[ -x "$vigil" ]] || { echo "no vigil binary at $vigil: build one or set VIGIL=" >&2; exit 2; }
for v in venv-alibi venv-evidently; do
  [[ -x "$peers/$v/bin/python" ]] || { echo "no $peers/$v: see the top of $0" >&2; exit 2; }
done
mkdir -p "$out"
rm -rf "$out/export"   # this script's own previous export; the command wants a new folder

echo "== vigil drift simulate --export ($vigil) $(date -u +%T)"
# shellcheck disable=SC2086
"$vigil" drift simulate --bundle models/weldnet.tar --data data/weld/manifest.csv \
  --split val --json "$out/efficacy.json" --export "$out/export" ${SIM_ARGS:-}
echo "== alibi-detect $(date -u +%T)"
"$peers/venv-alibi/bin/python" bench/drift_peers.py alibi "$out/export" --out "$out/alibi.json" \
  2> "$out/alibi.log"
echo "== evidently (first $evidently_max windows of each kind) $(date -u +%T)"
"$peers/venv-evidently/bin/python" bench/drift_peers.py evidently "$out/export" \
  --max-per-kind "$evidently_max" --out "$out/evidently.json" 2> "$out/evidently.log"
echo "== table $(date -u +%T)"
python3 bench/drift_peers.py table "$out/export" "$out/alibi.json" "$out/evidently.json" \
  --out "$out/peers.json"
