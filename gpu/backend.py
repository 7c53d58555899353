"""Backends: choose one (and say why), then evaluate batches of candidates on it.

Static inputs (pool, masks, funding, times, base params) are placed once per sweep — on the
device for cuda/cudasim — and each batch only ships its small per-candidate vectors. Nothing
here imports numba.cuda or cupy at module import; a GPU is touched only when a backend is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from gpu.kernels import WARP, Candidates, Lanes, Market, MarketT, Outputs, RunSpec, Scratch
from marketdata.subbars import SubBars
from strategy.features import NF
from strategy.layout import NACCT, NFILL, NM, NPOS, NTRADE
from strategy.params import NP

BACKENDS = ("auto", "cpu", "cuda", "cudasim")
MAX_CANDIDATE_BARS_PER_DISPATCH = 1_000_000_000  # the CPU backend's cap (passivbot #1709)
CPU_MAX_BATCH = 4096
THREADS_PER_BLOCK = 128  # layout v1's block; v2 uses warps_per_block(cap) x 32
LAYOUTS = ("v1", "v2")
DEFAULT_LAYOUT = "v2"
WAVES = 2               # resident lanes x 2: a second wave hides the tail of the first
REGS_GUESS = {"v1": 124, "v2": 166}  # sm_90 offline compiles (bench/gpu_offline_compile.py)
MEM_FRACTION = 0.5      # of the device's free memory, for one dispatch's per-candidate arrays
SIM_MAX_BATCH = 4096    # the simulator has no device facts


class BackendError(RuntimeError):
    """A backend that was asked for cannot run here; str() is one line."""


def _cudasim_active() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def _cuda_usable() -> tuple[bool, str]:
    from numba import cuda

    if not cuda.is_available():
        return False, "no CUDA device (numba.cuda.is_available() is False)"
    try:
        cuda.to_device(np.zeros(1)).copy_to_host()
        name = cuda.get_current_device().name
    except Exception as exc:  # driver present but unusable: say what the driver said
        return False, f"CUDA device unusable ({str(exc).splitlines()[0]})"
    name = name.decode() if isinstance(name, bytes) else str(name)
    return True, f"CUDA device {name}"


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """(backend, reason). Raises BackendError when an explicit request cannot be honoured."""
    if requested not in BACKENDS:
        raise BackendError(f"--backend: unknown backend {requested!r} (choose from {', '.join(BACKENDS)})")
    if requested == "cpu":
        return "cpu", "requested with --backend cpu"
    if requested == "cudasim":
        if not _cudasim_active():
            raise BackendError("backend cudasim needs NUMBA_ENABLE_CUDASIM=1 in the environment "
                               "before numba is imported")
        return "cudasim", "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    if _cudasim_active():
        if requested == "cuda":
            raise BackendError("backend cuda: NUMBA_ENABLE_CUDASIM=1 is set; unset it or use --backend cudasim")
        return "cpu", "NUMBA_ENABLE_CUDASIM=1 is set (use --backend cudasim to run the simulator)"
    ok, why = _cuda_usable()
    if requested == "cuda":
        if not ok:
            raise BackendError(f"backend cuda: {why}")
        return "cuda", why
    return ("cuda", why) if ok else ("cpu", why)


@dataclass
class StaticInputs:
    """Everything identical for every candidate of a sweep (host arrays)."""

    pool: np.ndarray          # [rows, nsym, nbar] float64 or float32
    pcols: np.ndarray         # int64[npax]
    preplace: np.ndarray      # uint8[nsym, npax]
    base_params: np.ndarray   # float64[nsym, NP]
    valid: np.ndarray         # uint8[nsym, nbar]
    funding: np.ndarray       # float64[nsym, nbar]
    t_open: np.ndarray        # int64[nbar]
    t_close: np.ndarray       # int64[nbar]
    t0: int
    t1: int
    btc_idx: int
    initial_balance: float
    sub: SubBars | None = field(default=None)  # finer sub-bars (exits/entries); None = main bars only

    def __post_init__(self) -> None:
        if self.sub is None:
            self.sub = SubBars.none(self.nsym, int(self.valid.shape[1]))

    @property
    def nsym(self) -> int:
        return int(self.valid.shape[0])

    def sub_arrays(self) -> tuple:
        """(sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms) contiguous, in the kernel's dtypes."""
        b = self.sub
        return (np.ascontiguousarray(b.open, dtype=np.float64), np.ascontiguousarray(b.high, dtype=np.float64),
                np.ascontiguousarray(b.low, dtype=np.float64), np.ascontiguousarray(b.close, dtype=np.float64),
                np.ascontiguousarray(b.valid, dtype=np.uint8),
                np.ascontiguousarray(b.close_ms, dtype=np.float64))


