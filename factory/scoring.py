"""score_v1 and the per-candidate verdict.

Why one number: the selection must be reproducible and explainable to a desk reviewer. score_v1
rewards out-of-sample daily return and charges for out-of-sample drawdown, slippage fragility and
thin evidence; its formula is the spec's, and the components it used are reported next to it.
"""

from __future__ import annotations

from typing import Any

SCORE_V1_EXPLAINED = ("score_v1 = walk-forward median out-of-sample daily return - 2 x max out-of-sample "
                      "drawdown - 0.5 x slippage fragility - 0.05 x (30 - trades)/30 if under 30 trades; "
                      "a fraction per day, higher is better, 0 = break-even, so a profitable config with "
                      "deep drawdowns still scores below 0")


def score_v1(median_oos_daily_return: float, max_oos_drawdown: float, slippage_fragility: float,
             total_trades: int) -> float:
    return (
        float(median_oos_daily_return) - 2.0 * float(max_oos_drawdown) - 0.5 * float(slippage_fragility)
        - 0.05 * max(0, 30 - int(total_trades)) / 30.0
    )


def verdict(summaries: dict[str, dict[str, Any]], replay_report: dict[str, Any], *,
            enforce: bool = True) -> dict[str, Any]:
    """Flatten gate outputs into report fields, score_v1 and the reject decision.

    With ``enforce`` False (advisory profiles such as smoke) failed gates are reported in
    ``gate_failures`` but do not reject; such a run must never deploy (the pipeline enforces that).
    """
    wf = summaries.get("walk_forward", {})
    sl = summaries.get("slippage", {})
    trades = int(replay_report.get("total_trades", 0))
    med = wf.get("wf_median_oos_daily_return") or 0.0
    dd = wf.get("wf_max_oos_drawdown") or 0.0
    frag = sl.get("slippage_fragility") or 0.0
    reasons = [f"{name}: {s['reason']}" for name, s in summaries.items() if not s.get("passed", True)]
    item: dict[str, Any] = {
        "score_v1": score_v1(med, dd, frag, trades),
        "score_v1_complete": "walk_forward" in summaries and "slippage" in summaries,
        "rejected": bool(reasons) and enforce, "reject_reason": ("; ".join(reasons) or None) if enforce else None,
        "gate_failures": reasons, "gate_mode": "enforce" if enforce else "advisory",
        "gates_run": list(summaries),
    }
    for key in ("wf_median_oos_daily_return", "wf_max_oos_drawdown"):
        item[key] = wf.get(key)
    item["wf_efficiency"] = wf.get("efficiency")
    stab = summaries.get("stability", {})
    for key in ("stability_median_daily_return", "stability_max_drawdown"):
        item[key] = stab.get(key)
    ov = summaries.get("overfitting", {})
    item["pbo"] = ov.get("pbo")
    item["deflated_sharpe"] = ov.get("deflated_sharpe")
    for key in ("slippage_fragility", "slippage_pnl_at_reject_bps", "pnl_by_bps"):
        item["slippage_pnl_by_bps" if key == "pnl_by_bps" else key] = sl.get(key)
    conc = summaries.get("concentration", {})
    for key in ("symbols_traded", "top1_pnl_pct", "top5_pnl_pct"):
        item[key] = conc.get(key)
    sens = summaries.get("sensitivity", {})
    item["sensitivity_positive_rate"] = sens.get("sensitivity_positive_rate")
    item["sensitivity_median_pnl"] = sens.get("sensitivity_median_pnl")
    item["monte_carlo_ci"] = summaries.get("monte_carlo", {}).get("monte_carlo_ci")
    return item
