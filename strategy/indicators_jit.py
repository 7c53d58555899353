"""Every line of indicator arithmetic that gets compiled: steps, streaming update, vectorised loops.

Why one source: the sweep (vectorised arrays), the canonical engine (streaming) and the CUDA
precompute must produce bitwise-identical numbers, and the only robust way to get that is to run
the very same scalar arithmetic everywhere. The functions below are plain Python; ``build(jit)``
compiles a set of them for one target (``numba.njit(cache=True)`` or
``numba.cuda.jit(device=True)``) by re-binding their global names to the compiled versions.

Why re-binding globals and not closures: numba keys its on-disk cache of a closure on a pickle of
its free variables, and a pickled dispatcher carries a random per-process uuid, so closures over
jitted helpers never hit the cache. And why one file: a cached function inlines its callees but is
invalidated only by changes to its own source file, so callee and caller must live together.

Each step reads and writes one *block* of the state array starting at offset ``o``. A block is
valid when zero-filled (every count starts at 0), so resetting a symbol is ``state[:] = 0``.
Steps return their main output (NaN while not ready); secondary outputs (ADX's +DI/-DI/slope,
Bollinger's bands, MACD's previous histogram, Stoch RSI's D) are left in fixed slots of the
block for the caller to read. Rules that keep the code compilable as a CUDA device function: only
``math.*``, loops, scalar arithmetic and indexing; no exceptions, no allocation, every division
guarded (numba's CPU default error model would raise on x/0).

Conventions (copied from the installed ``ta`` 0.11 / pandas sources; see strategy/indicators.py
for the list of differences from ``ta``).
"""

from __future__ import annotations

import math
import types

from strategy import features as F
from strategy import params as P
from strategy.jit_registry import JitRegistry

NAN = math.nan

# Block lengths that do not depend on a window.
EMA_LEN = 2  # [weighted, nobs]
RSI_LEN = 4  # [prev_close, bars, up_avg, down_avg]
ATR_LEN = 4  # [prev_close, bars, tr_sum (warm-up), atr]
# [prev_h, prev_l, prev_c, bars, tr_s, dmp_s, dmn_s, dx_sum, adx, +DI, -DI, slope]
ADX_LEN = 12
ADX_POS_SLOT, ADX_NEG_SLOT, ADX_SLOPE_SLOT = 9, 10, 11
# [hist_last, hist_prev, ema12 (2), ema26 (2), signal ema9 (2)]
MACD_LEN = 2 + 3 * EMA_LEN
MACD_PREV_SLOT = 1
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_HDR = 4  # [upper, lower, width, count] then the ring of closes
BB_UPPER_SLOT, BB_LOWER_SLOT, BB_WIDTH_SLOT = 0, 1, 2
STOCH_D_SLOT = 0  # first slot of the stoch block holds the last D

INDICATORS = JitRegistry("strategy.indicators_jit")
jit_function = INDICATORS.register  # marks the functions build(jit) compiles


def sma_len(n: int) -> int:
    """Ring block: [count, x_0 .. x_{n-1}]."""
    return 1 + int(n)


def boll_len(n: int) -> int:
    return BB_HDR + int(n)


def stoch_len(rsi_n: int, n: int, s1: int, s2: int) -> int:
    """[d_last] + RSI block + ring of RSI (n) + ring of stoch (s1) + ring of K (s2)."""
    return 1 + RSI_LEN + sma_len(n) + sma_len(s1) + sma_len(s2)


@jit_function
def ewm_update(st, o, alpha, x):
    # pandas ewm(adjust=False) exactly: seeded with the first observation, then
    # (old_wt*w + new_wt*x)/(old_wt + new_wt) with old_wt = 1-alpha, skipped when w == x.
    # Returns the number of observations so far (readiness is nobs >= min_periods).
    nobs = st[o + 1]
    if nobs == 0.0:
        st[o] = x
    else:
        w = st[o]
        if w != x:
            st[o] = ((1.0 - alpha) * w + alpha * x) / ((1.0 - alpha) + alpha)
    nobs += 1.0
    st[o + 1] = nobs
    return nobs


