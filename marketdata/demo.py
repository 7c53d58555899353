"""SYNTHETIC demo market data (not real prices) so that a fresh clone can run replays and sweeps.

Nothing here is exchange data. Each generated DB carries a `demo_meta` table with
("synthetic", "true"). The generator is a regime-switching random walk (range / up-trend /
down-trend regimes with a common market factor and GARCH(1,1)-like volatility clustering), with
prices spanning 0.05 .. 60,000 across symbols, volume rising with |return|, a few missing bars in
some symbols (so gap handling is exercised) and persistent hourly funding rates around 1e-5.
Output is deterministic: fixed seeds and a fixed end time give the same data on every run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

from marketdata.intervals import interval_ms
from marketdata.sqlite_store import connect, ensure_candles_schema, ensure_funding_schema

END_MS = 1_748_736_000_000  # 2025-06-01T00:00:00Z, fixed so every run produces the same bars
UPDATED_AT = "2025-06-01T00:00:00+00:00"
DAY_MS = 86_400_000
SPANS_DAYS = {"1h": 240, "5m": 45}
SEEDS = {"1h": 20_250_601, "5m": 20_250_602, "funding": 20_250_603}
FILES = {"candles_1h": "candles_1h.db", "candles_5m": "candles_5m.db", "funding": "funding_rates.db"}

# symbol: (start price, daily volatility, typical notional traded per hour in USD)
SYMBOLS: dict[str, tuple[float, float, float]] = {
    "BTC": (60_000.0, 0.025, 9.0e7), "ETH": (3_000.0, 0.032, 4.5e7), "SOL": (150.0, 0.045, 2.0e7),
    "BNB": (550.0, 0.028, 6.0e6), "XRP": (0.60, 0.040, 1.0e7), "DOGE": (0.12, 0.050, 8.0e6),
    "ADA": (0.45, 0.045, 4.0e6), "AVAX": (30.0, 0.050, 5.0e6), "LINK": (14.0, 0.048, 4.0e6),
    "DOT": (6.0, 0.045, 2.5e6), "LTC": (80.0, 0.040, 3.0e6), "ATOM": (8.0, 0.048, 2.0e6),
    "ARB": (0.90, 0.055, 3.0e6), "OP": (1.80, 0.055, 2.5e6), "SUI": (1.10, 0.060, 4.0e6),
    "INJ": (22.0, 0.058, 2.0e6), "NEAR": (5.0, 0.052, 2.0e6), "APT": (8.0, 0.052, 1.5e6),
    "TIA": (7.0, 0.065, 1.5e6), "GALA": (0.05, 0.065, 1.0e6),
}
GAP_SYMBOLS = ("ADA", "DOT", "TIA", "GALA", "OP")


def ensure_demo_data(root: str | Path) -> dict[str, Path]:
    """Create the demo DBs under root once (atomically); later calls just return their paths."""
    root = Path(root)
    paths = {key: root / name for key, name in FILES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=root))
    try:
        for iv in ("1h", "5m"):
            _write_candles_db(tmp / f"candles_{iv}.db", iv)
        _write_funding_db(tmp / FILES["funding"])
        for key, name in FILES.items():
            _fsync(tmp / name)
            os.replace(tmp / name, paths[key])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def generate_candles(interval: str) -> dict[str, dict[str, np.ndarray]]:
    """{symbol: {t, o, h, l, c, v, n}} for the interval's demo span (gaps already removed)."""
    step = interval_ms(interval)
    nbar = SPANS_DAYS[interval] * DAY_MS // step
    times = END_MS - nbar * step + step * np.arange(nbar, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(SEEDS[interval]))
    names = list(SYMBOLS)
    start = np.log([SYMBOLS[s][0] for s in names])
    daily_vol = np.array([SYMBOLS[s][1] for s in names])
    per_bar = step / DAY_MS
    log_close, sigma = _walk(rng, nbar, start, daily_vol * np.sqrt(per_bar), 0.5 * daily_vol * per_bar, per_bar)
    out = {}
    for i, symbol in enumerate(names):
        bars = _ohlcv(rng, log_close[i], sigma[i], SYMBOLS[symbol][2] * step / 3_600_000, start[i])
        keep = _gap_mask(rng, nbar) if symbol in GAP_SYMBOLS else np.ones(nbar, dtype=bool)
        out[symbol] = {"t": times[keep], **{k: v[keep] for k, v in bars.items()}}
    return out


