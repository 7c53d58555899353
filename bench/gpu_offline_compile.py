"""Compile the CUDA sweep kernels for sm_90 on a machine WITHOUT a GPU and report ptxas's resources.

    .venv/bin/python bench/gpu_offline_compile.py [--cuda-home /usr/local/cuda-13.0] [--caps 8,16,32,64,128,256]

Needs a CUDA toolkit's libnvvm, libdevice and ptxas (no driver, no device). numba-cuda asks the
driver for the current device's compute capability and NVRTC for the supported ones; both are
answered here with sm_90 (this script only; nothing in gpu/ is patched). The simulator does not type
the kernel, so this is the check that the CUDA kernel compiles at all (registers, spills, stack =
local memory per thread, shared memory per block), for layout v1 and every v2 capacity bucket.
The real figures (the driver's JIT and LTO may differ) come from bench/gpu_check.sh on a GPU host.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import types
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CC = (9, 0)


def find_cuda_home() -> Path | None:
    for p in sorted(Path("/usr/local").glob("cuda*"), reverse=True):
        if (p / "bin" / "ptxas").exists() and list(p.glob("nvvm/libdevice/libdevice*.bc")):
            return p
    return None


def offline_target(cuda_home: Path) -> None:
    """Point numba-cuda at ``cuda_home`` and answer its device / NVRTC questions with sm_90."""
    import os

    os.environ.setdefault("CUDA_HOME", str(cuda_home))
    import numba.cuda.cudadrv.libs as libs
    import numba.cuda.cudadrv.nvrtc as nvrtc
    import numba.cuda.cudadrv.nvvm as nvvm
    import numba.cuda.dispatcher as dispatcher

    libdevice = str(next((cuda_home / "nvvm" / "libdevice").glob("libdevice*.bc")))
    libs.get_libdevice = nvvm.get_libdevice = lambda: libdevice
    nvrtc.get_supported_ccs = lambda: ((7, 5), (8, 0), (8, 6), (8, 9), CC)
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)


def kernel_args(layout: str, cap: int, entry_sub: bool = False):
    """(kernel dispatcher, host arguments typed like the device ones) for a small generated market."""
    sys.path.insert(0, str(REPO / "bench"))
    from sweep_speed import generated_market

    from gpu.api import bind_data, prepare
    from gpu.backend import _scratch, lane_map
    from gpu.kernels import (
        Candidates,
        Lanes,
        Market,
        MarketT,
        Outputs,
        RunSpec,
        make_cuda_driver,
        make_cuda_driver_v2,
        warps_per_block,
    )
    from gpu.spec import load_sweep_spec
    from strategy.config import config_from_dict
    from strategy.layout import NFILL, NM, NTRADE

    base = config_from_dict({})
    md = generated_market(min(cap, 50) if cap else 8, 120)
    spec = replace(load_sweep_spec(REPO / "config" / "sweeps" / "full.yaml", base), lookback=60)
    md, funding, sub = bind_data(base, md, None, None, spec.axes)
    s = prepare(base, spec, md, funding, sub=sub).static
    pvals = np.zeros((4, s.pcols.shape[0]))
    run = RunSpec(int(s.sub.k), 0, 0, s.t0, s.t1, s.btc_idx, float(s.initial_balance))  # the types decide the code
    if layout == "v2":
        fidx = np.zeros((4, 24), dtype=np.int32)
        cand, wc, combos = lane_map(fidx, warps_per_block(cap))
        market = MarketT(np.ascontiguousarray(s.pool.transpose(2, 0, 1)),
                         np.zeros((s.valid.shape[1] + 1, s.nsym), np.uint8), np.ascontiguousarray(s.funding.T),
                         s.t_open, s.t_close, *s.sub_arrays())
        return make_cuda_driver_v2(cap, entry_sub=entry_sub), (
            Lanes(cand, wc, combos), market, Candidates(combos, pvals, s.pcols, s.preplace, s.base_params), run,
            Outputs(np.zeros((4, NM)), np.zeros((1, 0, NFILL)), np.zeros((1, 0, NTRADE))))
    fidx = np.zeros((4, 24), dtype=np.int32)
    market = Market(s.pool, s.valid, s.funding, s.t_open, s.t_close, *s.sub_arrays())
    return make_cuda_driver(), (0, 4, market, Candidates(fidx, pvals, s.pcols, s.preplace, s.base_params), run,
                                _scratch(np.zeros, 4, s.nsym, 0, 0), np.zeros((4, NM)))


def compile_report(layout: str, cap: int, cuda_home: Path, max_registers: int | None = None,
                   entry_sub: bool = False) -> dict:
    """ptxas -v for the kernel: registers, spill bytes, stack (local) bytes, shared bytes."""
    import numba
    from numba import cuda

    kern, args = kernel_args(layout, cap, entry_sub)
    ptx, _ = cuda.compile_ptx(kern.py_func, tuple(numba.typeof(a) for a in args), cc=CC)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
        fh.write(ptx)
    opts = [f"-maxrregcount={max_registers}"] if max_registers else []
    proc = subprocess.run([str(cuda_home / "bin" / "ptxas"), f"-arch=sm_{CC[0]}{CC[1]}", "-v", *opts, fh.name,
                           "-o", "/dev/null"], capture_output=True, text=True)
    Path(fh.name).unlink()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    text = proc.stderr

    def num(pattern):
        m = re.findall(pattern, text)
        return int(m[-1]) if m else 0
    return {"layout": layout, "entry_sub": bool(entry_sub), "capacity": cap if layout == "v2" else None, "ptx_lines": len(ptx.splitlines()),
            "registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "stack_bytes": num(r"(\d+) bytes stack frame"), "shared_bytes": num(r"(\d+) bytes smem"),
            "max_registers": max_registers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuda-home", type=Path, default=None)
    ap.add_argument("--caps", default="8,16,32,64,128,256")
    args = ap.parse_args()
    home = args.cuda_home or find_cuda_home()
    if home is None:
        print("no CUDA toolkit (libnvvm, libdevice, ptxas) under /usr/local/cuda*: pass --cuda-home")
        return 2
    offline_target(home)
    rows = [compile_report("v1", 0, home)]
    rows += [compile_report("v2", int(c), home) for c in args.caps.split(",")]
    print(f"sm_{CC[0]}{CC[1]} via {home} (ptxas -v)")
    print(f"{'layout':6s} {'cap':>4s} {'regs':>5s} {'spill B':>8s} {'local B/thread':>15s} {'shared B/block':>15s}")
    for r in rows:
        print(f"{r['layout']:6s} {r['capacity'] or '-':>4} {r['registers']:5d} {r['spill_stores']:8d} "
              f"{r['stack_bytes']:15,d} {r['shared_bytes']:15,d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
