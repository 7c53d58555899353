#!/usr/bin/env python3
"""Hard gate on a factory run's reports/selection.json before anything is promoted.

The factory can only claim a candidate is deployable; this script re-checks that claim from the
files on disk (runbook §7 "Hard gate acceptance"), so a tampered or half-written run cannot slip
through. Every failed check is listed (one per line) so an operator fixes all of them at once.
Exit 0 pass, 1 fail, 2 unreadable input or bad usage. Writes selection_gate_summary_<stage>.json
beside the selection.json either way.

Standard library only: the runbook calls it with a plain system `python3`, outside the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

SELECTION_VERSION = "factory_selection_v1"
TOP_KEYS = ("version", "run_id", "selection_stage", "deploy_stage", "promotion_stage",
            "evidence_bundle_paths", "selected")
BUNDLE_KEYS = ("run_dir", "run_metadata_json", "report_json", "report_md", "selection_json", "selection_md")
STAGE_STRINGS = ("pipeline_stage", "sweep_stage", "replay_stage", "validation_gate")
SELECTED_KEYS = ("config_id", "config_path", *STAGE_STRINGS, "canonical_cpu_verified", "candidate_mode",
                 "schema_version", "replay_report_path", "replay_equivalence_report_path",
                 "replay_equivalence_status", "replay_equivalence_count")
PROOF_KEYS = ("replay_report_path", "replay_equivalence_report_path")
NO_DEPLOY_DEPLOY_STAGES = ("no_deploy", "skipped")
# An advisory (dry/smoke) run whose best candidate failed a gate reports it as best_candidate, never
# as selected; those stages prove the pipeline, so they accept it. A real stage needs "selected".
ADVISORY_STAGE = "best_candidate_not_deployable"


class Stage(StrEnum):
    dry = "dry"
    smoke = "smoke"
    real = "real"


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Temp file in the same directory, fsync, rename: a reader never sees half a summary."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class Checks:
    """Collects named pass/fail results; the summary JSON and the stderr listing both come from it."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append({"name": name, "ok": bool(ok), "detail": "" if ok else detail})
        return bool(ok)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.items if not c["ok"]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve(raw: Any, run_dir: Path | None) -> Path | None:
    """Relative paths are taken from the cwd (the factory writes repo-relative paths), then run_dir."""
    if not isinstance(raw, str) or not raw:
        return None
    p = Path(raw)
    if p.is_absolute() or p.exists() or run_dir is None:
        return p
    return run_dir / p


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _same_file(a: Any, b: Any, run_dir: Path | None) -> bool:
    pa, pb = _resolve(a, run_dir), _resolve(b, run_dir)
    return pa is not None and pb is not None and pa.resolve() == pb.resolve()


def candidate_key(sel: dict, stage: Stage) -> str:
    """Which object carries the candidate: "selected", or "best_candidate" for an advisory dry/smoke run."""
    if stage != Stage.real and sel.get("selection_stage") == ADVISORY_STAGE and isinstance(sel.get("best_candidate"), dict):
        return "best_candidate"
    return "selected"


def check_stage_values(sel: dict, stage: Stage, checks: Checks) -> None:
    allowed = ("selected",) if stage == Stage.real else ("selected", ADVISORY_STAGE)
    checks.add(f"selection_stage in {allowed}", sel.get("selection_stage") in allowed,
               f"selection_stage is {sel.get('selection_stage')!r}, expected {' or '.join(map(repr, allowed))} "
               f"for stage {stage.value}")
    deploy, promo = sel.get("deploy_stage"), sel.get("promotion_stage")
    if stage in (Stage.dry, Stage.smoke):
        checks.add(f"deploy_stage in {NO_DEPLOY_DEPLOY_STAGES}", deploy in NO_DEPLOY_DEPLOY_STAGES,
                   f"deploy_stage is {deploy!r}, expected no_deploy or skipped for stage {stage.value}")
        checks.add("promotion_stage == skipped", promo == "skipped",
                   f"promotion_stage is {promo!r}, expected 'skipped' for stage {stage.value}")
    else:
        for key, value in (("deploy_stage", deploy), ("promotion_stage", promo)):
            checks.add(f"{key} set and not pending", isinstance(value, str) and value not in ("", "pending"),
                       f"{key} is {value!r}; a real stage must not leave it pending or empty")


