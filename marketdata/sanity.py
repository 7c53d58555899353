"""The one rule for a usable candle, in Python (a streamed bar) and in SQL (a candle store).

One `inf` or `1e300` tick makes ATR infinite for the rest of a series, and a close outside its
own bar's range or a bar stamped 1970 trades on prices that never existed, so every reader must
refuse the same rows. The rule lives here once: `candle_problem` for a single bar (the live
trader), `problem_sql` for SQLite (load_candles, check_candle_dbs), both built from the constants
below and checked against each other by a property test (tests/test_candle_sanity.py).

A row is refused when, in this order (the first failing check is the one reported):
  1. a cell is not a number (text, blob, NULL; NaN is stored as NULL by SQLite),
  2. t is not positive, before 2009-01-01 UTC, or from 2100 on; t_close (may be NULL) before t
     or from 2100 on,
  3. o/h/l/c/v is not finite (inf, -inf, nan),
  4. a price (o/h/l/c) is <= 0, or above the sanity bound,
  5. v < 0,
  6. h < l, or o or c outside [l, h].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from marketdata.intervals import MarketDataError

MIN_T_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z: older than any crypto market; catches 0 and t in seconds
MAX_T_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: a far-future t would make the dense bar grid explode
DEFAULT_MAX_PRICE = 1e7  # USD; BTC is ~1e5, so a price 100x beyond any real quote is a bad tick
MAX_PRICE_ENV = "AI_QUANT_MAX_CANDLE_PRICE"
PRICE_COLUMNS = ("o", "h", "l", "c")
VALUE_COLUMNS = (*PRICE_COLUMNS, "v")
_MIN_T_TEXT = "2009-01-01T00:00:00Z"
_MAX_T_TEXT = "2100-01-01T00:00:00Z"


def max_candle_price(value: float | str | None = None) -> float:
    """The price sanity bound: `value`, else $AI_QUANT_MAX_CANDLE_PRICE, else 1e7.

    A bound that is not a finite number > 0 is an error, never a silent "no bound"."""
    source = "max_price"
    if value is None:
        value, source = os.environ.get(MAX_PRICE_ENV, "").strip() or DEFAULT_MAX_PRICE, MAX_PRICE_ENV
    try:
        bound = float(value)
    except (TypeError, ValueError):
        raise MarketDataError(f"{source}={value!r} is not a number") from None
    if not math.isfinite(bound) or bound <= 0:
        raise MarketDataError(f"{source}={value!r} must be a finite number > 0")
    return bound


def candle_problem(t_ms, o, h, l, c, v, max_price: float | None = None, *,  # noqa: E741
                   t_close_ms=None) -> str | None:
    """What makes this bar unusable for indicators and fills, or None when it is sane.

    The live trader calls this on each streamed bar; the stores apply the same rule in SQL.
    t_close_ms is optional (no price is read from it): when given it must lie in [t, 2100)."""
    bound = max_candle_price(max_price)
    values = dict(zip(VALUE_COLUMNS, (o, h, l, c, v), strict=True))
    closing = {} if t_close_ms is None else {"t_close": t_close_ms}
    return (_type_problem({"t": t_ms, **closing, **values}) or _time_problem(t_ms)
            or _close_time_problem(t_ms, t_close_ms) or _value_problem(values, bound)
            or _shape_problem(o, h, l, c))


def _type_problem(cells: dict) -> str | None:
    for col, x in cells.items():
        if x is None:
            return f"column {col} is NULL"
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return f"column {col} is {type(x).__name__!r} ({repr(x)[:40]})"
    return None


def _finite(x) -> bool:
    return isinstance(x, int) or math.isfinite(x)  # an int is finite (and may be too big for a float)


def _time_problem(t) -> str | None:
    if not _finite(t):
        return f"t={t!r} is not finite"
    if t <= 0:
        return f"t={t!r} is not positive"
    if t < MIN_T_MS:
        return f"t={t!r} is before {_MIN_T_TEXT}"
    if t >= MAX_T_MS:
        return f"t={t!r} is not before {_MAX_T_TEXT}"
    return None


def _close_time_problem(t, t_close) -> str | None:
    if t_close is None:
        return None
    if t_close != t_close:  # noqa: PLR0124 (nan)
        return f"t_close={t_close!r} is not finite"
    if t_close >= MAX_T_MS:
        return f"t_close={t_close!r} is not before {_MAX_T_TEXT}"
    if t_close < t:
        return f"t_close={t_close!r} < t"
    return None


def _value_problem(values: dict, bound: float) -> str | None:
    for col, x in values.items():
        if not _finite(x):
            return f"{col}={x!r} is not finite"
    for col in PRICE_COLUMNS:
        if values[col] <= 0:
            return f"{col}={values[col]!r} <= 0"
    for col in PRICE_COLUMNS:
        if values[col] > bound:
            return f"{col}={values[col]!r} is above the price bound {bound:g} ({MAX_PRICE_ENV})"
    if values["v"] < 0:
        return f"v={values['v']!r} < 0"
    return None


def _shape_problem(o, h, l, c) -> str | None:  # noqa: E741
    if h < l:
        return f"h={h!r} < l={l!r}"
    for col, x in (("o", o), ("c", c)):
        if x < l or x > h:
            return f"{col}={x!r} is outside [l={l!r}, h={h!r}]"
    return None


def problem_sql(max_price: float | None = None) -> str:
    """SQL expression naming what is wrong with a candles row, NULL when nothing is: candle_problem's
    rule (same order, same constants) done by SQLite, so one text cell cannot crash a reader before
    the row is named. t_close is only type-checked (NULL allowed): no price is read from it."""
    bound = max_candle_price(max_price)
    cases = [_type_case(col, nullable=col == "t_close") for col in ("t", "t_close", *VALUE_COLUMNS)]
    cases += ["WHEN t <= 0 THEN 't=' || t || ' is not positive'",
              f"WHEN t < {MIN_T_MS} THEN 't=' || t || ' is before {_MIN_T_TEXT}'",
              f"WHEN t >= {MAX_T_MS} THEN 't=' || t || ' is not before {_MAX_T_TEXT}'",
              f"WHEN t_close >= {MAX_T_MS} THEN 't_close=' || t_close || ' is not before {_MAX_T_TEXT}'",
              "WHEN t_close < t THEN 't_close=' || t_close || ' < t'"]
    cases += [f"WHEN abs({col}) = 9e999 THEN '{col}=' || CASE WHEN {col} > 0 THEN 'inf' ELSE '-inf' END "
              "|| ' is not finite'" for col in VALUE_COLUMNS]
    cases += [f"WHEN {col} <= 0 THEN '{col}=' || {col} || ' <= 0'" for col in PRICE_COLUMNS]
    cases += [f"WHEN {col} > {bound!r} THEN '{col}=' || {col} || ' is above the price bound {bound:g} "
              f"({MAX_PRICE_ENV})'" for col in PRICE_COLUMNS]
    cases += ["WHEN v < 0 THEN 'v=' || v || ' < 0'", "WHEN h < l THEN 'h=' || h || ' < l=' || l"]
    cases += [f"WHEN {col} < l OR {col} > h THEN '{col}=' || {col} || ' is outside [l=' || l || ', h=' || h || ']'"
              for col in ("o", "c")]
    return "CASE " + " ".join(cases) + " END"


def _type_case(col: str, nullable: bool) -> str:
    ok = "'integer','real'" + (",'null'" if nullable else "")
    return (f"WHEN typeof({col}) NOT IN ({ok}) THEN 'column {col} is ' || CASE typeof({col}) "
            f"WHEN 'null' THEN 'NULL' ELSE '''' || typeof({col}) || ''' (' || substr(quote({col}), 1, 40) || ')' END")


def iso_ms(t) -> str:
    """A bar time as ISO UTC with milliseconds ("?" when t is not a representable time)."""
    try:
        dt = datetime.fromtimestamp(int(t) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{dt.microsecond // 1000:03d}Z" if dt.microsecond // 1000 else "Z")


def bad_row_line(path, symbol, t, problem: str) -> str:
    """The one-line report of a refused row, the same for every reader and for check_candle_dbs."""
    return " ".join(f"corrupt candle row: {path} {symbol} {iso_ms(t)} (t={t}): {problem}".split())


@dataclass(frozen=True)
class BadCandle:
    """A refused candle row (see load_candles(skipped=...)): where it is and what is wrong with it."""

    path: str
    symbol: str
    t: object
    problem: str

    def line(self) -> str:
        return bad_row_line(self.path, self.symbol, self.t, self.problem)


__all__ = ["DEFAULT_MAX_PRICE", "MAX_PRICE_ENV", "MAX_T_MS", "MIN_T_MS", "BadCandle", "bad_row_line",
           "candle_problem", "iso_ms", "max_candle_price", "problem_sql"]
