"""Selection: which candidate (if any) may go to paper, and the evidence that says why.

The deployable predicate is deliberately a conjunction of plain facts an auditor can re-check from
the files alone: not rejected by a gate, a candidate-mode schema-1 record with all four stage
strings, canonical-CPU verified by a passing replay equivalence, and both proof files present
inside the run directory. selection.json is written on every run — also when nothing qualifies
("none_deployable") — so the stage gate never has to guess why a file is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from factory.jsonio import write_json_atomic, write_text_atomic

SELECTION_VERSION = "factory_selection_v1"
STAGE_FIELDS = ("pipeline_stage", "sweep_stage", "replay_stage", "validation_gate")
PROOF_FIELDS = ("replay_report_path", "replay_equivalence_report_path")
SELECTED_FIELDS = (
    "config_id", "config_path", "score_v1", "total_pnl", "max_drawdown_pct", "total_trades", "profit_factor",
    *STAGE_FIELDS, "canonical_cpu_verified", "candidate_mode", "schema_version", *PROOF_FIELDS,
    "replay_equivalence_status", "replay_equivalence_count", "rejected", "reject_reason", "gate_mode", "gate_failures",
    "config_ids", "pbo", "deflated_sharpe", "wf_efficiency", "wf_median_oos_daily_return",
)
WF_SELECTION_KEYS = ("scheme", "efficiency", "min_efficiency", "wf_median_oos_daily_return", "wf_mean_is_daily_return",
                     "wf_mean_oos_daily_return", "wf_max_oos_drawdown", "oos_total_return", "passed", "reason", "error")


def _inside(path: Any, run_dir: Path) -> bool:
    if not isinstance(path, str) or not path:
        return False
    p = Path(path) if Path(path).is_absolute() else run_dir / path
    try:
        return p.is_file() and p.resolve().is_relative_to(run_dir.resolve())
    except OSError:
        return False


def why_not_deployable(item: dict[str, Any], run_dir: Path) -> list[str]:
    """Every failed clause of the deployable predicate, in words (empty list = deployable)."""
    why = []
    if item.get("rejected"):
        why.append(f"rejected: {item.get('reject_reason')}")
    if item.get("candidate_mode") is not True:
        why.append("candidate_mode is not true")
    if item.get("schema_version") != 1:
        why.append(f"schema_version {item.get('schema_version')!r} != 1")
    why += [f"{k} not set" for k in STAGE_FIELDS if not isinstance(item.get(k), str) or not item.get(k)]
    if item.get("canonical_cpu_verified") is not True:
        why.append("canonical_cpu_verified is not true")
    if item.get("replay_equivalence_status") != "pass":
        why.append(f"replay equivalence {item.get('replay_equivalence_status')!r}, not 'pass'")
    count = item.get("replay_equivalence_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        why.append(f"replay_equivalence_count {count!r} is not an integer >= 0")
    why += [f"{k} missing or outside the run dir" for k in PROOF_FIELDS if not _inside(item.get(k), run_dir)]
    return why


def is_deployable(item: dict[str, Any], run_dir: Path) -> bool:
    return not why_not_deployable(item, run_dir)


def _sortable(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return f if math.isfinite(f) else -math.inf


def _rank_key(i: dict[str, Any]) -> tuple:
    return (-_sortable(i.get("score_v1")), -_sortable(i.get("total_pnl")), str(i.get("config_id")))


def rank_candidates(items: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """Deployable items that failed no gate, best first: score_v1, then total_pnl, then config_id.
    An advisory run reports gate failures without rejecting; such an item is never "selected"."""
    ok = [i for i in items if is_deployable(i, run_dir) and not i.get("gate_failures")]
    return sorted(ok, key=_rank_key)


def best_candidate(items: list[dict[str, Any]], run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The best replay-verified item that is not deployable, and every reason why not."""
    verified = [i for i in items if i.get("replay_equivalence_status") == "pass"]
    if not verified:
        return None, []
    best = sorted(verified, key=_rank_key)[0]
    reasons = why_not_deployable(best, run_dir)
    reasons += [f"gate {g}" for g in best.get("gate_failures") or [] if f"gate {g}" not in reasons
                and not best.get("rejected")]
    if best.get("gate_mode") == "advisory":
        reasons.append("advisory profile: it never deploys")
    return best, reasons


def _walk_forward_brief(wf: dict[str, Any] | None) -> dict[str, Any] | None:
    if not wf:
        return None
    return {**{k: wf.get(k) for k in WF_SELECTION_KEYS}, "folds": len(wf.get("folds") or []),
            "report": "reports/report.json walk_forward"}


