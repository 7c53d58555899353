"""Validation gates: is a replay-verified config robust enough to trade?

Equivalence proves the sweep and the engine agree; it says nothing about whether the config is
overfit. Each gate asks one question the runbook's lifecycle asks before "validated": does it make
money out of sample when chosen this way (walk_forward: walk-forward optimisation, run level), is
the winner's edge more than selection luck (overfitting: PBO and deflated Sharpe), is the edge
spread over the span it was chosen on (stability, in-sample), with worse fills (slippage), without one lucky symbol
(concentration), when its knobs move a notch (sensitivity), when trade order is reshuffled
(monte_carlo), on enough trades to mean anything (min_trades)? The ``*_summary`` functions are pure
(synthetic inputs in tests); ``run_gates`` feeds them canonical replays and writes the summaries.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from factory.jsonio import write_json_atomic

DAY_MS = 86_400_000
SENSITIVITY_AXES: tuple[tuple[str, float, bool], ...] = (
    # (path under global, step, is an integer window)
    ("indicators.ema_fast_window", 1, True),
    ("indicators.ema_slow_window", 1, True),
    ("indicators.adx_window", 1, True),
    ("indicators.bb_window", 1, True),
    ("thresholds.entry.min_adx", 1.0, False),
    ("trade.sl_atr_mult", 0.1, False),
    ("trade.tp_atr_mult", 0.1, False),
)


# ----- time-split stability (in-sample) -----------------------------------------------------
def stability_windows(start_ms: int, end_ms: int, splits: int = 3) -> list[tuple[int, int]]:
    """The span cut into splits+1 equal parts; parts 2..splits+1 are replayed one by one.

    These windows are IN-SAMPLE for a config chosen on the whole span: the check asks whether the
    edge is spread over time rather than made in one burst. Out-of-sample evidence is the
    walk_forward gate's (factory/walk_forward.py)."""
    if end_ms <= start_ms or splits < 1:
        raise ValueError(f"stability: empty span {start_ms}..{end_ms} or splits {splits} < 1")
    edges = [start_ms + (end_ms - start_ms) * k // (splits + 1) for k in range(splits + 2)]
    return [(edges[k], edges[k + 1]) for k in range(1, splits + 1)]


def stability_summary(windows: list[dict[str, Any]], initial_balance: float) -> dict[str, Any]:
    """windows: [{start_ms, end_ms, total_pnl, max_drawdown_pct, total_trades}] of in-sample sub-window replays."""
    rows = []
    for w in windows:
        days = max((w["end_ms"] - w["start_ms"]) / DAY_MS, 1e-9)
        rows.append({**w, "days": days, "daily_return": w["total_pnl"] / initial_balance / days})
    daily = [r["daily_return"] for r in rows]
    median = statistics.median(daily) if daily else 0.0
    passed = bool(daily) and median > 0
    return {
        "gate": "stability", "in_sample": True, "windows": rows, "stability_median_daily_return": median,
        "stability_max_drawdown": max((float(r["max_drawdown_pct"]) for r in rows), default=0.0),
        "passed": passed,
        "reason": None if passed else f"median in-sample sub-window daily return {median:.6g} is not above 0",
    }


def walk_forward_gate(run_level: dict[str, Any] | None) -> dict[str, Any]:
    """The walk_forward gate of a candidate: the run's walk-forward verdict (the procedure that chose
    it, judged on out-of-sample bars only). Without a walk-forward result the gate fails."""
    if not run_level:
        return {"gate": "walk_forward", "passed": False, "reason": "walk-forward did not run",
                "wf_median_oos_daily_return": None, "wf_max_oos_drawdown": None, "efficiency": None}
    keys = ("scheme", "efficiency", "min_efficiency", "wf_median_oos_daily_return", "wf_mean_is_daily_return",
            "wf_mean_oos_daily_return", "wf_max_oos_drawdown", "oos_total_return", "passed", "reason")
    return {"gate": "walk_forward", "run_level": True, **{k: run_level.get(k) for k in keys},
            "folds": len(run_level.get("folds") or [])}


# ----- slippage -------------------------------------------------------------------------------
def slippage_summary(pnl_by_bps: dict[float, float], initial_balance: float, reject_bps: float = 20.0) -> dict[str, Any]:
    """Baseline = the lowest stressed level; fragility = PnL lost going to 20 bps, per unit of balance."""
    levels = sorted(float(k) for k in pnl_by_bps)
    base = float(pnl_by_bps[levels[0]])
    at_reject = float(pnl_by_bps[reject_bps])
    passed = at_reject > 0
    return {
        "gate": "slippage", "levels_bps": levels, "pnl_by_bps": {f"{k:g}": float(pnl_by_bps[k]) for k in levels},
        "slippage_baseline_bps": levels[0], "slippage_pnl_at_reject_bps": at_reject, "reject_bps": reject_bps,
        "slippage_fragility": (base - at_reject) / initial_balance, "passed": passed,
        "reason": None if passed else f"PnL at {reject_bps:g} bps slippage is {at_reject:.2f} <= 0",
    }


# ----- concentration --------------------------------------------------------------------------
def _n_symbols(n: int) -> str:
    return f"{n} symbol" if n == 1 else f"{n} symbols"


def concentration_summary(per_symbol: dict[str, dict[str, Any]], min_symbols: int = 5,
                          max_top1: float = 0.5, max_top5: float = 0.9) -> dict[str, Any]:
    """Is the profit spread over symbols? Shares are of positive PnL; a run where no symbol made money
    says so instead of quoting shares of nothing."""
    traded = {s: v for s, v in per_symbol.items() if int(v.get("trades", 0)) > 0}
    positive = sorted((float(v.get("pnl", 0.0)) for v in traded.values() if float(v.get("pnl", 0.0)) > 0),
                      reverse=True)
    total_pos = sum(positive)
    top1 = positive[0] / total_pos if total_pos > 0 else None
    top5 = sum(positive[:5]) / total_pos if total_pos > 0 else None
    net = sum(float(v.get("pnl", 0.0)) for v in traded.values())
    reasons = []
    if not traded:
        reasons.append("no symbol traded")
    elif len(traded) < min_symbols:
        reasons.append(f"only {_n_symbols(len(traded))} traded (at least {min_symbols} required)")
    if not traded:
        pass
    elif not positive:
        reasons.append("no symbol made a profit")
    elif net <= 0:
        reasons.append(f"net PnL {net:.2f} is not positive, so there is no profit to spread over symbols")
    elif len(traded) > 1:  # with one symbol traded, "100 % from one symbol" repeats the line above
        if top1 > max_top1:
            reasons.append(f"the best symbol made {top1:.0%} of the profit (at most {max_top1:.0%} allowed)")
        if top5 > max_top5 and len(traded) > 5:
            reasons.append(f"the best 5 symbols made {top5:.0%} of the profit (at most {max_top5:.0%} allowed)")
    return {"gate": "concentration", "symbols_traded": len(traded), "symbols_profitable": len(positive), "net_pnl": net,
            "top1_pnl_pct": top1, "top5_pnl_pct": top5, "passed": not reasons, "reason": "; ".join(reasons) or None}


# ----- sensitivity ----------------------------------------------------------------------------
def sensitivity_variants(current: Callable[[str], Any]) -> list[dict[str, Any]]:
    """One-at-a-time ±step of the key axes, from the config's current values (windows stay >= 2)."""
    out = []
    for path, step, is_window in SENSITIVITY_AXES:
        value = current(path)
        if value is None:
            continue
        for sign in (-1, 1):
            new = int(value) + sign * int(step) if is_window else round(float(value) + sign * step, 10)
            if (is_window and new < 2) or (not is_window and new <= 0):
                continue
            out.append({"path": path, "from": value, "to": new})
    return out


def sensitivity_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    pnls = [float(r["total_pnl"]) for r in results if r.get("total_pnl") is not None]
    rate = sum(p > 0 for p in pnls) / len(pnls) if pnls else 0.0
    return {"gate": "sensitivity", "variants": results, "sensitivity_positive_rate": rate,
            "sensitivity_median_pnl": statistics.median(pnls) if pnls else 0.0, "passed": True, "reason": None}


# ----- Monte Carlo ----------------------------------------------------------------------------
def monte_carlo_summary(trade_pnls: list[float], initial_balance: float, iterations: int = 2000,
                        seed: int = 42) -> dict[str, Any]:
    """Bootstrap (with replacement) of net trade PnL: how bad could the same edge have looked?"""
    pnl = np.asarray(trade_pnls, dtype=np.float64)
    if pnl.size == 0:
        return {"gate": "monte_carlo", "iterations": iterations, "seed": seed, "trades": 0,
                "monte_carlo_ci": None, "passed": True, "reason": "no trades"}
    rng = np.random.default_rng(seed)
    returns = np.empty(iterations)
    drawdowns = np.empty(iterations)
    chunk = max(1, min(iterations, 2_000_000 // pnl.size))
    for lo in range(0, iterations, chunk):
        hi = min(iterations, lo + chunk)
        sample = pnl[rng.integers(0, pnl.size, size=(hi - lo, pnl.size))]
        equity = initial_balance + np.cumsum(sample, axis=1)
        equity = np.concatenate([np.full((hi - lo, 1), initial_balance), equity], axis=1)
        peak = np.maximum.accumulate(equity, axis=1)
        drawdowns[lo:hi] = np.max((peak - equity) / np.where(peak > 0, peak, np.inf), axis=1)
        returns[lo:hi] = (equity[:, -1] - initial_balance) / initial_balance
    pct = (5, 25, 50, 75, 95)
    ci = {
        "return_pct": {f"p{p}": float(np.percentile(returns, p)) for p in pct},
        "max_drawdown_pct": {f"p{p}": float(np.percentile(drawdowns, p)) for p in pct},
        "prob_loss": float(np.mean(returns <= 0)),
    }
    return {"gate": "monte_carlo", "iterations": iterations, "seed": seed, "trades": int(pnl.size),
            "monte_carlo_ci": ci, "passed": True, "reason": None}


# ----- min trades -------------------------------------------------------------------
def min_trades_summary(total_trades: int, min_trades: int = 30) -> dict[str, Any]:
    passed = int(total_trades) >= min_trades
    return {"gate": "min_trades", "total_trades": int(total_trades), "min_trades": min_trades, "passed": passed,
            "reason": None if passed else f"insufficient evidence: {int(total_trades)} trades < {min_trades}"}


# ----- runner ---------------------------------------------------------------------------------
ReplayFn = Callable[..., dict[str, Any]]


def run_gates(
    gates: list[str], *, cfg: Any, replay_report: dict[str, Any], replay_fn: ReplayFn,
    apply_overrides: Callable[[Any, dict[str, Any]], Any], initial_balance: float, out_dir: Path, stem: str,
    stability_splits: int = 3, slippage_bps: list[float] = (10.0, 20.0, 30.0),
    monte_carlo_iterations: int = 2000, min_trades: int = 30, on_progress: Callable[[str], None] | None = None,
    run_level: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the named gates for one candidate; ``replay_fn(cfg, **kw)`` is the canonical replay.
    ``run_level`` carries the run's walk-forward result and the overfitting inputs (PBO, the number of
    candidates tried, the variance of their Sharpe ratios, thresholds)."""
    tick = on_progress or (lambda _msg: None)
    run_level = run_level or {}
    summaries: dict[str, dict[str, Any]] = {}
    for gate in gates:
        tick(gate)
        if gate == "walk_forward":
            summaries[gate] = walk_forward_gate(run_level.get("walk_forward"))
        elif gate == "overfitting":
            summaries[gate] = _overfitting_gate(replay_report, run_level.get("overfitting") or {})
        elif gate == "stability":
            windows = []
            for s, e in stability_windows(int(replay_report["start_ms"]), int(replay_report["end_ms"]),
                                          stability_splits):
                rep = replay_fn(cfg, start_ms=s, end_ms=e, with_trades=False)
                windows.append({"start_ms": s, "end_ms": e, "total_pnl": float(rep["total_pnl"]),
                                "max_drawdown_pct": float(rep["max_drawdown_pct"]),
                                "total_trades": int(rep["total_trades"])})
            summaries[gate] = stability_summary(windows, initial_balance)
        elif gate == "slippage":
            pnl = {float(b): float(replay_fn(cfg, slippage_bps=float(b), with_trades=False)["total_pnl"])
                   for b in slippage_bps}
            summaries[gate] = slippage_summary(pnl, initial_balance)
        elif gate == "concentration":
            summaries[gate] = concentration_summary(replay_report.get("per_symbol") or {})
        elif gate == "sensitivity":
            summaries[gate] = sensitivity_summary(_sensitivity_results(cfg, replay_fn, apply_overrides))
        elif gate == "monte_carlo":
            pnls = [float(t["pnl"]) for t in replay_report.get("trades") or []]
            summaries[gate] = monte_carlo_summary(pnls, initial_balance, monte_carlo_iterations)
        elif gate == "min_trades":
            summaries[gate] = min_trades_summary(int(replay_report.get("total_trades", 0)), min_trades)
        else:
            raise ValueError(f"unknown gate {gate!r}")
        summaries[gate]["config_id"] = replay_report.get("config_id")
        write_json_atomic(out_dir / gate / stem / "summary.json", summaries[gate])
    return summaries


def _sensitivity_results(cfg: Any, replay_fn: ReplayFn, apply_overrides) -> list[dict[str, Any]]:
    results = []
    for v in sensitivity_variants(lambda p: cfg.get(p)):
        try:
            variant = apply_overrides(cfg, {v["path"]: v["to"]})
        except ValueError as exc:
            results.append({**v, "total_pnl": None, "skipped": str(exc).splitlines()[0]})
            continue
        rep = replay_fn(variant, with_trades=False)
        results.append({**v, "total_pnl": float(rep["total_pnl"]), "total_trades": int(rep["total_trades"])})
    return results


def _overfitting_gate(replay_report: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Run-level PBO plus this candidate's deflated Sharpe (its canonical daily returns, deflated by
    the number of candidates the sweep tried)."""
    from factory.overfitting import deflated_sharpe, overfitting_summary

    daily = replay_report.get("daily_returns") or []
    dsr = deflated_sharpe(np.asarray(daily, dtype=np.float64), int(ctx.get("n_trials") or 1),
                          float(ctx.get("sharpe_variance") or 0.0)) if len(daily) >= 2 else None
    return overfitting_summary(ctx.get("pbo"), dsr, max_pbo=float(ctx.get("max_pbo", 0.5)),
                               min_dsr=float(ctx.get("min_deflated_sharpe", 0.95)), pbo_error=ctx.get("pbo_error"))


def validation_gate_label(gates: list[str]) -> str:
    """The stage string: "replay_only" or "score_v1+" followed by the gates that ran."""
    return "replay_only" if not gates else "+".join(["score_v1", *gates])


def finite_or_none(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
