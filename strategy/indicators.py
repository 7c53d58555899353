"""Indicators twice — streaming (engine, live) and vectorised (sweep precompute) — from one arithmetic.

Both executions call the scalar steps of ``strategy.indicators_jit``; that shared source is what
makes a streaming feature row bitwise equal to the vectorised arrays (tested, not assumed), so a
sweep candidate and its canonical replay see the very same numbers.

Conventions: the installed ``ta`` library (0.11, over pandas) is the reference. EMA, RSI and
MACD reproduce pandas' ewm arithmetic bit for bit, ATR and ADX ta's recursions (bitwise equal on
the real test data; only the warm-up sums may differ by an ulp); Bollinger, SMAs and Stoch RSI
agree to ~1e-12 (our sigma is two-pass, more accurate than pandas' online rolling std). Where the strategy
spec or this module differs from ``ta``:

* Warm-up is NaN. ``ta`` returns 0.0 during warm-up for ATR, ADX, +DI and -DI.
  First ready bar (0-based, n = the window):
  EMA n-1 | ATR n-1 | RSI n-1 | ADX 2n-1 | +DI/-DI n | adx_slope 2n | Bollinger n-1 |
  bb_width_avg bb_n+avg_n-2 | macd_hist 33 | macd_hist_prev 34 |
  stoch K rsi_n+n+s1-3 | stoch D rsi_n+n+s1+s2-4 | vol_sma n-1 | vol_trend max(n, trend_n)-1 |
  avg_atr atr_n+avg_n-2 | ema_slow_slope ema_n-1+lag_n | bar_count 0 (1, 2, 3, ...).
* ``avg_atr`` = mean of the last ``thresholds.entry.ave_avg_atr_window`` ATRs (the reference's AVE
  average; its ring buffer averages a partial window during warm-up, ours is NaN until full).
* ``ema_slow_slope`` = (slow EMA now - slow EMA ``thresholds.entry.slow_drift_slope_window`` bars
  before) / close now (the reference returns 0 while the history is short; ours is NaN, and the
  kernel reads NaN as 0).
* RSI is ready at bar n-1, not n: ta's ``diff().where(diff > 0, 0.0)`` turns the first bar's
  missing difference into a gain of 0 and a loss of 0, which seed the Wilder averages (the
  spec's "seeded at the first difference" is one bar later; we follow ta, values differ only
  in the first few dozen bars).
* +DI/-DI are ready at bar n (the value ta's own ADX uses at that bar); ``ta.adx_pos/adx_neg``
  print 0.0 there and start at n+1 because of its loop bounds. From n+1 on they are equal.
* ``bb_width`` = (upper - lower)/close, a fraction, as the reference normalises it; ``ta``'s
  bollinger_wband is 100 x (upper - lower)/SMA.
* Bollinger sigma is the population std (ddof 0) computed two-pass over the window. A window
  of identical values has mean exactly that value (as pandas), so flat prices give width 0.
* ``adx_slope`` = ADX - ADX of the previous bar (not in ta).
* Stoch RSI follows ``ta.momentum.StochRSIIndicator(close, window, smooth1, smooth2)``, whose
  one ``window`` is both the RSI window and the min/max window: ``compute_features`` therefore
  uses ``rsi_n = n = stoch_rsi_window`` (``rsi_window`` only drives the F_RSI column). When
  max == min over the window the raw value is NaN (pandas' 0/0), and K/D are NaN while such a
  value is inside their windows.
* vol_trend = 1.0 when SMA(volume, vol_trend_window) > vol_sma else 0.0; NaN until both ready.

Inputs are ONE symbol's valid bars (the caller compresses gaps out): a missing bar is never
invented, so "n bars" always means n bars the symbol actually traded.

Numba cache caveat for callers: a cached njit function that calls ``STREAM.update`` inlines it,
but numba invalidates that cache only when the caller's own file changes; after editing
``indicators_jit.py`` clear the callers' ``__pycache__/*.nbi``.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from strategy import features as F
from strategy import indicators_jit as J
from strategy import params as P
from strategy.indicators_jit import stream_state_len

__all__ = [
    "STREAM",
    "VEC",
    "StreamFns",
    "VecFns",
    "adx",
    "atr",
    "avg_atr",
    "bar_count",
    "bb_width_avg",
    "bollinger",
    "compute_features",
    "ema",
    "ema_slope",
    "macd_hist",
    "make_streaming",
    "make_vectorised",
    "rsi",
    "scratch_len",
    "sma",
    "stoch_rsi",
    "stream_state_len",
    "vol_sma",
    "vol_trend",
]

StreamFns = namedtuple("StreamFns", "state_len init update run")


def make_streaming(jit) -> StreamFns:
    """Streaming functions for one target.

    ``init(state, wv)`` resets a symbol; ``update(state, wv, o, h, l, c, v, feat_row)`` consumes
    one bar and writes every F_* column; ``run(o, h, l, c, v, wv, state, out)`` is init + update
    over a whole series (what compute_features calls); ``state_len(wv)`` is plain Python.
    """
    fns = J.build(jit)
    return StreamFns(stream_state_len, fns.init, fns.update, fns.features_loop)


VecFns = namedtuple("VecFns", "ema atr adx rsi bollinger bb_width_avg macd_hist stoch_rsi sma vol_trend avg_atr "
                               "ema_slope bar_count")


def make_vectorised(jit) -> VecFns:
    """Whole-series loops over the same steps, compiled with ``jit``.

    Each loop zeroes a caller-allocated scratch state of ``scratch_len(name, *windows)`` and
    writes caller-allocated outputs, so the loops allocate nothing and compile as CUDA device
    functions too (one thread per (window, symbol) series).
    Signatures: ``ema(x, n, scratch, out)``, ``atr(h, l, c, n, scratch, out)``,
    ``adx(h, l, c, n, scratch, adx, pos, neg, slope)``, ``rsi(c, n, scratch, out)``,
    ``bollinger(c, n, scratch, upper, lower, width)``, ``bb_width_avg(c, bb_n, avg_n, scratch,
    out)``, ``macd_hist(c, scratch, hist, hist_prev)``, ``stoch_rsi(c, rsi_n, n, s1, s2,
    scratch, k, d)``, ``sma(x, n, scratch, out)``, ``vol_trend(v, trend_n, sma_n, scratch, out)``,
    ``avg_atr(h, l, c, atr_n, avg_n, scratch, out)``, ``ema_slope(c, ema_n, lag_n, scratch, out)``.
    """
    f = J.build(jit)
    return VecFns(
        f.ema_loop,
        f.atr_loop,
        f.adx_loop,
        f.rsi_loop,
        f.boll_loop,
        f.bb_width_avg_loop,
        f.macd_loop,
        f.stoch_loop,
        f.sma_loop,
        f.vol_trend_loop,
        f.avg_atr_loop,
        f.ema_slope_loop,
        f.bar_count_loop,
    )


def scratch_len(name: str, *windows: int) -> int:
    """Scratch state length a ``make_vectorised`` loop needs (for device-side precompute)."""
    w = [int(x) for x in windows]
    sizes = {
        "ema": lambda: J.EMA_LEN,
        "atr": lambda: J.ATR_LEN,
        "adx": lambda: J.ADX_LEN,
        "rsi": lambda: J.RSI_LEN,
        "bollinger": lambda: J.boll_len(w[0]),
        "bb_width_avg": lambda: J.boll_len(w[0]) + J.sma_len(w[1]),
        "macd_hist": lambda: J.MACD_LEN,
        "stoch_rsi": lambda: J.stoch_len(*w),
        "sma": lambda: J.sma_len(w[0]),
        "vol_trend": lambda: J.sma_len(w[1]) + J.sma_len(w[0]),
        "avg_atr": lambda: J.ATR_LEN + J.sma_len(w[1]),
        "ema_slope": lambda: J.EMA_LEN + J.sma_len(w[1] + 1),
    }
    return sizes[name]()


_CPU_JIT = numba.njit(cache=True)
STREAM = make_streaming(_CPU_JIT)
VEC = make_vectorised(_CPU_JIT)


def _f64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _window(n, name: str) -> int:
    n = int(n)
    if n < 1:
        raise ValueError(f"indicator window {name} must be >= 1, got {n}")
    return n


def _check_windows(wv) -> np.ndarray:
    wv = np.ascontiguousarray(wv, dtype=np.int64)
    if wv.shape != (P.NW,):
        raise ValueError(f"window vector must have {P.NW} entries (WINDOW_SPECS), got {wv.shape}")
    for path, n in zip(P.WINDOW_PATHS, wv, strict=True):
        _window(n, path)
    return wv


def compute_features(o, h, l, c, v, wv) -> np.ndarray:  # noqa: E741 (l = low, as in OHLCV)
    """Feature rows float64[n, NF] for one symbol's valid bars; == feeding STREAM.update bar by bar."""
    wv = _check_windows(wv)
    c = _f64(c)
    out = np.empty((c.shape[0], F.NF), dtype=np.float64)
    state = np.empty(stream_state_len(wv), dtype=np.float64)
    STREAM.run(_f64(o), _f64(h), _f64(l), c, _f64(v), wv, state, out)
    return out


