#!/usr/bin/env bash
# VNN-COMP entry: get ready for one instance. Stops any certprune left over from a previous instance and
# checks that the files exist; loading and any conversion happen inside run_instance.sh's time limit.
# Usage: prepare_instance.sh v1 BENCHMARK ONNX VNNLIB
set -uo pipefail
[ "$#" -eq 4 ] || { echo "usage: $0 v1 BENCHMARK ONNX VNNLIB" >&2; exit 1; }
pkill -f "certprune.cli.main verify" 2>/dev/null || true
for f in "$3" "$4"; do
  [ -f "$f" ] || [ -f "$f.gz" ] || { echo "missing file: $f" >&2; exit 1; }
done
exit 0
