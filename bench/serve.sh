#!/usr/bin/env bash
# Real-time serving figures for issue 4: `vigil serve` and the Python peers, same model, same
# PNG body (the peers' multipart body, and a raw body), same load generator (oha via the
# peers' bench.py), at each concurrency.
#
# The machine is shared and its speed drifts by tens of percent within minutes (on some days
# it halves), so the servers are all started first and then loaded in turn, round after
# round, the order rotating: each comparison is made within a round, minutes apart at most,
# and the summary gives the median over rounds of each ratio.
#
# MODEL=weldnet-s (default): 128×128 grey; the peer is the tuned one (FastAPI, 2 workers,
#   onnxruntime with 1 intra-op thread each).
# MODEL=resnet18: 224×224 RGB, ImageNet normalisation; the peers are FastAPI with 1 worker
#   (onnxruntime's default threads: the best resnet18 peer in RESULTS.md) and the 2-worker,
#   1-thread tuning. resnet18.onnx (44 MB) is made by ../shared/bench/make_models.py into
#   $PEERS_HOME/models the first time (it needs the `onnx` package in venv-fastapi).
#
# VARIANTS="name:VAR=V,VAR=V ..." adds Vigil servers with other settings beside the default
# one, e.g. VARIANTS="2x1:VIGIL__SERVER__INSTANCES=2,VIGIL__ENGINE__THREADS=1".
#
# usage: [MODEL=resnet18] [ROUNDS=3] [VARIANTS=...] bench/serve.sh [CONC=8,32] [DURATION=10]
# needs: ../shared/bench/peers (bench.py, fastapi_app.py, common.py, data/), oha on PATH or OHA=,
#        PEERS_HOME with venv-fastapi (fastapi, uvicorn[standard], onnxruntime==1.32.0, pillow,
#        numpy, python-multipart; onnx for resnet18).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="$root/../shared/bench/peers"
conc="${1:-8,32}"
dur="${2:-10}"
rounds="${ROUNDS:-3}"
oha="${OHA:-$(command -v oha)}"
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/peers}"
out="${OUT:-$root/target/bench-serve}"
rm -rf "$out"; mkdir -p "$out"
work="$(mktemp -d)"
all_pids=()
cleanup() {
  for p in "${all_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${all_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# Resident memory of a process and its children, kB.
rss_kb() { local t=0; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo "$t"; }
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
multipart="multipart/form-data; boundary=----peerbenchboundary7MA4YWxkTrZu0gW"

# server label -> "url_multipart url_raw pid"
declare -A servers
order=()

"$vigil" -q bundle create --model "$onnx" --name weldnet --version 1.0.0 \
  --labels no_defect,porosity,crack,lack_of_fusion --preprocess "$preprocess" \
  --golden "$image" --out "$work/bundle" >/dev/null
port=8201
for variant in "vigil:" ${VARIANTS:-}; do
  IFS=: read -r label vars <<<"$variant"
  [[ "$label" == vigil ]] || label="vigil-$label"
  echo "== $label: vigil serve ($model, the peers' preprocessing) ${vars:-with the default settings}, port $port"
  data="$work/data-$label"
  VIGIL__STORE__DATA_DIR="$data" VIGIL__LOG__LEVEL=warn "$vigil" -q models push "$work/bundle" >/dev/null
  VIGIL__STORE__DATA_DIR="$data" VIGIL__LOG__LEVEL=warn "$vigil" -q models alias set weldnet production 1.0.0 --reason bench >/dev/null
  start_ns=$(date +%s%N)
  (export VIGIL__STORE__DATA_DIR="$data" VIGIL__LOG__LEVEL=warn
   for kv in ${vars//,/ }; do export "${kv?}"; done
   exec "$vigil" serve --port "$port") >"$work/serve-$label.out" 2>"$work/serve-$label.err" &
  pid=$!; all_pids+=("$pid")
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.01; done
  echo "$label: ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms, resident memory $(rss_kb "$pid") kB"
  url="http://127.0.0.1:$port/v1/models/weldnet/predict"
  servers[$label]="$url $url $pid"; order+=("$label")
  port=$((port + 1))
done

port=8101
for cfg in $peer_configs; do
  IFS=: read -r label workers threads <<<"$cfg"
  echo "== peer $label: FastAPI, $workers worker(s), onnxruntime intra-op threads ${threads/#0/default}, port $port"
  # Started here rather than with run_peer.sh (whose pytriton branch does not parse as
  # shipped), exactly as run_peer.sh's fastapi cases do, plus PEER_ORT_THREADS.
  start_ns=$(date +%s%N)
  (cd "$peers" && PEER_MODEL="$model" PEER_MODELS_DIR="$peer_models" PEER_ORT_THREADS="$threads" \
    exec "$PEERS_HOME/venv-fastapi/bin/uvicorn" fastapi_app:app --host 127.0.0.1 --port "$port" \
    --workers "$workers" --no-access-log) >"$work/peer-$label.log" 2>&1 &
  pid=$!; all_pids+=("$pid")
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.05; done
  sleep 1 # the workers finish loading after the first health answer
  echo "$label: ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms, resident memory (all processes) $(rss_kb "$pid") kB"
  servers[$label]="http://127.0.0.1:$port/predict http://127.0.0.1:$port/predict_raw $pid"
  order+=("$label")
  port=$((port + 1))
done

for round in $(seq 1 "$rounds"); do
  echo "== round $round of $rounds"
  n=${#order[@]}
  for i in $(seq 0 $((n - 1))); do
    label="${order[$(( (i + round - 1) % n ))]}"
    read -r url_mp url_raw pid <<<"${servers[$label]}"
    pids="$pid,$(pgrep -d, -P "$pid" || true)"
    python3 "$peers/bench.py" "$url_mp" "$body" --content-type "$multipart" \
      --label "$label.multipart.r$round" --conc "$conc" --duration "$dur" --warmup 3 \
      --quiet-wait 10 --server-pids "${pids%,}" --out "$out" --oha "$oha"
    python3 "$peers/bench.py" "$url_raw" "$image" --content-type image/png \
      --label "$label.raw.r$round" --conc "$conc" --duration "$dur" --warmup 3 \
      --quiet-wait 10 --server-pids "${pids%,}" --out "$out" --oha "$oha"
  done
done
for label in "${order[@]}"; do
  read -r _ _ pid <<<"${servers[$label]}"
  echo "$label: resident memory after the load $(rss_kb "$pid") kB"
done

echo "== summary: medians over $rounds rounds; ratios are vigil / peer within each round"
python3 - "$out" <<'EOF'
import json, os, statistics, sys
from collections import defaultdict
runs = defaultdict(dict)  # (server, body, c) -> round -> record
for f in os.listdir(sys.argv[1]):
    if f.endswith(".json"):
        r = json.load(open(os.path.join(sys.argv[1], f))).get("_peerbench")
        if r:
            server, body, rnd = r["label"].rsplit(".", 2)
            runs[(server, body, r["c"])][rnd] = r
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"{'server':<18}{'body':<11}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}")
for (server, body, c), rs in sorted(runs.items()):
    v = list(rs.values())
    cpu = [x["cpu_s"]["server"] * 1000 / max(x["ok_2xx"], 1) for x in v]
    print(f"{server:<18}{body:<11}{c:>4}{med([x['rps'] for x in v]):>9.1f}"
          f"{med([x['p50_ms'] for x in v]):>9.2f}{med([x['p99_ms'] for x in v]):>9.2f}{med(cpu):>12.2f}")
print()
for (server, body, c), rs in sorted(runs.items()):
    if server.startswith("vigil"):
        continue
    for (ours, b2, c2), mine in sorted(runs.items()):
        if not ours.startswith("vigil") or (b2, c2) != (body, c):
            continue
        both = [k for k in rs if k in mine]
        thr = [mine[k]["rps"] / rs[k]["rps"] for k in both]
        p99 = [mine[k]["p99_ms"] / rs[k]["p99_ms"] for k in both]
        print(f"{ours + ' / ' + server:<34} {body:<10} c={c:<3} throughput {med(thr):.2f}x "
              f"(rounds {', '.join(f'{t:.2f}' for t in thr)}), p99 {med(p99):.2f}x")
EOF