def _walk(rng, nbar, start, sigma_base, trend_per_bar, days_per_bar):
    """Log-price paths [nsym, nbar] and per-bar volatility: regimes + market factor + GARCH.

    Regimes last ~3 days on average whatever the bar size; range regimes pull the price back
    towards where the regime started (half-life ~1.4 days), trends drift ~half a daily vol per day.
    """
    nsym = start.shape[0]
    p_switch = days_per_bar / 3.0
    kappa = 0.5 * days_per_bar
    alpha, beta = 0.08, 0.90
    omega = sigma_base**2 * (1.0 - alpha - beta)
    h = sigma_base**2
    h_cap = 16.0 * sigma_base**2
    logp = start.copy()
    anchor = start.copy()
    regime = rng.integers(0, 3, nsym)  # 0 range, 1 up, 2 down
    drift_sign = np.array([0.0, 1.0, -1.0])
    vol_mult = np.array([0.8, 1.15, 1.25])
    shocks_mkt = rng.standard_t(5, nbar) / np.sqrt(5 / 3)
    shocks_own = rng.standard_t(5, (nbar, nsym)) / np.sqrt(5 / 3)
    switches = rng.random((nbar, nsym)) < p_switch
    new_regimes = rng.integers(0, 3, (nbar, nsym))
    log_close = np.empty((nsym, nbar))
    sigma = np.empty((nsym, nbar))
    for t in range(nbar):
        regime = np.where(switches[t], new_regimes[t], regime)
        anchor = np.where(switches[t], logp, anchor)
        innovation = np.sqrt(h) * (0.6 * shocks_mkt[t] + 0.8 * shocks_own[t])
        s = np.sqrt(h) * vol_mult[regime]
        pull = np.where(regime == 0, -kappa * (logp - anchor), 0.0)
        logp = logp + drift_sign[regime] * trend_per_bar + pull + innovation * vol_mult[regime]
        h = np.minimum(omega + alpha * innovation**2 + beta * h, h_cap)
        log_close[:, t] = logp
        sigma[:, t] = s
    return log_close, sigma


def _ohlcv(rng, log_close, sigma, notional_per_bar, log_start):
    nbar = log_close.shape[0]
    log_open = np.concatenate([[log_start], log_close[:-1]]) + rng.normal(0.0, 0.05, nbar) * sigma
    top = np.maximum(log_open, log_close) + np.abs(rng.normal(0.0, 0.6, nbar)) * sigma
    bottom = np.minimum(log_open, log_close) - np.abs(rng.normal(0.0, 0.6, nbar)) * sigma
    ret = np.abs(log_close - log_open) / sigma
    close = np.exp(log_close)
    volume = notional_per_bar / close * np.exp(rng.normal(0.0, 0.35, nbar)) * (0.4 + 0.8 * ret)
    trades = np.maximum(1, rng.poisson(np.clip(volume * close / 2_000.0, 1.0, 1e6)))
    return {"o": np.exp(log_open), "h": np.exp(top), "l": np.exp(bottom), "c": close, "v": volume,
            "n": trades.astype(np.int64)}


def _gap_mask(rng, nbar) -> np.ndarray:
    """Drop 2-4 short runs (1-6 bars) away from the ends, like real feed outages."""
    keep = np.ones(nbar, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        start = int(rng.integers(nbar // 10, nbar - nbar // 10))
        keep[start:start + int(rng.integers(1, 7))] = False
    return keep


def _write_meta(conn: sqlite3.Connection, description: str) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT OR REPLACE INTO demo_meta (key, value) VALUES (?, ?)", [
        ("synthetic", "true"),
        ("description", description),
        ("generator", "marketdata.demo"),
        ("end_ms", str(END_MS)),
    ])


def _write_candles_db(path: Path, interval: str) -> None:
    step = interval_ms(interval)
    rows = []
    for symbol, bars in generate_candles(interval).items():
        cols = [bars[k].tolist() for k in ("t", "o", "h", "l", "c", "v", "n")]
        rows.extend((symbol, interval, t, t + step - 1, o, h, lo, c, v, n, UPDATED_AT)
                    for t, o, h, lo, c, v, n in zip(*cols, strict=True))
    conn = connect(path)
    try:
        ensure_candles_schema(conn)
        with conn:
            conn.executemany("INSERT INTO candles VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            _write_meta(conn, f"SYNTHETIC {interval} candles (regime-switching random walk), not market data")
    finally:
        conn.close()


def generate_funding() -> list[tuple[str, int, float, float]]:
    """Hourly AR(1) funding per symbol over the 1h span: mean 1e-5, stationary sd 3e-5."""
    hours = SPANS_DAYS["1h"] * 24
    times = (END_MS - hours * 3_600_000 + 3_600_000 * np.arange(hours, dtype=np.int64)).tolist()
    rng = np.random.Generator(np.random.PCG64(SEEDS["funding"]))
    phi, mean, sd = 0.95, 1e-5, 3e-5
    rows = []
    for symbol in SYMBOLS:
        shocks = rng.normal(0.0, sd * np.sqrt(1 - phi**2), hours)
        rate = np.empty(hours)
        level = mean + rng.normal(0.0, sd)
        for i in range(hours):
            level = mean + phi * (level - mean) + shocks[i]
            rate[i] = level
        premium = rate - 1.25e-5 + rng.normal(0.0, 2e-6, hours)
        rows.extend((symbol, t, r, p) for t, r, p in zip(times, rate.tolist(), premium.tolist(), strict=True))
    return rows


def _write_funding_db(path: Path) -> None:
    conn = connect(path, what="funding DB")
    try:
        ensure_funding_schema(conn)
        with conn:
            conn.executemany("INSERT INTO funding_rates VALUES (?,?,?,?)", generate_funding())
            _write_meta(conn, "SYNTHETIC hourly funding rates (AR(1) around 1e-5), not market data")
    finally:
        conn.close()
