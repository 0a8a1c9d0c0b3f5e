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
#
# PAIRED=1 runs "off" and "monitoring" at the same time instead, each server loaded by its own
# oha at CONC/2, so both see the same minutes of a machine whose speed drifts (on a shared
# 2-core VM it can halve between rounds). The two servers then share the cores: the
# scheduler gives each about the same CPU, so the throughput ratio is the ratio of CPU spent
# per request. The ports swap every round.
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
  local before; before="$(cpu_ticks "$server_pid")"
  "$oha" --no-tui -z "${secs}s" -c "$conc" -m POST -T image/png -D "$tile" \
    --output-format json http://127.0.0.1:8211/v1/models/weldnet/predict >"$out/$name-$round.json"
  echo $(( $(cpu_ticks "$server_pid") - before )) >"$out/$name-$round.ticks"
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  python3 - "$out/$name-$round" "$name" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1] + ".json"))
s = d["summary"]
codes = d.get("statusCodeDistribution", {})
served = sum(codes.values())
cpu_ms = int(open(sys.argv[1] + ".ticks").read()) / int(sys.argv[3]) * 1e3 / max(served, 1)
print(f"{sys.argv[2]:<11} {s['requestsPerSec']:9.1f} req/s  p50 {d['latencyPercentiles']['p50']*1e3:6.2f} ms  "
      f"p99 {d['latencyPercentiles']['p99']*1e3:6.2f} ms  server CPU {cpu_ms:.3f} ms/request  status {codes}")
EOF
}

# The server's user + system CPU time so far, in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the command name, which may hold spaces).
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

if [[ "${PAIRED:-0}" == 1 ]]; then
  half=$(( (conc + 1) / 2 ))
  declare -A pids
  start() { # name, port, env...
    local name="$1" port="$2"; shift 2
    rm -rf "$work/$name"
    env VIGIL__STORE__DATA_DIR="$work/$name" VIGIL__LOG__LEVEL=warn "$@" \
      "$vigil" serve --port "$port" >"$work/$name.out" 2>"$work/$name.err" &
    pids[$name]=$!
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
  }
  load() { # port, duration, output
    "$oha" --no-tui -z "$2" -c "$half" -m POST -T image/png -D "$tile" \
      --output-format json "http://127.0.0.1:$1/v1/models/weldnet/predict" >"$3"
  }
  stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p"; wait "$p" || true; done
    pids=()
  }
  trap 'stop_all 2>/dev/null; rm -rf "$work"' EXIT
  for round in $(seq 1 "$rounds"); do
    if (( round % 2 )); then p_off=8211; p_on=8212; else p_off=8212; p_on=8211; fi
    start off "$p_off" VIGIL__MONITORING__ENABLED=false VIGIL__MONITORING__LOG__ENABLED=false VIGIL__REVIEW__ENABLED=false
    start monitoring "$p_on" VIGIL__REVIEW__ENABLED=false
    load "$p_off" 3s /dev/null & a=$!; load "$p_on" 3s /dev/null & b=$! # warm-up
    wait "$a" "$b"
    load "$p_off" "${secs}s" "$out/paired-off-$round.json" & a=$!
    load "$p_on" "${secs}s" "$out/paired-monitoring-$round.json" & b=$!
    wait "$a" "$b"
    stop_all
  done
  python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rps = {n: [json.load(open(f"{out}/paired-{n}-{r}.json"))["summary"]["requestsPerSec"] for r in range(1, rounds + 1)]
       for n in ("off", "monitoring")}
ratios = [b / a for a, b in zip(rps["off"], rps["monitoring"])]
for r, (a, b) in enumerate(zip(rps["off"], rps["monitoring"]), 1):
    print(f"round {r}: off {a:7.1f} req/s  monitoring {b:7.1f} req/s  {(b / a - 1) * 100:+.1f}%")
print(f"== side by side, monitoring against off: median {(statistics.median(ratios) - 1) * 100:+.1f}% over {rounds} rounds; "
      f"off {statistics.median(rps['off']):.1f} req/s median")
EOF
  exit 0
fi

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
# The same from the server's CPU time per answered request, which depends less on how much of
# the cores oha and the neighbours left to the server (with engine.spin_wait on, ONNX
# Runtime's spinning threads count as work here).
def cpu(n, r):
    d = json.load(open(f"{out}/{n}-{r}.json"))
    served = sum(d.get("statusCodeDistribution", {}).values())
    return int(open(f"{out}/{n}-{r}.ticks").read()) / max(served, 1)
print("== server CPU per request against monitoring off (median over rounds)")
for n in ("monitoring", "everything"):
    ratios = [cpu(n, r) / cpu("off", r) for r in range(1, rounds + 1)]
    print(f"{n:<11} median {(statistics.median(ratios) - 1) * 100:+.1f}%  rounds: {', '.join(f'{(x - 1) * 100:+.0f}%' for x in ratios)}")
EOF