@jit_function
def ema_step(st, o, n, x):
    # EMA(span=n) with min_periods=n; NaN inputs (a not-yet-ready source) are skipped,
    # as pandas does for leading NaNs.
    if x != x:
        return NAN
    alpha = 1.0 / (1.0 + (n - 1.0) / 2.0)
    nobs = ewm_update(st, o, alpha, x)
    if nobs >= n:
        return st[o]
    return NAN


@jit_function
def rsi_step(st, o, n, c):
    # Wilder RSI as ta: ewm(alpha=1/n, adjust=False, min_periods=n) of gains and losses;
    # 100 when the average loss is exactly 0. ta's diff().where(diff > 0, 0.0) turns the
    # first bar's missing difference into a 0 gain and 0 loss, so the averages are seeded
    # with 0 at bar 0 and the RSI is ready at bar n-1. Block [prev_close, bars, up, down].
    bars = st[o + 1]
    st[o + 1] = bars + 1.0
    prev = c if bars == 0.0 else st[o]
    st[o] = c
    d = c - prev
    up = d if d > 0.0 else 0.0
    dn = -d if d < 0.0 else 0.0
    a = 1.0 / n
    alpha = 1.0 / (1.0 + (1.0 / a - 1.0))  # pandas: com = 1/alpha - 1; alpha = 1/(1+com)
    if bars == 0.0:
        st[o + 2] = up
        st[o + 3] = dn
    else:
        w = st[o + 2]
        if w != up:
            st[o + 2] = ((1.0 - alpha) * w + alpha * up) / ((1.0 - alpha) + alpha)
        w = st[o + 3]
        if w != dn:
            st[o + 3] = ((1.0 - alpha) * w + alpha * dn) / ((1.0 - alpha) + alpha)
    if bars + 1.0 < n:
        return NAN
    up_avg = st[o + 2]
    dn_avg = st[o + 3]
    if dn_avg == 0.0:
        return 100.0
    return 100.0 - (100.0 / (1.0 + up_avg / dn_avg))


@jit_function
def atr_step(st, o, n, h, lo, c):
    # ta AverageTrueRange: TR of the first bar = h-l; ATR at bar n-1 = mean of the first n
    # TRs; then (ATR*(n-1) + TR)/n.
    bars = st[o + 1]
    if bars == 0.0:
        tr = h - lo
    else:
        pc = st[o]
        tr = max(h - lo, max(abs(h - pc), abs(lo - pc)))
    st[o] = c
    bars += 1.0
    st[o + 1] = bars
    if bars < n:
        st[o + 2] = st[o + 2] + tr
        return NAN
    if bars == n:
        s = st[o + 2] + tr
        st[o + 2] = s
        st[o + 3] = s / n
    else:
        st[o + 3] = (st[o + 3] * (n - 1.0) + tr) / n
    return st[o + 3]


