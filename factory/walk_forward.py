"""Walk-forward optimisation: how well does *choosing a config this way* do on data it never saw?

Why: a config chosen on the whole span has no out-of-sample data left; replaying it on sub-windows
of that span measures stability, not generalisation. Walk-forward measures the procedure instead:
the span is cut into folds; on each fold the sweep (same spec, the profile's per-fold budget) runs
on the in-sample bars only, its winner is replayed by the canonical engine on the out-of-sample
bars that follow an embargo, and the out-of-sample pieces are stitched into one equity curve.

Folds (bar indices over the tradable bars, i.e. after the sweep's indicator lookback):
the tradable span is cut into ``folds + 1`` equal parts; fold k tests on part k+1. Anchored:
in-sample = every tradable bar before the test part; rolling: in-sample = the one part before it.
``embargo_bars`` bars before each test part belong to neither side. The in-sample sweep is given
the bars [in-sample start − lookback, in-sample end) and nothing later: ``check_no_lookahead``
refuses any slice that reaches the embargo or the test window.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from marketdata.sanity import iso_ms

DAY_MS = 86_400_000


class LookAheadError(RuntimeError):
    """An in-sample step was handed bars at or after its fold's embargo/out-of-sample start."""


@dataclass(frozen=True)
class Fold:
    """Bar indices of one fold: data_start <= is_start < is_end <= oos_start < oos_end."""

    index: int
    data_start: int   # first bar handed to the in-sample sweep (indicator warm-up)
    is_start: int     # first in-sample bar that trades
    is_end: int       # exclusive; is_end + embargo == oos_start
    oos_start: int
    oos_end: int      # exclusive


