"""compute_features against the `ta` library on real candles (the reference of every convention).

Prices are quoted in BTC (ADA ~5e-5), so agreement is judged relative to each value, with an
absolute floor only where a value is a difference that can cross zero (stoch in [0, 1], the
slope, the dimensionless Bollinger width).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta

from strategy import features as F  # noqa: E402
from strategy import indicators as I  # noqa: E402
from strategy import params as P  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REL = 1e-9

CASES = [
    ("candles_5m.db", "ADA"),
    ("candles_5m.db", "ETH"),
    ("candles_1h.db", "DASH"),
    ("candles_1h.db", "NXT"),
    ("hyperliquid/candles_1h.db", "BTC"),
]


def _load(db: str, symbol: str):
    path = DATA / db
    if not path.exists():
        pytest.skip(f"../shared/data absent: {path} (real candles are not shipped with the repo)")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT o, h, l, c, v FROM candles WHERE symbol = ? ORDER BY t", (symbol,)
        ).fetchall()
    assert len(rows) > 300, f"{db}:{symbol} has too few bars for a reference check"
    return np.array(rows, dtype=np.float64).T


def _windows(**over) -> np.ndarray:
    wv = {p: d for p, d in P.WINDOW_SPECS}
    wv.update({f"indicators.{k}": v for k, v in over.items()})
    return np.array([wv[p] for p in P.WINDOW_PATHS], dtype=np.int64)


def _ta_reference(o, h, lo, c, v, wv) -> dict[int, np.ndarray]:
    hs, ls, cs, vs = (pd.Series(x) for x in (h, lo, c, v))
    w = {path.split(".")[-1]: int(n) for path, n in zip(P.WINDOW_PATHS, wv, strict=True)}
    adx = ta.trend.ADXIndicator(hs, ls, cs, w["adx_window"])
    bb = ta.volatility.BollingerBands(cs, w["bb_window"], 2)
    width = (bb.bollinger_hband() - bb.bollinger_lband()) / cs  # the reference normalises by the close
    atr = ta.volatility.AverageTrueRange(hs, ls, cs, w["atr_window"]).average_true_range()
    ema_slow = ta.trend.ema_indicator(cs, w["ema_slow_window"])
    stoch = ta.momentum.StochRSIIndicator(
        cs, w["stoch_rsi_window"], w["stoch_rsi_smooth1"], w["stoch_rsi_smooth2"]
    )
    hist = ta.trend.MACD(cs).macd_diff()
    adx_line = adx.adx()
    vol_sma = vs.rolling(w["vol_sma_window"]).mean()
    vol_fast = vs.rolling(w["vol_trend_window"]).mean()
    ref = {
        F.F_EMA_FAST: ta.trend.ema_indicator(cs, w["ema_fast_window"]),
        F.F_EMA_SLOW: ema_slow,
        F.F_EMA_MACRO: ta.trend.ema_indicator(cs, w["ema_macro_window"]),
        F.F_ADX: adx_line,
        F.F_ADX_POS: adx.adx_pos(),
        F.F_ADX_NEG: adx.adx_neg(),
        F.F_ADX_SLOPE: adx_line.diff(),
        F.F_ATR: atr,
        F.F_AVG_ATR: atr.rolling(w["ave_avg_atr_window"]).mean(),
        F.F_EMA_SLOW_SLOPE: (ema_slow - ema_slow.shift(w["slow_drift_slope_window"])) / cs,
        F.F_RSI: ta.momentum.RSIIndicator(cs, w["rsi_window"]).rsi(),
        F.F_BB_UPPER: bb.bollinger_hband(),
        F.F_BB_LOWER: bb.bollinger_lband(),
        F.F_BB_WIDTH: width,
        F.F_BB_WIDTH_AVG: width.rolling(w["bb_width_avg_window"]).mean(),
        F.F_MACD_HIST: hist,
        F.F_MACD_HIST_PREV: hist.shift(1),
        F.F_STOCH_K: stoch.stochrsi_k(),
        F.F_STOCH_D: stoch.stochrsi_d(),
        F.F_VOL_SMA: vol_sma,
        F.F_VOL_TREND: (vol_fast > vol_sma).astype(float).where(vol_sma.notna() & vol_fast.notna()),
    }
    return {k: np.asarray(s, dtype=np.float64) for k, s in ref.items()}


# Absolute floors for columns whose values can sit at or cross zero.
ABS_FLOOR = {
    F.F_ADX_SLOPE: 1e-9,
    F.F_ADX_POS: 1e-9,
    F.F_ADX_NEG: 1e-9,
    F.F_STOCH_K: 1e-9,
    F.F_STOCH_D: 1e-9,
    F.F_BB_WIDTH: 1e-11,  # pandas' online rolling std carries ~1e-12 x price of error
    F.F_BB_WIDTH_AVG: 1e-11,
    F.F_MACD_HIST: 1e-15,
    F.F_MACD_HIST_PREV: 1e-15,
    F.F_EMA_SLOW_SLOPE: 1e-13,
}


def _check_against_ta(o, h, lo, c, v, wv, label):
    feats = I.compute_features(o, h, lo, c, v, wv)
    ref = _ta_reference(o, h, lo, c, v, wv)
    # ~3 windows of warm-up (the macro EMA is exact from its first bar, so it does not count)
    stoch = wv[P.W_STOCH_RSI] * 2 + wv[P.W_STOCH_S1] + wv[P.W_STOCH_S2]
    skip = 3 * int(max(2 * wv[P.W_ADX], wv[P.W_BB] + wv[P.W_BB_WIDTH_AVG], stoch, 34,
                       wv[P.W_ATR] + wv[P.W_AVG_ATR], wv[P.W_EMA_SLOW] + wv[P.W_EMA_SLOW_SLOPE]))
    assert len(c) > skip + 250, label
    for col, r in ref.items():
        ours, want = feats[skip:, col], r[skip:]
        name = F.FEATURE_NAMES[col]
        assert not np.isnan(want).all(), f"{label} {name}: reference all NaN"
        assert np.array_equal(np.isnan(ours), np.isnan(want)), f"{label} {name}: NaN pattern"
        ok = ~np.isnan(want)
        if col == F.F_VOL_TREND:
            # a comparison of two SMAs: only judge bars where they are not within rounding
            vs = feats[skip:, F.F_VOL_SMA]
            fast = pd.Series(v).rolling(int(wv[P.W_VOL_TREND])).mean().to_numpy()[skip:]
            ok &= np.abs(fast - vs) > 1e-12 * np.abs(vs)
            assert np.array_equal(ours[ok], want[ok]), f"{label} {name}"
            continue
        tol = REL * np.abs(want[ok]) + ABS_FLOOR.get(col, 0.0)
        err = np.abs(ours[ok] - want[ok])
        worst = int(np.argmax(err - tol))
        assert (err <= tol).all(), (
            f"{label} {name}: |diff| {err[worst]:.3e} > tol {tol[worst]:.3e} at bar {skip + worst}"
        )
    # OHLCV pass through untouched
    for col, x in ((F.F_OPEN, o), (F.F_HIGH, h), (F.F_LOW, lo), (F.F_CLOSE, c), (F.F_VOLUME, v)):
        assert np.array_equal(feats[:, col], x)


@pytest.mark.parametrize("db,symbol", CASES)
def test_default_windows_match_ta(db, symbol):
    o, h, lo, c, v = _load(db, symbol)
    _check_against_ta(o, h, lo, c, v, _windows(), f"{db}:{symbol}")


def test_other_windows_match_ta():
    o, h, lo, c, v = _load("candles_5m.db", "LTC")
    wv = _windows(
        ema_fast_window=9,
        ema_slow_window=33,
        ema_macro_window=120,
        adx_window=10,
        atr_window=21,
        rsi_window=7,
        bb_window=30,
        bb_width_avg_window=12,
        vol_sma_window=40,
        vol_trend_window=8,
        stoch_rsi_window=21,
        stoch_rsi_smooth1=5,
        stoch_rsi_smooth2=2,
    )
    _check_against_ta(o, h, lo, c, v, wv, "candles_5m.db:LTC custom windows")


def test_ema_rsi_atr_adx_macd_are_bitwise_equal_to_ta():
    """EMA/RSI/MACD reproduce pandas' ewm arithmetic exactly; ATR/ADX ta's own loops."""
    o, h, lo, c, v = _load("candles_5m.db", "ADA")
    feats = I.compute_features(o, h, lo, c, v, _windows())
    ref = _ta_reference(o, h, lo, c, v, _windows())
    for col in (F.F_EMA_FAST, F.F_EMA_MACRO, F.F_RSI, F.F_MACD_HIST, F.F_ATR, F.F_ADX):
        first = int(np.argmax(~np.isnan(feats[:, col])))
        assert np.array_equal(feats[first:, col], ref[col][first:]), F.FEATURE_NAMES[col]


def test_bollinger_sigma_is_accurate_on_tiny_prices():
    """Two-pass sigma: within 1e-12 of an exact (fsum) reference even at ADA's ~5e-5 prices."""
    import math

    o, h, lo, c, v = _load("candles_5m.db", "ADA")
    n = 20
    upper, lower, _ = I.bollinger(c, n)
    for t in range(n - 1, len(c), 97):
        win = c[t - n + 1 : t + 1]
        mid = math.fsum(win) / n
        sd = math.sqrt(math.fsum((x - mid) ** 2 for x in win) / n)
        assert abs((upper[t] - lower[t]) / 4.0 - sd) <= 1e-12 * sd + 1e-20
