#!/usr/bin/env bash
# The GPU measurement of docs/benchmarks.md in one prepared run (< 8 minutes on one H100/H200), for the lent device
# machine: `run` with command `bash benchmarks/gpu_suite.sh`. JSON lands in $OUT/gpu_suite.json after every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-suite}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
timeout 470 python benchmarks/gpu_suite.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_suite.log"
