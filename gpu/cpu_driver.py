"""The CPU backend's compiled driver, at module level so numba's on-disk cache can serve it.

numba cannot reuse a cached function whose closure holds other jitted functions (their pickled
form differs per process), so a driver built inside a factory recompiles the whole decision
kernel in every process (~15 s). Here the driver reaches the per-candidate function through a
module global instead. Staleness is handled by strategy.numba_cache: the cache directory is keyed
by the hash of every compiled source (strategy/, cpu_replay/, gpu/).
"""

from __future__ import annotations

import numba

from gpu.kernels import make_sweep_kernels
from strategy.kernel import KERNEL_CPU

run_candidate_cpu = make_sweep_kernels(numba.njit(cache=True), KERNEL_CPU).run_candidate


@numba.njit(parallel=True, cache=True)
def sweep_cpu(c0, n, market, cands, run, scratch, metrics):
    """Candidates c0 .. c0+n-1, one per prange iteration (the protocol of gpu.kernels)."""
    for i in numba.prange(n):
        run_candidate_cpu(c0 + i, i, market, cands, run, scratch, metrics)
