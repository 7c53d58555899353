"""The per-candidate sweep function, built once per target from the ONE decision kernel.

``make_sweep_kernels(jit_device)`` wraps ``strategy.kernel.make_kernel(jit_device)`` (the same
init_state/step_bar_sub/finish/write_metrics the canonical engine runs) in ``run_candidate``: one
candidate over every symbol and bar, reading only preallocated arrays, so the identical source
becomes a CUDA device function (one thread = one candidate) or an njit function (prange).

Argument order of ``run_candidate`` (shared by both drivers):
  c, slot            candidate row, scratch slot (the candidate's index inside its batch)
  pool, fidx         precomputed pool[row, sym, bar]; fidx[cand, NF] -> pool row per feature
  pvals, pcols       pvals[cand, npax] swept parameter values; pcols[npax] their P_* columns
  preplace           uint8[nsym, npax]: 0 where a symbol overrides that path itself
  base_params        float64[nsym, NP] of the base config
  valid, funding     uint8[nsym, nbar] bar mask; float64[nsym, nbar] funding rates (0 = none)
  t_open, t_close    int64[nbar] bar open / close times (ms)
  sub_o .. sub_close_ms, nsub   finer exit-interval bars (marketdata.subbars.SubBars): float64
                     [nsym, nbar, k] x3, uint8 [nsym, nbar, k], float64 [nbar, k]; nsub = k, 0 when
                     exits are checked on the main bar (then the arrays have k = 0)
  t0, t1, btc_idx    trading bar range [t0, t1); BTC's row or -1
  initial_balance
  params_s .. trades_s   per-slot scratch: [batch, nsym, NP], [batch, nsym, NF], [batch, nsym, NPOS],
                     [batch, NACCT], [batch, nsym] x2 (rank scratch), [batch, nsym] uint8 x2 (valid rows),
                     [batch, nsym] funding row, [batch, max_fills, NFILL], [batch, max_trades, NTRADE]
  metrics            float64[n_cand_in_dispatch, NM], row ``slot``
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from strategy.features import NF

cuda = None  # numba.cuda, bound lazily by make_cuda_driver (nothing touches a GPU at import)


def make_sweep_kernels(jit_device, kernel=None):
    """Compile ``run_candidate`` for a target. ``kernel`` defaults to make_kernel(jit_device)."""
    if kernel is None:
        from strategy.kernel import make_kernel

        kernel = make_kernel(jit_device)
    init_state = kernel.init_state
    step_bar_sub = kernel.step_bar_sub
    finish = kernel.finish
    write_metrics = kernel.write_metrics

    @jit_device
    def load_params(c, params, pvals, pcols, preplace, base_params):
        nsym = params.shape[0]
        for s in range(nsym):
            for j in range(params.shape[1]):
                params[s, j] = base_params[s, j]
            for k in range(pcols.shape[0]):
                if preplace[s, k] != 0:
                    params[s, pcols[k]] = pvals[c, k]

    @jit_device
    def gather_row(c, s, t, pool, fidx, feat):
        for f in range(NF):
            feat[s, f] = pool[fidx[c, f], s, t]

    @jit_device
    def init_rows(c, t0, pool, fidx, valid, feat):
        """Each symbol's row as the engine holds it at t0: its last valid bar before t0, else NaN."""
        for s in range(feat.shape[0]):
            for f in range(NF):
                feat[s, f] = math.nan
            t = t0 - 1
            while t >= 0:
                if valid[s, t] != 0:
                    gather_row(c, s, t, pool, fidx, feat)
                    break
                t -= 1

    @jit_device
    def load_bar(c, t, pool, fidx, valid, funding, feat, vrow, pvrow, frow):
        """A missing bar keeps the symbol's previous row, as the streaming engine does."""
        nsym = feat.shape[0]
        for s in range(nsym):
            vrow[s] = valid[s, t]
            pvrow[s] = valid[s, t - 1] if t > 0 else 0
            frow[s] = funding[s, t]
            if valid[s, t] != 0:
                gather_row(c, s, t, pool, fidx, feat)

    @jit_device
    def run_candidate(c, slot, pool, fidx, pvals, pcols, preplace, base_params, valid, funding,
                      t_open, t_close, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub,
                      t0, t1, btc_idx, initial_balance,
                      params_s, feat_s, pos_s, acct_s, rscore_s, ridx_s, vrow_s, pvrow_s, frow_s,
                      fills_s, trades_s, metrics):
        params = params_s[slot]
        feat = feat_s[slot]
        pos = pos_s[slot]
        acct = acct_s[slot]
        rscore = rscore_s[slot]
        ridx = ridx_s[slot]
        vrow = vrow_s[slot]
        pvrow = pvrow_s[slot]
        frow = frow_s[slot]
        fills = fills_s[slot]
        trades = trades_s[slot]
        load_params(c, params, pvals, pcols, preplace, base_params)
        init_state(pos, acct, initial_balance)
        init_rows(c, t0, pool, fidx, valid, feat)
        for t in range(t0, t1):
            load_bar(c, t, pool, fidx, valid, funding, feat, vrow, pvrow, frow)
            step_bar_sub(t_open[t], t_close[t], feat, vrow, pvrow, frow, params, btc_idx,
                         pos, acct, rscore, ridx, fills, trades, sub_o[:, t, :], sub_h[:, t, :],
                         sub_l[:, t, :], sub_valid[:, t, :], sub_close_ms[t], nsub)
        finish(pos, acct, fills, trades, params)
        write_metrics(acct, metrics[slot])

    return SimpleNamespace(run_candidate=run_candidate, load_params=load_params, load_bar=load_bar)


def make_cuda_driver(kernel=None):
    """CUDA kernel ``sweep_cuda[blocks, threads](c0, n, *arrays)``: thread i runs candidate c0+i."""
    global cuda  # a module global, so numba's simulator can swap in its fake ``cuda`` module
    from numba import cuda

    run_candidate = make_sweep_kernels(cuda.jit(device=True), kernel).run_candidate

    @cuda.jit
    def sweep_cuda(c0, n, pool, fidx, pvals, pcols, preplace, base_params, valid, funding,
                   t_open, t_close, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub,
                   t0, t1, btc_idx, initial_balance,
                   params_s, feat_s, pos_s, acct_s, rscore_s, ridx_s, vrow_s, pvrow_s, frow_s,
                   fills_s, trades_s, metrics):
        i = cuda.grid(1)
        if i < n:
            run_candidate(c0 + i, i, pool, fidx, pvals, pcols, preplace, base_params, valid, funding,
                          t_open, t_close, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub,
                          t0, t1, btc_idx, initial_balance,
                          params_s, feat_s, pos_s, acct_s, rscore_s, ridx_s, vrow_s, pvrow_s, frow_s,
                          fills_s, trades_s, metrics)

    return sweep_cuda
