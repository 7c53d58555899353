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
            sub_close_ms float64[nbar, k]: finer sub-bars (marketdata.subbars.SubBars), k = 0 when
            there are none
  Candidates  fidx[cand, NF] -> pool row per feature; pvals[cand, npax] swept parameter values;
            pcols[npax] their P columns; preplace uint8[nsym, npax] (0 where a symbol overrides that
            path itself); base_params float64[nsym, NP] of the base config
  RunSpec   nsub (= k), exit_sub / entry_sub (1: exits / entries decided on the sub-bars), trading bar
            range [t0, t1), btc_idx (BTC's row or -1), initial_balance
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

from strategy.features import F_CLOSE, F_HIGH, F_LOW, F_OPEN, NF

cuda = None  # numba.cuda, bound lazily by make_cuda_driver (nothing touches a GPU at import)

Market = namedtuple("Market", "pool valid funding t_open t_close sub_o sub_h sub_l sub_c sub_valid sub_close_ms")
Candidates = namedtuple("Candidates", "fidx pvals pcols preplace base_params")
RunSpec = namedtuple("RunSpec", "nsub exit_sub entry_sub t0 t1 btc_idx initial_balance")
Scratch = namedtuple("Scratch", "params feat pos acct rank_score rank_idx vrow pvrow frow fills trades")


def make_sweep_kernels(jit_device, kernel=None):
    """Compile ``run_candidate`` for a target. ``kernel`` defaults to make_kernel(jit_device)."""
    if kernel is None:
        from strategy.kernel import make_kernel

        kernel = make_kernel(jit_device)
    init_state = kernel.init_state
    step_sub_bar = kernel.step_sub_bar
    step_main_close = kernel.step_main_close
    stage_sub_prices = kernel.stage_sub_prices
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
    def load_rows(t, valid, funding, vrow, pvrow, frow):
        """Bar t's valid, previous-valid and funding rows (known at its open)."""
        for s in range(vrow.shape[0]):
            vrow[s] = valid[s, t]
            pvrow[s] = valid[s, t - 1] if t > 0 else 0
            frow[s] = funding[s, t]

    @jit_device
    def load_feat(c, t, pool, fidx, valid, feat):
        """Bar t's feature rows at its close; a missing bar keeps the symbol's previous row, as the
        streaming engine does."""
        for s in range(feat.shape[0]):
            if valid[s, t] != 0:
                gather_row(c, s, t, pool, fidx, feat)

    @jit_device
    def load_bar(c, t, pool, fidx, valid, funding, feat, vrow, pvrow, frow):
        load_rows(t, valid, funding, vrow, pvrow, frow)
        load_feat(c, t, pool, fidx, valid, feat)

    @jit_device
    def sub_bars(t, market, run, feat, pvrow, frow, params, book):
        """Bar t's sub-bars, each through step_sub_bar while ``feat`` holds the last closed bar (with
        entry sub-bars, its OHLC staged from the sub-bar first)."""
        for j in range(run.nsub):
            so = market.sub_o[:, t, j]
            sh = market.sub_h[:, t, j]
            sl = market.sub_l[:, t, j]
            sc = market.sub_c[:, t, j]
            sv = market.sub_valid[:, t, j]
            if run.entry_sub != 0:
                stage_sub_prices(feat, so, sh, sl, sc, sv)
            step_sub_bar(market.t_open[t], j, (so, sh, sl, sc, sv, market.sub_close_ms[t, j]), feat, pvrow, frow,
                         params, run.btc_idx, book, run.exit_sub, run.entry_sub)

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
            load_rows(t, market.valid, market.funding, vrow, pvrow, frow)
            sub_bars(t, market, run, feat, pvrow, frow, params, book)
            load_feat(c, t, pool, fidx, market.valid, feat)
            step_main_close(market.t_open[t], market.t_close[t], feat, vrow, pvrow, frow, params, run.btc_idx, book,
                            run.nsub, run.exit_sub)
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


# --- layout v2: warp-shared feature rows, per-thread local state (docs/GPU.md, "Layout v2") ------

MarketT = namedtuple("MarketT", "pool_t valid_t funding_t t_open t_close sub_o sub_h sub_l sub_c sub_valid "
                                "sub_close_ms")
"""Layout v2's market, bar-major: pool_t[bar, row, sym]; valid_t[1 + bar, sym] (row 0 all zero, row
t + 1 = bar t, so valid_t[t] is the previous bar's row); funding_t[bar, sym]; the rest as Market."""
Lanes = namedtuple("Lanes", "cand warp_combo combos")
"""Layout v2's lane map: cand[lane] candidate (dispatch-relative) or -1 for an idle padding lane;
warp_combo[warp] the warp's row of combos (-1: an all-idle warp); combos[k, NF] pool row per feature."""
Outputs = namedtuple("Outputs", "metrics fills trades")
"""metrics[n, NM] per candidate; fills / trades [n, max, ·] in trace mode, else [1, 0, ·]."""

CAPACITY_BUCKETS = (8, 16, 32, 64, 128, 256)
SHARED_BYTES_PER_BLOCK = 48 * 1024  # numba-cuda has no API for more dynamic/opt-in shared memory
WARP = 32


def capacity_bucket(nsym: int) -> int:
    """The smallest compiled symbol capacity that holds ``nsym`` symbols (ValueError above 256)."""
    for cap in CAPACITY_BUCKETS:
        if nsym <= cap:
            return cap
    raise ValueError(f"{nsym} symbols exceed the largest capacity bucket ({CAPACITY_BUCKETS[-1]}); "
                     "use layout v1")


def local_rows(cap: int) -> int:
    """Rows of the per-thread local arrays for capacity ``cap``: ``cap``, except 64 at cap 32. Compiled
    offline for sm_90 (numba-cuda 0.30.4, ptxas 13.0), 32..48 local rows come out at 255 registers
    with 832 B of spill stores where 8, 16, 64, 128 and 256 rows use 166 registers and no spill; the
    extra rows cost 24 KB of local memory per thread and are never touched (arrays are sliced to nsym)."""
    return 64 if cap == 32 else cap


def warps_per_block(cap: int) -> int:
    """Warps sharing one block's 48 KB of staged feature rows (NF = 27 doubles a symbol): 4 up to
    cap 32, 3 at 64, 1 from 128 on."""
    return max(1, min(4, SHARED_BYTES_PER_BLOCK // (cap * NF * 8)))


_V2_CACHE: dict = {}


def make_cuda_driver_v2(cap: int, warps: int | None = None, kernel=None, entry_sub: bool = False):
    """Layout v2 kernel ``sweep_v2[blocks, warps * 32](lanes, market_t, cands, run, out)`` compiled for
    symbol capacity ``cap`` (cached per (cap, warps, entry_sub) in this process).

    ``entry_sub`` is compiled in (``run.entry_sub`` is not read): the entries on sub-bars, inlined
    into the sub-bar loop, raise the kernel from 166 to ~254 registers on sm_90 (ptxas), so a sweep
    without entry sub-bars gets a kernel without them.

    Per thread: params, pos, acct and the ranking rows are ``cuda.local.array`` sized by ``cap`` (see
    ``local_rows``) and
    sliced to nsym (the hardware interleaves local memory per lane, so a warp's access to one field
    is coalesced; nothing lane-private lives in global memory). Per warp: the bar's feature rows are
    gathered once, cooperatively and coalesced (consecutive lanes read consecutive symbols of
    pool_t[t, row]), into shared memory, and every lane reads them there; all lanes of a warp share
    one window combo (the host orders and pads the batch). valid/funding rows are read-only views.
    Idle lanes (cand -1) help stage the rows and run no decision code.
    ``cands`` is ``Candidates`` with ``fidx`` unused (the warp's row of ``lanes.combos`` replaces it)."""
    global cuda
    from numba import cuda, float64, int64

    warps = warps_per_block(cap) if warps is None else int(warps)
    key = (cap, warps, id(kernel), bool(entry_sub))
    if key in _V2_CACHE:
        return _V2_CACHE[key]
    if kernel is None:
        from strategy.kernel import make_kernel

        kernel = make_kernel(cuda.jit(device=True))
    from strategy.layout import NACCT, NPOS
    from strategy.params import NP

    sk = make_sweep_kernels(cuda.jit(device=True), kernel)
    load_params = sk.load_params
    init_state = kernel.init_state
    step_sub_bar = kernel.step_sub_bar
    step_main_close = kernel.step_main_close
    finish = kernel.finish
    write_metrics = kernel.write_metrics
    use_syncwarp = hasattr(cuda, "syncwarp")  # the simulator has none: a block barrier there
    CAP = cap
    ENTRY_SUB = 1 if entry_sub else 0
    LROWS = local_rows(cap)
    WARPS = warps

    @cuda.jit(device=True)
    def warp_sync():
        if use_syncwarp:
            cuda.syncwarp()
        else:
            cuda.syncthreads()

    @cuda.jit(device=True)
    def stage_init(lane, t0, feat, row, pool_t, valid_t, combos):
        """Each symbol's row as the engine holds it at t0: its last valid bar before t0, else NaN."""
        nsym = feat.shape[0]
        for k in range(lane, nsym * NF, WARP):
            f = k // nsym
            s = k - f * nsym
            v = math.nan
            t = t0 - 1
            while t >= 0:
                if valid_t[t + 1, s] != 0:
                    v = pool_t[t, combos[row, f], s]
                    break
                t -= 1
            feat[s, f] = v

    @cuda.jit(device=True)
    def stage_bar(lane, t, feat, row, pool_t, valid_t, combos):
        """A missing bar keeps the symbol's previous row, as the streaming engine does."""
        nsym = feat.shape[0]
        for k in range(lane, nsym * NF, WARP):
            f = k // nsym
            s = k - f * nsym
            if valid_t[t + 1, s] != 0:
                feat[s, f] = pool_t[t, combos[row, f], s]

    @cuda.jit(device=True)
    def stage_sub(lane, t, j, feat, market):
        """Entry sub-bar j of bar t: its OHLC into the warp's shared rows (the same values for every
        lane: they share the window combo), as the kernel's stage_sub_prices does on the CPU."""
        nsym = feat.shape[0]
        for s in range(lane, nsym, WARP):
            if market.sub_valid[s, t, j] != 0:
                feat[s, F_OPEN] = market.sub_o[s, t, j]
                feat[s, F_HIGH] = market.sub_h[s, t, j]
                feat[s, F_LOW] = market.sub_l[s, t, j]
                feat[s, F_CLOSE] = market.sub_c[s, t, j]

    @cuda.jit
    def sweep_v2(lanes, market, cands, run, out):
        tid = cuda.threadIdx.x
        wib = tid // WARP
        lane = tid - wib * WARP
        gw = cuda.blockIdx.x * WARPS + wib
        c = lanes.cand[gw * WARP + lane]
        row = lanes.warp_combo[gw]
        nsym = market.valid_t.shape[1]
        sh = cuda.shared.array((WARPS, CAP, NF), float64)
        feat = sh[wib, :nsym]
        params = cuda.local.array((LROWS, NP), float64)[:nsym]
        pos = cuda.local.array((LROWS, NPOS), float64)[:nsym]
        acct = cuda.local.array(NACCT, float64)
        rank_score = cuda.local.array(LROWS, float64)[:nsym]
        rank_idx = cuda.local.array(LROWS, int64)[:nsym]
        k = c if out.trades.shape[0] > 1 else 0
        fills = out.fills[k]
        trades = out.trades[k]
        book = (pos, acct, rank_score, rank_idx, fills, trades)
        if c >= 0:
            load_params(c, params, cands.pvals, cands.pcols, cands.preplace, cands.base_params)
            init_state(pos, acct, run.initial_balance)
        if row >= 0:
            stage_init(lane, run.t0, feat, row, market.pool_t, market.valid_t, lanes.combos)
        warp_sync()  # the first sub-bar reads (and entry sub-bars restage) rows other lanes wrote
        for t in range(run.t0, run.t1):
            for j in range(run.nsub):
                if ENTRY_SUB != 0:
                    if row >= 0:
                        stage_sub(lane, t, j, feat, market)
                    warp_sync()
                if c >= 0:
                    step_sub_bar(market.t_open[t], j, (market.sub_o[:, t, j], market.sub_h[:, t, j],
                                                       market.sub_l[:, t, j], market.sub_c[:, t, j],
                                                       market.sub_valid[:, t, j], market.sub_close_ms[t, j]),
                                 feat, market.valid_t[t], market.funding_t[t], params, run.btc_idx, book,
                                 run.exit_sub, ENTRY_SUB)
                if ENTRY_SUB != 0:
                    warp_sync()
            if run.nsub > 0:
                warp_sync()  # every lane is past the sub-bars before the bar's rows replace the last bar's
            if row >= 0:
                stage_bar(lane, t, feat, row, market.pool_t, market.valid_t, lanes.combos)
            warp_sync()
            if c >= 0:
                step_main_close(market.t_open[t], market.t_close[t], feat, market.valid_t[t + 1], market.valid_t[t],
                                market.funding_t[t], params, run.btc_idx, book, run.nsub, run.exit_sub)
            warp_sync()
        if c >= 0:
            finish(pos, acct, fills, trades, params)
            write_metrics(acct, out.metrics[c])

    _V2_CACHE[key] = sweep_v2
    return sweep_v2
