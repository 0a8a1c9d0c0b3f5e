#!/usr/bin/env bash
# Runs each fuzz target (fuzz/README.md) for SECONDS (default 600) on the stable toolchain and
# prints executions and findings per target. Crashes: fuzz/artifacts/<target>/.
#
# usage: bench/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
seconds="${1:-600}"; shift || true
targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(image_decode bundle_read v2_request)
# libFuzzer's coverage instrumentation through stable codegen flags (what cargo-fuzz passes,
# less the nightly-only sanitizer); debug assertions and overflow checks on, as in tests.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/target/fuzz}"
# With an explicit --target, RUSTFLAGS reach only the fuzzed code, not build scripts and
# proc macros (which cannot link the coverage hooks), as cargo-fuzz does it.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bins --target "$triple" >&2
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$CARGO_TARGET_DIR/$t.log"
  set +e
  "$CARGO_TARGET_DIR/$triple/release/$t" "corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -timeout=10 -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  found=$(ls "artifacts/$t" | wc -l)
  summary+=("$t: ${execs} executions in ${seconds} s, exit ${rc}, ${found} findings in fuzz/artifacts/$t/")
done
printf '%s\n' "${summary[@]}"
