#!/usr/bin/env bash
# The Open Inference Protocol test with the official Python client (issue 4): builds Vigil,
# makes and pushes a bundle of the test model into a temporary data directory, starts
# `vigil serve` on a free port of 127.0.0.1, runs test_tritonclient.py against it, then stops
# the server with SIGTERM and requires exit code 0.
#
# usage: tests/oip/run.sh            (the client venv is cached in target/oip-venv)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/oip-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import tritonclient.http, PIL" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/oip/requirements.txt
fi
cargo build --quiet --locked -p vigil-cli
vigil="$target/debug/vigil"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export VIGIL__STORE__DATA_DIR="$work/data" VIGIL__LOG__LEVEL=warn
"$vigil" -q bundle create --model testdata/weldnet-s.onnx --name weldnet --version 1.0.0 \
  --labels no_defect,porosity,crack,lack_of_fusion --preprocess testdata/weld-preprocess.toml \
  --golden testdata/weld/RRT-106R_x0064_y0227.png --out "$work/bundle" >/dev/null
"$vigil" -q models push "$work/bundle" >/dev/null 2>&1
"$vigil" -q models alias set weldnet production 1.0.0 --reason "OIP test" >/dev/null

"$vigil" serve --port 0 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$work/serve.out" | head -1)"
  if [[ -n "$addr" ]] && "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "http://$addr/readyz" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "vigil serve did not start:"; cat "$work/serve.err"; exit 1
fi
"$venv/bin/python" tests/oip/test_tritonclient.py "$addr" weldnet testdata/weld/RRT-106R_x0128_y0227.png
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
if [[ $rc -ne 0 ]]; then
  echo "vigil serve exited $rc after SIGTERM (expected 0):"; cat "$work/serve.err"; exit 1
fi
echo "vigil serve stopped cleanly on SIGTERM"