def _unit(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= float(x) <= 1.0


def check_evidence(sel: dict, cand: dict | None, stage: Stage, checks: Checks) -> None:
    """Walk-forward and overfitting evidence for the gates the candidate ran; a real stage needs them
    passed, and never runs on the synthetic demo data."""
    gates = str((cand or {}).get("validation_gate") or "").split("+")
    if "walk_forward" in gates:
        wf = sel.get("walk_forward")
        folds = wf.get("folds") if isinstance(wf, dict) else None
        if checks.add("walk_forward evidence present", _is_int(folds) and folds >= 1,
                      f"walk_forward is {wf!r}: expected an object with folds >= 1 (walk-forward optimisation)") \
                and stage == Stage.real:
            checks.add("walk_forward passed out of sample", wf.get("passed") is True,
                       f"walk_forward did not pass: {wf.get('reason')}")
    if "overfitting" in gates:
        ov = sel.get("overfitting") if isinstance(sel.get("overfitting"), dict) else {}
        pbo, dsr = ov.get("pbo"), ov.get("deflated_sharpe")
        ok = checks.add("overfitting.pbo in [0, 1]", _unit(pbo), f"overfitting.pbo is {pbo!r}, expected a number in [0, 1]")
        ok &= checks.add("overfitting.deflated_sharpe in [0, 1]", _unit(dsr),
                         f"overfitting.deflated_sharpe is {dsr!r}, expected a number in [0, 1]")
        if ok and stage == Stage.real:
            max_pbo, min_dsr = ov.get("max_pbo", 0.5), ov.get("min_deflated_sharpe", 0.95)
            checks.add("overfitting.pbo <= max_pbo", pbo <= max_pbo, f"overfitting.pbo {pbo} > max_pbo {max_pbo}")
            checks.add("overfitting.deflated_sharpe >= min", dsr >= min_dsr,
                       f"overfitting.deflated_sharpe {dsr} < min_deflated_sharpe {min_dsr}")
    if stage == Stage.real:
        data = sel.get("data") if isinstance(sel.get("data"), dict) else {}
        checks.add("real stage not on synthetic data", data.get("synthetic") is not True,
                   "data.synthetic is true: a real stage never runs on the SYNTHETIC DEMO DATA")


def check_bundle(sel: dict, selection_json: Path, checks: Checks) -> Path | None:
    bundle = sel.get("evidence_bundle_paths")
    if not checks.add("evidence_bundle_paths is an object", isinstance(bundle, dict),
                      "evidence_bundle_paths missing or not an object"):
        return None
    run_dir = _resolve(bundle.get("run_dir"), None)
    for key in BUNDLE_KEYS:
        p = _resolve(bundle.get(key), run_dir)
        checks.add(f"evidence_bundle_paths.{key} exists", p is not None and p.exists(),
                   f"evidence_bundle_paths.{key} = {bundle.get(key)!r} does not exist")
    checks.add("evidence_bundle_paths.selection_json is this file",
               _same_file(bundle.get("selection_json"), str(selection_json), run_dir),
               f"evidence_bundle_paths.selection_json = {bundle.get('selection_json')!r} is not {selection_json}")
    return run_dir if run_dir is not None and run_dir.is_dir() else None


def check_selected(sel: dict, run_dir: Path | None, checks: Checks, stage: Stage = Stage.smoke) -> dict | None:
    key = candidate_key(sel, stage)
    selected = sel.get(key)
    if not checks.add(f"{key} is an object", isinstance(selected, dict), f"{key} missing or not an object"):
        return None
    return _check_candidate(selected, key, run_dir, checks, stage)


def _check_candidate(selected: dict, name: str, run_dir: Path | None, checks: Checks, stage: Stage) -> dict:
    for key in SELECTED_KEYS:
        checks.add(f"{name}.{key} present", key in selected, f"{name}.{key} missing")
    for key in STAGE_STRINGS:
        v = selected.get(key)
        checks.add(f"{name}.{key} set", isinstance(v, str) and v != "", f"{name}.{key} is {v!r}, expected a non-empty string")
    checks.add(f"{name}.canonical_cpu_verified == true", selected.get("canonical_cpu_verified") is True,
               f"{name}.canonical_cpu_verified is {selected.get('canonical_cpu_verified')!r}, expected true")
    checks.add(f"{name}.candidate_mode == true", selected.get("candidate_mode") is True,
               f"{name}.candidate_mode is {selected.get('candidate_mode')!r}, expected true")
    sv = selected.get("schema_version")
    checks.add(f"{name}.schema_version == 1", _is_int(sv) and sv == 1, f"{name}.schema_version is {sv!r}, expected 1")
    st = selected.get("replay_equivalence_status")
    checks.add(f"{name}.replay_equivalence_status == pass", st == "pass",
               f"{name}.replay_equivalence_status is {st!r}, expected 'pass'")
    cnt = selected.get("replay_equivalence_count")
    checks.add(f"{name}.replay_equivalence_count int >= 0", _is_int(cnt) and cnt >= 0,
               f"{name}.replay_equivalence_count is {cnt!r}, expected an integer >= 0")
    checks.add(f"{name} not rejected", selected.get("rejected") in (None, False),
               f"{name}.rejected is {selected.get('rejected')!r} ({selected.get('reject_reason')!r})")
    if stage == Stage.real:  # a real stage may only select from an enforcing run whose gates passed
        if "gate_mode" in selected:
            checks.add("selected.gate_mode == enforce", selected.get("gate_mode") == "enforce",
                       f"selected.gate_mode is {selected.get('gate_mode')!r}, expected 'enforce' for stage real")
        failures = selected.get("gate_failures")
        shown = "; ".join(map(str, failures)) if isinstance(failures, list) else repr(failures)
        checks.add("selected.gate_failures empty", not failures, f"selected.gate_failures: {shown}")
    for key in PROOF_KEYS:
        p = _resolve(selected.get(key), run_dir)
        exists = p is not None and p.is_file()
        checks.add(f"{name}.{key} exists", exists, f"{name}.{key} = {selected.get(key)!r} does not exist")
        inside = exists and run_dir is not None and _inside(p, run_dir)
        checks.add(f"{name}.{key} inside run_dir", inside,
                   f"{name}.{key} = {selected.get(key)!r} is not a file inside run_dir {run_dir}")
    return selected


def check_run_metadata(sel: dict, selected: dict | None, run_dir: Path | None, checks: Checks) -> None:
    bundle = sel.get("evidence_bundle_paths") if isinstance(sel.get("evidence_bundle_paths"), dict) else {}
    path = _resolve(bundle.get("run_metadata_json"), run_dir)
    try:
        meta = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, ValueError) as exc:
        meta = None
        detail = f"run_metadata_json {path} unreadable: {exc}"
    else:
        detail = f"run_metadata_json {bundle.get('run_metadata_json')!r} missing"
    if not checks.add("run_metadata.json readable", isinstance(meta, dict), detail):
        return
    checks.add("run_metadata.run_id matches", meta.get("run_id") == sel.get("run_id"),
               f"run_metadata.run_id {meta.get('run_id')!r} != selection run_id {sel.get('run_id')!r}")
    if selected is None:
        return
    cid = selected.get("config_id")
    rows = meta.get("candidate_configs") if isinstance(meta.get("candidate_configs"), list) else []
    row = next((r for r in rows if isinstance(r, dict) and r.get("config_id") == cid and cid), None)
    if not checks.add("selected.config_id in run_metadata.candidate_configs", row is not None,
                      f"config_id {cid!r} not found in run_metadata.candidate_configs ({len(rows)} rows)"):
        return
    for key in PROOF_KEYS:
        if row.get(key):
            checks.add(f"run_metadata {key} matches", _same_file(row.get(key), selected.get(key), run_dir),
                       f"run_metadata.candidate_configs[{cid[:12]}].{key} = {row.get(key)!r} != selected.{key} = {selected.get(key)!r}")
    if row.get("replay_equivalence_status") is not None:
        checks.add("run_metadata replay_equivalence_status matches",
                   row.get("replay_equivalence_status") == selected.get("replay_equivalence_status"),
                   f"run_metadata status {row.get('replay_equivalence_status')!r} != selected {selected.get('replay_equivalence_status')!r}")


