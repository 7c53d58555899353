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


def render_evidence_md(evidence: dict[str, Any]) -> list[str]:
    """Walk-forward folds (IS vs OOS), overfitting statistics and collapsed behaviours."""
    lines: list[str] = []
    wf = evidence.get("walk_forward")
    if wf:
        lines += ["## Walk-forward optimisation (out-of-sample)", "",
                  f"{len(wf.get('folds') or [])} {wf.get('scheme')} folds; each fold's sweep saw only its in-sample "
                  "bars, its winner was replayed by the canonical engine on the out-of-sample bars after an embargo "
                  f"of {wf.get('embargo_bars')} bars.", ""]
        if wf.get("error"):
            lines += [f"Not run: {wf['error']}", ""]
        lines += ["| fold | in-sample | out-of-sample | winner | IS return | OOS return | OOS max dd | efficiency |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in wf.get("folds") or []:
            i, o = f["in_sample"], f["out_of_sample"]
            lines.append(f"| {f['fold']} | {_day(f['is_start_ms'])} → {_day(f['is_end_ms'])} "
                         f"| {_day(f['oos_start_ms'])} → {_day(f['oos_end_ms'])} | `{str(f['winner_config_id'])[:12]}` "
                         f"| {_fmt(i['return'], '+.2%')} | {_fmt(o['return'], '+.2%')} "
                         f"| {_fmt(o['max_drawdown_pct'], '.2%')} | {_fmt(f['efficiency'], '.2f')} |")
        lines += ["", f"Stitched out-of-sample return {_fmt(wf.get('oos_total_return'), '+.2%')}; median OOS daily "
                  f"return {_fmt(wf.get('wf_median_oos_daily_return'), '.6f')}; walk-forward efficiency (OOS / IS "
                  f"return per day) {_fmt(wf.get('efficiency'), '.2f')}; gate "
                  f"{'passed' if wf.get('passed') else 'FAILED: ' + str(wf.get('reason'))}.", ""]
    ov = evidence.get("overfitting") or {}
    if ov:
        lines += ["## Overfitting", "",
                  f"- PBO (CSCV, {((ov.get('pbo_detail') or {}).get('blocks'))} blocks, "
                  f"{((ov.get('pbo_detail') or {}).get('candidates'))} distinct top candidates): "
                  f"**{_fmt(ov.get('pbo'), '.2f')}** (gate max {ov.get('max_pbo')})"
                  + (f" — not computed: {ov['pbo_error']}" if ov.get("pbo_error") else ""),
                  f"- deflated Sharpe: per candidate below, given {ov.get('n_trials')} candidates tried "
                  f"(gate min {ov.get('min_deflated_sharpe')})", ""]
    beh = evidence.get("behaviours") or {}
    twins = [b for b in beh.get("shortlist") or [] if len(b["config_ids"]) > 1]
    if twins:
        lines += ["## Identical behaviours", "", "Shortlisted rows whose configs trade identically (one replay each):", ""]
        lines += [f"- rank {b['rank']}: " + ", ".join(f"`{c[:12]}`" for c in b["config_ids"]) for b in twins]
        lines.append("")
    return lines


def _day(ms: int | None) -> str:
    from datetime import UTC, datetime

    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def render_report_md(items: list[dict[str, Any]], *, run_id: str, profile: str, sweep: dict[str, Any],
                     evidence: dict[str, Any] | None = None) -> str:
    evidence = evidence or {}
    data = evidence.get("data") or {}
    lines = [f"# Factory report — run {run_id} (profile {profile})", ""]
    if data.get("synthetic"):
        lines += [f"> **{data['warning']}**", ""]
    lines += [
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
    lines += render_evidence_md(evidence)
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
    if evidence.get("score_v1_definition"):
        lines += ["", f"_{evidence['score_v1_definition']}_"]
    lines += ["", "## Gates", ""]
    for i in items:
        lines.append(f"- `{str(i.get('config_id'))[:12]}` gates `{i.get('validation_gate')}`: "
                     f"walk-forward OOS median {_fmt(i.get('wf_median_oos_daily_return'), '.6f')}/day, "
                     f"OOS max dd {_fmt(i.get('wf_max_oos_drawdown'), '.2%')}, "
                     f"in-sample stability median {_fmt(i.get('stability_median_daily_return'), '.6f')}/day, "
                     f"fragility {_fmt(i.get('slippage_fragility'), '.4f')}, "
                     f"pnl@20bps {_fmt(i.get('slippage_pnl_at_reject_bps'), '.2f')}, "
                     f"symbols {i.get('symbols_traded')}, top1 {_fmt(i.get('top1_pnl_pct'), '.0%')}, "
                     f"sensitivity+ {_fmt(i.get('sensitivity_positive_rate'), '.0%')}, "
                     f"deflated Sharpe {_fmt(i.get('deflated_sharpe'), '.3f')}"
                     + (f", same trades as {', '.join(c[:12] for c in i['config_ids'][1:])}"
                        if len(i.get('config_ids') or []) > 1 else ""))
    return "\n".join(lines) + "\n"


def write_report(items: list[dict[str, Any]], reports_dir: Path, *, run_id: str, profile: str,
                 sweep: dict[str, Any], evidence: dict[str, Any] | None = None) -> dict[str, str]:
    """report.json keys: run_id, profile, items (one per replayed candidate) and the run-level blocks
    data, score_v1_definition, walk_forward, overfitting, behaviours (docs/PROMOTION.md §1a)."""
    evidence = evidence or {}
    md = write_text_atomic(reports_dir / "report.md", render_report_md(items, run_id=run_id, profile=profile,
                                                                      sweep=sweep, evidence=evidence))
    js = write_json_atomic(reports_dir / "report.json", {"run_id": run_id, "profile": profile, "items": items,
                                                         **evidence})
    return {"report_json": str(js.resolve()), "report_md": str(md.resolve())}