def build_selection(
    items: list[dict[str, Any]], *, run_id: str, run_dir: Path, bundle: dict[str, str], no_deploy: bool,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The selection document: "selected" only for a deployable candidate that failed no gate; an
    advisory run's best otherwise is "best_candidate" with the reasons it is not deployable."""
    evidence = evidence or {}
    ranked = rank_candidates(items, run_dir)
    selected = {k: ranked[0].get(k) for k in SELECTED_FIELDS} if ranked else None
    best, best_reasons = (None, []) if ranked else best_candidate(items, run_dir)
    advisory_best = best is not None and best.get("gate_mode") == "advisory" and not best.get("rejected") \
        and best.get("replay_equivalence_status") == "pass"
    if no_deploy:
        deploy_stage, promotion_stage = "no_deploy", "skipped"
    elif not ranked:
        deploy_stage, promotion_stage = "skipped", "no_passing_candidate"
    else:
        deploy_stage, promotion_stage = "pending", "pending"
    shown = ranked[0] if ranked else best
    overfit = dict(evidence.get("overfitting") or {})
    overfit["deflated_sharpe"] = shown.get("deflated_sharpe") if shown else None
    overfit["deflated_sharpe_config_id"] = shown.get("config_id") if shown else None
    return {
        "version": SELECTION_VERSION, "run_id": run_id,
        "selection_stage": "selected" if ranked else ("best_candidate_not_deployable" if advisory_best
                                                       else "none_deployable"),
        "deploy_stage": deploy_stage, "promotion_stage": promotion_stage,
        "evidence_bundle_paths": bundle, "selected": selected,
        "best_candidate": {k: best.get(k) for k in SELECTED_FIELDS} if best else None,
        "best_candidate_reasons": best_reasons,
        "selected_candidates": [{k: i.get(k) for k in SELECTED_FIELDS} for i in ranked],
        "not_deployable": [
            {"config_id": i.get("config_id"), "reasons": why_not_deployable(i, run_dir)
             + [f"gate {g}" for g in (i.get("gate_failures") or []) if not i.get("rejected")]}
            for i in items if not is_deployable(i, run_dir) or i.get("gate_failures")
        ],
        "deployments": [],
        "data": evidence.get("data"), "score_v1_definition": evidence.get("score_v1_definition"),
        "walk_forward": _walk_forward_brief(evidence.get("walk_forward")),
        "overfitting": {k: v for k, v in overfit.items() if k != "pbo_detail"},
    }


def render_selection_md(sel: dict[str, Any]) -> str:
    data = sel.get("data") or {}
    lines = [f"# Factory selection — run {sel['run_id']}", ""]
    if data.get("synthetic"):
        lines += [f"> **{data['warning']}**", ""]
    lines += [f"- selection_stage: **{sel['selection_stage']}**", f"- deploy_stage: {sel['deploy_stage']}",
              f"- promotion_stage: {sel['promotion_stage']}"]
    if sel.get("deploy_reason"):
        lines.append(f"- deploy: {sel['deploy_reason']}")
    s = sel.get("selected")
    best = sel.get("best_candidate")
    if s:
        lines += ["", "## Selected", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {s.get(k)} |" for k in SELECTED_FIELDS]
    elif best:
        lines += ["", f"## Best candidate (not deployable: {'; '.join(sel.get('best_candidate_reasons') or [])})",
                  "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {best.get(k)} |" for k in SELECTED_FIELDS]
    else:
        lines += ["", "**No deployable candidate.** Nothing goes to paper from this run."]
    if sel.get("score_v1_definition"):
        lines += ["", f"_{sel['score_v1_definition']}_"]
    wf, ov = sel.get("walk_forward"), sel.get("overfitting") or {}
    if wf:
        lines += ["", "## Walk-forward (out-of-sample)", "",
                  f"{wf['folds']} {wf.get('scheme')} folds: median OOS daily return "
                  f"{_num(wf.get('wf_median_oos_daily_return'), '.6f')}, efficiency {_num(wf.get('efficiency'), '.2f')}, "
                  f"stitched OOS return {_num(wf.get('oos_total_return'), '+.2%')}; gate "
                  f"{'passed' if wf.get('passed') else 'failed: ' + str(wf.get('reason'))}"]
    if ov:
        lines += ["", "## Overfitting", "", f"PBO (CSCV) {_num(ov.get('pbo'), '.2f')} (max {ov.get('max_pbo')}); "
                  f"deflated Sharpe {_num(ov.get('deflated_sharpe'), '.3f')} (min {ov.get('min_deflated_sharpe')}) "
                  f"given {ov.get('n_trials')} candidates tried"]
    if sel.get("not_deployable"):
        lines += ["", "## Not deployable", ""]
        lines += [f"- `{n['config_id'][:12] if n['config_id'] else '?'}`: {'; '.join(n['reasons'])}"
                  for n in sel["not_deployable"]]
    lines += ["", "## Evidence", ""] + [f"- {k}: `{v}`" for k, v in sorted(sel["evidence_bundle_paths"].items())]
    return "\n".join(lines) + "\n"


def _num(x: Any, spec: str) -> str:
    return "-" if not isinstance(x, (int, float)) or isinstance(x, bool) else format(x, spec)


def write_selection(sel: dict[str, Any]) -> None:
    """JSON last, so a reader that sees selection.json also finds its .md beside it."""
    paths = sel["evidence_bundle_paths"]
    write_text_atomic(paths["selection_md"], render_selection_md(sel))
    write_json_atomic(paths["selection_json"], sel)
