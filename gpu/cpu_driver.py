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
def sweep_cpu(c0, n, pool, fidx, pvals, pcols, preplace, base_params, valid, funding,
              t_open, t_close, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub,
              t0, t1, btc_idx, initial_balance,
              params_s, feat_s, pos_s, acct_s, rscore_s, ridx_s, vrow_s, pvrow_s, frow_s,
              fills_s, trades_s, metrics):
    for i in numba.prange(n):
        run_candidate_cpu(c0 + i, i, pool, fidx, pvals, pcols, preplace, base_params, valid, funding,
                          t_open, t_close, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub,
                          t0, t1, btc_idx, initial_balance,
                          params_s, feat_s, pos_s, acct_s, rscore_s, ridx_s, vrow_s, pvrow_s, frow_s,
                          fills_s, trades_s, metrics)
