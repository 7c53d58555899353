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
)


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


def rank_candidates(items: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """Deployable items, best first: score_v1, then total_pnl, then config_id (a stable tie-break)."""
    ok = [i for i in items if is_deployable(i, run_dir)]
    return sorted(ok, key=lambda i: (-_sortable(i.get("score_v1")), -_sortable(i.get("total_pnl")),
                                     str(i.get("config_id"))))


def build_selection(
    items: list[dict[str, Any]], *, run_id: str, run_dir: Path, bundle: dict[str, str], no_deploy: bool,
) -> dict[str, Any]:
    ranked = rank_candidates(items, run_dir)
    selected = {k: ranked[0].get(k) for k in SELECTED_FIELDS} if ranked else None
    if no_deploy:
        deploy_stage, promotion_stage = "no_deploy", "skipped"
    elif not ranked:
        deploy_stage, promotion_stage = "skipped", "no_passing_candidate"
    else:
        deploy_stage, promotion_stage = "pending", "pending"
    return {
        "version": SELECTION_VERSION, "run_id": run_id,
        "selection_stage": "selected" if ranked else "none_deployable",
        "deploy_stage": deploy_stage, "promotion_stage": promotion_stage,
        "evidence_bundle_paths": bundle, "selected": selected,
        "selected_candidates": [{k: i.get(k) for k in SELECTED_FIELDS} for i in ranked],
        "not_deployable": [
            {"config_id": i.get("config_id"), "reasons": why_not_deployable(i, run_dir)}
            for i in items if not is_deployable(i, run_dir)
        ],
        "deployments": [],
    }


def render_selection_md(sel: dict[str, Any]) -> str:
    lines = [f"# Factory selection — run {sel['run_id']}", "",
             f"- selection_stage: **{sel['selection_stage']}**", f"- deploy_stage: {sel['deploy_stage']}",
             f"- promotion_stage: {sel['promotion_stage']}"]
    if sel.get("deploy_reason"):
        lines.append(f"- deploy: {sel['deploy_reason']}")
    s = sel.get("selected")
    if s:
        lines += ["", "## Selected", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {s.get(k)} |" for k in SELECTED_FIELDS]
    else:
        lines += ["", "**No deployable candidate.** Nothing goes to paper from this run."]
    if sel.get("not_deployable"):
        lines += ["", "## Not deployable", ""]
        lines += [f"- `{n['config_id'][:12] if n['config_id'] else '?'}`: {'; '.join(n['reasons'])}"
                  for n in sel["not_deployable"]]
    lines += ["", "## Evidence", ""] + [f"- {k}: `{v}`" for k, v in sorted(sel["evidence_bundle_paths"].items())]
    return "\n".join(lines) + "\n"


def write_selection(sel: dict[str, Any]) -> None:
    """JSON last, so a reader that sees selection.json also finds its .md beside it."""
    paths = sel["evidence_bundle_paths"]
    write_text_atomic(paths["selection_md"], render_selection_md(sel))
    write_json_atomic(paths["selection_json"], sel)
