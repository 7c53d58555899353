"""End-to-end `factory run` on the bundled demo data (a small window) and its bad-input paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
axes:
  - path: trade.sl_atr_mult
    values: [1.5, 2.5]
  - path: trade.tp_atr_mult
    values: [4.0, 6.0]
  - path: trade.allocation_pct
    values: [0.05, 0.1]
lookback: 120
initial_balance: 10000
"""
WINDOW = ["--start", "2025-03-15", "--end", "2025-06-01", "--symbols", "BTC,ETH,SOL,BNB,XRP,DOGE,ADA,AVAX"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from marketdata.demo import ensure_demo_data

    root = tmp_path_factory.mktemp("demo")
    paths = ensure_demo_data(root / "demo_data")
    spec = root / "tiny.yaml"
    spec.write_text(SPEC)
    return {"root": root, "paths": paths, "spec": spec}


def factory(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.cli", "run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _run_dir(art: Path, run_id: str) -> Path:
    (d,) = art.glob(f"*/run_{run_id}")
    return d


def test_smoke_run_selects_a_replay_verified_candidate(demo, tmp_path):
    art = tmp_path / "artifacts"
    res = factory("--profile", "smoke", "--candles-db", str(demo["paths"]["candles_1h"]), "--funding-db",
                  str(demo["paths"]["funding"]), "--sweep-spec", str(demo["spec"]), "--shortlist", "4", "--replay", "2",
                  "--artifacts-dir", str(art), "--run-id", "e2e", "--no-deploy", "--no-progress", "--plot", *WINDOW,
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rd = _run_dir(art, "e2e")
    html = rd / "reports" / "report.html"  # beside report.md; opened in Chromium by tests/test_plots.py
    assert html.is_file() and "plotly" in html.read_text()[:200_000].lower()
    assert len(list((rd / "replays").glob("*.replay.html"))) == 2  # --plot: one page per replayed candidate
    sel = json.loads((rd / "reports" / "selection.json").read_text())
    # demo data: labelled synthetic everywhere; the advisory best failed gates, so it is never "selected"
    assert sel["selection_stage"] == "best_candidate_not_deployable" and sel["selected"] is None
    assert sel["best_candidate"]["replay_equivalence_status"] == "pass" and sel["best_candidate_reasons"]
    assert "best candidate (not deployable: " in res.stdout and "SYNTHETIC DEMO DATA" in res.stdout
    assert "score_v1 = walk-forward median out-of-sample daily return" in res.stdout
    assert sel["data"]["synthetic"] is True
    assert "SYNTHETIC DEMO DATA" in (rd / "reports" / "report.md").read_text()
    assert "SYNTHETIC DEMO DATA" in (rd / "reports" / "selection.md").read_text()
    assert (sel["deploy_stage"], sel["promotion_stage"]) == ("no_deploy", "skipped")
    report = json.loads((rd / "reports" / "report.json").read_text())
    wf = report["walk_forward"]
    assert len(wf["folds"]) == 2 and wf["stitched_oos_equity"] and "efficiency" in wf
    for fold in wf["folds"]:  # the fold's sweep ended (embargo) before its out-of-sample window
        assert fold["is_end_ms"] < fold["oos_start_ms"] and fold["out_of_sample"]["days"] > 0
    assert 0.0 <= report["overfitting"]["pbo"] <= 1.0 and report["overfitting"]["n_trials"] == 8
    assert all(0.0 <= i["deflated_sharpe"] <= 1.0 for i in report["items"])
    assert sel["overfitting"]["pbo"] == report["overfitting"]["pbo"]
    assert len(report["items"]) == 2
    for item in report["items"]:
        assert item["replay_equivalence_status"] == "pass", item["replay_equivalence_diffs"]
        assert item["replay_equivalence_count"] > 7  # 7 metrics + every traced trade
        assert item["canonical_cpu_verified"] is True and item["replay_stage"] == "cpu_replay"
        eq = json.loads(Path(item["replay_equivalence_report_path"]).read_text())
        assert eq["mode"] == "trace" and eq["diffs"] == []
        for gate in ("walk_forward", "overfitting", "stability", "slippage", "concentration", "sensitivity",
                     "monte_carlo", "min_trades"):
            assert (rd / "gates" / gate / Path(item["replay_report_path"]).name.split(".")[0] / "summary.json").is_file()
    meta = json.loads((rd / "run_metadata.json").read_text())
    assert meta["status"] == "ok" and meta["sweep"]["candidates_evaluated"] == 8
    assert meta["sweep"]["backend"] in ("cpu", "cuda")
    assert all(s["exit_code"] == 0 for s in meta["steps"])
    rows = (rd / "sweeps" / "sweep_results.jsonl").read_text().splitlines()
    assert len(rows) == 8 and len((rd / "sweeps" / "sweep_candidates.jsonl").read_text().splitlines()) == 4
    from strategy.config import load_config

    for cc in meta["candidate_configs"]:
        assert load_config(cc["path"]).config_id == cc["config_id"]
    validator = REPO / "scripts" / "validate_factory_selection_gate.py"
    if validator.exists():
        out = subprocess.run([sys.executable, str(validator), "--selection-json", str(rd / "reports" / "selection.json"),
                              "--stage", "smoke"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    again = factory("--profile", "smoke", "--artifacts-dir", str(art), "--run-id", "e2e", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1


def test_enforced_tpe_run_obeys_a_missing_release_blocker(demo, tmp_path):
    art = tmp_path / "artifacts"
    res = factory("--profile", "daily", "--candles-db", str(demo["paths"]["candles_1h"]), "--sweep-spec",
                  str(demo["spec"]), "--trials", "6", "--batch", "3", "--backend", "cpu", "--shortlist", "2",
                  "--replay", "1", "--gates", "none", "--no-trace", "--artifacts-dir", str(art), "--run-id", "tpe",
                  "--deploy-target", str(tmp_path / "paper.yaml"), "--no-progress", *WINDOW, cwd=tmp_path,
                  env={"AI_QUANT_REPLAY_GATE_BLOCKER_FILE": str(tmp_path / "absent_release_blocker.json")})
    assert res.returncode == 0, res.stderr[-2000:]
    rd = _run_dir(art, "tpe")
    sel = json.loads((rd / "reports" / "selection.json").read_text())
    assert sel["selection_stage"] == "selected" and sel["selected"]["sweep_stage"] == "cpu_tpe"
    assert sel["selected"]["validation_gate"] == "replay_only"
    assert sel["deploy_stage"] == "skipped" and "release blocker" in sel["deploy_reason"]
    assert not (tmp_path / "paper.yaml").exists()
    assert "optuna-dashboard: optuna-dashboard sqlite:///" in res.stdout and "factory_tpe" in res.stdout


@pytest.mark.parametrize("args, needle, code", [
    (["--profile", "weekly"], "unknown profile 'weekly'", 2),
    (["--profile", "daily"], "--candles-db is required", 2),
    (["--profile", "smoke", "--candles-db", "/nonexistent/candles_1h.db"], "/nonexistent/candles_1h.db", 2),
    (["--profile", "smoke", "--sweep-spec", "config/sweeps/typo.yaml"], "config/sweeps/typo.yaml", 2),
    (["--profile", "smoke", "--wf-folds", "0"], "walk_forward.folds", 2),
    (["--profile", "smoke", "--wf-scheme", "sideways"], "walk_forward.scheme", 2),
])
def test_bad_input_is_one_line_and_recorded(tmp_path, args, needle, code):
    art = tmp_path / "artifacts"
    res = factory(*args, "--artifacts-dir", str(art), "--run-id", "bad", "--no-progress", cwd=tmp_path)
    assert res.returncode == code
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    metas = list(art.glob("*/run_bad/run_metadata.json"))
    if metas:  # the run dir existed: the reason is on record
        meta = json.loads(metas[0].read_text())
        assert meta["status"] == "failed" and needle.split("/")[-1] in meta["failure_reason"]


def test_sweep_that_disagrees_with_the_replay_is_caught_and_not_deployable(demo, tmp_path, monkeypatch):
    """One execution charges a different taker fee (a bug planted in the sweep only): every replayed
    candidate must fail equivalence with the fee-driven fields listed, and nothing is deployable."""
    from typer.testing import CliRunner

    import gpu.api
    from factory.cli import app
    from strategy.params import P_TAKER_FEE_BPS

    real_prepare = gpu.api.prepare

    def prepare_with_a_fee_bug(*args, **kwargs):
        prep = real_prepare(*args, **kwargs)
        prep.static.base_params[:, P_TAKER_FEE_BPS] *= 1.5
        return prep

    monkeypatch.setattr(gpu.api, "prepare", prepare_with_a_fee_bug)
    art = tmp_path / "artifacts"
    res = CliRunner().invoke(app, [
        "run", "--profile", "smoke", "--candles-db", str(demo["paths"]["candles_1h"]), "--sweep-spec",
        str(demo["spec"]), "--shortlist", "3", "--replay", "2", "--gates", "none", "--artifacts-dir", str(art),
        "--run-id", "planted_bug", "--no-deploy", "--no-progress", *WINDOW])
    assert res.exit_code == 0, res.output[-2000:]
    rd = _run_dir(art, "planted_bug")
    report = json.loads((rd / "reports" / "report.json").read_text())
    assert len(report["items"]) == 2
    for item in report["items"]:
        assert item["replay_equivalence_status"] == "fail"
        assert item["canonical_cpu_verified"] is False
        eq = json.loads(Path(item["replay_equivalence_report_path"]).read_text())
        paths = {d["path"] for d in eq["diffs"]}
        assert {"total_fees", "total_pnl", "final_balance"} <= paths, paths
    sel = json.loads((rd / "reports" / "selection.json").read_text())
    assert sel["selection_stage"] == "none_deployable"


SHARED_1H = REPO.parent / "shared" / "data" / "candles_1h.db"


@pytest.mark.skipif(not SHARED_1H.is_file(), reason="../shared/data/candles_1h.db absent (a fresh clone has no ../shared)")
def test_daily_profile_on_real_data_writes_the_evidence_the_real_gate_checks(tmp_path):
    """The daily profile (TPE budget cut for a test) on the real 2018 1h set: walk-forward folds,
    PBO and deflated Sharpe land in report.json and selection.json, and the real-stage validator
    judges them (it lists every failed check; this data has no deployable edge)."""
    art = tmp_path / "artifacts"
    res = factory("--profile", "daily", "--candles-db", str(SHARED_1H), "--trials", "256", "--batch", "64",
                  "--neighborhood", "16", "--shortlist", "10", "--replay", "2", "--backend", "cpu",
                  "--artifacts-dir", str(art), "--run-id", "daily", "--no-deploy", "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SYNTHETIC" not in res.stdout
    rd = _run_dir(art, "daily")
    report = json.loads((rd / "reports" / "report.json").read_text())
    sel_path = rd / "reports" / "selection.json"
    sel = json.loads(sel_path.read_text())
    wf = report["walk_forward"]
    assert len(wf["folds"]) == 4 and all(f["candidates_evaluated"] == 256 for f in wf["folds"])
    assert wf["scheme"] == "anchored" and len(wf["stitched_oos_equity"]) > 1
    assert sel["walk_forward"]["folds"] == 4 and sel["walk_forward"]["passed"] == wf["passed"]
    assert 0 <= report["overfitting"]["pbo"] <= 1 and report["overfitting"]["n_trials"] == 256
    assert 0 <= sel["overfitting"]["deflated_sharpe"] <= 1 and sel["data"]["synthetic"] is False
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_factory_selection_gate.py"),
                          "--selection-json", str(sel_path), "--stage", "real"], capture_output=True, text=True,
                         timeout=60)
    names = {c["name"]: c["ok"] for c in
             json.loads((sel_path.parent / "selection_gate_summary_real.json").read_text())["checks"]}
    assert names["walk_forward evidence present"] and names["overfitting.pbo in [0, 1]"]
    assert names["walk_forward passed out of sample"] is wf["passed"]
    assert out.returncode == (0 if all(names.values()) else 1)


def test_factory_result_reaches_the_alert_webhook(demo, tmp_path):
    from test_alerts import Receiver

    rx = Receiver()
    try:
        art = tmp_path / "artifacts"
        env = {"AI_QUANT_ALERT_TARGETS": "webhook", "AI_QUANT_ALERT_WEBHOOK_URL": f"{rx.base}/hook/k3y",
               "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        bad = factory("--profile", "smoke", "--candles-db", "/nonexistent/candles_1h.db", "--artifacts-dir", str(art),
                      "--run-id", "al", cwd=tmp_path, env=env)
        assert bad.returncode == 2
        (_, body), = rx.requests
        assert body["kind"] == "factory_result" and "factory run al: failed (exit 2)" in body["text"]
        assert "/nonexistent/candles_1h.db" in body["text"] and "k3y" not in bad.stderr + bad.stdout
    finally:
        rx.close()
