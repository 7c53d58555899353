#!/usr/bin/env bash
# The GPU check, one command for a CUDA host (docs/GPU.md):   bench/gpu_check.sh OUTDIR
# Device facts; registers, local and shared memory of both compiled layouts; cuda == cpu on
# ../shared/data and on a generated 50-symbol x 1-year 1h set (>= 2,000 candidates); throughput at
# 2,283 / 16,384 / 65,536 candidates, layout v1 (old) vs v2 (new); JSON to OUTDIR/gpu_check.json.
# Under 9 minutes on one H100/H200. With NUMBA_ENABLE_CUDASIM=1 it runs a tiny size on any machine.
# Python: $PYTHON if set, else .venv/bin/python, else python3 when it has numba-cuda and the project's
# dependencies, else a new .venv (system site packages + `pip install -e .`, with the gpu extra
# when CuPy is missing).
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: bench/gpu_check.sh OUTDIR [--data DIR]" >&2; exit 2; fi
OUTDIR=$1; shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-}
need='import numba, numba.cuda, numpy, yaml, rich, optuna'
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "$need" 2>/dev/null; then
    PY=.venv/bin/python
  elif python3 -c "$need" 2>/dev/null; then
    PY=python3                          # an image that already holds numba-cuda and the project's deps
  else                                  # build: reuse the image's CUDA packages, add the project's deps
    python3 -m venv --system-site-packages .venv
    extra=""; .venv/bin/python -c 'import cupy' 2>/dev/null || extra="[gpu]"
    .venv/bin/pip install -q -e ".$extra"
    PY=.venv/bin/python
  fi
fi
echo "python: $PY ($("$PY" -c 'import sys, numba; print(sys.version.split()[0], "numba", numba.__version__)'))"
if [ "${NUMBA_ENABLE_CUDASIM:-0}" != "1" ]; then
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv || true
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUTDIR"
"$PY" -m gpu.check "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
