"""Backends: choose one (and say why), then evaluate batches of candidates on it.

Static inputs (pool, masks, funding, times, base params) are placed once per sweep — on the
device for cuda/cudasim — and each batch only ships its small per-candidate vectors. Nothing
here imports numba.cuda or cupy at module import; a GPU is touched only when a backend is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from gpu.kernels import Candidates, Market, RunSpec, Scratch
from marketdata.subbars import SubBars
from strategy.features import NF
from strategy.layout import NACCT, NFILL, NM, NPOS, NTRADE
from strategy.params import NP

BACKENDS = ("auto", "cpu", "cuda", "cudasim")
MAX_CANDIDATE_BARS_PER_DISPATCH = 1_000_000_000  # passivbot #1709: keep one dispatch under ~1e9
CPU_MAX_BATCH = 4096
THREADS_PER_BLOCK = 128  # 128-256 keep Hopper occupancy up (passivbot #1738); 128 eases registers


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
    sub: SubBars | None = field(default=None)  # finer exit bars; None = exits on the main bar

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


class Evaluator:
    """Runs candidate batches on one backend."""

    def __init__(self, static: StaticInputs, backend: str):
        self.static = static
        self.backend = backend
        bars = max(1, static.t1 - static.t0) * max(1, static.nsym)
        self.max_batch = max(1, max_candidate_bars_per_dispatch() // bars)
        if backend == "cpu":
            self.max_batch = min(self.max_batch, CPU_MAX_BATCH)
            self._args = self._static_args(static)
        elif backend in ("cuda", "cudasim"):
            self._args = self._device_static_args(static)
        else:
            raise BackendError(f"unknown backend {backend!r}")

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
        run = self._run_cpu if self.backend == "cpu" else self._run_cuda
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
        return RunSpec(int(s.sub.k), s.t0, s.t1, s.btc_idx, float(s.initial_balance))

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
        trades = scratch.trades.copy_to_host() if max_trades > 0 else None
        return d_metrics.copy_to_host(), trades