def validate_selection(sel: dict, selection_json: Path, stage: Stage) -> Checks:
    checks = Checks()
    for key in TOP_KEYS:
        checks.add(f"{key} present", key in sel, f"{key} missing from selection.json")
    checks.add("version == factory_selection_v1", sel.get("version") == SELECTION_VERSION,
               f"version is {sel.get('version')!r}, expected {SELECTION_VERSION!r}")
    check_stage_values(sel, stage, checks)
    run_dir = check_bundle(sel, selection_json, checks)
    selected = check_selected(sel, run_dir, checks, stage)
    check_run_metadata(sel, selected, run_dir, checks)
    best = sel.get("best_candidate") if isinstance(sel.get("best_candidate"), dict) else None
    check_evidence(sel, selected or best, stage, checks)  # with nothing selected, still say what failed
    return checks


def summary_of(sel: dict, selection_json: Path, stage: Stage, checks: Checks) -> dict:
    key = candidate_key(sel, stage)
    selected = sel.get(key) if isinstance(sel.get(key), dict) else {}
    return {
        "version": "selection_gate_summary_v1",
        "generated_at_ms": int(time.time() * 1000),
        "stage": stage.value,
        "selection_json": str(selection_json),
        "run_id": sel.get("run_id"),
        "config_id": selected.get("config_id"), "candidate": key,
        "ok": not checks.failed,
        "checks_total": len(checks.items),
        "failed_checks": [c["detail"] for c in checks.failed],
        "checks": checks.items,
    }


