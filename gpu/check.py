"""The GPU check (bench/gpu_check.sh): device facts, compiled-kernel resources, cuda == cpu, throughput.

    python -m gpu.check OUTDIR [--data ../shared/data] [--sim-size]

On a CUDA host it
  1. prints the device facts (SMs, per-SM limits, L2, memory) and the numba / numba-cuda versions;
  2. compiles both layouts (v1: candidate-major global scratch; v2: warp-shared feature rows and
     per-thread local state, docs/GPU.md) and prints registers, local memory per thread and shared
     memory per block from numba's dispatcher (get_regs_per_thread, get_local_mem_per_thread,
     get_shared_mem_per_block);
  3. runs cuda (v2 and v1) == cpu on ../shared/data and on a generated 50-symbol x 1-year 1h set for
     >= 2,000 candidates sampled from config/sweeps/full.yaml (every swept family and window moves):
     trade counts must be equal and the metrics equal (relative 1e-9: FMA contraction may differ
     between the CPU and the GPU compiler); every differing candidate is listed and the check fails;
  4. times both layouts at 65,536 / 16,384 / 2,283 candidates (candidates/s and
     candidate·symbol·bars/s; compilation excluded) and prints the table and the ratio v2/v1;
  5. writes OUTDIR/gpu_check.json.
With NUMBA_ENABLE_CUDASIM=1 (or --sim-size) the same steps run at a tiny size on numba's simulator,
so any machine (and CI) runs it; the simulator's figures say nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REL_TOL = 1e-9
FULL_SIZES = (2_283, 16_384, 65_536)
SIM_SIZES = (2, 4)
TIME_BUDGET_S = 500.0  # no timing starts that would end past this (the whole check stays under 9 min)


def simulator() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def device_facts() -> dict:
    import numba

    facts = {"numba": numba.__version__, "python": platform.python_version(), "simulator": simulator()}
    try:
        from importlib.metadata import version

        facts["numba_cuda"] = version("numba-cuda")
    except Exception:
        facts["numba_cuda"] = None
    if simulator():
        facts["device"] = "numba CUDA simulator (no GPU)"
        return facts
    from numba import cuda

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    free, total = cuda.current_context().get_memory_info()
    facts.update(device=name, compute_capability=list(dev.compute_capability), free_bytes=int(free),
                 total_bytes=int(total))
    for attr in ("MULTIPROCESSOR_COUNT", "MAX_THREADS_PER_MULTIPROCESSOR", "MAX_REGISTERS_PER_MULTIPROCESSOR",
                 "MAX_BLOCKS_PER_MULTIPROCESSOR", "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", "MAX_SHARED_MEMORY_PER_BLOCK",
                 "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", "L2_CACHE_SIZE", "CLOCK_RATE", "MEMORY_CLOCK_RATE",
                 "GLOBAL_MEMORY_BUS_WIDTH"):
        try:
            facts[attr.lower()] = int(getattr(dev, attr))
        except Exception:
            facts[attr.lower()] = None
    try:
        facts["driver_version"] = cuda.cudadrv.driver.driver.get_version()
    except Exception:
        pass
    return facts


def kernel_resources(evaluator) -> dict:
    """Registers, local memory per thread and shared memory per block of the evaluator's compiled kernel
    (numba's dispatcher APIs; the simulator has none)."""
    out = {"layout": evaluator.layout, "threads_per_block": evaluator.threads_per_block(),
           "max_batch": int(evaluator.max_batch)}
    if evaluator.layout == "v2":
        out.update(capacity=evaluator.cap, warps_per_block=evaluator.warps)
    kern = evaluator._kernel_if_compiled()
    if kern is None or simulator():
        return out
    for key, fn in (("regs_per_thread", "get_regs_per_thread"), ("local_bytes_per_thread", "get_local_mem_per_thread"),
                    ("shared_bytes_per_block", "get_shared_mem_per_block"),
                    ("max_threads_per_block", "get_max_threads_per_block")):
        try:
            v = getattr(kern, fn)()
            out[key] = max(v.values()) if isinstance(v, dict) else int(v)
        except Exception as exc:  # an API this numba-cuda lacks: say so, do not fail the check
            out[key] = f"n/a ({type(exc).__name__})"
    return out


def sample_candidates(prep, n: int, seed: int = 7) -> np.ndarray:
    """``n`` random value_idx rows of the spec that satisfy its constraints (gated axes on their
    base slot where their gate is off)."""
    from gpu.grid import encoded_columns

    rng = np.random.default_rng(seed)
    sizes = np.array([len(a.values) for a in prep.spec.axes])
    rows = []
    while sum(len(r) for r in rows) < n:
        vi = prep.spec.close_gates((rng.random((2 * n + 16, len(sizes))) * sizes).astype(np.int32))
        rows.append(vi[prep.spec.satisfies(encoded_columns(prep.spec, vi))])
    return np.concatenate(rows)[:n]


def compare(name: str, cpu: np.ndarray, other: np.ndarray, label: str) -> dict:
    """Trade counts equal and metrics within REL_TOL; the differing candidates listed."""
    from strategy.layout import M_TOTAL_TRADES

    trades_equal = cpu[:, M_TOTAL_TRADES] == other[:, M_TOTAL_TRADES]
    both_nan = np.isnan(cpu) & np.isnan(other)
    close = both_nan | (np.abs(cpu - other) <= REL_TOL * np.maximum(1.0, np.abs(cpu)))
    ok_rows = trades_equal & close.all(axis=1)
    bad = np.flatnonzero(~ok_rows)
    diff = np.where(both_nan, 0.0, np.abs(cpu - other))
    return {"set": name, "layout": label, "candidates": int(cpu.shape[0]), "equal": bool(bad.size == 0),
            "bitwise_equal_rows": int((np.where(both_nan, True, cpu == other)).all(axis=1).sum()),
            "trades_total": int(cpu[:, M_TOTAL_TRADES].sum()), "max_abs_diff": float(diff.max(initial=0.0)),
            "differing_candidates": bad[:50].tolist(), "n_differing": int(bad.size)}


def _prepare(md, spec_path: Path, base, lookback: int):
    from gpu.api import bind_data, prepare
    from gpu.spec import load_sweep_spec

    spec = replace(load_sweep_spec(spec_path, base), lookback=lookback)
    md, funding, sub = bind_data(base, md, None, None, spec.axes)
    return prepare(base, spec, md, funding, sub=sub)


def _slice(md, n):
    return replace(md, times=md.times[:n], open=md.open[:, :n], high=md.high[:, :n], low=md.low[:, :n],
                   close=md.close[:, :n], volume=md.volume[:, :n], valid=md.valid[:, :n])


def _tail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:400]


