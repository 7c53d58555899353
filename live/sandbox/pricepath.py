"""The replayed market: assets and their candle paths on one shared timeline.

Symbols may miss bars (real data has gaps), so each asset keeps its own rows and the
sandbox walks the union of all bar open times; an asset without a bar at a step
simply keeps its last price.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INTERVAL_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
    "1M": 2_592_000_000,
}

# Real Hyperliquid szDecimals for common perps; other symbols get a price-based guess.
KNOWN_SZ_DECIMALS = {"BTC": 5, "ETH": 4, "SOL": 2, "BNB": 3, "AVAX": 2, "LTC": 2, "ATOM": 2,
                     "ARB": 1, "OP": 1, "DOGE": 0, "XRP": 0, "LINK": 1, "SUI": 1, "kPEPE": 0}


class SandboxConfigError(ValueError):
    """A one-line description of bad sandbox input (file, symbol or field named)."""


@dataclass(frozen=True)
class AssetSpec:
    name: str
    sz_decimals: int = 2
    max_leverage: int = 50
    only_isolated: bool = False


@dataclass(frozen=True)
class Bar:
    t: int
    o: float
    h: float
    l: float  # noqa: E741 - the exchange's own field name
    c: float
    v: float
    n: int = 0


class PricePath:
    """Per-asset bars plus a cursor on the union timeline; bars up to the cursor are 'closed'."""

    def __init__(self, bars: Mapping[str, Sequence[Bar]], interval: str, start_bar: int = 0):
        if interval not in INTERVAL_MS:
            raise SandboxConfigError(f"interval: unknown value {interval!r}")
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.bars = {coin: sorted(rows, key=lambda b: b.t) for coin, rows in bars.items()}
        for coin, rows in self.bars.items():
            if not rows:
                raise SandboxConfigError(f"price_path: no bars for {coin}")
        self._times = {coin: [b.t for b in rows] for coin, rows in self.bars.items()}
        self.timeline = sorted({t for times in self._times.values() for t in times})
        self.cursor = min(max(start_bar, 0), len(self.timeline) - 1)

    @property
    def now_bar_t(self) -> int:
        return self.timeline[self.cursor]

    @property
    def now_ms(self) -> int:
        """Sandbox clock: the close of the current (last revealed) bar."""
        return self.now_bar_t + self.interval_ms

    def at_end(self) -> bool:
        return self.cursor >= len(self.timeline) - 1

    def revealed(self, coin: str) -> list[Bar]:
        """Closed bars of coin up to the cursor."""
        n = bisect.bisect_right(self._times.get(coin, []), self.now_bar_t)
        return self.bars.get(coin, [])[:n]

    def current(self, coin: str) -> Bar | None:
        n = bisect.bisect_right(self._times.get(coin, []), self.now_bar_t)
        return self.bars[coin][n - 1] if n else None

    def bar_at(self, coin: str, t: int) -> Bar | None:
        times = self._times.get(coin, [])
        i = bisect.bisect_left(times, t)
        return self.bars[coin][i] if i < len(times) and times[i] == t else None

    def step(self) -> int | None:
        """Reveal the next bar time; None at the end of the path."""
        if self.at_end():
            return None
        self.cursor += 1
        return self.now_bar_t


def bars_from_tuples(rows: Sequence[Sequence[float]]) -> list[Bar]:
    """Accept (t, o, h, l, c, v) or (t, o, h, l, c, v, n) tuples."""
    out = []
    for row in rows:
        t, o, h, lo, c, v, *rest = row
        out.append(Bar(int(t), float(o), float(h), float(lo), float(c), float(v), int(rest[0] or 0) if rest else 0))
    return out


def shift_bars(bars: Mapping[str, list[Bar]], offset_ms: int) -> dict[str, list[Bar]]:
    return {coin: [Bar(b.t + offset_ms, b.o, b.h, b.l, b.c, b.v, b.n) for b in rows] for coin, rows in bars.items()}


def load_candles_db(path: str | Path, interval: str, symbols: Sequence[str] | None = None) -> dict[str, list[Bar]]:
    """Read a project candle DB (table candles(symbol, interval, t, t_close, o, h, l, c, v, n))."""
    p = Path(path)
    if not p.is_file():
        raise SandboxConfigError(f"{p}: candles DB not found")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT symbol, t, o, h, l, c, v, n FROM candles WHERE interval = ? ORDER BY symbol, t", (interval,)
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise SandboxConfigError(f"{p}: cannot read table candles ({exc})") from None
    wanted = set(symbols) if symbols else None
    out: dict[str, list[Bar]] = {}
    for sym, t, o, h, lo, c, v, n in rows:
        if wanted is None or sym in wanted:
            out.setdefault(sym, []).append(Bar(int(t), o, h, lo, c, v or 0.0, int(n or 0)))
    if not out:
        raise SandboxConfigError(f"{p}: no candles with interval {interval!r}" + (f" for {sorted(wanted)}" if wanted else ""))
    if wanted and (missing := wanted - set(out)):
        raise SandboxConfigError(f"{p}: no {interval} candles for {sorted(missing)}")
    return out


def load_funding_db(path: str | Path, symbols: Sequence[str]) -> dict[str, dict[int, tuple[float, float | None]]]:
    """Read funding_rates(symbol, time, funding_rate, premium) into {coin: {time: (rate, premium)}}."""
    p = Path(path)
    if not p.is_file():
        raise SandboxConfigError(f"{p}: funding DB not found")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT symbol, time, funding_rate, premium FROM funding_rates").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise SandboxConfigError(f"{p}: cannot read table funding_rates ({exc})") from None
    out: dict[str, dict[int, tuple[float, float | None]]] = {s: {} for s in symbols}
    for sym, t, rate, prem in rows:
        if sym in out:
            out[sym][int(t)] = (float(rate), None if prem is None else float(prem))
    return out


def default_asset_spec(coin: str, bars: Sequence[Bar]) -> AssetSpec:
    """szDecimals from the real table when known, else so one size unit is worth roughly $0.1-$1."""
    if coin in KNOWN_SZ_DECIMALS:
        return AssetSpec(coin, KNOWN_SZ_DECIMALS[coin])
    import math

    px = bars[-1].c if bars else 1.0
    guess = math.floor(math.log10(px)) if px > 0 else 0
    return AssetSpec(coin, int(min(max(guess, 0), 5)))
