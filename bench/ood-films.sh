#!/usr/bin/env bash
# Out-of-distribution flags on a film the reference has never seen (leave one film out).
#
# For each of the eight weld films: a reference profile is built from the other seven (the
# model's signals from the remaining validation film(s), the image statistics and the
# out-of-distribution model from every remaining film: the shipped bundle's recipe), then the
# held-out film's tiles go through `vigil drift report --input`, and the share of them flagged
# out of distribution is printed. A film the reference never saw is what a line sends after
# the reference is built; the share is the flag rate an inspector would see on it.
#
# Usage: bench/ood-films.sh [BUNDLE]   (default models/weldnet.tar; VIGIL= the binary, default
# target/release/vigil). About a minute in a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-models/weldnet.tar}
VIGIL=${VIGIL:-target/release/vigil}
WORK=$(mktemp -d)
# Manifest paths are relative to the manifest's folder, so the reduced manifests go there.
MANIFESTS=()
trap 'rm -rf "$WORK" "${MANIFESTS[@]}"' EXIT
films=$(awk -F, 'NR>1 { n=split($1, p, "/"); sub(/_x.*/, "", p[n]); print p[n] }' data/weld/manifest.csv | sort -u)
printf '%-10s %7s %8s %8s %10s\n' film tiles flagged share threshold
total=0; flagged_total=0
for film in $films; do
  manifest="data/weld/.ood-films-without-$film.csv"
  MANIFESTS+=("$manifest")
  awk -F, -v f="$film" 'NR == 1 || index($1, "/" f "_") == 0' data/weld/manifest.csv >"$manifest"
  mkdir -p "$WORK/$film"
  awk -F, -v f="$film" 'NR > 1 && index($1, "/" f "_") > 0 { print $1 }' data/weld/manifest.csv |
    while read -r p; do ln -s "$PWD/data/weld/$p" "$WORK/$film/"; done
  "$VIGIL" bundle reference "$BUNDLE" --data "$manifest" --split val --stats-data "$manifest" \
    --block-length 125 --out "$WORK/ref-$film.tar" >/dev/null 2>&1
  # Exit 1 means drift was found, which a film unlike the others often is: not an error here.
  "$VIGIL" drift report --bundle "$WORK/ref-$film.tar" --input "$WORK/$film" \
    --out "$WORK/$film.html" >/dev/null 2>&1 || [ $? -eq 1 ]
  read -r scored flagged threshold < <(python3 -c "
import json, sys
o = json.load(open(sys.argv[1]))['ood']
print(o['scored'], o['flagged'], o['threshold'])" "$WORK/$film.json")
  total=$((total + scored)); flagged_total=$((flagged_total + flagged))
  printf '%-10s %7d %8d %7.1f%% %10.2f\n' "$film" "$scored" "$flagged" \
    "$(python3 -c "print(100 * $flagged / $scored)")" "$threshold"
done
printf '%-10s %7d %8d %7.1f%%\n' all "$total" "$flagged_total" \
  "$(python3 -c "print(100 * $flagged_total / $total)")"
