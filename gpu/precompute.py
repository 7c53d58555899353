"""Indicator precompute: one array per DISTINCT window (tuple) across the whole candidate set.

Thousands of candidates typically share a handful of window values, so indicators are computed
once per distinct key with the vectorised functions of ``strategy.indicators`` (bitwise equal to
the engine's streaming ones) and candidates carry small index vectors into one stacked ``pool``.
The kernel then fills a feature row with a single gather: ``feat[s, f] = pool[fidx[f], s, t]``.

Rows 0..4 of the pool are the candles (open, high, low, close, volume), so candle columns go
through the same gather. Each indicator runs over a symbol's valid bars only (a missing bar is
never invented) and is scattered back to the dense grid with NaN where the symbol has no bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from strategy import features as F
from strategy import params as P


def _ema(ind, o, h, l, c, v, n):  # noqa: E741 - o/h/l/c/v are the standard candle names
    return (ind.ema(c, n),)


def _adx(ind, o, h, l, c, v, n):  # noqa: E741
    return tuple(ind.adx(h, l, c, n))


def _atr(ind, o, h, l, c, v, n):  # noqa: E741
    return (ind.atr(h, l, c, n),)


def _rsi(ind, o, h, l, c, v, n):  # noqa: E741
    return (ind.rsi(c, n),)


def _bollinger(ind, o, h, l, c, v, n):  # noqa: E741
    return tuple(ind.bollinger(c, n))


def _bb_width_avg(ind, o, h, l, c, v, bb_n, avg_n):  # noqa: E741
    return (ind.bb_width_avg(c, bb_n, avg_n),)


def _macd(ind, o, h, l, c, v):  # noqa: E741
    return tuple(ind.macd_hist(c))


def _stoch_rsi(ind, o, h, l, c, v, rsi_n, n, s1, s2):  # noqa: E741
    return tuple(ind.stoch_rsi(c, rsi_n, n, s1, s2))


def _vol_sma(ind, o, h, l, c, v, n):  # noqa: E741
    return (ind.sma(v, n),)


def _vol_trend(ind, o, h, l, c, v, trend_n, sma_n):  # noqa: E741
    return (ind.vol_trend(v, trend_n, sma_n),)


def _avg_atr(ind, o, h, l, c, v, atr_n, avg_n):  # noqa: E741
    return (ind.avg_atr(h, l, c, atr_n, avg_n),)


def _ema_slope(ind, o, h, l, c, v, ema_n, lag_n):  # noqa: E741
    return (ind.ema_slope(c, ema_n, lag_n),)


def _bar_count(ind, o, h, l, c, v):  # noqa: E741
    return (ind.bar_count(c),)


@dataclass(frozen=True)
class IndicatorKind:
    name: str
    compute: Callable
    n_outputs: int


KINDS: dict[str, IndicatorKind] = {k.name: k for k in (
    IndicatorKind("ema", _ema, 1), IndicatorKind("adx", _adx, 4), IndicatorKind("atr", _atr, 1),
    IndicatorKind("rsi", _rsi, 1), IndicatorKind("bollinger", _bollinger, 3),
    IndicatorKind("bb_width_avg", _bb_width_avg, 1), IndicatorKind("macd", _macd, 2),
    IndicatorKind("stoch_rsi", _stoch_rsi, 2), IndicatorKind("vol_sma", _vol_sma, 1),
    IndicatorKind("vol_trend", _vol_trend, 1), IndicatorKind("avg_atr", _avg_atr, 1),
    IndicatorKind("ema_slope", _ema_slope, 1), IndicatorKind("bar_count", _bar_count, 1),
)}

# feature column -> (indicator kind, output index, window-vector columns forming the key).
# The three EMAs share one kind, so a window used as fast in one candidate and slow in another
# is still computed once.
FEATURE_SOURCES: dict[int, tuple[str, int, tuple[int, ...]]] = {
    F.F_EMA_FAST: ("ema", 0, (P.W_EMA_FAST,)),
    F.F_EMA_SLOW: ("ema", 0, (P.W_EMA_SLOW,)),
    F.F_EMA_MACRO: ("ema", 0, (P.W_EMA_MACRO,)),
    F.F_ADX: ("adx", 0, (P.W_ADX,)),
    F.F_ADX_POS: ("adx", 1, (P.W_ADX,)),
    F.F_ADX_NEG: ("adx", 2, (P.W_ADX,)),
    F.F_ADX_SLOPE: ("adx", 3, (P.W_ADX,)),
    F.F_ATR: ("atr", 0, (P.W_ATR,)),
    F.F_RSI: ("rsi", 0, (P.W_RSI,)),
    F.F_BB_UPPER: ("bollinger", 0, (P.W_BB,)),
    F.F_BB_LOWER: ("bollinger", 1, (P.W_BB,)),
    F.F_BB_WIDTH: ("bollinger", 2, (P.W_BB,)),
    F.F_BB_WIDTH_AVG: ("bb_width_avg", 0, (P.W_BB, P.W_BB_WIDTH_AVG)),
    F.F_MACD_HIST: ("macd", 0, ()),
    F.F_MACD_HIST_PREV: ("macd", 1, ()),
    F.F_STOCH_K: ("stoch_rsi", 0, (P.W_STOCH_RSI, P.W_STOCH_RSI, P.W_STOCH_S1, P.W_STOCH_S2)),
    F.F_STOCH_D: ("stoch_rsi", 1, (P.W_STOCH_RSI, P.W_STOCH_RSI, P.W_STOCH_S1, P.W_STOCH_S2)),
    F.F_VOL_SMA: ("vol_sma", 0, (P.W_VOL_SMA,)),
    F.F_VOL_TREND: ("vol_trend", 0, (P.W_VOL_TREND, P.W_VOL_SMA)),
    F.F_AVG_ATR: ("avg_atr", 0, (P.W_ATR, P.W_AVG_ATR)),
    F.F_EMA_SLOW_SLOPE: ("ema_slope", 0, (P.W_EMA_SLOW, P.W_EMA_SLOW_SLOPE)),
    F.F_BAR_COUNT: ("bar_count", 0, ()),
}
CANDLE_ROWS = (F.F_OPEN, F.F_HIGH, F.F_LOW, F.F_CLOSE, F.F_VOLUME)  # pool rows 0..4


@dataclass
class Precomputed:
    """``pool[row, sym, bar]`` and ``fidx[cand, NF]`` (pool row of each feature column)."""

    pool: np.ndarray
    fidx: np.ndarray
    computed: dict[str, int] = field(default_factory=dict)  # indicator calls per kind (per symbol set)

    @property
    def n_arrays(self) -> int:
        return sum(self.computed.values())


def _candle_arrays(md) -> list[np.ndarray]:
    return [md.open, md.high, md.low, md.close, md.volume]


def _compute_dense(ind, kind: IndicatorKind, key: tuple[int, ...], md) -> list[np.ndarray]:
    """One indicator over each symbol's valid bars, scattered to [nsym, nbar] (NaN where no bar)."""
    nsym, nbar = md.close.shape
    outs = [np.full((nsym, nbar), np.nan) for _ in range(kind.n_outputs)]
    candles = _candle_arrays(md)
    for s in range(nsym):
        bars = np.flatnonzero(md.valid[s])
        if bars.size == 0:
            continue
        cols = [np.ascontiguousarray(a[s, bars], dtype=np.float64) for a in candles]
        results = kind.compute(ind, *cols, *key)
        for k, arr in enumerate(results):
            outs[k][s, bars] = arr
    return outs


