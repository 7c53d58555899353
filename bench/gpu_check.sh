#!/usr/bin/env bash
# The GPU check, one command for a CUDA host (docs/GPU.md):   bench/gpu_check.sh OUTDIR
# Device facts; registers, local and shared memory of both compiled layouts; cuda == cpu on
# ../shared/data and on a generated 50-symbol x 1-year 1h set (>= 2,000 candidates); throughput at
# 2,283 / 16,384 / 65,536 candidates, layout v1 (old) vs v2 (new); JSON to OUTDIR/gpu_check.json.
# Under 9 minutes on one H100/H200. With NUMBA_ENABLE_CUDASIM=1 it runs a tiny size on any machine.
# Python: $PYTHON if set, else .venv/bin/python (created with the gpu extra when missing), else python3.
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: bench/gpu_check.sh OUTDIR [--data DIR]" >&2; exit 2; fi
OUTDIR=$1; shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
  elif command -v uv >/dev/null 2>&1; then
    uv venv -q .venv && uv pip install -q --python .venv/bin/python -e ".[gpu]" && PY=.venv/bin/python
  else
    python3 -m venv .venv && .venv/bin/pip install -q -e ".[gpu]" && PY=.venv/bin/python
  fi
fi
if [ "${NUMBA_ENABLE_CUDASIM:-0}" != "1" ]; then
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv || true
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUTDIR"
"$PY" -m gpu.check "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