def _scratch(name: str, *windows: int) -> np.ndarray:
    return np.empty(scratch_len(name, *windows), dtype=np.float64)


def ema(x, n) -> np.ndarray:
    n = _window(n, "ema")
    x = _f64(x)
    out = np.empty_like(x)
    VEC.ema(x, n, _scratch("ema"), out)
    return out


def sma(x, n) -> np.ndarray:
    n = _window(n, "sma")
    x = _f64(x)
    out = np.empty_like(x)
    VEC.sma(x, n, _scratch("sma", n), out)
    return out


def atr(h, l, c, n) -> np.ndarray:  # noqa: E741
    n = _window(n, "atr")
    c = _f64(c)
    out = np.empty_like(c)
    VEC.atr(_f64(h), _f64(l), c, n, _scratch("atr"), out)
    return out


def adx(h, l, c, n):  # noqa: E741
    """(adx, +DI, -DI, adx_slope)."""
    n = _window(n, "adx")
    c = _f64(c)
    outs = [np.empty_like(c) for _ in range(4)]
    VEC.adx(_f64(h), _f64(l), c, n, _scratch("adx"), *outs)
    return tuple(outs)


def rsi(c, n) -> np.ndarray:
    n = _window(n, "rsi")
    c = _f64(c)
    out = np.empty_like(c)
    VEC.rsi(c, n, _scratch("rsi"), out)
    return out


