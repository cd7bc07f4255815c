#!/usr/bin/env bash
# VNN-COMP entry: get ready for one instance. Stops a certprune that run_instance.sh of this installation
# left running (its pid file, not every certprune on the machine) and checks that the files exist; loading
# and any conversion happen inside run_instance.sh's time limit.
# Usage: prepare_instance.sh v1 BENCHMARK ONNX VNNLIB
set -uo pipefail
[ "$#" -eq 4 ] || { echo "usage: $0 v1 BENCHMARK ONNX VNNLIB" >&2; exit 1; }
here="$(cd "$(dirname "$0")/.." && pwd)"
pidfile="${CERTPRUNE_VNNCOMP_STATE:-$here/.vnncomp}/run.pid"
if [ -f "$pidfile" ]; then
  kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
fi
for f in "$3" "$4"; do
  [ -f "$f" ] || [ -f "$f.gz" ] || { echo "missing file: $f" >&2; exit 1; }
done
exit 0
