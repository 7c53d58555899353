"""The decision kernel: the ONE definition of what the strategy does on a closed bar.

Everything here is a scalar function over numbers and preallocated arrays (no Python objects,
no allocation, no exceptions), so that ``make_kernel(jit)`` compiles the same source for a CUDA
thread (``numba.cuda.jit(device=True)``), for the CPU sweep and for the canonical engine
(``numba.njit``). The sweep and the engine differ only in how they fill feature rows (precomputed
arrays vs streaming indicators); the decisions, fills and accounting are this code in both.

The rules, by family (each module's docstring states its rules with the config keys they read;
docs/STRATEGY.md reads them as a quant does and names their scenario rows in tests/test_rules.py):
- ``entries``  readiness, the numbered entry gates, the signal and its confidence tier, BTC alignment
- ``exits``    stop, partial and full take-profit, trailing and break-even stops, smart exits
- ``sizing``   confidence multiple, leverage, notional, minimum notional, margin cap, take-profit multiple
- ``book``     the taker fill, open / add / reduce / close, funding, drop / resize for the runtime
- ``equity``   marks, drawdown, daily returns, metrics
- ``bar``      the per-bar step (the order the rules run in), entry ranking, end of data
Inside a function, rows are read through views (``p = params[s]``, ``f = feat[s]``,
``ps = pos[s]``) with qualified column names (``p[P.SL_ATR_MULT]``, ``f[F.CLOSE]``, ``ps[POS.STOP]``).
"""

from __future__ import annotations

from strategy.kernel import bar, book, entries, equity, exits, sizing  # noqa: F401  (registers them)
from strategy.kernel.registry import KERNEL, kernel_function, make_kernel

__all__ = ["KERNEL", "KERNEL_CPU", "kernel_function", "make_kernel"]


def _build_cpu_kernel():
    """njit without NRT reference counting: a kernel function never allocates, returns or keeps an
    array, so the row views it takes (``params[s]``, ``pos[s]``) and the tuples it receives need no
    reference counts (the caller holds every array for the whole call). Counting them cost ~15 %
    of the replay's time in atomic increments (measured with perf); CUDA has no NRT at all."""
    import numba

    return make_kernel(numba.njit(cache=True, _nrt=False))


KERNEL_CPU = _build_cpu_kernel()