def bollinger(c, n):
    """(upper, lower, width) with width = (upper - lower)/close."""
    n = _window(n, "bollinger")
    c = _f64(c)
    outs = [np.empty_like(c) for _ in range(3)]
    VEC.bollinger(c, n, _scratch("bollinger", n), *outs)
    return tuple(outs)


def bb_width_avg(c, bb_n, avg_n) -> np.ndarray:
    bb_n, avg_n = _window(bb_n, "bb"), _window(avg_n, "bb_width_avg")
    c = _f64(c)
    out = np.empty_like(c)
    VEC.bb_width_avg(c, bb_n, avg_n, _scratch("bb_width_avg", bb_n, avg_n), out)
    return out


def avg_atr(h, l, c, atr_n, avg_n) -> np.ndarray:  # noqa: E741
    """Mean of the last ``avg_n`` ATR(atr_n) values (the reference's AVE average); NaN until
    ``avg_n`` ATRs exist."""
    atr_n, avg_n = _window(atr_n, "atr"), _window(avg_n, "avg_atr")
    c = _f64(c)
    out = np.empty_like(c)
    VEC.avg_atr(_f64(h), _f64(l), c, atr_n, avg_n, _scratch("avg_atr", atr_n, avg_n), out)
    return out


def ema_slope(c, ema_n, lag_n) -> np.ndarray:
    """(EMA(ema_n) now - EMA(ema_n) ``lag_n`` bars before) / close now (the reference's slow-drift
    slope); NaN until both EMAs exist."""
    ema_n, lag_n = _window(ema_n, "ema"), _window(lag_n, "ema_slope")
    c = _f64(c)
    out = np.empty_like(c)
    VEC.ema_slope(c, ema_n, lag_n, _scratch("ema_slope", ema_n, lag_n), out)
    return out


def bar_count(c) -> np.ndarray:
    """1, 2, 3, ...: the symbol's bars so far, this one included (over its valid bars)."""
    c = _f64(c)
    out = np.empty_like(c)
    VEC.bar_count(c, out)
    return out


def macd_hist(c):
    """(hist, hist of the previous bar) for MACD 12/26/9."""
    c = _f64(c)
    hist, prev = np.empty_like(c), np.empty_like(c)
    VEC.macd_hist(c, _scratch("macd_hist"), hist, prev)
    return hist, prev


def stoch_rsi(c, rsi_n, n, s1, s2):
    """(K, D). compute_features passes rsi_n = n = stoch_rsi_window (ta's convention)."""
    w = [_window(x, name) for x, name in ((rsi_n, "rsi"), (n, "stoch"), (s1, "s1"), (s2, "s2"))]
    c = _f64(c)
    k, d = np.empty_like(c), np.empty_like(c)
    VEC.stoch_rsi(c, *w, _scratch("stoch_rsi", *w), k, d)
    return k, d


def vol_sma(v, n) -> np.ndarray:
    """SMA of volume: the F_VOL_SMA column (same as sma(v, n))."""
    return sma(v, n)


def vol_trend(v, trend_n, sma_n) -> np.ndarray:
    trend_n, sma_n = _window(trend_n, "vol_trend"), _window(sma_n, "vol_sma")
    v = _f64(v)
    out = np.empty_like(v)
    VEC.vol_trend(v, trend_n, sma_n, _scratch("vol_trend", trend_n, sma_n), out)
    return out
