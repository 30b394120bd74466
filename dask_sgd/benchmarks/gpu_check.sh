#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): W1 and W3 on CuPy blocks against the
# NumPy path and a plain loop, on a machine with an NVIDIA GPU. Installs the `gpu` extra
# where CuPy is missing. Usage: bash dask_sgd/benchmarks/gpu_check.sh [RESULTS.json]
# Exits 1 if a fit on the GPU disagrees with its NumPy fit.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import cupy, dask_sgd" 2>/dev/null; then
    "$PYTHON" -m pip install -q -e ".[gpu]"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -m dask_sgd.benchmarks.gpu_check --json "${1:-gpu-check.json}"
