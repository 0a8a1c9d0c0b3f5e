#!/usr/bin/env bash
# The OpenAPI contract test (issue 19): schemathesis (PyPI) generates requests from
# /openapi.json against a live `vigil serve` with auth on (an admin token), and checks every
# answer against the document (`--checks all`: no 5xx, documented status codes, content types,
# headers and bodies). The served model (the shipped weld model) and one review item are given
# to it as path parameters, so that it reaches the deep operations.
#
# usage: bench/schemathesis.sh [MAX_EXAMPLES]     (default 50 per operation)
# VIGIL=path/to/vigil uses a binary already built (else the debug build is made here).
# needs: python3 (a venv with schemathesis==4.32.5 is made in target/schemathesis-venv)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
examples="${1:-50}"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/schemathesis-venv"
if ! "$venv/bin/st" --version >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
scripts/setup-onnxruntime >/dev/null
if [[ -z "${VIGIL:-}" ]]; then cargo build --quiet --locked -p vigil-cli; fi
vigil="${VIGIL:-$target/debug/vigil}"
work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

token_out="$("$vigil" auth token --name schemathesis --role admin)"
token="$(grep -o 'vgl_[0-9a-f]*' <<<"$token_out" | head -1)"
{
  echo "[auth]"
  echo "enabled = true"
  sed -n '/^\[\[auth.tokens\]\]/,$p' <<<"$token_out"
} >"$work/vigil.toml"
export VIGIL_CONFIG="$work/vigil.toml" VIGIL__STORE__DATA_DIR="$work/data" VIGIL__SERVER__PORT=0 \
  VIGIL__LOG__LEVEL=warn VIGIL__REVIEW__FLAG__QA_SHARE=1
# The served model also in the registry, so that the alias routes find it.
"$vigil" models push models/weldnet.tar --reason "schemathesis" >/dev/null
"$vigil" serve >"$work/addr" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/addr" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^listening on //p' "$work/addr")"
for _ in $(seq 300); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.2; done
auth=(-H "Authorization: Bearer $token")
# One prediction (the QA share is 1: it is queued) gives a request id and a review item.
request_id="$(curl -sf "${auth[@]}" -H 'content-type: image/png' \
  --data-binary @testdata/weld/RRT-106R_x0064_y0227.png "$base/v1/models/weldnet/predict" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')"
item=""
for _ in $(seq 50); do
  item="$(curl -sf "${auth[@]}" "$base/v1/review/queue" |
    python3 -c 'import json,sys; i=json.load(sys.stdin)["items"]; print(i[0]["id"] if i else "")')"
  [[ -n "$item" ]] && break; sleep 0.1
done
cat >"$work/schemathesis.toml" <<TOML
[parameters]
"path.name" = "weldnet"
"path.version" = "1.0.0"
"path.alias" = "production"
"path.request_id" = "$request_id"
"path.id" = ${item:-1}
"path.file" = "review.js"

# A body the schema allows is not always an image (or a tensor of the model's shape): the
# predict and infer routes rightly answer 400 to it, which OpenAPI cannot express.
[[operations]]
include-path-regex = "/(predict|infer)$"
checks.positive_data_acceptance.expected-statuses = [200, 400, 404, 413, 429, 503]

# A verdict's or feedback's label must be one of the model's labels, which the document cannot
# list (they come with each bundle): another label is rightly 400. With auth on, an
# `inspector` other than the token's holder is impersonation: rightly 403.
[[operations]]
include-path-regex = "/(verdict|feedback)$"
checks.positive_data_acceptance.expected-statuses = [200, 201, 400, 403, 404, 409, 503]
TOML
echo "schemathesis: $base, model weldnet 1.0.0, request $request_id, review item ${item:-none}"
set +e
"$venv/bin/st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --checks all "${auth[@]}" --max-examples "$examples" --workers 2 \
  --report junit --report-dir "$target/schemathesis-report"
rc=$?
set -e
echo "schemathesis exit $rc (report: $target/schemathesis-report)"
grep -c " 5[0-9][0-9] " "$work/serve.log" 2>/dev/null | sed 's/^/server log lines with a 5xx: /' || true
exit $rc
