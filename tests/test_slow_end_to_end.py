"""Whole-product runs as an operator types them (slow: `pytest -m slow`).

1. The README's main job: `factory run --profile smoke --no-deploy` on the bundled demo data with
   every default, then the selection hard gate on its selection.json.
2. The runbook's stage gate with the REAL factory (dry -> smoke -> real), the real stage's TPE
   scaled down to fit a 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("AI_QUANT_STRATEGY_MODE", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def checkout(tmp_path) -> Path:
    """A copy of the repo's runnable parts, so artifacts land in a temp dir."""
    dst = tmp_path / "repo"
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".venv", ".git", "artifacts", "__pycache__", "*.db*"))
    return dst


def test_readme_main_job_smoke_factory_on_demo_data(checkout):
    proc = run([str(BIN / "factory"), "run", "--profile", "smoke", "--no-deploy"], checkout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    selections = list((checkout / "artifacts").glob("*/run_*/reports/selection.json"))
    assert len(selections) == 1
    sel = json.loads(selections[0].read_text())
    # demo data is labelled synthetic; an advisory best that failed a gate is never called "selected"
    assert "SYNTHETIC DEMO DATA" in proc.stdout and sel["data"]["synthetic"] is True
    assert sel["selection_stage"] in ("selected", "best_candidate_not_deployable")
    cand = sel["selected"] or sel["best_candidate"]
    if sel["selected"] is None:
        assert "best candidate (not deployable: " in proc.stdout
    assert cand["replay_equivalence_status"] == "pass"
    assert cand["replay_equivalence_count"] > 0
    assert sel["walk_forward"]["folds"] == 2 and 0 <= sel["overfitting"]["pbo"] <= 1
    gate = run([sys.executable, "scripts/validate_factory_selection_gate.py", "--selection-json",
                str(selections[0]), "--stage", "smoke"], checkout)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_stage_gate_with_the_real_factory(checkout):
    demo = checkout / "artifacts" / "demo_data"
    from marketdata.demo import ensure_demo_data

    paths = ensure_demo_data(demo)
    proc = run(["bash", "scripts/run_factory_stage_gate.sh", "--run-prefix", "e2e", "--dry-profile", "smoke",
                "--smoke-profile", "smoke", "--real-profile", "daily", "--config",
                "config/strategy_overrides.yaml.example", "--artifacts-dir", "artifacts", "--",
                "--candles-db", str(paths["candles_1h"]), "--trials", "256", "--batch", "128",
                "--neighborhood", "16"], checkout, timeout=1800)
    # dry and smoke prove the pipeline; the real stage must refuse the SYNTHETIC demo data (and
    # whatever else its walk-forward and overfitting evidence fails), listing every failed check
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage gate FAILED at stage real" in proc.stderr
    assert "FAIL real stage not on synthetic data" in proc.stderr
    manifests = list((checkout / "artifacts").glob("e2e_*.evidence.json"))
    assert len(manifests) == 1
    stages = json.loads(manifests[0].read_text())
    assert [s["stage"] for s in stages] == ["dry", "smoke", "real"]
    for s in stages[:2]:
        assert s["selection_stage"] in ("selected", "best_candidate_not_deployable") and s["gate_ok"] is True
        assert s["deploy_stage"] in ("no_deploy", "skipped") and s["promotion_stage"] == "skipped"
        assert s["synthetic_data"] is True and s["walk_forward"]["folds"] == 2
    real = stages[2]
    assert real["factory_exit_code"] == 0 and real["gate_ok"] is False
    assert real["walk_forward"]["folds"] == 4 and real["overfitting"]["n_trials"] == 256
