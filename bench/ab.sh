#!/usr/bin/env bash
# Throughput of two builds of `vigil serve`, A against B, on the same machine in interleaved
# rounds (issue 19: "throughput at c=32 within 3% of today's: the checks must not cost speed").
# Each round starts A and B in turn (the order alternates) on a fresh data directory with
# monitoring and review on (the defaults), warms each up for 3 s, then loads it for SECONDS
# with wrk at CONC connections POSTing a real weld tile to /v1/models/weldnet/predict. This
# machine's speed drifts by tens of percent over minutes, so each round's B is compared with
# its own round's A, seconds apart, and the median of those ratios is the figure.
#
# usage: bench/ab.sh A_BINARY B_BINARY [CONC=32] [SECONDS=10] [ROUNDS=6]
# example (today's main against the commit before the hardening issue):
#   git worktree add /tmp/base 856cf99 && ln -s "$PWD/third_party" /tmp/base/third_party
#   (cd /tmp/base && CARGO_TARGET_DIR="$PWD/target" cargo build --release -p vigil-cli)
#   bench/ab.sh target/release/vigil-856cf99 target/release/vigil 32 10 6
# needs: wrk (Debian package), curl, python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
a_bin="$(realpath "$1")"
b_bin="$(realpath "$2")"
conc="${3:-32}"
secs="${4:-10}"
rounds="${5:-6}"
wrk="${WRK:-$(command -v wrk)}"
cd "$root"
tile="$root/testdata/weld/RRT-106R_x0064_y0227.png"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = io.open("$tile", "rb")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT %d %d %.6f %d %d\n", summary.requests, non2xx, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99)))
end
LUA

# The server's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

run() { # label, binary -> "label rps p50_us p99_us cpu_ms_per_request non2xx"
  local label="$1" bin="$2"
  rm -rf "$work/data"
  VIGIL__STORE__DATA_DIR="$work/data" VIGIL__LOG__LEVEL=warn VIGIL__SERVER__PORT=0 \
    VIGIL__REVIEW__ENABLED=true VIGIL__MONITORING__ENABLED=true \
    "$bin" serve >"$work/serve.out" 2>"$work/serve.err" &
  server_pid=$!
  local base=""
  for _ in $(seq 200); do
    base="$(sed -n 's/^listening on //p' "$work/serve.out")"
    [[ -n "$base" ]] && break
    sleep 0.05
  done
  until curl -sf "$base/readyz" >/dev/null; do sleep 0.05; done
  "$wrk" -t2 -c"$conc" -d3s -s "$work/post.lua" "$base/v1/models/weldnet/predict" >/dev/null
  local before; before="$(cpu_ticks "$server_pid")"
  "$wrk" -t2 -c"$conc" -d"${secs}s" -s "$work/post.lua" "$base/v1/models/weldnet/predict" >"$work/wrk.out"
  local ticks=$(( $(cpu_ticks "$server_pid") - before ))
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  read -r _ n bad dur p50 p99 < <(grep '^RESULT' "$work/wrk.out")
  python3 -c "
n, bad, dur, p50, p99, ticks, hz = $n, $bad, $dur, $p50, $p99, $ticks, $(getconf CLK_TCK)
print('$label', round(n / dur, 1), p50, p99, round(ticks / hz * 1e3 / max(n, 1), 3), bad)"
}

: >"$work/results"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then order=(A B); else order=(B A); fi
  for label in "${order[@]}"; do
    if [[ "$label" == A ]]; then bin="$a_bin"; else bin="$b_bin"; fi
    line="$(run "$label" "$bin")"
    echo "round $round: $line" | awk '{printf "round %s %s %8.1f req/s  p50 %6.2f ms  p99 %6.2f ms  server CPU %s ms/request  non-2xx %s\n", $2, $3, $4, $5/1000, $6/1000, $7, $8}'
    echo "$round $line" >>"$work/results"
  done
done

python3 - "$work/results" "$a_bin" "$b_bin" "$conc" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    rnd, label, rps, p50, p99, cpu, bad = line.split()
    rows[int(rnd)][label] = (float(rps), float(p99), float(cpu))
ratio = [r["B"][0] / r["A"][0] for r in rows.values()]
cpu = [r["B"][2] / r["A"][2] for r in rows.values()]
print(f"== B ({sys.argv[3]}) against A ({sys.argv[2]}), c={sys.argv[4]}, {len(rows)} rounds")
print(f"throughput: median {(statistics.median(ratio) - 1) * 100:+.1f}%  rounds: "
      + ", ".join(f"{(x - 1) * 100:+.1f}%" for x in ratio))
print(f"server CPU per request: median {(statistics.median(cpu) - 1) * 100:+.1f}%")
print(f"A median {statistics.median(r['A'][0] for r in rows.values()):.1f} req/s, "
      f"B median {statistics.median(r['B'][0] for r in rows.values()):.1f} req/s")
EOF
