"""`trader run` as a new operator meets it: flags that mirror the environment, errors that name the
flag and the variable, nothing created when startup fails, every fill on one readable line and a
catch-up summary at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_daemon_paper import CONFIG, copy_candles

REPO = Path(__file__).resolve().parents[1]


def trader(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    return subprocess.run([sys.executable, "-m", "live.cli", "run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_first_paper_run_with_flags_only(tmp_path, shared_data):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    copy_candles(shared_data / "candles_15m.db", tmp_path / "candles" / "candles_15m.db")
    proc = trader(tmp_path, "--mode", "paper", "--config", "cfg.yaml", "--candles-dir", "candles", "--db",
                  "paper.db", "--symbols", "ETH,ADA", "--until-caught-up")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "paper.db").exists(), "relative flag paths are relative to the caller's directory"
    fills = [line for line in proc.stderr.splitlines() if " fill " in line]
    assert fills and re.search(r"fill (ETH|ADA) OPEN (LONG|SHORT) [\d.e+-]+ @ [\d.e+-]+ \(\$[\d,.]+\) "
                               r"reason=\w+ conf=\w+ pnl=[+-][\d,.]+ fee=[\d,.]+ bar 2018-", fills[0]), fills[0]
    summary = [line for line in proc.stderr.splitlines() if "caught up:" in line]
    assert len(summary) == 1
    assert re.search(r"caught up: \d+ bar\(s\) 2018-\S+ \.\. 2018-\S+; \d+ fill\(s\) \(OPEN \d+.*\); equity [\d,.]+ "
                     r"\(balance [\d,.]+, PnL [+-][\d,.]+, [+-][\d.]+%\); open positions \d+.*; kill=off; "
                     r"last bar 2018-", summary[0]), summary[0]
    assert f"{len(fills)} fill(s)" in summary[0]
    assert "last bar 2018-" in proc.stderr.splitlines()[-1]


def test_startup_errors_name_the_flag_and_create_nothing(tmp_path, shared_data):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    copy_candles(shared_data / "candles_15m.db", tmp_path / "candles" / "candles_15m.db")
    cases = [
        (("--config", "missing.yaml"), "--config / AI_QUANT_STRATEGY_YAML"),
        (("--config", "cfg.yaml", "--candles-dir", "nowhere"), "--candles-dir / AI_QUANT_CANDLES_DB_DIR"),
        (("--config", "cfg.yaml", "--candles-dir", "candles", "--symbols", "eht"), "(did you mean ETH?)"),
        (("--config", "cfg.yaml", "--candles-dir", "candles", "--interval", "7q"), "--interval / AI_QUANT_INTERVAL"),
    ]
    for args, needle in cases:
        proc = trader(tmp_path, "--mode", "paper", "--db", "paper.db", *args, "--until-caught-up")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert needle in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candles", "cfg.yaml"]


def test_run_help_lists_the_flags():
    proc = subprocess.run([sys.executable, "-m", "live.cli", "run", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    for flag in ("--config", "--candles-dir", "--db", "--symbols", "--funding-db", "--interval", "--mode"):
        assert flag in proc.stdout


def test_paper_and_replay_give_one_config_id_for_one_effective_config(tmp_path, shared_data):
    """The config file says 15m; both commands are told 15m explicitly by a flag, and 15m differs
    from nothing: then the replay's id (interval folded in) must equal the daemon's."""
    import json
    import sqlite3

    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("interval: 15m", "interval: 1h"))
    copy_candles(shared_data / "candles_15m.db", tmp_path / "candles" / "candles_15m.db")
    proc = trader(tmp_path, "--config", "cfg.yaml", "--candles-dir", "candles", "--db", "paper.db",
                  "--interval", "15m", "--until-caught-up")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        (paper_id,), = conn.execute("SELECT DISTINCT config_id FROM trades WHERE config_id IS NOT NULL").fetchall()
    out = tmp_path / "replay.json"
    replay = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db",
                             str(tmp_path / "candles" / "candles_15m.db"), "--config", str(tmp_path / "cfg.yaml"),
                             "--interval", "15m", "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(out.read_text())["config_id"] == paper_id
