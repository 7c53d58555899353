"""Shortlist: the few sweep rows worth a canonical replay.

Why several sort modes: ranking by PnL alone picks the luckiest high-drawdown config; each mode
ranks the sweep by a different virtue (raw PnL, a balanced blend, low drawdown) and the shortlist
interleaves them, so the replayed set is diverse. The same config (same config_id) reached from
two modes is kept once, at its first position; configs that trade identically (same traced trade
list) are one row listing all their config_ids.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from typing import Any

SORT_MODES = ("pnl", "balanced", "dd")


def _num(row: dict[str, Any], key: str) -> float:
    try:
        v = float(row.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def balanced_score(row: dict[str, Any]) -> float:
    """PnL, capped profit factor and Sharpe, minus drawdown (a fraction, so x100 = points); halved under 20 trades."""
    score = (
        _num(row, "total_pnl") * 0.3
        + min(_num(row, "profit_factor"), 10.0) * 20.0
        + _num(row, "sharpe") * 15.0
        - _num(row, "max_drawdown_pct") * 100.0
    )
    if _num(row, "total_trades") < 20:
        score *= 0.5 if score > 0 else 2.0
    return score


def _key(mode: str) -> Callable[[dict[str, Any]], tuple]:
    if mode == "pnl":
        return lambda r: (_num(r, "total_pnl"), -_num(r, "max_drawdown_pct"), str(r.get("config_id")))
    if mode == "balanced":
        return lambda r: (balanced_score(r), _num(r, "total_pnl"), str(r.get("config_id")))
    if mode == "dd":
        return lambda r: (-_num(r, "max_drawdown_pct"), _num(r, "total_pnl"), str(r.get("config_id")))
    raise ValueError(f"unknown sort mode {mode!r}; known: {', '.join(SORT_MODES)}")


def _eligible(row: dict[str, Any], mode: str, min_trades: int) -> bool:
    if not row.get("config_id") or _num(row, "total_trades") < min_trades:
        return False
    # Lowest drawdown is only a virtue for a config that makes money.
    return mode != "dd" or _num(row, "total_pnl") > 0


def rank_rows(rows: Iterable[dict[str, Any]], mode: str, top: int, min_trades: int = 1) -> list[dict[str, Any]]:
    """The best ``top`` rows by ``mode`` (heap: fine for million-row TPE sweeps)."""
    key = _key(mode)
    return heapq.nlargest(top, (r for r in rows if _eligible(r, mode, min_trades)), key=key)


def build_shortlist(
    rows: list[dict[str, Any]], size: int, modes: list[str] | tuple[str, ...] = ("balanced", "pnl", "dd"),
    min_trades: int = 1, behaviour_of: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Interleave the per-mode rankings (1st of each mode, then 2nd, ...) deduplicated by config_id.

    With ``behaviour_of`` (config_id -> checksum of its traced trade list) configs that trade
    identically are one row: the first keeps its place and lists every such config in
    ``config_ids``, so the replay budget goes to distinct behaviours. Each mode then ranks 2 x
    ``size`` rows deep (the traced pool, factory.evidence.trace_pool)."""
    depth = size if behaviour_of is None else size * 2
    ranked = {m: rank_rows(rows, m, depth, min_trades) for m in modes}
    seen: set[str] = set()
    by_behaviour: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for position in range(depth):
        for mode in modes:
            if position >= len(ranked[mode]):
                continue
            row = ranked[mode][position]
            cid = str(row["config_id"])
            if cid in seen:
                continue
            seen.add(cid)
            key = behaviour_of.get(cid) if behaviour_of else None
            if key is not None and key in by_behaviour:
                by_behaviour[key]["config_ids"].append(cid)
                continue
            if len(out) >= size:
                continue
            entry = {**row, "sort_by": mode, "mode_rank": position + 1, "rank": len(out) + 1, "config_ids": [cid]}
            if key is not None:
                entry["behaviour_checksum"] = key
                by_behaviour[key] = entry
            out.append(entry)
    return out