@jit_function
def adx_step(st, o, n, h, lo, c):
    # ta ADXIndicator: sums of the first n TR/+DM/-DM (bars 1..n), then S - S/n + x;
    # DI = 100*DM/TR (0 when TR == 0); DX = 100*|DI+ - DI-|/(DI+ + DI-) (0 when the sum is
    # 0); ADX at bar 2n-1 = mean of the first n DX (bars n..2n-1), then (ADX*(n-1)+DX)/n.
    b = st[o + 3]
    st[o + 3] = b + 1.0
    ph = st[o]
    pl = st[o + 1]
    pc = st[o + 2]
    st[o] = h
    st[o + 1] = lo
    st[o + 2] = c
    adx_prev = st[o + 8]
    st[o + 9] = NAN
    st[o + 10] = NAN
    st[o + 11] = NAN
    if b == 0.0:
        return NAN
    tr = max(h, pc) - min(lo, pc)
    up = h - ph
    down = pl - lo
    dmp = up if (up > down and up > 0.0) else 0.0
    dmn = down if (down > up and down > 0.0) else 0.0
    if b <= n:
        st[o + 4] = st[o + 4] + tr
        st[o + 5] = st[o + 5] + dmp
        st[o + 6] = st[o + 6] + dmn
        if b < n:
            return NAN
    else:
        trs = st[o + 4]
        st[o + 4] = trs - (trs / n) + tr
        s = st[o + 5]
        st[o + 5] = s - (s / n) + dmp
        s = st[o + 6]
        st[o + 6] = s - (s / n) + dmn
    trs = st[o + 4]
    dip = 0.0
    din = 0.0
    if trs != 0.0:
        dip = 100.0 * (st[o + 5] / trs)
        din = 100.0 * (st[o + 6] / trs)
    st[o + 9] = dip
    st[o + 10] = din
    dx = 0.0
    if dip + din != 0.0:
        dx = 100.0 * abs((dip - din) / (dip + din))
    last = 2.0 * n - 1.0  # first bar with an ADX
    if b < last:
        st[o + 7] = st[o + 7] + dx
        return NAN
    if b == last:
        s = st[o + 7] + dx
        st[o + 7] = s
        adx = s / n
    else:
        adx = (adx_prev * (n - 1.0) + dx) / n
        st[o + 11] = adx - adx_prev
    st[o + 8] = adx
    return adx


@jit_function
def ring_push(st, o, n, x):
    # Ring block [count, x_0..x_{n-1}]; returns the count after the push. The oldest value
    # sits at slot count % n, so sums run oldest -> newest whatever the phase.
    cnt = st[o]
    k = int(cnt) % n
    st[o + 1 + k] = x
    cnt += 1.0
    st[o] = cnt
    return cnt


@jit_function
def ring_mean(st, o, n):
    # Oldest -> newest sum / n; a window of identical values returns that value exactly (as
    # pandas does), so flat prices give sigma 0 and equal volume SMAs compare equal.
    start = int(st[o]) % n
    first = st[o + 1 + start]
    same = True
    s = 0.0
    for k in range(start, n):
        x = st[o + 1 + k]
        s += x
        same = same and x == first
    for k in range(0, start):
        x = st[o + 1 + k]
        s += x
        same = same and x == first
    if same:
        return first
    return s / n


@jit_function
def sma_step(st, o, n, x):
    # Rolling mean with min_periods = n: NaN while fewer than n values or while a NaN is in
    # the window (pandas counts only non-NaN observations).
    cnt = ring_push(st, o, n, x)
    if cnt < n:
        return NAN
    return ring_mean(st, o, n)


@jit_function
def boll_step(st, o, n, c):
    # Bollinger(n, 2): mid = SMA, sigma = population std computed two-pass over the ring
    # (no E[x^2]-E[x]^2 cancellation: prices can be ~5e-5). width = (upper-lower)/close, the
    # reference's normalisation (its analyze divides by the close, not by the middle band).
    # Block: [upper, lower, width] + ring block [count, closes...].
    r = o + 3
    cnt = ring_push(st, r, n, c)
    st[o + BB_UPPER_SLOT] = NAN
    st[o + BB_LOWER_SLOT] = NAN
    st[o + BB_WIDTH_SLOT] = NAN
    if cnt < n:
        return NAN
    mid = ring_mean(st, r, n)
    start = int(cnt) % n
    ss = 0.0
    for j in range(start, n):
        d = st[r + 1 + j] - mid
        ss += d * d
    for j in range(0, start):
        d = st[r + 1 + j] - mid
        ss += d * d
    sd = math.sqrt(ss / n)
    upper = mid + 2.0 * sd
    lower = mid - 2.0 * sd
    width = NAN
    if c != 0.0:
        width = (upper - lower) / c
    st[o + BB_UPPER_SLOT] = upper
    st[o + BB_LOWER_SLOT] = lower
    st[o + BB_WIDTH_SLOT] = width
    return width


