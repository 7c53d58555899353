"""Every tool that reads the trading DB reads the one the daemon of the same environment writes,
and refuses (non-zero, one line) an empty DB instead of answering about nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from live.trading_db import insert_trade, open_trading_db, upsert_position_state

REPO = Path(__file__).resolve().parents[1]


def tool(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def trading_db(path: Path) -> Path:
    conn = open_trading_db(path)
    tid = insert_trade(conn, {"symbol": "SOL", "type": "LONG", "action": "OPEN", "price": 20.0, "size": 3.0,
                              "balance": 777.0, "entry_atr": 1.0, "leverage": 2.0})
    upsert_position_state(conn, "SOL", open_trade_id=tid)
    conn.close()
    return path


def test_every_trading_db_tool_reads_the_daemons_db(tmp_path):
    for mode, source in (("paper", "paper"), ("live", "live")):
        db = trading_db(tmp_path / f"{mode}_daemon.db")
        env = {"AI_QUANT_MODE": mode, "AI_QUANT_DB_PATH": str(db)}
        out = tmp_path / f"{mode}_state.json"
        state = tool("export_state.py", "--source", source, "--output", str(out), env=env)
        assert state.returncode == 0, state.stderr
        assert json.loads(out.read_text())["balance"] == 777.0
        csv = tool("export_csv.py", "--out", str(tmp_path / f"{mode}.csv"), env=env)
        assert csv.returncode == 0, csv.stderr
        assert "SOL" in (tmp_path / f"{mode}.csv").read_text()
        reality = tool("reality_check.py", "--symbol", "SOL", env=env)
        assert reality.returncode == 0 and str(db) in reality.stdout + reality.stderr, reality.stderr
        prune = tool("prune_runtime_logs.py", "--dry-run", env=env)
        assert prune.returncode == 0 and str(db) in prune.stderr, prune.stderr


def test_an_empty_trading_db_is_refused_by_every_tool(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    env = {"AI_QUANT_MODE": "paper", "AI_QUANT_DB_PATH": str(empty)}
    runs = [tool("export_state.py", "--source", "paper", "--output", str(tmp_path / "s.json"), env=env),
            tool("export_csv.py", "--out", str(tmp_path / "t.csv"), env=env),
            tool("reality_check.py", env=env)]
    for proc in runs:
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "t.csv").exists()