def _scratch(xp_empty, batch: int, nsym: int, max_fills: int, max_trades: int) -> Scratch:
    return Scratch(
        params=xp_empty((batch, nsym, NP), np.float64), feat=xp_empty((batch, nsym, NF), np.float64),
        pos=xp_empty((batch, nsym, NPOS), np.float64), acct=xp_empty((batch, NACCT), np.float64),
        rank_score=xp_empty((batch, nsym), np.float64), rank_idx=xp_empty((batch, nsym), np.int64),
        vrow=xp_empty((batch, nsym), np.uint8), pvrow=xp_empty((batch, nsym), np.uint8),
        frow=xp_empty((batch, nsym), np.float64), fills=xp_empty((batch, max_fills, NFILL), np.float64),
        trades=xp_empty((batch, max_trades, NTRADE), np.float64),
    )


_CUDA_DRIVER = None


def _cpu_driver():
    """The module-level, disk-cached CPU driver (gpu/cpu_driver.py)."""
    from gpu.cpu_driver import sweep_cpu

    return sweep_cpu


def _cuda_driver():
    global _CUDA_DRIVER
    if _CUDA_DRIVER is None:
        from gpu.kernels import make_cuda_driver

        _CUDA_DRIVER = make_cuda_driver()
    return _CUDA_DRIVER


def max_candidate_bars_per_dispatch() -> int:
    """The dispatch cap; an H100 wants ~3e10 (docs/GPU.md), so AI_QUANT_SWEEP_MAX_CANDIDATE_BARS sets it."""
    import os

    raw = os.environ.get("AI_QUANT_SWEEP_MAX_CANDIDATE_BARS", "").strip()
    if not raw:
        return MAX_CANDIDATE_BARS_PER_DISPATCH
    try:
        value = int(float(raw))
    except ValueError:
        raise BackendError(f"AI_QUANT_SWEEP_MAX_CANDIDATE_BARS={raw!r} is not a number") from None
    if value < 1:
        raise BackendError(f"AI_QUANT_SWEEP_MAX_CANDIDATE_BARS={raw!r} must be >= 1")
    return value