@jit_function
def macd_step(st, o, c):
    # ta MACD 12/26/9: line = EMA12 - EMA26 (NaN until both ready), signal = EMA9 of the
    # line seeded at its first value; hist = line - signal. Slot o keeps the last hist;
    # slot o+1 receives the previous bar's hist (NaN unless the signal was ready then).
    hist_prev = NAN
    if st[o + 7] >= MACD_SIGNAL:
        hist_prev = st[o]
    st[o + 1] = hist_prev
    fast = ema_step(st, o + 2, MACD_FAST, c)
    slow = ema_step(st, o + 4, MACD_SLOW, c)
    line = fast - slow
    sig = ema_step(st, o + 6, MACD_SIGNAL, line)
    hist = line - sig
    st[o] = hist
    return hist


@jit_function
def stoch_step(st, o, rsi_n, n, s1, s2, c):
    # ta StochRSIIndicator: s = (RSI - min RSI over n)/(max - min) (NaN when max == min,
    # as pandas' 0/0), K = SMA(s, s1), D = SMA(K, s2); a NaN in a window gives NaN.
    r = rsi_step(st, o + 1, rsi_n, c)
    om = o + 1 + RSI_LEN
    cnt = ring_push(st, om, n, r)
    s = NAN
    if cnt >= n:
        mn = math.inf
        mx = -math.inf
        bad = False
        for j in range(n):
            x = st[om + 1 + j]
            if x != x:
                bad = True
            if x < mn:
                mn = x
            if x > mx:
                mx = x
        if not bad and mx != mn:
            s = (r - mn) / (mx - mn)
    ok = om + 1 + n
    k = sma_step(st, ok, s1, s)
    od = ok + 1 + s1
    d = sma_step(st, od, s2, k)
    st[o] = d
    return k


@jit_function
def lag_diff_step(st, o, n, x, scale):
    # (x - the x of n steps before) / scale: a ring block of n + 1 values; NaN until it is full,
    # while either end is NaN, or when scale is not positive.
    cnt = ring_push(st, o, n + 1, x)
    if cnt < n + 1 or not scale > 0.0:
        return NAN
    oldest = st[o + 1 + int(cnt) % (n + 1)]
    return (x - oldest) / scale


@jit_function
def vol_trend_of(sma_trend, sma_vol):
    if sma_trend != sma_trend or sma_vol != sma_vol:
        return NAN
    if sma_trend > sma_vol:
        return 1.0
    return 0.0


# ---------------------------------------------------------------- streaming (engine, live)
# State layout: fixed-size blocks first, then the window-sized ring blocks (offsets from wv).
O_EMA_FAST = 0
O_EMA_SLOW = O_EMA_FAST + EMA_LEN
O_EMA_MACRO = O_EMA_SLOW + EMA_LEN
O_ATR = O_EMA_MACRO + EMA_LEN
O_ADX = O_ATR + ATR_LEN
O_RSI = O_ADX + ADX_LEN
O_MACD = O_RSI + RSI_LEN
O_COUNT = O_MACD + MACD_LEN  # [bars seen]
O_RINGS = O_COUNT + 1


def stream_state_len(wv) -> int:
    """Length of one symbol's flat streaming state (the ring offsets in ``update`` follow it)."""
    w = [int(x) for x in wv]
    return (
        O_RINGS
        + boll_len(w[P.W_BB])
        + sma_len(w[P.W_BB_WIDTH_AVG])
        + sma_len(w[P.W_VOL_SMA])
        + sma_len(w[P.W_VOL_TREND])
        + stoch_len(w[P.W_STOCH_RSI], w[P.W_STOCH_RSI], w[P.W_STOCH_S1], w[P.W_STOCH_S2])
        + sma_len(w[P.W_AVG_ATR])
        + sma_len(w[P.W_EMA_SLOW_SLOPE] + 1)
    )


@jit_function
def zero(st):
    for i in range(st.shape[0]):
        st[i] = 0.0


@jit_function
def init(state, wv):
    zero(state)


