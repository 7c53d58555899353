"""The per-candidate sweep function, built once per target from the ONE decision kernel.

``make_sweep_kernels(jit_device)`` wraps ``strategy.kernel.make_kernel(jit_device)`` (the same
init_state/step_bar/finish/write_metrics the canonical engine runs) in ``run_candidate``: one
candidate over every symbol and bar, reading only preallocated arrays, so the identical source
becomes a CUDA device function (one thread = one candidate) or an njit function (prange).

The argument protocol, written once: ``run_candidate(c, slot, market, cands, run, scratch, metrics)``
and the drivers ``sweep_*(c0, n, market, cands, run, scratch, metrics)`` take the four groups below
(namedtuples: numba reads their fields by name on the CPU and on the device alike).
  c, slot   candidate row, scratch slot (the candidate's index inside its batch)
  Market    pool[row, sym, bar] precomputed indicators; valid uint8[nsym, nbar] bar mask; funding
            float64[nsym, nbar] rates (0 = none); t_open, t_close int64[nbar] bar times (ms);
            sub_o, sub_h, sub_l, sub_c float64[nsym, nbar, k], sub_valid uint8[nsym, nbar, k],
            sub_close_ms float64[nbar, k]: finer exit-interval bars (marketdata.subbars.SubBars), k = 0
            when exits are checked on the main bar
  Candidates  fidx[cand, NF] -> pool row per feature; pvals[cand, npax] swept parameter values;
            pcols[npax] their P columns; preplace uint8[nsym, npax] (0 where a symbol overrides that
            path itself); base_params float64[nsym, NP] of the base config
  RunSpec   nsub (= k), trading bar range [t0, t1), btc_idx (BTC's row or -1), initial_balance
  Scratch   per-slot arrays: params [batch, nsym, NP], feat [batch, nsym, NF], pos [batch, nsym, NPOS],
            acct [batch, NACCT], rank_score / rank_idx [batch, nsym], vrow / pvrow uint8 [batch, nsym]
            (valid rows), frow [batch, nsym] (funding row), fills [batch, max_fills, NFILL],
            trades [batch, max_trades, NTRADE]
  metrics   float64[n_cand_in_dispatch, NM], row ``slot``
"""

from __future__ import annotations

import math
from collections import namedtuple
from types import SimpleNamespace

from strategy.features import NF

cuda = None  # numba.cuda, bound lazily by make_cuda_driver (nothing touches a GPU at import)

Market = namedtuple("Market", "pool valid funding t_open t_close sub_o sub_h sub_l sub_c sub_valid sub_close_ms")
Candidates = namedtuple("Candidates", "fidx pvals pcols preplace base_params")
RunSpec = namedtuple("RunSpec", "nsub t0 t1 btc_idx initial_balance")
Scratch = namedtuple("Scratch", "params feat pos acct rank_score rank_idx vrow pvrow frow fills trades")


def make_sweep_kernels(jit_device, kernel=None):
    """Compile ``run_candidate`` for a target. ``kernel`` defaults to make_kernel(jit_device)."""
    if kernel is None:
        from strategy.kernel import make_kernel

        kernel = make_kernel(jit_device)
    init_state = kernel.init_state
    step_bar = kernel.step_bar
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
    def run_candidate(c, slot, market, cands, run, scratch, metrics):
        params = scratch.params[slot]
        feat = scratch.feat[slot]
        pos = scratch.pos[slot]
        acct = scratch.acct[slot]
        vrow = scratch.vrow[slot]
        pvrow = scratch.pvrow[slot]
        frow = scratch.frow[slot]
        fills = scratch.fills[slot]
        trades = scratch.trades[slot]
        book = (pos, acct, scratch.rank_score[slot], scratch.rank_idx[slot], fills, trades)
        pool = market.pool
        fidx = cands.fidx
        load_params(c, params, cands.pvals, cands.pcols, cands.preplace, cands.base_params)
        init_state(pos, acct, run.initial_balance)
        init_rows(c, run.t0, pool, fidx, market.valid, feat)
        for t in range(run.t0, run.t1):
            load_bar(c, t, pool, fidx, market.valid, market.funding, feat, vrow, pvrow, frow)
            exit_bars = (market.sub_o[:, t, :], market.sub_h[:, t, :], market.sub_l[:, t, :],
                         market.sub_c[:, t, :], market.sub_valid[:, t, :], market.sub_close_ms[t], run.nsub)
            step_bar(market.t_open[t], market.t_close[t], feat, vrow, pvrow, frow, params, run.btc_idx, book,
                     exit_bars)
        finish(pos, acct, fills, trades, params)
        write_metrics(acct, metrics[slot])

    return SimpleNamespace(run_candidate=run_candidate, load_params=load_params, load_bar=load_bar)


def make_cuda_driver(kernel=None):
    """CUDA kernel ``sweep_cuda[blocks, threads](c0, n, market, cands, run, scratch, metrics)``:
    thread i runs candidate c0+i."""
    global cuda  # a module global, so numba's simulator can swap in its fake ``cuda`` module
    from numba import cuda

    run_candidate = make_sweep_kernels(cuda.jit(device=True), kernel).run_candidate

    @cuda.jit
    def sweep_cuda(c0, n, market, cands, run, scratch, metrics):
        i = cuda.grid(1)
        if i < n:
            run_candidate(c0 + i, i, market, cands, run, scratch, metrics)

    return sweep_cuda
