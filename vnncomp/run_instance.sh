#!/usr/bin/env bash
# VNN-COMP entry: decide one instance and write the competition's results file (sat with the counterexample,
# unsat, timeout, unknown or error). Gzipped files (the 2022 repository's .onnx.gz / .vnnlib.gz) are unpacked
# to a temporary folder first. Everything, start-up included, happens within TIMEOUT seconds.
# Usage: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
set -uo pipefail
[ "$#" -eq 6 ] || { echo "usage: $0 v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2; exit 1; }
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${CERTPRUNE_PYTHON:-$here/.venv/bin/python}"
onnx="$3"; vnnlib="$4"; results="$5"; timeout="$6"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
unpack() {  # $1 path (maybe without its .gz), $2 name in $tmp; prints the readable path
  if [ -f "$1" ] && [[ "$1" != *.gz ]]; then echo "$1"; return; fi
  local source="$1"; [ -f "$source" ] || source="$1.gz"
  gunzip -c "$source" > "$tmp/$2" && echo "$tmp/$2"
}
onnx="$(unpack "$onnx" model.onnx)" && vnnlib="$(unpack "$vnnlib" property.vnnlib)" || { echo error > "$results"; exit 0; }
# certprune's own deadline is the competition's minus what starting Python costs (about a second).
budget="$(awk -v t="$timeout" 'BEGIN { b = t - 1.5; if (b < 0.5) b = 0.5; print b }')"
state="${CERTPRUNE_VNNCOMP_STATE:-$here/.vnncomp}"; mkdir -p "$state"
"$python" -m certprune.cli.main verify "$onnx" --property "$vnnlib" --timeout "$budget" \
  --results-file "$results" --quiet &
echo $! > "$state/run.pid"
wait $!
code=$?
rm -f "$state/run.pid"
# exit codes 0/10/20 wrote the results file; anything else is an error the harness should see as such
if [ "$code" -ne 0 ] && [ "$code" -ne 10 ] && [ "$code" -ne 20 ]; then echo error > "$results"; fi
exit 0
