"""The paper trader fails closed: a human note in the kill file makes no entry, one trader per DB
whatever its lock path, a candle DB named as the trading DB is refused, a failed start leaves no
file behind, and the first heartbeat after a restart already shows the persisted kill."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest
import test_daemon_paper
from test_daemon_paper import copy_candles, db_fills, trader

from live.daemon import TraderDaemon
from live.env import load_settings


@pytest.fixture()
def setup(tmp_path, shared_data):
    """The paper trader's world of test_daemon_paper: a 15m real-candle DB and its env."""
    return test_daemon_paper.paper_world(tmp_path, shared_data)


def heartbeats(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "kill=" in line]


def test_paper_catch_up_with_a_halt_note_in_the_kill_file_makes_no_entry(setup):
    tmp_path, env = setup
    (tmp_path / "kill").write_text("HALT. Do NOT resume until reviewed\n")
    proc = trader({**env, "AI_QUANT_KILL_SWITCH_FILE": str(tmp_path / "kill")}, "--mode", "paper", "--until-caught-up")
    assert db_fills(tmp_path / "paper.db") == []
    assert "kill=halt_all" in heartbeats(proc.stderr)[0]


def test_second_trader_on_the_same_db_with_another_lock_path_refuses(setup):
    tmp_path, env = setup
    first = subprocess.Popen([sys.executable, "-m", "live", "--mode", "paper"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "paper.db.lock"
        for _ in range(400):
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.05)
        other = {**env, "AI_QUANT_LOCK_PATH": str(tmp_path / "elsewhere.lock")}
        second = trader(other, "--mode", "paper", "--until-caught-up", check=False)
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0
        assert "refusing to start" in second.stderr and "paper.db" in second.stderr
        assert not (tmp_path / "elsewhere.lock").exists(), "a refused start leaves no lock file"
    finally:
        first.terminate()
        assert first.wait(timeout=60) == 0
    # the DB holds one copy of each fill: run to the end and compare with a trader alone
    trader(env, "--mode", "paper", "--until-caught-up")
    fills = db_fills(tmp_path / "paper.db")
    assert len(fills) == len(set(fills))


def test_a_candle_db_as_the_trading_db_is_refused_and_left_untouched(setup):
    tmp_path, env = setup
    candles = tmp_path / "candles_dbs" / "candles_15m.db"
    before = candles.read_bytes()
    proc = trader({**env, "AI_QUANT_DB_PATH": str(candles)}, "--mode", "paper", "--until-caught-up", check=False)
    assert proc.returncode == 1
    assert re.fullmatch(r"error: .*candles_15m\.db is not a trading DB \(it holds the tables .*candles.*\); "
                        r"refusing to write into it \(check --db / AI_QUANT_DB_PATH\)\n", proc.stderr)
    assert candles.read_bytes() == before
    assert not (tmp_path / "candles_dbs" / "candles_15m.db.lock").exists()


def test_failed_start_leaves_no_db_and_no_lock(setup):
    tmp_path, env = setup
    missing = {**env, "AI_QUANT_CANDLES_DB_DIR": str(tmp_path / "nowhere")}
    proc = trader(missing, "--mode", "paper", "--until-caught-up", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candles_dbs", "cfg.yaml"]
    # a start that fails after the DB was claimed (a checkpoint for other symbols) removes only the
    # files it created: the existing DB stays, the lock files go
    trader({**env, "AI_QUANT_SYMBOLS": "ADA"}, "--mode", "paper", "--until-caught-up")
    (tmp_path / "paper.lock").unlink()
    (tmp_path / "paper.db.lock").unlink()
    proc = trader({**env, "AI_QUANT_SYMBOLS": "ETH"}, "--mode", "paper", "--until-caught-up", check=False)
    assert proc.returncode == 1 and "checkpoint was made for other symbols" in proc.stderr
    assert (tmp_path / "paper.db").exists()
    assert not (tmp_path / "paper.lock").exists() and not (tmp_path / "paper.db.lock").exists()


def test_trading_db_that_is_a_directory_or_random_bytes_is_one_line(setup):
    tmp_path, env = setup
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "junk.db").write_bytes(os.urandom(4096))
    for db in ("dir.db", "junk.db"):
        proc = trader({**env, "AI_QUANT_DB_PATH": str(tmp_path / db)}, "--mode", "paper", "--until-caught-up",
                      check=False)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert db in proc.stderr
    (tmp_path / "lockdir").mkdir()
    proc = trader({**env, "AI_QUANT_LOCK_PATH": str(tmp_path / "lockdir")}, "--mode", "paper", "--until-caught-up",
                  check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "lockdir" in proc.stderr, proc.stderr


def test_first_heartbeat_after_restart_shows_the_latched_kill(setup):
    tmp_path, env = setup
    tripping = {**env, "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0.5"}
    trader(tripping, "--mode", "paper", "--until-caught-up")
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit_events WHERE event = 'RISK_KILL'").fetchone()[0] >= 1
    proc = trader(tripping, "--mode", "paper", "--until-caught-up")  # no new bar: only the start heartbeat
    first = heartbeats(proc.stderr)[0]
    assert "kill=close_only" in first and "safe_mode" in first, first


def poison(db, symbol: str, t_ms: int, column: str = "h", value: float = float("inf")) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute(f"UPDATE candles SET {column} = ? WHERE symbol = ? AND t = ?", (value, symbol, t_ms)).rowcount == 1


def test_a_candle_db_with_one_inf_high_is_refused_at_start_naming_the_row(setup):
    tmp_path, env = setup
    db = tmp_path / "candles_dbs" / "candles_15m.db"
    poison(db, "ETH", 1516000000000 - 1516000000000 % 900_000)
    proc = trader(env, "--mode", "paper", "--until-caught-up", check=False)
    assert proc.returncode == 1
    assert re.fullmatch(r"error: corrupt candle row: \S+candles_15m\.db ETH 2018-01-15T07:00:00Z "
                        r"\(t=1515999600000\): h=inf is not finite\n", proc.stderr), proc.stderr
    assert not (tmp_path / "paper.db").exists()


def test_a_poisoned_bar_arriving_while_running_is_skipped_for_that_symbol_with_an_audit(setup, shared_data):
    tmp_path, env = setup
    db = tmp_path / "candles_dbs" / "candles_15m.db"
    db.unlink()
    split = 1516000000000 - 1516000000000 % 900_000
    bad_t = split + 10 * 900_000
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split)
    daemon = TraderDaemon(load_settings(env))
    daemon._start()
    try:
        daemon.loop_once()
        copy_candles(shared_data / "candles_15m.db", db, before_ms=split + 50 * 900_000)
        poison(db, "ETH", bad_t, "c", 1e300)
        daemon.loop_once()
        assert daemon.last_bar_t == split + 49 * 900_000
    finally:
        daemon.close()
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        events = conn.execute("SELECT symbol, data_json FROM audit_events WHERE event = 'CANDLE_SKIPPED'").fetchall()
        on_bad = conn.execute("SELECT COUNT(*) FROM trades WHERE symbol = 'ETH' AND bar_t_ms = ?", (bad_t,)).fetchone()[0]
        entries_after = conn.execute("SELECT COUNT(*) FROM trades WHERE symbol = 'ETH' AND bar_t_ms = ? AND "
                                     "action IN ('OPEN', 'ADD')", (bad_t + 900_000,)).fetchone()[0]
    assert [(s, json.loads(d)["t"]) for s, d in events] == [("ETH", bad_t)]
    assert "is above the price bound" in json.loads(events[0][1])["problem"]
    assert (on_bad, entries_after) == (0, 0), "no fill on the skipped bar, no entry right after it"
    # a restart neither refuses the DB for a row it already skipped nor reports it again
    proc = trader(env, "--mode", "paper", "--until-caught-up")
    assert "corrupt candle row" not in proc.stderr


def test_a_restarted_trader_skips_a_poisoned_bar_it_has_not_processed_yet(setup, shared_data):
    tmp_path, env = setup
    db = tmp_path / "candles_dbs" / "candles_15m.db"
    db.unlink()
    split = 1516000000000 - 1516000000000 % 900_000
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split)
    trader(env, "--mode", "paper", "--until-caught-up")
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split + 50 * 900_000)
    poison(db, "ADA", split + 3 * 900_000, "l", -1.0)
    proc = trader(env, "--mode", "paper", "--until-caught-up")
    assert "bar skipped for ADA" in proc.stderr
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit_events WHERE event = 'CANDLE_SKIPPED'").fetchone()[0] == 1
