#!/usr/bin/env bash
# What monitoring and review cost in serving throughput (issue 6: "within 3% of monitoring
# off"): `vigil serve` on the shipped weld model (its reference profile included), a real
# validation tile POSTed by oha at a fixed concurrency, in three configurations, interleaved
# over several rounds so that the machine's drift hits all three alike:
#
#   off         monitoring.enabled = false, monitoring.log.enabled = false, review.enabled = false
#   monitoring  per-image statistics, OOD scores, drift windows and the prediction log
#   everything  monitoring plus the review queue (flagged images kept, default flag policy)
#
# usage: bench/monitor-overhead.sh [CONC=8] [SECONDS=8] [ROUNDS=8]
# needs: oha on PATH or OHA=; the release build (made here, or VIGIL=path/to/vigil to use a
# binary already built).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
conc="${1:-8}"
secs="${2:-8}"
rounds="${3:-8}"
oha="${OHA:-$(command -v oha)}"
out="${OUT:-$root/target/bench-monitor}"
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
if [[ -z "${VIGIL:-}" ]]; then cargo build --release --locked -p vigil-cli >&2; fi
vigil="${VIGIL:-$root/target/release/vigil}"
tile="$root/data/weld/val/defect/$(ls "$root/data/weld/val/defect" | head -1)"

run() { # name, env...
  local name="$1"; shift
  rm -rf "$work/data"
  env VIGIL__STORE__DATA_DIR="$work/data" VIGIL__LOG__LEVEL=warn "$@" \
    "$vigil" serve --port 8211 >"$work/serve.out" 2>"$work/serve.err" &
  server_pid=$!
  until curl -sf http://127.0.0.1:8211/readyz >/dev/null; do sleep 0.05; done
  "$oha" --no-tui -z 3s -c "$conc" -m POST -T image/png -D "$tile" \
    --output-format quiet http://127.0.0.1:8211/v1/models/weldnet/predict >/dev/null # warm-up
  "$oha" --no-tui -z "${secs}s" -c "$conc" -m POST -T image/png -D "$tile" \
    --output-format json http://127.0.0.1:8211/v1/models/weldnet/predict >"$out/$name-$round.json"
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  python3 - "$out/$name-$round.json" "$name" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
codes = d.get("statusCodeDistribution", {})
print(f"{sys.argv[2]:<11} {s['requestsPerSec']:9.1f} req/s  p50 {d['latencyPercentiles']['p50']*1e3:6.2f} ms  "
      f"p99 {d['latencyPercentiles']['p99']*1e3:6.2f} ms  status {codes}")
EOF
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round (concurrency $conc, ${secs}s each)"
  run off VIGIL__MONITORING__ENABLED=false VIGIL__MONITORING__LOG__ENABLED=false VIGIL__REVIEW__ENABLED=false
  run monitoring VIGIL__REVIEW__ENABLED=false
  run everything
done

python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rps = {n: [json.load(open(f"{out}/{n}-{r}.json"))["summary"]["requestsPerSec"] for r in range(1, rounds + 1)]
       for n in ("off", "monitoring", "everything")}
# This machine's speed drifts by tens of percent over minutes: compare each configuration
# with the "off" run of its own round (seconds apart), then take the median over rounds.
print("== throughput against monitoring off, per round (median over rounds)")
for n in ("monitoring", "everything"):
    ratios = [b / a for a, b in zip(rps["off"], rps[n])]
    m = statistics.median(ratios)
    print(f"{n:<11} median {(m - 1) * 100:+.1f}%  rounds: {', '.join(f'{(r - 1) * 100:+.0f}%' for r in ratios)}")
print(f"off         {statistics.median(rps['off']):.1f} req/s median  rounds: {', '.join(f'{x:.0f}' for x in rps['off'])}")
EOF
