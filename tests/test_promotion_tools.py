"""The deploy tools as operators run them: `python tools/x.py ...` in a subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory.release_blocker import write_blocker
from tests.test_promotion_deploy import CFG_A, CFG_B, CFG_C, paper_rows
from tests.test_promotion_fixtures import make_trading_db

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000


def tool(name: str, *args: str, cwd: Path, blocker: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    if blocker is not None:
        env["AI_QUANT_REPLAY_GATE_BLOCKER_FILE"] = str(blocker)
    else:
        env["AI_QUANT_REPLAY_GATE_BUNDLE_ROOT"] = str(cwd / "no_gate_here")
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def ws(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "strategy_overrides.yaml").write_text(CFG_A)
    (tmp_path / "b.yaml").write_text(CFG_B)
    (tmp_path / "c.yaml").write_text(CFG_C)
    green = tmp_path / "gate" / "release_blocker.json"
    write_blocker(green, False, [], None, None, None)
    return tmp_path, green


@pytest.mark.parametrize("name, args", [
    ("paper_deploy", ["--yaml-path", "b.yaml", "--reason", "t"]),
    ("deploy_sweep", ["--sweep-results", "sweep.jsonl", "--rank", "1"]),
    ("rollback_to_last_good", ["--steps", "1", "--reason", "t"]),
])
def test_tools_refuse_in_one_line_without_a_green_gate(ws, name, args):
    root, _ = ws
    (root / "sweep.jsonl").write_text(json.dumps({"overrides": {"trade.sl_atr_mult": 1.1}, "total_pnl": 1}) + "\n")
    res = tool(name, *args, cwd=root)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "release blocker missing" in res.stderr and "Traceback" not in res.stderr
    assert (root / "config" / "strategy_overrides.yaml").read_text() == CFG_A


def test_paper_deploy_then_rollback_via_cli(ws):
    root, green = ws
    res = tool("paper_deploy", "--yaml-path", "b.yaml", "--reason", "first", cwd=root, blocker=green)
    assert res.returncode == 0, res.stderr
    assert "release blocker green" in res.stdout and (root / "config" / "strategy_overrides.yaml").read_text() == CFG_B
    red = root / "red.json"
    write_blocker(red, True, ["deterministic_logic_divergence"], None, None, None)
    res = tool("paper_deploy", "--yaml-path", "c.yaml", "--reason", "second", cwd=root, blocker=red)
    assert res.returncode == 2 and "release blocker red: deterministic_logic_divergence" in res.stderr
    res = tool("paper_deploy", "--yaml-path", "c.yaml", "--reason", "second", "--ignore-replay-gate", cwd=root, blocker=red)
    assert res.returncode == 0 and "restart required" in res.stdout
    res = tool("rollback_to_last_good", "--reason", "bad", "--dry-run", cwd=root, blocker=green)
    assert res.returncode == 0 and "would restore" in res.stdout
    assert (root / "config" / "strategy_overrides.yaml").read_text() == CFG_C
    res = tool("rollback_to_last_good", "--steps", "1", "--reason", "bad", cwd=root, blocker=green)
    assert res.returncode == 0, res.stderr
    assert (root / "config" / "strategy_overrides.yaml").read_text() == CFG_B
    assert len(list((root / "artifacts" / "rollbacks" / "paper").iterdir())) == 1


def test_paper_deploy_bad_input_is_one_line(ws):
    root, green = ws
    res = tool("paper_deploy", "--reason", "x", cwd=root, blocker=green)
    assert res.returncode == 1 and "exactly one of --config-id or --yaml-path" in res.stderr
    (root / "bad.yaml").write_text("global:\n  trade:\n    no_such_key: 1\n")
    res = tool("paper_deploy", "--yaml-path", "bad.yaml", "--reason", "x", cwd=root, blocker=green)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "no_such_key" in res.stderr


def test_deploy_sweep_cli(ws):
    root, green = ws
    (root / "sweep.jsonl").write_text(json.dumps({"overrides": {"trade.sl_atr_mult": 1.1}, "total_pnl": 1}) + "\n")
    res = tool("deploy_sweep", "--sweep-results", "sweep.jsonl", "--rank", "1", cwd=root, blocker=green)
    assert res.returncode == 0, res.stderr
    assert "sl_atr_mult: 1.1" in (root / "config" / "strategy_overrides.yaml").read_text()
    res = tool("deploy_sweep", "--sweep-results", "sweep.jsonl", "--target-yaml", "strategy.live.yaml", cwd=root,
               blocker=green)
    assert res.returncode == 2 and "refuses live targets" in res.stderr
    (root / "other.jsonl").write_text(json.dumps({"config_id": "ab" * 32, "overrides": {"trade.sl_atr_mult": 1.2},
                                                  "total_pnl": 1}) + "\n")
    res = tool("deploy_sweep", "--sweep-results", "other.jsonl", cwd=root, blocker=green)
    assert res.returncode == 2 and "row config_id abababababab != " in res.stderr and res.stderr.count("\n") == 1
    assert "sl_atr_mult: 1.2" not in (root / "config" / "strategy_overrides.yaml").read_text()
    res = tool("deploy_sweep", "--sweep-results", "other.jsonl", "--allow-config-id-mismatch", cwd=root, blocker=green)
    assert res.returncode == 0, res.stderr
    assert "sl_atr_mult: 1.2" in (root / "config" / "strategy_overrides.yaml").read_text()


def test_promote_to_live_cli(ws):
    root, green = ws
    now = int(time.time() * 1000)
    old_gate = root / "gate" / "old.json"
    write_blocker(old_gate, False, [], None, None, None, generated_at_ms=now - 8 * H)
    res = tool("paper_deploy", "--yaml-path", "b.yaml", "--reason", "p", cwd=root, blocker=green)
    assert res.returncode == 0
    cid = json.loads(next((root / "artifacts" / "deployments" / "paper").glob("*/deploy_event.json")).read_text())["what"]["config_id"]
    db = make_trading_db(root / "paper.db", paper_rows(now - 30 * H, 21, win=8.0, loss=4.0))
    args = ["--paper-db", str(db), "--config-id", cid[:12], "--since-ms", str(now - 30 * H)]
    res = tool("promote_to_live", *args, cwd=root, blocker=green)
    assert res.returncode == 0 and "--apply would deploy" in res.stdout and "profit_factor" in res.stdout
    res = tool("promote_to_live", *args, "--apply", cwd=root, blocker=old_gate)
    assert res.returncode == 1 and "release blocker stale" in res.stderr and res.stderr.count("\n") == 1
    res = tool("promote_to_live", *args, "--apply", "--min-profit-factor", "5", cwd=root, blocker=green)
    assert res.returncode == 1 and "promotion gates failed: profit_factor" in res.stderr
    res = tool("promote_to_live", *args, "--apply", cwd=root, blocker=green)
    assert res.returncode == 0, res.stderr
    assert "size_multiplier: 0.25" in (root / "config" / "strategy_overrides.live.yaml").read_text()
    res = tool("promote_to_live", "--paper-db", str(root / "nope.db"), "--config-id", "ffffffffffff", cwd=root,
               blocker=green)
    assert res.returncode == 2 and res.stderr.startswith("error: ")