@jit_function
def update(state, wv, o, h, lo, c, v, feat_row):
    n_bb = wv[P.W_BB]
    n_avg = wv[P.W_BB_WIDTH_AVG]
    n_vs = wv[P.W_VOL_SMA]
    n_vt = wv[P.W_VOL_TREND]
    n_st = wv[P.W_STOCH_RSI]
    o_bb = O_RINGS
    o_avg = o_bb + BB_HDR + n_bb
    o_vs = o_avg + 1 + n_avg
    o_vt = o_vs + 1 + n_vs
    o_st = o_vt + 1 + n_vt
    n_aa = wv[P.W_AVG_ATR]
    n_sl = wv[P.W_EMA_SLOW_SLOPE]
    o_aa = o_st + 1 + RSI_LEN + (1 + n_st) + (1 + wv[P.W_STOCH_S1]) + (1 + wv[P.W_STOCH_S2])
    o_sl = o_aa + 1 + n_aa

    state[O_COUNT] += 1.0
    feat_row[F.F_BAR_COUNT] = state[O_COUNT]
    feat_row[F.F_OPEN] = o
    feat_row[F.F_HIGH] = h
    feat_row[F.F_LOW] = lo
    feat_row[F.F_CLOSE] = c
    feat_row[F.F_VOLUME] = v
    feat_row[F.F_EMA_FAST] = ema_step(state, O_EMA_FAST, wv[P.W_EMA_FAST], c)
    ema_slow = ema_step(state, O_EMA_SLOW, wv[P.W_EMA_SLOW], c)
    feat_row[F.F_EMA_SLOW] = ema_slow
    feat_row[F.F_EMA_SLOW_SLOPE] = lag_diff_step(state, o_sl, n_sl, ema_slow, c)
    feat_row[F.F_EMA_MACRO] = ema_step(state, O_EMA_MACRO, wv[P.W_EMA_MACRO], c)
    feat_row[F.F_ADX] = adx_step(state, O_ADX, wv[P.W_ADX], h, lo, c)
    feat_row[F.F_ADX_POS] = state[O_ADX + ADX_POS_SLOT]
    feat_row[F.F_ADX_NEG] = state[O_ADX + ADX_NEG_SLOT]
    feat_row[F.F_ADX_SLOPE] = state[O_ADX + ADX_SLOPE_SLOT]
    atr = atr_step(state, O_ATR, wv[P.W_ATR], h, lo, c)
    feat_row[F.F_ATR] = atr
    feat_row[F.F_AVG_ATR] = sma_step(state, o_aa, n_aa, atr)
    feat_row[F.F_RSI] = rsi_step(state, O_RSI, wv[P.W_RSI], c)
    width = boll_step(state, o_bb, n_bb, c)
    feat_row[F.F_BB_UPPER] = state[o_bb + BB_UPPER_SLOT]
    feat_row[F.F_BB_LOWER] = state[o_bb + BB_LOWER_SLOT]
    feat_row[F.F_BB_WIDTH] = width
    feat_row[F.F_BB_WIDTH_AVG] = sma_step(state, o_avg, n_avg, width)
    feat_row[F.F_MACD_HIST] = macd_step(state, O_MACD, c)
    feat_row[F.F_MACD_HIST_PREV] = state[O_MACD + MACD_PREV_SLOT]
    feat_row[F.F_STOCH_K] = stoch_step(state, o_st, n_st, n_st, wv[P.W_STOCH_S1], wv[P.W_STOCH_S2], c)
    feat_row[F.F_STOCH_D] = state[o_st + STOCH_D_SLOT]
    vol_sma = sma_step(state, o_vs, n_vs, v)
    feat_row[F.F_VOL_SMA] = vol_sma
    feat_row[F.F_VOL_TREND] = vol_trend_of(sma_step(state, o_vt, n_vt, v), vol_sma)


@jit_function
def features_loop(o, h, lo, c, v, wv, state, out):
    init(state, wv)
    for t in range(c.shape[0]):
        update(state, wv, o[t], h[t], lo[t], c[t], v[t], out[t])