def _evaluate(Evaluator, static, backend, layout, pvals, fidx, report):
    """One layout's metrics; if the CuPy-owned pool fails, say so and retry with numba's own copy."""
    try:
        ev = Evaluator(static, backend, layout=layout)
        return ev, ev.evaluate(pvals, fidx)[0]
    except Exception as exc:
        if backend != "cuda" or os.environ.get("AIQ_SWEEP_NO_CUPY") == "1":
            raise
        report["errors"].append(f"{layout} with the CuPy pool: {_tail(exc)}; retried with AIQ_SWEEP_NO_CUPY=1")
        os.environ["AIQ_SWEEP_NO_CUPY"] = "1"
        ev = Evaluator(static, backend, layout=layout)
        return ev, ev.evaluate(pvals, fidx)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="cuda == cpu and throughput, old vs new layout")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--sim-size", action="store_true", help="the tiny size (default under the simulator)")
    ap.add_argument("--equal-candidates", type=int, default=2048)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    tiny = args.sim_size or simulator()
    backend = "cudasim" if simulator() else "cuda"

    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    from sweep_speed import generated_market

    from gpu.backend import Evaluator
    from marketdata.candles import load_market_data
    from strategy.config import config_from_dict

    args.outdir.mkdir(parents=True, exist_ok=True)
    report = {"device": device_facts(), "simulator": simulator(), "tiny": tiny}
    print("== device")
    for k, v in report["device"].items():
        print(f"  {k}: {v}")
    base = config_from_dict({})
    spec_path = REPO / "config" / "sweeps" / "full.yaml"
    sets = []
    real_db = args.data / "candles_1h.db"
    if real_db.exists():
        real = load_market_data(str(real_db), "1h")
        sets.append(("shared/data 1h", _slice(real, 160) if tiny else real, 60))
    else:
        print(f"  (no {real_db}: the real-data check is skipped)")
    gen = generated_market(4, 200) if tiny else generated_market(50, 8760)
    sets.append((f"generated {gen.nsym} sym x {gen.nbar} 1h", gen, 60 if tiny else 200))
    n_eq = 4 if tiny else max(2000, args.equal_candidates)

    print("== cuda == cpu (trade counts equal, metrics within 1e-9 relative)")
    report["equality"] = []
    report["kernels"] = {}
    report["errors"] = []
    failed = False
    preps = {}
    for name, md, lookback in sets:
        prep = _prepare(md, spec_path, base, lookback)
        preps[name] = prep
        vi = sample_candidates(prep, n_eq)
        pvals, fidx = prep.kernel_vectors(vi)
        cpu = Evaluator(prep.static, "cpu").evaluate(pvals, fidx)[0]
        for layout in ("v2", "v1"):
            try:
                ev, got = _evaluate(Evaluator, prep.static, backend, layout, pvals, fidx, report)
            except Exception as exc:  # keep going: one GPU session should bring back all it can
                failed = True
                report["errors"].append(f"equality {name} {layout}: {_tail(exc)}")
                print(f"  {name:28s} {layout}: ERROR {_tail(exc)}")
                continue
            res = compare(name, cpu, got, layout)
            report["equality"].append(res)
            report["kernels"][f"{layout} ({name})"] = kernel_resources(ev)
            failed |= not res["equal"]
            print(f"  {name:28s} {layout}: {res['candidates']} candidates, {res['trades_total']} trades, "
                  f"{'EQUAL' if res['equal'] else 'DIFFERENT'} (bitwise rows {res['bitwise_equal_rows']}, "
                  f"max |diff| {res['max_abs_diff']:.3g})"
                  + ("" if res["equal"] else f"; candidates {res['differing_candidates']}"))
    print("== compiled kernels (numba dispatcher)")
    for k, v in report["kernels"].items():
        print(f"  {k}: {v}")

    print("== throughput (compilation excluded)")
    name, md, _lb = sets[-1]
    prep = preps[name]
    nbars = prep.static.t1 - prep.static.t0
    report["throughput"] = []
    sizes = SIM_SIZES if tiny else FULL_SIZES
    vi_all = sample_candidates(prep, max(sizes), seed=11)
    print(f"  {'layout':6s} {'candidates':>10s} {'seconds':>9s} {'cand/s':>12s} {'cand·sym·bar/s':>16s}")
    # largest first: the 65,536 ratio matters most, and a smaller size takes at most as long as a larger
    # one (the largest is timed unless the equality part already ate the budget)
    last_s: dict[str, float] = {}
    for n in sorted(sizes, reverse=True):
        pvals, fidx = prep.kernel_vectors(vi_all[:n])
        for layout in ("v1", "v2"):
            predicted = last_s.get(layout, 0.0)
            if time.perf_counter() - started + predicted > TIME_BUDGET_S:
                report["throughput"].append({"layout": layout, "candidates": n, "skipped": "time budget"})
                print(f"  {layout:6s} {n:>10,} skipped (time budget)")
                continue
            try:
                ev = Evaluator(prep.static, backend, layout=layout, max_batch=n)
                ev.evaluate(pvals[:min(n, 32)], fidx[:min(n, 32)])  # compile / warm up
                t = time.perf_counter()
                ev.evaluate(pvals, fidx)
                secs = time.perf_counter() - t
            except Exception as exc:
                failed = True
                report["errors"].append(f"throughput {layout} {n}: {_tail(exc)}")
                report["throughput"].append({"layout": layout, "candidates": n, "error": _tail(exc)})
                print(f"  {layout:6s} {n:>10,} ERROR {_tail(exc)}")
                continue
            row = {"layout": layout, "candidates": n, "symbols": md.nsym, "bars": nbars, "seconds": secs,
                   "cand_per_s": n / secs, "cand_sym_bar_per_s": n * md.nsym * nbars / secs}
            report["throughput"].append(row)
            last_s[layout] = secs
            print(f"  {layout:6s} {n:>10,} {secs:9.2f} {row['cand_per_s']:12,.0f} {row['cand_sym_bar_per_s']:16,.3g}")
    report["throughput"].sort(key=lambda r: (r["candidates"], r["layout"]))
    by = {(r["layout"], r["candidates"]): r for r in report["throughput"] if "seconds" in r}
    top = sizes[-1]
    if ("v1", top) in by and ("v2", top) in by:
        report["ratio_v2_over_v1_at_max"] = by[("v2", top)]["cand_per_s"] / by[("v1", top)]["cand_per_s"]
        print(f"  v2 / v1 at {top:,} candidates: {report['ratio_v2_over_v1_at_max']:.2f}x")
    if report["errors"]:
        failed = True
        print("== errors")
        for e in report["errors"]:
            print(f"  {e}")
    report["elapsed_s"] = time.perf_counter() - started
    report["passed"] = not failed
    out = args.outdir / "gpu_check.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"== {'PASS' if not failed else 'FAIL'} in {report['elapsed_s']:.0f} s; wrote {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
