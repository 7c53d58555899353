"""The replay alignment gate against a DB the real paper daemon wrote: it replays from the trader's
own engine checkpoint, so a faithful trader passes exactly and a doctored fill is caught."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_daemon_paper import CONFIG, copy_candles, trader

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traded(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("gate")
    copy_candles(shared_data / "candles_15m.db", tmp / "candles_dbs" / "candles_15m.db")
    (tmp / "cfg.yaml").write_text(CONFIG)
    env = {**os.environ, "AI_QUANT_STRATEGY_YAML": str(tmp / "cfg.yaml"), "AI_QUANT_CANDLES_DB_DIR": str(tmp / "candles_dbs"),
           "AI_QUANT_DB_PATH": str(tmp / "paper.db"), "AI_QUANT_LOCK_PATH": str(tmp / "paper.lock"),
           "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "0", "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0"}
    env.pop("AI_QUANT_KILL_SWITCH_FILE", None)
    trader(env, "--mode", "paper", "--until-caught-up")
    with sqlite3.connect(tmp / "candles_dbs" / "candles_15m.db") as conn:
        last = conn.execute("SELECT MAX(t) FROM candles").fetchone()[0]
    return tmp, last + 900_000 + 120_000 + 1_000


def gate(tmp: Path, now_ms: int, window_minutes: int = 1440) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "AI_QUANT_REPLAY_GATE_CANDLES_DB": str(tmp / "candles_dbs" / "candles_15m.db"),
           "AI_QUANT_REPLAY_GATE_PAPER_DB": str(tmp / "paper.db"), "AI_QUANT_REPLAY_GATE_CONFIG": str(tmp / "cfg.yaml"),
           "AI_QUANT_REPLAY_GATE_INTERVAL": "15m", "AI_QUANT_REPLAY_GATE_WINDOW_MINUTES": str(window_minutes),
           "AI_QUANT_REPLAY_GATE_BUNDLE_ROOT": str(tmp / "bundles"),
           "AI_QUANT_REPLAY_GATE_BLOCKER_FILE": str(tmp / "release_blocker.json")}
    env.pop("AI_QUANT_REPLAY_GATE_LIVE_DB", None)
    proc = subprocess.run([sys.executable, "tools/run_scheduled_replay_alignment_gate.py", "--now-ms", str(now_ms)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, json.loads((tmp / "release_blocker.json").read_text())


def test_faithful_paper_trader_passes_from_its_checkpoint(traded):
    tmp, now = traded
    proc, blocker = gate(tmp, now)
    assert proc.returncode == 0, proc.stderr
    assert blocker["blocked"] is False and blocker["reason_codes"] == []
    report = json.loads(Path(blocker["report_path"]).read_text())
    assert report["state_source"] == "engine_checkpoint"
    assert report["matched"] == report["live_fills"] > 10
    ex = report["exit_alignment"]   # paper == replay: every exit at the replay's time and price
    assert ex["ok"] and ex["matched"] == ex["exits_total"] > 0
    assert ex["delay_ms"] == {"median": 0.0, "worst": 0.0} and ex["adverse_bps"] == {"median": 0.0, "worst": 0.0}


def test_a_doctored_fill_blocks_releases(traded):
    tmp, now = traded
    with sqlite3.connect(tmp / "paper.db") as conn:
        conn.execute("UPDATE trades SET size = size * 1.001 WHERE id = (SELECT MAX(id) FROM trades WHERE action = 'OPEN')")
    proc, blocker = gate(tmp, now, window_minutes=4320)
    assert proc.returncode == 1
    assert blocker["blocked"] is True and "state_initialisation_gap" in blocker["reason_codes"]
    assert "BLOCKED" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