def make_folds(nbar: int, lookback: int, folds: int, scheme: str = "anchored", embargo_bars: int = 0) -> list[Fold]:
    """The folds over bars [lookback, nbar); raises ValueError (one line) when they do not fit."""
    if folds < 1:
        raise ValueError(f"walk_forward.folds must be >= 1 (got {folds})")
    if scheme not in ("anchored", "rolling"):
        raise ValueError(f"walk_forward.scheme must be anchored or rolling (got {scheme!r})")
    tradable = nbar - lookback
    edges = [lookback + tradable * k // (folds + 1) for k in range(folds + 2)]
    part = tradable // (folds + 1)
    if part < 2 or embargo_bars >= part - 1:
        raise ValueError(f"walk-forward: {tradable} tradable bars in {folds + 1} parts of {part} bars leave no "
                         f"in-sample bars after an embargo of {embargo_bars}; use fewer folds or more data")
    out = []
    for k in range(1, folds + 1):
        is_start = edges[0] if scheme == "anchored" else edges[k - 1]
        out.append(Fold(k, max(0, is_start - lookback), is_start, edges[k] - embargo_bars, edges[k], edges[k + 1]))
    return out


# ----- data slices ------------------------------------------------------------------------------
def slice_bars(md, funding, exit_md, lo: int, hi: int):
    """Bars [lo, hi) of the main data, the matching funding columns and the exit (sub-bar) candles
    that fall inside them: everything a sweep or replay of that window may see."""
    cut = dataclasses.replace(md, times=md.times[lo:hi], open=md.open[:, lo:hi], high=md.high[:, lo:hi],
                              low=md.low[:, lo:hi], close=md.close[:, lo:hi], volume=md.volume[:, lo:hi],
                              valid=md.valid[:, lo:hi])
    f = None if funding is None else np.ascontiguousarray(funding[:, lo:hi])
    ex = None
    if exit_md is not None:
        t0, t1 = int(md.times[lo]), int(md.times[hi - 1]) + int(md.interval_ms)
        a, b = np.searchsorted(exit_md.times, [t0, t1], side="left")
        ex = slice_bars(exit_md, None, None, int(a), int(b))[0]
    return cut, f, ex


def check_no_lookahead(fold: Fold, md_full, md_is, exit_is=None) -> None:
    """The in-sample data must close before the fold's in-sample end (embargo and test excluded)."""
    limit = int(md_full.times[fold.is_end - 1]) + int(md_full.interval_ms)  # close of the last IS bar
    last = int(md_is.times[-1]) + int(md_is.interval_ms)
    if exit_is is not None and len(exit_is.times):
        last = max(last, int(exit_is.times[-1]) + int(exit_is.interval_ms))
    if last > limit:
        raise LookAheadError(f"walk-forward fold {fold.index}: the in-sample sweep was handed bars up to "
                             f"{last} ms, past its in-sample end {limit} ms (embargo/out-of-sample bars)")


# ----- one fold ---------------------------------------------------------------------------------
SweepFn = Callable[..., Any]     # (md, funding, exit_md) -> gpu.api.SweepResult
PickFn = Callable[[list[dict[str, Any]]], dict[str, Any] | None]
ReplayFn = Callable[..., dict[str, Any]]   # (overrides, md, funding, exit_md, start_ms) -> replay report
Slicer = Callable[..., tuple]


def _figures(rep: dict[str, Any] | None, initial_balance: float, bars: int, interval_ms: int) -> dict[str, Any]:
    """Return, daily return and drawdown of one canonical replay (a flat record when no winner)."""
    days = max(bars * interval_ms / DAY_MS, 1e-9)
    if rep is None:
        return {"total_pnl": 0.0, "return": 0.0, "daily_return": 0.0, "max_drawdown_pct": 0.0,
                "total_trades": 0, "days": days}
    ret = float(rep["total_pnl"]) / initial_balance
    return {"total_pnl": float(rep["total_pnl"]), "return": ret, "daily_return": ret / days,
            "max_drawdown_pct": float(rep["max_drawdown_pct"]), "total_trades": int(rep["total_trades"]),
            "days": days}


def run_fold(fold: Fold, md, funding, exit_md, *, sweep_fn: SweepFn, pick_fn: PickFn, replay_fn: ReplayFn,
             initial_balance: float, slicer: Slicer = slice_bars) -> dict[str, Any]:
    """Sweep the fold's in-sample bars, replay the winner there and on the test bars."""
    md_is, f_is, ex_is = slicer(md, funding, exit_md, fold.data_start, fold.is_end)
    check_no_lookahead(fold, md, md_is, ex_is)
    res = sweep_fn(md_is, f_is, ex_is)
    winner = pick_fn(res.rows)
    md_oos, f_oos, ex_oos = slice_bars(md, funding, exit_md, fold.data_start, fold.oos_end)
    is_rep = oos_rep = None
    if winner is not None:
        ov = winner.get("overrides") or {}
        is_rep = replay_fn(ov, md_is, f_is, ex_is, int(md.times[fold.is_start]))
        oos_rep = replay_fn(ov, md_oos, f_oos, ex_oos, int(md.times[fold.oos_start]))
    iv = int(md.interval_ms)
    row = {
        "fold": fold.index, "data_start_ms": int(md.times[fold.data_start]),
        "is_start_ms": int(md.times[fold.is_start]), "is_end_ms": int(md.times[fold.is_end - 1]) + iv,
        "oos_start_ms": int(md.times[fold.oos_start]), "oos_end_ms": int(md.times[fold.oos_end - 1]) + iv,
        "embargo_bars": fold.oos_start - fold.is_end, "candidates_evaluated": int(res.candidates_evaluated),
        "winner_config_id": None if winner is None else winner["config_id"],
        "winner_overrides": None if winner is None else winner.get("overrides") or {},
        "in_sample": _figures(is_rep, initial_balance, fold.is_end - fold.is_start, iv),
        "out_of_sample": _figures(oos_rep, initial_balance, fold.oos_end - fold.oos_start, iv),
        "oos_daily_equity_returns": [] if oos_rep is None else list(oos_rep.get("daily_returns") or []),
        "oos_trace_checksum": None if oos_rep is None else oos_rep.get("trace_checksum"),
    }
    row["efficiency"] = efficiency(row["in_sample"]["daily_return"], row["out_of_sample"]["daily_return"])
    for side, key in (("is", "in_sample"), ("oos", "out_of_sample")):  # flat copies for table/plot readers
        row[f"{side}_return_pct"] = row[key]["return"] * 100.0
        row[f"{side}_daily_return"] = row[key]["daily_return"]
    row["oos_day_end_ms"] = _day_ends(md.times[fold.oos_start:fold.oos_end], row["oos_end_ms"])
    for key in ("data_start_ms", "is_start_ms", "is_end_ms", "oos_start_ms", "oos_end_ms"):
        row[key[:-3] + "_utc"] = iso_ms(row[key])  # the windows as a person reads them
    return row


def _day_ends(times: np.ndarray, end_ms: int) -> list[int]:
    """The end time of each UTC day in ``times`` (the replay's daily_returns are per such day)."""
    days = np.unique(np.asarray(times, dtype=np.int64) // DAY_MS)
    return [int(min((d + 1) * DAY_MS, end_ms)) for d in days]


def efficiency(is_daily: float, oos_daily: float) -> float | None:
    """Walk-forward efficiency: out-of-sample over in-sample return per day (None when IS <= 0)."""
    return oos_daily / is_daily if is_daily > 0 else None


# ----- the whole run ----------------------------------------------------------------------------
def stitch(folds: list[dict[str, Any]], initial_balance: float) -> list[list[float]]:
    """[[t_ms, equity], ...]: the test windows' daily returns compounded one after another."""
    eq = float(initial_balance)
    points: list[list[float]] = []
    if folds:
        points.append([folds[0]["oos_start_ms"], eq])
    for f in folds:
        rets = f["oos_daily_equity_returns"] or [0.0] * len(f["oos_day_end_ms"])
        for t, r in zip(f["oos_day_end_ms"], rets, strict=False):
            eq *= 1.0 + float(r)
            points.append([int(t), eq])
    return points


def summarize(folds: list[dict[str, Any]], initial_balance: float, *, scheme: str, min_efficiency: float) -> dict[str, Any]:
    """The run-level walk-forward result and its gate verdict (reads out-of-sample figures only)."""
    oos = [f["out_of_sample"] for f in folds]
    ins = [f["in_sample"] for f in folds]
    is_daily = float(np.mean([x["daily_return"] for x in ins])) if ins else 0.0
    oos_daily = float(np.mean([x["daily_return"] for x in oos])) if oos else 0.0
    median = statistics.median([x["daily_return"] for x in oos]) if oos else 0.0
    curve = stitch(folds, initial_balance)
    eff = efficiency(is_daily, oos_daily)
    reasons = []
    if not oos or median <= 0:
        reasons.append(f"median out-of-sample daily return {median:.6g} is not above 0")
    if eff is None:
        reasons.append("in-sample winners did not make money, so walk-forward efficiency is undefined")
    elif eff < min_efficiency:
        reasons.append(f"walk-forward efficiency {eff:.2f} < {min_efficiency:.2f}")
    return {
        "gate": "walk_forward", "scheme": scheme, "folds": folds, "stitched_oos_equity": curve,
        "efficiency": eff, "min_efficiency": min_efficiency,
        "wf_median_oos_daily_return": median, "wf_mean_is_daily_return": is_daily,
        "wf_mean_oos_daily_return": oos_daily,
        "wf_max_oos_drawdown": max((x["max_drawdown_pct"] for x in oos), default=0.0),
        "oos_total_return": (curve[-1][1] / initial_balance - 1.0) if curve else 0.0,
        "passed": not reasons, "reason": "; ".join(reasons) or None,
    }


def run_walk_forward(md, funding, exit_md, *, lookback: int, folds: int, scheme: str, embargo_bars: int,
                     sweep_fn: SweepFn, pick_fn: PickFn, replay_fn: ReplayFn, initial_balance: float,
                     min_efficiency: float = 0.0, slicer: Slicer = slice_bars,
                     on_fold: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every fold in time order, then the stitched summary (see the module docstring)."""
    plan = make_folds(md.nbar, lookback, folds, scheme, embargo_bars)
    rows = []
    for fold in plan:
        if on_fold:
            on_fold(fold.index, len(plan))
        rows.append(run_fold(fold, md, funding, exit_md, sweep_fn=sweep_fn, pick_fn=pick_fn, replay_fn=replay_fn,
                             initial_balance=initial_balance, slicer=slicer))
    return summarize(rows, initial_balance, scheme=scheme, min_efficiency=min_efficiency)