def main(argv: list[str] | None = None) -> int:
    """Validate a factory selection.json against the promotion hard gate (exit 0 pass, 1 fail, 2 unreadable)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selection-json", required=True, type=Path, help="reports/selection.json of a factory run")
    parser.add_argument("--stage", required=True, choices=[s.value for s in Stage],
                        help="dry | smoke | real: which stage values are expected")
    args = parser.parse_args(argv)  # bad usage: argparse prints usage and exits 2
    selection_json, stage = args.selection_json, Stage(args.stage)
    try:
        sel = json.loads(selection_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {selection_json}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(sel, dict):
        print(f"error: {selection_json}: top level is not a JSON object", file=sys.stderr)
        return 2
    checks = validate_selection(sel, selection_json, stage)
    out = selection_json.parent / f"selection_gate_summary_{stage.value}.json"
    try:
        write_json_atomic(out, summary_of(sel, selection_json, stage, checks))
    except OSError as exc:
        print(f"error: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    if checks.failed:
        for c in checks.failed:
            print(f"FAIL {c['name']}: {c['detail']}", file=sys.stderr)
        print(f"selection gate FAILED ({len(checks.failed)}/{len(checks.items)} checks) stage={stage.value} summary={out}")
        return 1
    print(f"selection gate OK ({len(checks.items)} checks) stage={stage.value} summary={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
