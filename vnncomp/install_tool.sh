#!/usr/bin/env bash
# VNN-COMP entry: install certprune (a .venv beside the repository, CPU torch 2.13.0 first).
# Usage: install_tool.sh v1
set -euo pipefail
[ "${1:-v1}" = "v1" ] || { echo "expected version string v1, got $1" >&2; exit 1; }
cd "$(dirname "$0")/.."
make venv
