"""Symbol-bars per second of the canonical replay (compiled loop, no trade list).

Run: .venv/bin/python bench/replay_speed.py [--repeats 3]
Data: the real 5m set in ../shared/data (6 symbols x ~5,760 bars) when present, and a generated
50-symbol x 1-year 1h set (random walks, same schema). Prints a table; the figure quoted in the
README comes from here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cpu_replay.api import run_replay
from marketdata.candles import MarketData, load_market_data
from strategy.config import config_from_dict

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIG = {"global": {"filters": {"enable_ranging_filter": False}, "thresholds": {"entry": {"min_adx": 18.0}}}}


def generated_market(nsym: int = 50, nbar: int = 8760, seed: int = 7) -> MarketData:
    """Random-walk candles with volatility regimes; enough structure for the strategy to trade."""
    rng = np.random.default_rng(seed)
    vol = 0.004 + 0.004 * (rng.random((nsym, 1)) + np.abs(np.sin(np.arange(nbar) / 300.0)))
    drift = 0.0004 * np.sin(np.arange(nbar) / 150.0 + rng.random((nsym, 1)) * 6)
    logp = np.cumsum(drift + vol * rng.standard_normal((nsym, nbar)), axis=1) + np.log(10 + 100 * rng.random((nsym, 1)))
    close = np.exp(logp)
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    wiggle = np.exp(np.abs(vol * rng.standard_normal((nsym, nbar))))
    high = np.maximum(open_, close) * wiggle
    low = np.minimum(open_, close) / wiggle
    volume = 1e5 * (1 + 50 * np.abs(close / open_ - 1)) * rng.lognormal(0, 0.3, (nsym, nbar))
    times = 1_700_000_000_000 // 3_600_000 * 3_600_000 + 3_600_000 * np.arange(nbar, dtype=np.int64)
    symbols = ["BTC"] + [f"S{i:02d}" for i in range(1, nsym)]
    return MarketData("1h", 3_600_000, symbols, times, open_, high, low, close, volume, np.ones((nsym, nbar), bool))


def measure(cfg, md: MarketData, repeats: int) -> tuple[float, int]:
    run_replay(cfg, md, with_trades=False)  # compile / load the cache
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        rep = run_replay(cfg, md, with_trades=False)
        best = min(best, time.perf_counter() - t0)
    return best, rep["total_trades"]


def main(repeats: int = typer.Option(3, help="Timed runs per data set (best is reported)")) -> None:
    cfg = config_from_dict(CONFIG)
    sets = []
    if (SHARED / "candles_5m.db").exists():
        sets.append(("real 5m (../shared/data)", load_market_data(str(SHARED / "candles_5m.db"), "5m")))
    sets.append(("generated 50 sym x 1y 1h", generated_market()))
    table = Table(title="canonical replay speed (one core, compiled loop, no trade list)")
    for col in ("data", "symbols", "bars", "symbol-bars", "trades", "seconds", "symbol-bars/s"):
        table.add_column(col, justify="right")
    for name, md in sets:
        secs, trades = measure(cfg, md, repeats)
        sb = int(md.valid.sum())
        table.add_row(name, str(len(md.symbols)), str(len(md.times)), f"{sb:,}", str(trades), f"{secs:.3f}", f"{sb / secs:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
