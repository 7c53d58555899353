"""The replayed market: assets and their candle paths on one shared timeline.

Symbols may miss bars (real data has gaps), so each asset keeps its own rows and the
sandbox walks the union of all bar open times; an asset without a bar at a step
simply keeps its last price.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
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

# No perp trades anywhere near a trillion dollars: a value beyond this is corruption, not a price.
MAX_PRICE = 1e12

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
            _refuse_duplicate_times(coin, rows)
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

    def replace_future(self, coin: str, bar: Bar) -> None:
        """Change a bar nobody has seen yet (a test moving the price: a crash through a stop). A
        revealed bar is history and stays as it was."""
        times = self._times.get(coin, [])
        i = bisect.bisect_left(times, bar.t)
        if i >= len(times) or times[i] != bar.t:
            raise SandboxConfigError(f"{coin}: no bar at t={bar.t} to replace")
        if bar.t <= self.now_bar_t:
            raise SandboxConfigError(f"{coin}: bar t={bar.t} is already revealed")
        if not (bar.l <= min(bar.o, bar.c) and bar.h >= max(bar.o, bar.c) and bar.l > 0):
            raise SandboxConfigError(f"{coin}: bar t={bar.t} is not a valid OHLC bar")
        self.bars[coin][i] = bar

    def step(self) -> int | None:
        """Reveal the next bar time; None at the end of the path."""
        if self.at_end():
            return None
        self.cursor += 1
        return self.now_bar_t


def _refuse_duplicate_times(coin: str, rows: Sequence[Bar]) -> None:
    """Two bars at one open time would make the cursor and candleSnapshot disagree on the price."""
    for prev, bar in zip(rows, rows[1:], strict=False):
        if bar.t == prev.t:
            raise SandboxConfigError(f"price_path: {coin} t={bar.t} ({_iso(bar.t)}): duplicate bar time")


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _number(at: str, column: str, value: object) -> float:
    """A finite float, or SandboxConfigError naming the row and column (NULL included)."""
    if value is None:
        raise SandboxConfigError(f"{at}: {column} is NULL")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SandboxConfigError(f"{at}: {column}={value!r} is not a number") from None
    if not math.isfinite(f):
        raise SandboxConfigError(f"{at}: {column}={f} is not finite")
    return f


def _price(at: str, column: str, value: object) -> float:
    """Prices must be > 0 and sane: the book and tick arithmetic take logs and ratios of them."""
    f = _number(at, column, value)
    if not 0 < f <= MAX_PRICE:
        raise SandboxConfigError(f"{at}: {column}={f!r} is not a price (must be > 0 and <= {MAX_PRICE:g})")
    return f


def _timestamp(at: str, value: object, column: str = "t") -> int:
    """Epoch milliseconds: a negative or fractional time is a broken row, not a bar."""
    t = _number(at, column, value)
    if t <= 0 or t != int(t):
        raise SandboxConfigError(f"{at}: {column}={value!r} is not a positive whole number of milliseconds")
    return int(t)


def bar_from_row(where: str, row: Sequence[object]) -> Bar:
    """(t, o, h, l, c, v[, n]) -> Bar, refusing what a real exchange never quotes: a NULL, NaN, inf or
    non-positive price, a negative volume, or open/close outside [low, high]. Checked at load so the
    operator gets one line naming the row, not a wrong book or a crash mid-request hours later."""
    if len(row) < 6:
        raise SandboxConfigError(f"{where}: row {tuple(row)!r} needs (t, o, h, l, c, v)")
    t = _timestamp(where, row[0])
    at = f"{where} t={t} ({_iso(t)})"
    o, h, lo, c = (_price(at, col, value) for col, value in zip("ohlc", row[1:5], strict=True))
    v = 0.0 if row[5] is None else _number(at, "v", row[5])
    if v < 0:
        raise SandboxConfigError(f"{at}: v={v!r} is negative")
    if not (lo <= min(o, c) and max(o, c) <= h):
        raise SandboxConfigError(f"{at}: o={o!r}/c={c!r} outside [l={lo!r}, h={h!r}]")
    n = row[6] if len(row) > 6 else None
    return Bar(t, o, h, lo, c, v, 0 if n is None else int(_number(at, "n", n)))


def bars_from_tuples(rows: Sequence[Sequence[float]], coin: str = "?") -> list[Bar]:
    """Accept (t, o, h, l, c, v) or (t, o, h, l, c, v, n) tuples (or Bars), each checked by bar_from_row."""
    out = []
    for i, row in enumerate(rows):
        fields = (row.t, row.o, row.h, row.l, row.c, row.v, row.n) if isinstance(row, Bar) else row
        out.append(bar_from_row(f"price_path: {coin} row {i}", fields))
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
    for sym, *fields in rows:
        if not isinstance(sym, str) or not sym:
            raise SandboxConfigError(f"{p}: a {interval} candle has symbol {sym!r}")
        if wanted is None or sym in wanted:
            out.setdefault(sym, []).append(bar_from_row(f"{p}: {sym}", fields))
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
            t = _timestamp(f"{p}: {sym}", t, "time")
            out[sym][t] = _funding_row(f"{p}: {sym} time={t} ({_iso(t)})", rate, prem)
    return out


def _funding_row(at: str, rate: object, prem: object) -> tuple[float, float | None]:
    """A NULL or non-finite rate would be charged (or crash) at the next funding hour; refuse it now."""
    return _number(at, "funding_rate", rate), None if prem is None else _number(at, "premium", prem)


def default_asset_spec(coin: str, bars: Sequence[Bar]) -> AssetSpec:
    """szDecimals from the real table when known, else so one size unit is worth roughly $0.1-$1."""
    if coin in KNOWN_SZ_DECIMALS:
        return AssetSpec(coin, KNOWN_SZ_DECIMALS[coin])
    px = bars[-1].c if bars else 1.0
    guess = math.floor(math.log10(px)) if px > 0 else 0
    return AssetSpec(coin, int(min(max(guess, 0), 5)))
