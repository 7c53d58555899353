"""The selection hard gate, run as operators run it (a subprocess on real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_promotion_fixtures import make_run_dir

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "scripts" / "validate_factory_selection_gate.py"


def run_gate(sel: Path, stage: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VALIDATOR), "--selection-json", str(sel), "--stage", stage],
                          capture_output=True, text=True, timeout=60)


def summary(sel: Path, stage: str) -> dict:
    return json.loads((sel.parent / f"selection_gate_summary_{stage}.json").read_text())


def test_valid_selection_passes_and_writes_summary(tmp_path):
    sel = make_run_dir(tmp_path / "artifacts", "r1_smoke")
    res = run_gate(sel, "smoke")
    assert res.returncode == 0, res.stderr
    s = summary(sel, "smoke")
    assert s["ok"] is True and s["failed_checks"] == [] and s["checks_total"] >= 30
    assert s["config_id"] == "ab" * 32


@pytest.mark.parametrize("tamper, expected", [
    ("missing_proof", ["selected.replay_equivalence_report_path exists", "selected.replay_equivalence_report_path inside run_dir"]),
    ("status_fail", ["selected.replay_equivalence_status == pass", "run_metadata replay_equivalence_status matches"]),
    ("proof_outside", ["selected.replay_report_path inside run_dir"]),
    ("not_verified", ["selected.canonical_cpu_verified == true"]),
    ("bad_count", ["selected.replay_equivalence_count int >= 0"]),
    ("unknown_config", ["selected.config_id in run_metadata.candidate_configs"]),
])
def test_tampered_selection_lists_every_failed_check(tmp_path, tamper, expected):
    sel = make_run_dir(tmp_path / "artifacts", "r2_smoke", tamper=tamper)
    res = run_gate(sel, "smoke")
    assert res.returncode == 1
    failed_names = [c["name"] for c in summary(sel, "smoke")["checks"] if not c["ok"]]
    assert failed_names == expected
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("FAIL ")]
    assert len(lines) == len(expected)
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("tamper, smoke_ok, real_failed", [
    ("no_walk_forward", False, ["walk_forward evidence present"]),
    ("wf_failed", True, ["walk_forward passed out of sample"]),
    ("overfit", True, ["overfitting.pbo <= max_pbo", "overfitting.deflated_sharpe >= min"]),
    ("synthetic", True, ["real stage not on synthetic data"]),
])
def test_walk_forward_and_overfitting_evidence(tmp_path, tamper, smoke_ok, real_failed):
    """dry/smoke need the evidence written; real needs it passed, on market data."""
    sel = make_run_dir(tmp_path / "a", f"ev_{tamper}", tamper=tamper)
    assert (run_gate(sel, "smoke").returncode == 0) is smoke_ok
    res = run_gate(sel, "real")
    assert res.returncode == 1
    failed = [c["name"] for c in summary(sel, "real")["checks"] if not c["ok"]]
    assert failed == ["deploy_stage set and not pending", "promotion_stage set and not pending", *real_failed] \
        or failed == real_failed, failed


def test_advisory_best_candidate_passes_smoke_but_never_real(tmp_path):
    sel = make_run_dir(tmp_path / "a", "adv_smoke", tamper="advisory_best")
    res = run_gate(sel, "smoke")
    assert res.returncode == 0, res.stderr
    assert summary(sel, "smoke")["candidate"] == "best_candidate"
    real = run_gate(sel, "real")
    assert real.returncode == 1 and "selection_stage is 'best_candidate_not_deployable'" in real.stderr


def test_stage_values_differ_between_smoke_and_real(tmp_path):
    deployed = make_run_dir(tmp_path / "a1", "r3_real", no_deploy=False)
    assert run_gate(deployed, "real").returncode == 0
    res = run_gate(deployed, "smoke")
    assert res.returncode == 1
    assert "deploy_stage is 'deployed'" in res.stderr and "promotion_stage is 'promoted'" in res.stderr
    pending = make_run_dir(tmp_path / "a2", "r4_real", no_deploy=False, tamper="pending")
    res = run_gate(pending, "real")
    assert res.returncode == 1 and "deploy_stage is 'pending'" in res.stderr


def test_several_tampers_are_all_listed(tmp_path):
    sel = make_run_dir(tmp_path / "artifacts", "r5_smoke")
    data = json.loads(sel.read_text())
    data["selected"]["schema_version"] = 2
    data["selected"]["candidate_mode"] = False
    data["selected"]["sweep_stage"] = ""
    del data["promotion_stage"]
    sel.write_text(json.dumps(data))
    res = run_gate(sel, "dry")
    assert res.returncode == 1
    names = {c["name"] for c in summary(sel, "dry")["checks"] if not c["ok"]}
    assert names == {"promotion_stage present", "promotion_stage == skipped", "selected.sweep_stage set",
                     "selected.candidate_mode == true", "selected.schema_version == 1"}


def test_unreadable_input_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "selection.json"
    bad.write_text("{not json")
    res = run_gate(bad, "smoke")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and str(bad) in res.stderr
    res = run_gate(tmp_path / "absent.json", "smoke")
    assert res.returncode == 2 and "cannot read" in res.stderr


def _edit_selected(sel: Path, **fields) -> None:
    data = json.loads(sel.read_text())
    data["selected"].update(fields)
    sel.write_text(json.dumps(data))


def test_real_stage_requires_an_enforced_gate_without_failures(tmp_path):
    sel = make_run_dir(tmp_path / "a", "r_real", no_deploy=False)
    _edit_selected(sel, gate_mode="enforce", gate_failures=[])
    assert run_gate(sel, "real").returncode == 0
    _edit_selected(sel, gate_mode="advisory", gate_failures=["walk_forward: oos pnl < 0", "slippage: 20 bps"])
    res = run_gate(sel, "real")
    assert res.returncode == 1
    assert "selected.gate_mode is 'advisory', expected 'enforce' for stage real" in res.stderr
    assert "selected.gate_failures: walk_forward: oos pnl < 0; slippage: 20 bps" in res.stderr
    assert run_gate(sel, "smoke").returncode == 1  # smoke fails on the deploy stage only, not on the gates
    assert [c["name"] for c in summary(sel, "smoke")["checks"] if not c["ok"]] == [
        "deploy_stage in ('no_deploy', 'skipped')", "promotion_stage == skipped"]


def test_runs_with_a_plain_system_python(tmp_path):
    """The runbook calls `python3 scripts/validate_factory_selection_gate.py` outside the venv: no
    third-party import, and argparse's usage errors exit 2."""
    import shutil

    py = next((p for p in ("/usr/bin/python3", shutil.which("python3")) if p and Path(p).exists()), sys.executable)
    sel = make_run_dir(tmp_path / "a", "r_sys")
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    res = subprocess.run([py, "-S", str(VALIDATOR), "--selection-json", str(sel), "--stage", "smoke"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "selection gate OK" in res.stdout
    bad = subprocess.run([py, "-S", str(VALIDATOR), "--selection-json", str(sel), "--stage", "weekly"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "invalid choice: 'weekly'" in bad.stderr and "Traceback" not in bad.stderr
