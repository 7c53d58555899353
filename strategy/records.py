"""The one decoder of the kernel's rows: fills, closed trades and positions as named records.

The kernel writes numbers (``strategy.layout``); every layer that shows, stores or compares them
(the replay report, the sweep's trade lists, the paper/live brokers, the daemon's orders) reads
them through these functions, so a fill means the same thing everywhere. ``strategy`` imports
nothing of ours, so every layer may import this module.

Codes the kernel never writes decode as ``UNKNOWN`` / ``unknown`` (actions, reasons and
confidence tiers alike): a tier is never invented for a row that carries none.
"""

from __future__ import annotations

import math

import numpy as np

from strategy.layout import ACT, CONF, FL, POS, SIDE, R, T

ENTRY_ACTIONS = ("OPEN", "ADD")


def side_name(side: float) -> str:
    """LONG for a positive side, else SHORT (rows of open positions and fills are never flat)."""
    return SIDE.NAMES[int(SIDE.LONG)] if side > 0 else SIDE.NAMES[int(SIDE.SHORT)]


def action_name(code: float) -> str:
    return ACT.NAMES.get(int(code), "UNKNOWN")


def reason_name(code: float) -> str:
    return R.NAMES.get(int(code), "unknown")


def confidence_name(code: float) -> str:
    return CONF.NAMES.get(int(code), "unknown")


def order_side(row: np.ndarray) -> str:
    """BUY or SELL: an entry buys for a long, an exit sells it (and the reverse for a short)."""
    return "BUY" if (row[FL.SIDE] > 0) == (action_name(row[FL.ACTION]) in ENTRY_ACTIONS) else "SELL"


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def fill_dict(r: np.ndarray, symbols: list[str]) -> dict:
    """One fill row (``FL`` layout) as the replay report's fill record."""
    return {
        "t_ms": int(r[FL.T]),
        "symbol": symbols[int(r[FL.SYM])],
        "action": action_name(r[FL.ACTION]),
        "side": side_name(r[FL.SIDE]),
        "price": float(r[FL.PRICE]),
        "decision_price": float(r[FL.DECISION_PRICE]),
        "size": float(r[FL.SIZE]),
        "notional": float(r[FL.NOTIONAL]),
        "fee": float(r[FL.FEE]),
        "pnl": float(r[FL.PNL]),
        "reason": reason_name(r[FL.REASON]),
        "confidence": confidence_name(r[FL.CONF]),
        "balance": float(r[FL.BALANCE]),
        "atr": _num(r[FL.ATR]),
        "adx": _num(r[FL.ADX]),
        "rsi": _num(r[FL.RSI]),
    }


def trade_dict(r: np.ndarray, symbols: list[str]) -> dict:
    """One closed round trip (``T`` layout) as the replay report's trade record."""
    return {
        "symbol": symbols[int(r[T.SYM])],
        "side": side_name(r[T.SIDE]),
        "entry_time_ms": int(r[T.ENTRY_T]),
        "exit_time_ms": int(r[T.EXIT_T]),
        "entry_price": float(r[T.ENTRY_PRICE]),
        "exit_price": float(r[T.EXIT_PRICE]),
        "size": float(r[T.SIZE]),
        "notional": float(r[T.NOTIONAL]),
        "pnl": float(r[T.PNL]),
        "gross_pnl": float(r[T.GROSS_PNL]),
        "fees": float(r[T.FEES]),
        "funding": float(r[T.FUNDING]),
        "entry_reason": reason_name(r[T.ENTRY_REASON]),
        "exit_reason": reason_name(r[T.EXIT_REASON]),
        "confidence": confidence_name(r[T.CONF]),
        "adds": int(r[T.ADDS]),
    }


def fill_dicts(fills: np.ndarray, symbols: list[str]) -> list[dict]:
    """Every fill the engine made, in order: the decision trace."""
    return [fill_dict(r, symbols) for r in fills]


def trade_dicts(trades: np.ndarray, symbols: list[str]) -> list[dict]:
    """Closed round trips, in the order they closed."""
    return [trade_dict(r, symbols) for r in trades]


def position_state_fields(p: np.ndarray) -> dict:
    """An open position row (``POS`` layout) as the trading DB's ``position_state`` fields."""
    return {
        "trailing_sl": float(p[POS.STOP]),
        "adds_count": int(p[POS.ADDS]),
        "tp1_taken": int(p[POS.TP1_DONE]),
        "last_add_time": int(p[POS.LAST_ADD_T]),
        "state_json": {
            "side": side_name(p[POS.SIDE]), "size": float(p[POS.SIZE]),
            "entry_price": float(p[POS.ENTRY]), "entry_atr": float(p[POS.ENTRY_ATR]),
            "leverage": float(p[POS.LEVERAGE]), "margin_used": float(p[POS.MARGIN]),
            "open_time_ms": int(p[POS.OPEN_T]),
        },
    }
