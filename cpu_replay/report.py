"""Turn the kernel's numeric arrays into the replay report operators and the factory read."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from strategy.layout import (
    ACTION_NAMES,
    CONF_NAMES,
    FL_ACTION,
    FL_ADX,
    FL_ATR,
    FL_BALANCE,
    FL_CONF,
    FL_DECISION_PRICE,
    FL_FEE,
    FL_NOTIONAL,
    FL_PNL,
    FL_PRICE,
    FL_REASON,
    FL_RSI,
    FL_SIDE,
    FL_SIZE,
    FL_SYM,
    FL_T,
    METRIC_NAMES,
    REASON_NAMES,
    T_ADDS,
    T_CONF,
    T_ENTRY_PRICE,
    T_ENTRY_REASON,
    T_ENTRY_T,
    T_EXIT_PRICE,
    T_EXIT_REASON,
    T_EXIT_T,
    T_FEES,
    T_FUNDING,
    T_GROSS_PNL,
    T_NOTIONAL,
    T_PNL,
    T_SIDE,
    T_SIZE,
    T_SYM,
)

MS_PER_DAY = 86_400_000


def side_name(side: float) -> str:
    return "LONG" if side > 0 else "SHORT"


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def trades_to_dicts(trades: np.ndarray, symbols: list[str]) -> list[dict]:
    """Closed round trips, in the order they closed."""
    return [
        {
            "symbol": symbols[int(r[T_SYM])],
            "side": side_name(r[T_SIDE]),
            "entry_time_ms": int(r[T_ENTRY_T]),
            "exit_time_ms": int(r[T_EXIT_T]),
            "entry_price": float(r[T_ENTRY_PRICE]),
            "exit_price": float(r[T_EXIT_PRICE]),
            "size": float(r[T_SIZE]),
            "notional": float(r[T_NOTIONAL]),
            "pnl": float(r[T_PNL]),
            "gross_pnl": float(r[T_GROSS_PNL]),
            "fees": float(r[T_FEES]),
            "funding": float(r[T_FUNDING]),
            "entry_reason": REASON_NAMES.get(int(r[T_ENTRY_REASON]), "unknown"),
            "exit_reason": REASON_NAMES.get(int(r[T_EXIT_REASON]), "unknown"),
            "confidence": CONF_NAMES.get(int(r[T_CONF]), "low"),
            "adds": int(r[T_ADDS]),
        }
        for r in trades
    ]


def fills_to_dicts(fills: np.ndarray, symbols: list[str]) -> list[dict]:
    """Every fill the engine made: the decision trace."""
    return [
        {
            "t_ms": int(r[FL_T]),
            "symbol": symbols[int(r[FL_SYM])],
            "action": ACTION_NAMES.get(int(r[FL_ACTION]), "UNKNOWN"),
            "side": side_name(r[FL_SIDE]),
            "price": float(r[FL_PRICE]),
            "decision_price": float(r[FL_DECISION_PRICE]),
            "size": float(r[FL_SIZE]),
            "notional": float(r[FL_NOTIONAL]),
            "fee": float(r[FL_FEE]),
            "pnl": float(r[FL_PNL]),
            "reason": REASON_NAMES.get(int(r[FL_REASON]), "unknown"),
            "confidence": CONF_NAMES.get(int(r[FL_CONF]), "low"),
            "balance": float(r[FL_BALANCE]),
            "atr": _num(r[FL_ATR]),
            "adx": _num(r[FL_ADX]),
            "rsi": _num(r[FL_RSI]),
        }
        for r in fills
    ]


def trace_checksum(fills: np.ndarray) -> str:
    """sha256 of the fill trace's exact float bits: equal iff the decisions were identical."""
    return hashlib.sha256(np.ascontiguousarray(fills, dtype="<f8").tobytes()).hexdigest()


def per_symbol_stats(trades: np.ndarray, symbols: list[str]) -> dict[str, dict]:
    stats: dict[str, dict] = {}
    for r in trades:
        sym = symbols[int(r[T_SYM])]
        st = stats.setdefault(sym, {"trades": 0, "wins": 0, "pnl": 0.0, "fees": 0.0, "funding": 0.0})
        st["trades"] += 1
        st["wins"] += int(r[T_PNL] > 0)
        st["pnl"] += float(r[T_PNL])
        st["fees"] += float(r[T_FEES])
        st["funding"] += float(r[T_FUNDING])
    return dict(sorted(stats.items()))


def daily_returns(times: np.ndarray, equity: np.ndarray, start_idx: int, end_idx: int,
                  initial_balance: float, final_balance: float) -> list[float]:
    """Returns between the equity at the last bar of each UTC day (the kernel's definition)."""
    if end_idx <= start_idx:
        return []
    days = times[start_idx:end_idx] // MS_PER_DAY
    eq = equity[start_idx:end_idx].copy()
    last_of_day = np.flatnonzero(np.diff(days) != 0)
    day_end = list(eq[last_of_day]) + [final_balance]
    out, prev = [], initial_balance
    for e in day_end:
        out.append(float(e / prev - 1.0) if prev > 0 else 0.0)
        prev = e
    return out


def metrics_to_dict(metrics: np.ndarray) -> dict:
    out = {name: float(metrics[i]) for i, name in enumerate(METRIC_NAMES)}
    out["total_trades"] = int(out["total_trades"])
    out["fills"] = int(out["fills"])
    out["total_fees"] = out.pop("total_fees")
    return out
