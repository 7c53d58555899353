"""Replay equivalence: does the sweep's verdict on a config match the canonical engine's?

This is the product's central promise. The sweep (GPU or CPU backend) and the canonical CPU replay
are two executions of one kernel; if they disagree on a config, one of them has a bug, and a config
chosen by the sweep cannot be trusted to trade as the engine will trade it. So: trade counts must be
equal, money within a tight absolute bound, ratios within a relative bound, and in trace mode every
trade must match. Pure functions only — the pipeline feeds them and writes the report.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DIFFS = 25
MONEY_FIELDS = ("total_pnl", "total_fees", "final_balance")
RATIO_FIELDS = ("max_drawdown_pct", "win_rate", "profit_factor")
TRADE_EXACT_FIELDS = ("symbol", "side", "entry_time_ms", "exit_time_ms", "entry_reason", "exit_reason")
TRADE_SIZE_FIELDS = ("size",)
TRADE_MONEY_FIELDS = ("pnl",)


def tolerances(initial_balance: float, precision: str) -> dict[str, float]:
    """float64: 1e-6 of the balance on money, 1e-9 relative on ratios. float32 indicators and state
    carry ~7 significant digits through thousands of bars, so the f32 bound is 1e-3 of the balance
    and 1e-4 relative (stated here and tested)."""
    if precision == "f32":
        return {"money_abs": max(1e-3 * initial_balance, 1e-9), "ratio_rel": 1e-4, "size_rel": 1e-4}
    if precision != "f64":
        raise ValueError(f"unknown precision {precision!r} (f64 | f32)")
    return {"money_abs": max(1e-6 * initial_balance, 1e-9), "ratio_rel": 1e-9, "size_rel": 1e-9}


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _close_abs(a: Any, b: Any, tol: float) -> bool:
    fa, fb = _f(a), _f(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= tol


def _close_rel(a: Any, b: Any, rel: float) -> bool:
    fa, fb = _f(a), _f(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= rel * max(abs(fa), abs(fb)) + 1e-12


def _compare_trades(sweep_trades: list[dict], replay_trades: list[dict], tol: dict[str, float]) -> list[dict]:
    diffs: list[dict] = []
    if len(sweep_trades) != len(replay_trades):
        diffs.append({"path": "trades.length", "sweep": len(sweep_trades), "replay": len(replay_trades)})
    for i, (s, r) in enumerate(zip(sweep_trades, replay_trades, strict=False)):
        for key in TRADE_EXACT_FIELDS:
            if s.get(key) != r.get(key):
                diffs.append({"path": f"trades[{i}].{key}", "sweep": s.get(key), "replay": r.get(key)})
        for key in TRADE_SIZE_FIELDS:
            if not _close_rel(s.get(key), r.get(key), tol["size_rel"]):
                diffs.append({"path": f"trades[{i}].{key}", "sweep": s.get(key), "replay": r.get(key)})
        for key in TRADE_MONEY_FIELDS:
            if not _close_abs(s.get(key), r.get(key), tol["money_abs"]):
                diffs.append({"path": f"trades[{i}].{key}", "sweep": s.get(key), "replay": r.get(key)})
    return diffs


def compare_sweep_to_replay(
    sweep_row: dict[str, Any], replay_report: dict[str, Any], sweep_trades: list[dict] | None = None, *,
    initial_balance: float, precision: str = "f64",
) -> dict[str, Any]:
    """Equivalence report {status pass|fail, failure_code, diffs (<= 25), count, tolerances, ...}.

    ``count`` is the number of compared fields plus compared trades; ``sweep_trades`` None means
    trace mode was off (metrics only, stated in ``mode``).
    """
    tol = tolerances(initial_balance, precision)
    diffs: list[dict] = []
    count = 1
    if _f(sweep_row.get("total_trades")) != _f(replay_report.get("total_trades")):
        diffs.append({"path": "total_trades", "sweep": sweep_row.get("total_trades"),
                      "replay": replay_report.get("total_trades")})
    trade_count_broken = bool(diffs)
    for key in MONEY_FIELDS:
        count += 1
        if not _close_abs(sweep_row.get(key), replay_report.get(key), tol["money_abs"]):
            diffs.append({"path": key, "sweep": sweep_row.get(key), "replay": replay_report.get(key)})
    for key in RATIO_FIELDS:
        count += 1
        if not _close_rel(sweep_row.get(key), replay_report.get(key), tol["ratio_rel"]):
            diffs.append({"path": key, "sweep": sweep_row.get(key), "replay": replay_report.get(key)})
    metric_broken = len(diffs) > int(trade_count_broken)
    trace_broken = False
    if sweep_trades is not None:
        replay_trades = replay_report.get("trades") or []
        trade_diffs = _compare_trades(sweep_trades, replay_trades, tol)
        count += max(len(sweep_trades), len(replay_trades))
        trace_broken = bool(trade_diffs)
        diffs.extend(trade_diffs)
    if trade_count_broken:
        code = "trade_count_mismatch"
    elif metric_broken:
        code = "metric_mismatch"
    elif trace_broken:
        code = "trace_mismatch"
    else:
        code = None
    return {
        "status": "fail" if code else "pass",
        "failure_code": code,
        "diffs": diffs[:MAX_DIFFS],
        "diff_count": len(diffs),
        "count": count,
        "mode": "trace" if sweep_trades is not None else "metrics",
        "precision": precision,
        "tolerances": tol,
        "config_id": replay_report.get("config_id") or sweep_row.get("config_id"),
        "sweep_backend": sweep_row.get("backend"),
    }


def not_run_report(reason: str, config_id: str | None = None) -> dict[str, Any]:
    return {"status": "not_run", "failure_code": "not_run", "error": reason, "diffs": [], "count": 0,
            "config_id": config_id}


def error_report(reason: str, config_id: str | None = None) -> dict[str, Any]:
    """An exception while comparing is not a pass: the candidate stays undeployable."""
    return {"status": "error", "failure_code": "comparison_error", "error": reason, "diffs": [], "count": 0,
            "config_id": config_id}
