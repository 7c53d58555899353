"""report.json / report.md: one row per replayed candidate with every figure behind the verdict.

Why loud: an equivalence failure means the sweep and the canonical engine disagree — a bug in one
of them. It does not stop the run, so the report must make it impossible to miss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.jsonio import write_json_atomic, write_text_atomic


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return format(x, spec)
    return str(x)


def _rejected_cell(item: dict[str, Any]) -> str:
    if item.get("rejected"):
        return f"YES: {item.get('reject_reason')}"
    if item.get("gate_failures"):
        return f"no (ADVISORY gate failures: {'; '.join(item['gate_failures'])})"
    return "no"


def render_report_md(items: list[dict[str, Any]], *, run_id: str, profile: str, sweep: dict[str, Any]) -> str:
    lines = [f"# Factory report — run {run_id} (profile {profile})", "",
             f"Sweep: backend **{sweep.get('backend')}**, {sweep.get('candidates_evaluated')} candidates in "
             f"{_fmt(sweep.get('elapsed_s'), '.1f')} s ({_fmt(sweep.get('candidates_per_s'), '.1f')}/s).", ""]
    broken = [i for i in items if i.get("replay_equivalence_status") != "pass"]
    if broken:
        lines += ["## !!! REPLAY EQUIVALENCE NOT PASSING !!!", "",
                  "The sweep and the canonical CPU replay disagree (or were not compared) for these "
                  "candidates. They are NOT deployable. A `fail` is a bug in one of the two executions.", ""]
        for i in broken:
            lines.append(f"- `{str(i.get('config_id'))[:12]}` status **{i.get('replay_equivalence_status')}** "
                         f"code `{i.get('replay_equivalence_failure_code')}` — {i.get('replay_equivalence_report_path')}")
            for d in (i.get("replay_equivalence_diffs") or [])[:5]:
                lines.append(f"    - `{d['path']}`: sweep {d['sweep']!r} vs replay {d['replay']!r}")
        lines.append("")
    lines += ["## Candidates", "",
              "| rank | config | sort | pnl | trades | win | pf | max dd | score_v1 | equivalence | rejected |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in items:
        lines.append(
            f"| {i.get('rank')} | `{str(i.get('config_id'))[:12]}` | {i.get('sort_by')} | {_fmt(i.get('total_pnl'), '.2f')} "
            f"| {i.get('total_trades')} | {_fmt(i.get('win_rate'), '.2%')} | {_fmt(i.get('profit_factor'), '.3f')} "
            f"| {_fmt(i.get('max_drawdown_pct'), '.2%')} | {_fmt(i.get('score_v1'), '.5f')} "
            f"| {i.get('replay_equivalence_status')} ({i.get('replay_equivalence_count')}) "
            f"| {_rejected_cell(i)} |")
    lines += ["", "## Gates", ""]
    for i in items:
        lines.append(f"- `{str(i.get('config_id'))[:12]}` gates `{i.get('validation_gate')}`: "
                     f"wf median {_fmt(i.get('wf_median_oos_daily_return'), '.6f')}/day, "
                     f"wf max dd {_fmt(i.get('wf_max_oos_drawdown'), '.2%')}, "
                     f"fragility {_fmt(i.get('slippage_fragility'), '.4f')}, "
                     f"pnl@20bps {_fmt(i.get('slippage_pnl_at_reject_bps'), '.2f')}, "
                     f"symbols {i.get('symbols_traded')}, top1 {_fmt(i.get('top1_pnl_pct'), '.0%')}, "
                     f"sensitivity+ {_fmt(i.get('sensitivity_positive_rate'), '.0%')}")
    return "\n".join(lines) + "\n"


def write_report(items: list[dict[str, Any]], reports_dir: Path, *, run_id: str, profile: str,
                 sweep: dict[str, Any]) -> dict[str, str]:
    md = write_text_atomic(reports_dir / "report.md", render_report_md(items, run_id=run_id, profile=profile, sweep=sweep))
    js = write_json_atomic(reports_dir / "report.json", {"run_id": run_id, "profile": profile, "items": items})
    return {"report_json": str(js.resolve()), "report_md": str(md.resolve())}
