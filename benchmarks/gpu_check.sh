#!/usr/bin/env bash
# GPU check of the engine and the trainer on a fresh machine with torch (CUDA) and numpy only; prints JSON.
#
#   benchmarks/gpu_check.sh [--tiny] [--out report.json]
#
# --tiny runs the same steps with the tiny preset at small sizes (also on a CPU): a check that it runs.
# The whole check is bounded to 7.5 minutes (GPU_CHECK_TIMEOUT=seconds changes that).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec timeout "${GPU_CHECK_TIMEOUT:-450}" "$PY" benchmarks/bench_gpu.py "$@"
