"""Turn the kernel's numeric arrays into the replay report operators and the factory read.

Fill and trade rows are decoded by strategy.records (the one decoder); this module adds the
checksum, per-symbol sums, daily returns and the metrics dict."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np

from marketdata.sanity import iso_ms
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


def with_utc(row: dict) -> dict:
    """A fill or trade record with an ISO UTC twin beside each epoch-ms time (t_ms -> time_utc,
    entry_time_ms -> entry_time_utc): machines keep the ms, people read the date."""
    out = dict(row)
    for key, value in row.items():
        if key.endswith("_ms") and isinstance(value, int):
            out["time_utc" if key == "t_ms" else key[:-3] + "_utc"] = iso_ms(value)
    return out


def utc_days(times: np.ndarray, start_idx: int, end_idx: int) -> list[str]:
    """The UTC date of each entry of daily_returns (same grouping: the days the window's bars touch)."""
    if end_idx <= start_idx:
        return []
    days = np.unique(times[start_idx:end_idx] // MS_PER_DAY)
    return [datetime.fromtimestamp(int(d) * 86_400, tz=UTC).strftime("%Y-%m-%d") for d in days]


def metrics_to_dict(metrics: np.ndarray) -> dict:
    out = {name: float(metrics[i]) for i, name in enumerate(METRIC_NAMES)}
    out["total_trades"] = int(out["total_trades"])
    out["fills"] = int(out["fills"])
    out["total_fees"] = out.pop("total_fees")
    return out


def equity_curve(times: np.ndarray, interval_ms: int, equity: np.ndarray, curve: np.ndarray,
                 sym_notional: np.ndarray, symbols: list[str], start_idx: int, end_idx: int, start: dict,
                 final_balance: float) -> dict:
    """The engine's per-bar account over the window, as the report's `equity_curve`.

    Points: the account before the window (``start``, at the first bar's open), the account the
    engine marked at each bar's close (cpu_replay.engine.replay_loop: ``equity``, and ``curve``'s
    balance / exposure / open positions), then the flat account after the end-of-data closes at the
    last close time. So the last equity is `final_balance` and the drawdown of the series from its
    first value is exactly the kernel's `max_drawdown_pct` (same points, same arithmetic).
    unrealised = equity - balance; exposure = sum of |size x mark|; exposure_by_symbol holds each
    symbol's signed notional at its mark."""
    from cpu_replay.engine import CURVE_BALANCE, CURVE_EXPOSURE, CURVE_OPEN

    window = slice(start_idx, end_idx)
    t_close = times[window].astype(np.int64) + int(interval_ms)
    eq = equity[window]
    balance = curve[window, CURVE_BALANCE]
    out = {
        "t_ms": [int(times[start_idx])] + t_close.tolist() + [int(t_close[-1])],
        "equity": [start["equity"]] + eq.tolist() + [float(final_balance)],
        "balance": [start["balance"]] + balance.tolist() + [float(final_balance)],
        "unrealised": [start["equity"] - start["balance"]] + (eq - balance).tolist() + [0.0],
        "exposure": [start["exposure"]] + curve[window, CURVE_EXPOSURE].tolist() + [0.0],
        "open_positions": [int(start["open_positions"])] + curve[window, CURVE_OPEN].astype(int).tolist() + [0],
    }
    if sym_notional.shape[1]:
        out["exposure_by_symbol"] = {sym: [float(start["by_symbol"][s])] + sym_notional[s, window].tolist() + [0.0]
                                     for s, sym in enumerate(symbols) if np.any(sym_notional[s, window])}
    return out


def curve_drawdown(equity: list[float] | np.ndarray) -> float:
    """Largest fall from the running peak as a fraction, peak starting at the first point (the
    kernel's note_equity arithmetic)."""
    peak, worst = float(equity[0]), 0.0
    for e in equity:
        e = float(e)
        if e > peak:
            peak = e
        if peak > 0.0:
            worst = max(worst, (peak - e) / peak)
    return worst