def cuda_layout(requested: str | None = None) -> str:
    """The CUDA layout: ``requested``, else $AIQ_SWEEP_CUDA_LAYOUT, else v2 (v1 is the old one)."""
    layout = requested or os.environ.get("AIQ_SWEEP_CUDA_LAYOUT", "").strip() or DEFAULT_LAYOUT
    if layout not in LAYOUTS:
        raise BackendError(f"CUDA layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    return layout


def resident_lanes(sm_count: int, regs_per_thread: int, threads_per_block: int, smem_per_block: int = 0,
                   *, max_threads_per_sm: int = 2048, regs_per_sm: int = 65536,
                   smem_per_sm: int = 228 * 1024, max_blocks_per_sm: int = 32) -> int:
    """Threads the device holds at once for this kernel: SMs x resident blocks/SM x block size.
    Registers are allocated per warp in units of 256; each block reserves 1 KB of shared memory."""
    warps = max(1, threads_per_block // WARP)
    regs_per_warp = -(-max(1, regs_per_thread) * WARP // 256) * 256
    by_regs = regs_per_sm // (regs_per_warp * warps)
    by_threads = max_threads_per_sm // threads_per_block
    by_smem = smem_per_sm // (smem_per_block + 1024) if smem_per_block else max_blocks_per_sm
    blocks = max(1, min(by_regs, by_threads, by_smem, max_blocks_per_sm))
    return sm_count * blocks * threads_per_block


def cuda_dispatch_batch(lanes: int, free_bytes: int, bytes_per_candidate: int, *, waves: int = WAVES,
                        mem_fraction: float = MEM_FRACTION) -> int:
    """Candidates per launch on CUDA: resident lanes x waves, bounded by free device memory."""
    by_mem = int(free_bytes * mem_fraction) // max(1, bytes_per_candidate)
    return max(WARP, min(lanes * waves, by_mem))


def _cuda_device_facts() -> dict:
    """SMs, memory and per-SM limits of the current device ({} under the simulator)."""
    if _cudasim_active():
        return {}
    from numba import cuda

    dev = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    def attr(name, default):
        try:
            return int(getattr(dev, name))
        except Exception:
            return default
    return {"sm_count": attr("MULTIPROCESSOR_COUNT", 132),
            "max_threads_per_sm": attr("MAX_THREADS_PER_MULTIPROCESSOR", 2048),
            "regs_per_sm": attr("MAX_REGISTERS_PER_MULTIPROCESSOR", 65536),
            "smem_per_sm": attr("MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", 228 * 1024),
            "free_bytes": int(free), "total_bytes": int(total)}


class Evaluator:
    """Runs candidate batches on one backend (on CUDA, in layout v1 or v2)."""

    def __init__(self, static: StaticInputs, backend: str, *, layout: str | None = None,
                 cap: int | None = None, warps: int | None = None, max_batch: int | None = None):
        self.static = static
        self.backend = backend
        self.layout = None
        bars = max(1, static.t1 - static.t0) * max(1, static.nsym)
        self.max_batch = max(1, max_candidate_bars_per_dispatch() // bars)
        if backend == "cpu":
            self.max_batch = min(self.max_batch, CPU_MAX_BATCH)
            self._args = self._static_args(static)
        elif backend in ("cuda", "cudasim"):
            from gpu.kernels import capacity_bucket, warps_per_block

            self.layout = cuda_layout(layout)
            if self.layout == "v2" and static.nsym > 256:
                self.layout = "v1"  # beyond the largest capacity bucket (docs/GPU.md)
            if self.layout == "v2":
                self.cap = int(cap) if cap is not None else capacity_bucket(static.nsym)
                if self.cap < static.nsym:
                    raise BackendError(f"capacity {self.cap} < {static.nsym} symbols")
                self.warps = int(warps) if warps is not None else warps_per_block(self.cap)
                self._args = self._device_static_args_v2(static)
            else:
                self._args = self._device_static_args(static)
            self.max_batch = self._cuda_max_batch()
        else:
            raise BackendError(f"unknown backend {backend!r}")
        self._resize_after_compile = backend == "cuda" and max_batch is None
        if max_batch is not None:
            self.max_batch = max(1, int(max_batch))

    def threads_per_block(self) -> int:
        return self.warps * WARP if self.layout == "v2" else THREADS_PER_BLOCK

    def bytes_per_candidate(self, max_trades: int = 0) -> int:
        """Device bytes one candidate of a dispatch needs (its global arrays, not local memory)."""
        s = self.static
        npax = int(s.pcols.shape[0])
        common = 8 * npax + 4 * NF + 8 * NM + 8 * max_trades * NTRADE
        if self.layout == "v2":
            return common + 2 * 4  # + its lane (padding included)
        return common + 8 * s.nsym * (NP + NF + NPOS + 3) + 8 * NACCT + 3 * s.nsym

    def regs_per_thread(self) -> int:
        """Measured from the compiled kernel when it exists, else the offline sm_90 figure."""
        kern = self._kernel_if_compiled()
        if kern is not None:
            try:
                regs = kern.get_regs_per_thread()
                regs = max(regs.values()) if isinstance(regs, dict) else int(regs)
                if regs > 0:
                    return int(regs)
            except Exception:
                pass
        return REGS_GUESS[self.layout]

    def _kernel_if_compiled(self):
        if self.layout == "v2":
            from gpu.kernels import _V2_CACHE

            sub = getattr(self.static, "sub", None)
            return _V2_CACHE.get((self.cap, self.warps, id(None), bool(sub is not None and sub.entries and sub.k)))
        return _CUDA_DRIVER

    def _cuda_max_batch(self) -> int:
        raw = os.environ.get("AI_QUANT_SWEEP_MAX_BATCH", "").strip()
        if raw:
            try:
                return max(1, int(float(raw)))
            except ValueError:
                raise BackendError(f"AI_QUANT_SWEEP_MAX_BATCH={raw!r} is not a number") from None
        facts = _cuda_device_facts()
        if not facts:
            return SIM_MAX_BATCH

        smem = self.warps * self.cap * NF * 8 if self.layout == "v2" else 0
        lanes = resident_lanes(facts["sm_count"], self.regs_per_thread(), self.threads_per_block(), smem,
                               max_threads_per_sm=facts["max_threads_per_sm"], regs_per_sm=facts["regs_per_sm"],
                               smem_per_sm=facts["smem_per_sm"])
        return cuda_dispatch_batch(lanes, facts["free_bytes"], self.bytes_per_candidate())

    @staticmethod
    def _static_args(s: StaticInputs) -> tuple[Market, tuple]:
        """(Market, (pcols, preplace, base_params)) as host arrays."""
        return (Market(s.pool, s.valid, s.funding, s.t_open, s.t_close, *s.sub_arrays()),
                (s.pcols, s.preplace, s.base_params))

    @staticmethod
    def _device_static_args(s: StaticInputs) -> tuple[Market, tuple]:
        """The same, placed on the device once per sweep."""
        from numba import cuda

        pool = None
        if not _cudasim_active() and os.environ.get("AIQ_SWEEP_NO_CUPY") != "1":
            try:  # optional: CuPy owns the pool's device memory when installed
                import cupy

                pool = cupy.asarray(s.pool)
            except Exception:
                pool = None
        if pool is None:
            pool = cuda.to_device(s.pool)
        market, cand_static = Evaluator._static_args(s)
        def dev(a):
            return cuda.to_device(np.ascontiguousarray(a))
        return (Market(pool, *(dev(a) for a in market[1:])), tuple(dev(a) for a in cand_static))

    def evaluate(self, pvals: np.ndarray, fidx: np.ndarray, *, max_fills: int = 0,
                 max_trades: int = 0, on_batch=None) -> tuple[np.ndarray, np.ndarray | None]:
        """metrics float64[n, NM] (and trades [n, max_trades, NTRADE] when max_trades > 0)."""
        n = int(pvals.shape[0])
        metrics = np.empty((n, NM), dtype=np.float64)
        trades_out = np.zeros((n, max_trades, NTRADE)) if max_trades > 0 else None
        batch = min(self.max_batch, max(1, n))
        run = self._run_cpu if self.backend == "cpu" else self._run_cuda if self.layout == "v1" else self._run_cuda_v2
        for c0 in range(0, n, batch):
            m = min(batch, n - c0)
            m_rows, t_rows = run(c0, m, batch, np.ascontiguousarray(pvals), np.ascontiguousarray(fidx),
                                 max_fills, max_trades)
            metrics[c0:c0 + m] = m_rows[:m]
            if trades_out is not None:
                trades_out[c0:c0 + m] = t_rows[:m]
            if on_batch is not None:
                on_batch(m)
        return metrics, trades_out

    def _run_spec(self) -> RunSpec:
        s = self.static
        k = int(s.sub.k)
        exit_sub = 1 if (k > 0 and s.sub.exits) else 0
        entry_sub = 1 if (k > 0 and s.sub.entries) else 0
        return RunSpec(k, exit_sub, entry_sub, s.t0, s.t1, s.btc_idx, float(s.initial_balance))

    def _run_cpu(self, c0, m, batch, pvals, fidx, max_fills, max_trades):
        scratch = _scratch(np.zeros, m, self.static.nsym, max_fills, max_trades)
        metrics = np.zeros((m, NM), dtype=np.float64)
        market, cand_static = self._args
        _cpu_driver()(c0, m, market, Candidates(fidx, pvals, *cand_static), self._run_spec(), scratch, metrics)
        return metrics, scratch.trades

    def _run_cuda(self, c0, m, batch, pvals, fidx, max_fills, max_trades):
        from numba import cuda

        scratch = _scratch(cuda.device_array, m, self.static.nsym, max_fills, max_trades)
        d_metrics = cuda.device_array((m, NM), dtype=np.float64)
        market, cand_static = self._args
        # candidates are re-based to 0 inside the dispatch: the per-candidate arrays are sliced
        cands = Candidates(cuda.to_device(fidx[c0:c0 + m]), cuda.to_device(pvals[c0:c0 + m]), *cand_static)
        threads = THREADS_PER_BLOCK
        blocks = (m + threads - 1) // threads
        _cuda_driver()[blocks, threads](0, m, market, cands, self._run_spec(), scratch, d_metrics)
        cuda.synchronize()
        self._resize()
        trades = scratch.trades.copy_to_host() if max_trades > 0 else None
        return d_metrics.copy_to_host(), trades

    def _resize(self) -> None:
        """Once the kernel is compiled, size later dispatches from its measured registers."""
        if self._resize_after_compile:
            self._resize_after_compile = False
            self.max_batch = self._cuda_max_batch()

    @staticmethod
    def _device_static_args_v2(s: StaticInputs) -> tuple[MarketT, tuple]:
        """Layout v2's market on the device, bar-major: pool_t[bar, row, sym], valid_t[1 + bar, sym]
        (row 0 = no previous bar), funding_t[bar, sym]; plus (pcols, preplace, base_params)."""
        from numba import cuda

        pool_t = None
        if not _cudasim_active() and os.environ.get("AIQ_SWEEP_NO_CUPY") != "1":
            try:  # optional: transpose on the device, no host copy
                import cupy

                pool_t = cupy.ascontiguousarray(cupy.asarray(s.pool).transpose(2, 0, 1))
            except Exception:
                pool_t = None
        if pool_t is None:
            pool_t = cuda.to_device(np.ascontiguousarray(s.pool.transpose(2, 0, 1)))
        valid_t = np.zeros((s.valid.shape[1] + 1, s.nsym), dtype=np.uint8)
        valid_t[1:] = s.valid.T
        def dev(a):
            return cuda.to_device(np.ascontiguousarray(a))
        market = MarketT(pool_t, dev(valid_t), dev(s.funding.T), dev(s.t_open), dev(s.t_close),
                         *(dev(a) for a in s.sub_arrays()))
        return market, tuple(dev(a) for a in (s.pcols, s.preplace, s.base_params))

    def _run_cuda_v2(self, c0, m, batch, pvals, fidx, max_fills, max_trades):
        from numba import cuda

        from gpu.kernels import make_cuda_driver_v2

        cand, warp_combo, combos = lane_map(fidx[c0:c0 + m], self.warps)
        lanes = Lanes(cuda.to_device(cand), cuda.to_device(warp_combo), cuda.to_device(combos))
        d_metrics = cuda.device_array((m, NM), dtype=np.float64)
        k = m if (max_fills > 0 or max_trades > 0) else 1
        out = Outputs(d_metrics, cuda.device_array((k, max_fills, NFILL), dtype=np.float64),
                      cuda.device_array((k, max_trades, NTRADE), dtype=np.float64))
        market, cand_static = self._args
        cands = Candidates(lanes.combos, cuda.to_device(pvals[c0:c0 + m]), *cand_static)
        blocks = warp_combo.shape[0] // self.warps
        run = self._run_spec()
        make_cuda_driver_v2(self.cap, self.warps, entry_sub=bool(run.entry_sub))[blocks, self.warps * WARP](
            lanes, market, cands, run, out)
        cuda.synchronize()
        self._resize()
        trades = out.trades.copy_to_host() if max_trades > 0 else None
        return d_metrics.copy_to_host(), trades


def lane_map(fidx: np.ndarray, warps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cand int32[lanes], warp_combo int32[warps], combos int32[k, NF]) for one dispatch: candidates
    grouped by window combo (their fidx row, stable order), each group padded to whole warps and the
    whole to whole blocks of ``warps`` warps; a padding lane has cand -1, an all-idle warp combo -1."""
    n = int(fidx.shape[0])
    combos, inv = np.unique(np.asarray(fidx, dtype=np.int32).reshape(n, -1), axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    counts = np.bincount(inv, minlength=combos.shape[0])
    wpg = -(-counts // WARP)
    nw = int(wpg.sum())
    nw_pad = -(-nw // warps) * warps
    warp_combo = np.full(nw_pad, -1, dtype=np.int32)
    warp_combo[:nw] = np.repeat(np.arange(combos.shape[0], dtype=np.int32), wpg)
    cand = np.full(nw_pad * WARP, -1, dtype=np.int32)
    order = np.argsort(inv, kind="stable")
    sorted_g = inv[order]
    first_sorted = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_lane = np.concatenate([[0], np.cumsum(wpg * WARP)[:-1]])
    cand[first_lane[sorted_g] + np.arange(n) - first_sorted[sorted_g]] = order
    return cand, warp_combo, np.ascontiguousarray(combos, dtype=np.int32)
