"""run_factory_stage_gate.sh end to end with a stand-in factory (tests/test_promotion_fixtures.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_factory_stage_gate.sh"
FAKE = f"{sys.executable} {REPO / 'tests' / 'test_promotion_fixtures.py'}"


def run_gate(tmp_path: Path, *extra: str, tamper: str = "", allow_real: str | None = None,
             data: tuple[str, ...] = ("--candles-db", "data/candles_1h.db")):
    env = {k: v for k, v in os.environ.items() if k not in ("FAKE_FACTORY_TAMPER", "ALLOW_REAL_DEPLOY")}
    if tamper:
        env["FAKE_FACTORY_TAMPER"] = tamper
    if allow_real is not None:
        env["ALLOW_REAL_DEPLOY"] = allow_real
    argv = ["bash", str(SCRIPT), "--run-prefix", "gate", "--dry-profile", "smoke", "--smoke-profile", "smoke",
            "--real-profile", "daily", "--config", "config/strategy_overrides.yaml", "--artifacts-dir", "art",
            "--factory-cmd", FAKE, "--python", sys.executable, *data, *extra]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def manifest(tmp_path: Path) -> list[dict]:
    files = sorted((tmp_path / "art").glob("gate_*.evidence.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def factory_calls(tmp_path: Path) -> list[list[str]]:
    lines = (tmp_path / "art" / "fake_factory_calls.jsonl").read_text().splitlines()
    return [json.loads(ln)["argv"] for ln in lines]


def test_three_stages_pass_and_manifest_lists_them(tmp_path):
    res = run_gate(tmp_path, "--", "--seed", "7")
    assert res.returncode == 0, res.stderr
    entries = manifest(tmp_path)
    assert [e["stage"] for e in entries] == ["dry", "smoke", "real"]
    assert [e["profile"] for e in entries] == ["smoke", "smoke", "daily"]
    for e in entries:
        assert e["run_id"].startswith(f"gate_{e['stage']}_")
        assert e["selection_stage"] == "selected" and e["deploy_stage"] == "no_deploy"
        assert e["promotion_stage"] == "skipped" and e["gate_ok"] is True
        assert e["selected"]["canonical_cpu_verified"] is True
        assert e["selected"]["replay_equivalence_status"] == "pass"
        assert Path(tmp_path, e["selection_gate_summary_json"]).is_file()
        assert set(e["evidence_bundle_paths"]) >= {"run_dir", "run_metadata_json", "selection_json"}
    calls = factory_calls(tmp_path)
    assert all("--no-deploy" in c and c[-2:] == ["--seed", "7"] for c in calls)
    assert calls[0][:3] == ["run", "--profile", "smoke"]


def test_real_deploy_only_when_allowed(tmp_path):
    res = run_gate(tmp_path, "--allow-real-deploy")
    assert res.returncode == 0, res.stderr
    calls = factory_calls(tmp_path)
    assert ["--no-deploy" in c for c in calls] == [True, True, False]
    assert manifest(tmp_path)[2]["deploy_stage"] == "deployed"


def test_env_allows_real_deploy(tmp_path):
    assert run_gate(tmp_path, allow_real="1").returncode == 0
    assert ["--no-deploy" in c for c in factory_calls(tmp_path)] == [True, True, False]


def test_tampered_smoke_stage_stops_the_gate(tmp_path):
    res = run_gate(tmp_path, tamper="smoke:proof_outside")
    assert res.returncode == 1
    assert "stage gate FAILED at stage smoke" in res.stderr
    assert "selected.replay_report_path" in res.stderr
    entries = manifest(tmp_path)
    assert [(e["stage"], e["gate_ok"]) for e in entries] == [("dry", True), ("smoke", False)]
    assert len(factory_calls(tmp_path)) == 2  # real never ran


def test_factory_crash_fails_the_stage(tmp_path):
    res = run_gate(tmp_path, tamper="dry:crash")
    assert res.returncode == 1 and "factory exited 3" in res.stderr
    entries = manifest(tmp_path)
    assert entries[0]["factory_exit_code"] == 3 and entries[0]["selection_json"] is None


def test_bad_arguments_print_usage(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), "--dry-profile", "smoke"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and "--run-prefix is required" in res.stderr and "usage:" in res.stderr
    res = subprocess.run(["bash", str(SCRIPT), "--run-prefix"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and "--run-prefix needs a value" in res.stderr


def test_data_options_reach_every_stage_so_the_daily_real_stage_runs(tmp_path):
    """The runbook's command without --candles-db stops at the real (daily) stage, as the factory
    requires it there; --candles-db / --funding-db go to every stage, next to the extras after --."""
    res = run_gate(tmp_path, data=())
    assert res.returncode == 1 and "stage gate FAILED at stage real" in res.stderr
    assert "--candles-db is required for profile 'daily'" in res.stderr
    (tmp_path / "art" / "fake_factory_calls.jsonl").unlink()
    for f in (tmp_path / "art").glob("gate_*.evidence.json"):
        f.unlink()
    res = run_gate(tmp_path, "--", "--seed", "7",
                   data=("--candles-db", "d/candles_1h.db,d/partitions", "--funding-db", "d/funding.db"))
    assert res.returncode == 0, res.stderr
    calls = factory_calls(tmp_path)
    assert len(calls) == 3
    for c in calls:
        i = c.index("--candles-db")
        assert c[i + 1] == "d/candles_1h.db,d/partitions"
        assert c[c.index("--funding-db") + 1] == "d/funding.db" and c[-2:] == ["--seed", "7"]
    usage = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert "--candles-db PATHS" in usage.stdout and "--funding-db PATH" in usage.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--run-prefix", "p", "--candles-db"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--candles-db needs a value" in bad.stderr
