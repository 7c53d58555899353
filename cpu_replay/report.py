"""Turn the kernel's numeric arrays into the replay report operators and the factory read.

Fill and trade rows are decoded by strategy.records (the one decoder); this module adds the
checksum, per-symbol sums, daily returns and the metrics dict."""

from __future__ import annotations

import hashlib

import numpy as np

from strategy.layout import METRIC_NAMES, T_FEES, T_FUNDING, T_PNL, T_SYM

MS_PER_DAY = 86_400_000


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