def precompute(md, cand_windows: np.ndarray, *, precision: str = "f64", share: bool = True) -> Precomputed:
    """Build the pool for the candidates' window vectors ``cand_windows`` int64[n, NW].

    ``share=False`` computes every candidate's indicators separately; it exists only so the
    benchmark can show what sharing saves.
    """
    import strategy.indicators as ind

    dtype = np.float32 if precision == "f32" else np.float64
    n = cand_windows.shape[0]
    fidx = np.zeros((n, F.NF), dtype=np.int32)
    rows: list[np.ndarray] = [np.asarray(a, dtype=np.float64) for a in _candle_arrays(md)]
    for f in CANDLE_ROWS:
        fidx[:, f] = f
    computed: dict[str, int] = {}
    row_of: dict[tuple, int] = {}  # (kind, key, candidate-or--1) -> first pool row of its outputs
    for f, (kind_name, out_k, wcols) in FEATURE_SOURCES.items():
        kind = KINDS[kind_name]
        keys = cand_windows[:, list(wcols)] if wcols else np.zeros((n, 0), dtype=np.int64)
        if share:
            distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            owners = [-1] * len(distinct)
        else:
            distinct, inverse, owners = keys, np.arange(n), list(range(n))
        first_rows = np.empty(len(distinct), dtype=np.int32)
        for d, key_arr in enumerate(distinct):
            key = tuple(int(x) for x in key_arr)
            tag = (kind_name, key, owners[d])
            if tag not in row_of:
                row_of[tag] = len(rows)
                rows.extend(_compute_dense(ind, kind, key, md))
                computed[kind_name] = computed.get(kind_name, 0) + 1
            first_rows[d] = row_of[tag]
        fidx[:, f] = first_rows[inverse] + out_k
    pool = np.empty((len(rows),) + md.close.shape, dtype=dtype)
    for r, arr in enumerate(rows):
        pool[r] = arr
    return Precomputed(pool=pool, fidx=fidx, computed=computed)
