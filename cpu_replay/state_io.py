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
    POS,
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
SIDES = {"LONG": 1.0, "BUY": 1.0, "1": 1.0, "SHORT": -1.0, "SELL": -1.0, "-1": -1.0}


class InitStateError(ValueError):
    """The --init-state file is missing, malformed or names unknown symbols (one line)."""


def load_init_state(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InitStateError(f"init state not found: {p}") from None
    except IsADirectoryError:
        raise InitStateError(f"init state {p}: is a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InitStateError(f"init state {p}: not valid JSON ({_one_line(str(exc))})") from None
    check_init_state(data, f"init state {p}")
    return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(p: dict, key: str, where: str, *, required: bool, minimum: float | None = None,
            positive: bool = False, whole: bool = False) -> float | None:
    """A finite number field (None when absent or null and not required); InitStateError otherwise."""
    value = p.get(key)
    if value is None:
        if required:
            raise InitStateError(f"{where}: {key} is required")
        return None
    if not _is_number(value) or (whole and float(value) != int(value)):
        kind = "a whole number" if whole else "a finite number"
        raise InitStateError(f"{where}: {key} must be {kind} (got {json.dumps(value)})")
    x = float(value)
    if positive and not x > 0:
        raise InitStateError(f"{where}: {key} must be > 0 (got {json.dumps(value)})")
    if minimum is not None and x < minimum:
        raise InitStateError(f"{where}: {key} must be >= {minimum:g} (got {json.dumps(value)})")
    return x


def _side(p: dict, where: str) -> float:
    raw = p.get("side")
    key = str(int(raw)) if _is_number(raw) and float(raw) in (1.0, -1.0) else raw
    side = SIDES.get(key.strip().upper()) if isinstance(key, str) else None
    if side is None:
        got = "missing" if raw is None else json.dumps(raw)
        raise InitStateError(f"{where}: side must be LONG/BUY/1 or SHORT/SELL/-1 (got {got})")
    return side


def _position(p, i: int, context: str) -> dict:
    """One position checked and normalised (floats, side +1/-1, defaults filled in)."""
    if not isinstance(p, dict):
        raise InitStateError(f"{context}: positions[{i}] must be an object (got {json.dumps(p)})")
    sym = p.get("symbol")
    if not isinstance(sym, str) or not sym.strip():
        raise InitStateError(f"{context}: positions[{i}].symbol must be a non-empty string")
    sym = sym.strip()
    where = f"{context}: position {sym}"
    side = _side(p, where)
    entry = _number(p, "entry_price", where, required=True, positive=True)
    size = _number(p, "size", where, required=True, positive=True)
    atr = _number(p, "entry_atr", where, required=True, positive=True)
    lev = _number(p, "leverage", where, required=False, minimum=1.0)
    lev = 1.0 if lev is None else lev
    margin = _number(p, "margin_used", where, required=False, positive=True)
    stop = _number(p, "trailing_sl", where, required=False, positive=True)
    adds = _number(p, "adds_count", where, required=False, minimum=0.0, whole=True)
    open_t = _number(p, "open_time_ms", where, required=True, minimum=0.0, whole=True)
    last_add = _number(p, "last_add_time_ms", where, required=False, minimum=0.0, whole=True)
    tp1 = p.get("tp1_taken")
    if tp1 is not None and tp1 not in (True, False, 0, 1):
        raise InitStateError(f"{where}: tp1_taken must be true/false or 0/1 (got {json.dumps(tp1)})")
    conf = p.get("confidence")
    conf = "low" if conf is None else conf
    if not isinstance(conf, str) or conf.lower() not in CONF_CODES:
        raise InitStateError(f"{where}: confidence must be low, medium or high (got {json.dumps(conf)})")
    return {
        "symbol": sym, "side": side, "entry": entry, "size": size, "atr": atr, "leverage": lev,
        "margin": entry * size / lev if margin is None else margin, "stop": stop,
        "adds": 0.0 if adds is None else adds, "open_t": open_t,
        "last_add_t": open_t if last_add is None else last_add, "tp1": bool(tp1),
        "conf": CONF_CODES[conf.lower()],
    }


def check_init_state(data, context: str = "init state") -> list[dict]:
    """Validate a state export (version 1); returns its positions normalised. One-line errors."""
    if not isinstance(data, dict):
        raise InitStateError(f"{context}: expected a JSON object with version 1")
    if data.get("version") != 1 or isinstance(data.get("version"), bool):
        raise InitStateError(f"{context}: unsupported version {json.dumps(data.get('version'))} "
                             "(expected version 1, as tools/export_state.py writes)")
    balance = data.get("balance")
    if not _is_number(balance) or not balance > 0:
        raise InitStateError(f"{context}: balance must be a positive finite number (got {json.dumps(balance)})")
    positions = data.get("positions")
    if not isinstance(positions, list):
        got = "missing" if "positions" not in data else json.dumps(positions)
        raise InitStateError(f"{context}: positions must be a list (got {got})")
    out = [_position(p, i, context) for i, p in enumerate(positions)]
    seen: set[str] = set()
    for p in out:
        if p["symbol"] in seen:
            raise InitStateError(f"{context}: position {p['symbol']} appears more than once")
        seen.add(p["symbol"])
    return out


def _symbol_index(sym: str, symbols: list[str], context: str) -> int:
    """Exact match first (kPEPE), then a unique case-insensitive one (eth -> ETH)."""
    if sym in symbols:
        return symbols.index(sym)
    folded = [i for i, name in enumerate(symbols) if name.lower() == sym.lower()]
    if len(folded) == 1:
        return folded[0]
    if len(folded) > 1:
        names = ", ".join(symbols[i] for i in folded)
        raise InitStateError(f"{context}: position {sym!r} is ambiguous between {names} (write its exact case)")
    raise InitStateError(f"{context}: position {sym!r} is not in the replayed symbols")


def apply_init_state(state, data: dict, symbols: list[str], params) -> None:
    """Write balance and positions of `data` into a fresh EngineState."""
    context = "init state"
    positions = check_init_state(data, context)
    targets = [_symbol_index(p["symbol"], symbols, context) for p in positions]
    if len(set(targets)) != len(targets):
        dup = next(symbols[s] for s in targets if targets.count(s) > 1)
        raise InitStateError(f"{context}: more than one position maps to symbol {dup}")
    balance = float(data["balance"])
    acct, pos = state.acct, state.pos
    for key in (A_BALANCE, A_EQUITY, A_PEAK, A_INITIAL, A_DAY_EQ):
        acct[key] = balance
    for p, s in zip(positions, targets, strict=True):
        side, entry, atr, stop = p["side"], p["entry"], p["atr"], p["stop"]
        pos[s, POS_SIDE] = side
        pos[s, POS_SIZE] = p["size"]
        pos[s, POS_MAX_SIZE] = p["size"]
        pos[s, POS_ENTRY] = entry
        pos[s, POS_FIRST_ENTRY] = entry
        pos[s, POS_ENTRY_ATR] = atr
        pos[s, POS_STOP] = stop if stop is not None else entry - side * params[s, P_SL_ATR_MULT] * atr
        pos[s, POS_STOP_REASON] = R_STOP_LOSS if stop is None else R_TRAILING_STOP
        pos[s, POS_TP1_DONE] = 1.0 if p["tp1"] else 0.0
        # no main-bar indicators seen yet: the stop and trailing modifiers stay neutral until the
        # first main close notes them
        for col in (POS.IND_ADX, POS.IND_ADX_SLOPE, POS.IND_RSI, POS.HIST_B1, POS.HIST_B2, POS.HIST_B3):
            pos[s, col] = math.nan
        pos[s, POS.IND_BBW_RATIO] = 1.0
        pos[s, POS.IND_ATR] = 0.0
        pos[s, POS.IND_ATR_SLOPE] = 0.0
        pos[s, POS_ADDS] = p["adds"]
        pos[s, POS_OPEN_T] = p["open_t"]
        pos[s, POS_LAST_ADD_T] = p["last_add_t"]
        pos[s, POS_MARGIN] = p["margin"]
        pos[s, POS_BASE_MARGIN] = p["margin"]
        pos[s, POS_LEVERAGE] = p["leverage"]
        pos[s, POS_CONF] = p["conf"]
        pos[s, POS_TP_MULT] = params[s, P_TP_ATR_MULT]
        pos[s, POS_ENTRY_REASON] = R_SIGNAL
        pos[s, POS_LAST_CLOSE] = entry
        pos[s, POS.SEEN_CLOSE] = entry  # the glitch guard's previous price until a bar is seen
        acct[A_OPEN_COUNT] += 1.0
        acct[A_MARGIN_USED] += p["margin"]
