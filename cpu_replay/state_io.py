"""Seed a replay from a paper/live state export (`tools/export_state.py` JSON, version 1).

This lets an operator continue a replay from where the trader stands: balance and open positions
(side, size, entry, ATR at entry, stop, adds, partial-TP flag, times).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from strategy.layout import (
    A_BALANCE,
    A_DAY_EQ,
    A_EQUITY,
    A_INITIAL,
    A_MARGIN_USED,
    A_OPEN_COUNT,
    A_PEAK,
    POS_ADDS,
    POS_BASE_MARGIN,
    POS_CONF,
    POS_ENTRY,
    POS_ENTRY_ATR,
    POS_ENTRY_REASON,
    POS_FIRST_ENTRY,
    POS_LAST_ADD_T,
    POS_LAST_CLOSE,
    POS_LEVERAGE,
    POS_MARGIN,
    POS_MAX_SIZE,
    POS_OPEN_T,
    POS_SIDE,
    POS_SIZE,
    POS_STOP,
    POS_STOP_REASON,
    POS_TP1_DONE,
    POS_TP_MULT,
    R_SIGNAL,
    R_STOP_LOSS,
    R_TRAILING_STOP,
)
from strategy.params import P_SL_ATR_MULT, P_TP_ATR_MULT

CONF_CODES = {"low": 0.0, "medium": 1.0, "high": 2.0}


class InitStateError(ValueError):
    """The --init-state file is missing, malformed or names unknown symbols (one line)."""


def load_init_state(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InitStateError(f"init state not found: {p}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InitStateError(f"init state {p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") not in (1, 2):
        raise InitStateError(f"init state {p}: expected an object with version 1")
    if not isinstance(data.get("balance"), (int, float)) or data["balance"] <= 0:
        raise InitStateError(f"init state {p}: balance must be a positive number")
    return data


def _field(p: dict, key: str, default=None) -> float:
    value = p.get(key, default)
    if value is None:
        return math.nan
    return float(value)


def apply_init_state(state, data: dict, symbols: list[str], params) -> None:
    """Write balance and positions of `data` into a fresh EngineState."""
    balance = float(data["balance"])
    acct, pos = state.acct, state.pos
    for key in (A_BALANCE, A_EQUITY, A_PEAK, A_INITIAL, A_DAY_EQ):
        acct[key] = balance
    for p in data.get("positions", []):
        sym = str(p.get("symbol", "")).upper()
        if sym not in symbols:
            raise InitStateError(f"init state position {sym!r} is not in the replayed symbols")
        s = symbols.index(sym)
        side = 1.0 if str(p.get("side", "")).upper() in ("LONG", "BUY", "1") else -1.0
        entry = _field(p, "entry_price")
        size = _field(p, "size")
        atr = _field(p, "entry_atr")
        if not (entry > 0 and size > 0 and atr > 0):
            raise InitStateError(f"init state position {sym}: entry_price, size and entry_atr must be > 0")
        lev = _field(p, "leverage", 1.0)
        margin = _field(p, "margin_used", entry * size / lev)
        stop = _field(p, "trailing_sl")
        pos[s, POS_SIDE] = side
        pos[s, POS_SIZE] = size
        pos[s, POS_MAX_SIZE] = size
        pos[s, POS_ENTRY] = entry
        pos[s, POS_FIRST_ENTRY] = entry
        pos[s, POS_ENTRY_ATR] = atr
        pos[s, POS_STOP] = stop if not math.isnan(stop) else entry - side * params[s, P_SL_ATR_MULT] * atr
        pos[s, POS_STOP_REASON] = R_STOP_LOSS if math.isnan(stop) else R_TRAILING_STOP
        pos[s, POS_TP1_DONE] = 1.0 if p.get("tp1_taken") else 0.0
        pos[s, POS_ADDS] = _field(p, "adds_count", 0)
        pos[s, POS_OPEN_T] = _field(p, "open_time_ms", 0)
        pos[s, POS_LAST_ADD_T] = _field(p, "last_add_time_ms", p.get("open_time_ms", 0))
        pos[s, POS_MARGIN] = margin
        pos[s, POS_BASE_MARGIN] = margin
        pos[s, POS_LEVERAGE] = lev
        pos[s, POS_CONF] = CONF_CODES.get(str(p.get("confidence", "low")).lower(), 0.0)
        pos[s, POS_TP_MULT] = params[s, P_TP_ATR_MULT]
        pos[s, POS_ENTRY_REASON] = R_SIGNAL
        pos[s, POS_LAST_CLOSE] = entry
        acct[A_OPEN_COUNT] += 1.0
        acct[A_MARGIN_USED] += margin