# ---------------------------------------------------------------- vectorised (sweep precompute)
# Whole-series loops over the same steps; each zeroes a caller-allocated scratch state first and
# writes caller-allocated outputs, so nothing allocates (CUDA device functions compile too).


@jit_function
def ema_loop(x, n, st, out):
    zero(st)
    for t in range(x.shape[0]):
        out[t] = ema_step(st, 0, n, x[t])


@jit_function
def sma_loop(x, n, st, out):
    zero(st)
    for t in range(x.shape[0]):
        out[t] = sma_step(st, 0, n, x[t])


@jit_function
def atr_loop(h, lo, c, n, st, out):
    zero(st)
    for t in range(c.shape[0]):
        out[t] = atr_step(st, 0, n, h[t], lo[t], c[t])


@jit_function
def adx_loop(h, lo, c, n, st, adx, pos, neg, slope):
    zero(st)
    for t in range(c.shape[0]):
        adx[t] = adx_step(st, 0, n, h[t], lo[t], c[t])
        pos[t] = st[ADX_POS_SLOT]
        neg[t] = st[ADX_NEG_SLOT]
        slope[t] = st[ADX_SLOPE_SLOT]


@jit_function
def rsi_loop(c, n, st, out):
    zero(st)
    for t in range(c.shape[0]):
        out[t] = rsi_step(st, 0, n, c[t])


@jit_function
def boll_loop(c, n, st, upper, lower, width):
    zero(st)
    for t in range(c.shape[0]):
        width[t] = boll_step(st, 0, n, c[t])
        upper[t] = st[BB_UPPER_SLOT]
        lower[t] = st[BB_LOWER_SLOT]


@jit_function
def bb_width_avg_loop(c, bb_n, avg_n, st, out):
    zero(st)
    o_avg = BB_HDR + bb_n  # the average's ring follows the Bollinger block, as in streaming
    for t in range(c.shape[0]):
        width = boll_step(st, 0, bb_n, c[t])
        out[t] = sma_step(st, o_avg, avg_n, width)


@jit_function
def macd_loop(c, st, hist, hist_prev):
    zero(st)
    for t in range(c.shape[0]):
        hist[t] = macd_step(st, 0, c[t])
        hist_prev[t] = st[MACD_PREV_SLOT]


@jit_function
def stoch_loop(c, rsi_n, n, s1, s2, st, k, d):
    zero(st)
    for t in range(c.shape[0]):
        k[t] = stoch_step(st, 0, rsi_n, n, s1, s2, c[t])
        d[t] = st[STOCH_D_SLOT]


@jit_function
def vol_trend_loop(v, trend_n, sma_n, st, out):
    zero(st)
    o_vt = 1 + sma_n
    for t in range(v.shape[0]):
        vol_sma = sma_step(st, 0, sma_n, v[t])
        out[t] = vol_trend_of(sma_step(st, o_vt, trend_n, v[t]), vol_sma)


@jit_function
def bar_count_loop(c, out):
    for t in range(c.shape[0]):
        out[t] = t + 1.0


@jit_function
def avg_atr_loop(h, lo, c, atr_n, avg_n, st, out):
    zero(st)
    o_avg = ATR_LEN  # the average's ring follows the ATR block
    for t in range(c.shape[0]):
        out[t] = sma_step(st, o_avg, avg_n, atr_step(st, 0, atr_n, h[t], lo[t], c[t]))


@jit_function
def ema_slope_loop(c, ema_n, lag_n, st, out):
    zero(st)
    o_lag = EMA_LEN  # the lag ring follows the EMA block
    for t in range(c.shape[0]):
        out[t] = lag_diff_step(st, o_lag, lag_n, ema_step(st, 0, ema_n, c[t]), c[t])


def build(jit) -> types.SimpleNamespace:
    """Compile every ``@jit_function`` with ``jit``; their calls resolve to each other."""
    return INDICATORS.compile(jit)
