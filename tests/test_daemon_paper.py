"""The paper daemon runs the canonical engine: same trades as `backtester replay`, crash-safe,
single-instance, kill switches honoured between runs, broken YAML survived."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strategy.params import P_ALLOCATION_PCT

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
global:
  trade: {entry_min_confidence: low, reentry_cooldown_minutes: 30, add_cooldown_minutes: 30}
  thresholds: {entry: {min_adx: 18.0, macd_hist_entry_mode: sign}}
  filters: {enable_ranging_filter: false, require_adx_rising: false}
  engine: {interval: 15m}
"""


def copy_candles(src: Path, dst: Path, *, before_ms: int | None = None, from_ms: int | None = None) -> None:
    """Copy (a time slice of) a real candle DB; appending later simulates new closed bars."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = sqlite3.connect(dst)
    out.execute("CREATE TABLE IF NOT EXISTS candles (symbol TEXT, interval TEXT, t INTEGER, t_close INTEGER, "
                "o REAL, h REAL, l REAL, c REAL, v REAL, n INTEGER, PRIMARY KEY(symbol, interval, t))")
    src_conn = sqlite3.connect(src)
    where, args = [], []
    if before_ms is not None:
        where.append("t < ?")
        args.append(before_ms)
    if from_ms is not None:
        where.append("t >= ?")
        args.append(from_ms)
    sql = "SELECT symbol, interval, t, t_close, o, h, l, c, v, n FROM candles"
    if where:
        sql += " WHERE " + " AND ".join(where)
    out.executemany("INSERT OR IGNORE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", src_conn.execute(sql, args))
    out.commit()
    out.close()
    src_conn.close()


def paper_world(tmp_path, shared_data):
    """A 15m real-candle DB and the env of a paper trader on it (other test modules reuse it)."""
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    copy_candles(shared_data / "candles_15m.db", tmp_path / "candles_dbs" / "candles_15m.db")
    env = {**os.environ, "AI_QUANT_STRATEGY_YAML": str(tmp_path / "cfg.yaml"),
           "AI_QUANT_CANDLES_DB_DIR": str(tmp_path / "candles_dbs"), "AI_QUANT_DB_PATH": str(tmp_path / "paper.db"),
           "AI_QUANT_LOCK_PATH": str(tmp_path / "paper.lock"), "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "0",
           "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0", "AI_QUANT_HEARTBEAT_SECS": "1",
           "AI_QUANT_LOOP_TARGET_SECS": "0.5"}
    env.pop("AI_QUANT_KILL_SWITCH", None)
    env.pop("AI_QUANT_KILL_SWITCH_FILE", None)
    return tmp_path, env


@pytest.fixture()
def setup(tmp_path, shared_data):
    return paper_world(tmp_path, shared_data)


def trader(env, *args, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", "live", *args], env=env, capture_output=True, text=True,
                          timeout=300, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def db_fills(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT symbol, action, bar_t_ms, price, size, fee_usd, pnl FROM trades ORDER BY id").fetchall()
    return rows


def rows_in(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
    except sqlite3.Error:
        return 0


def replay_fills(tmp_path: Path, env) -> list[tuple]:
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db",
                           str(tmp_path / "candles_dbs" / "candles_15m.db"), "--config", str(tmp_path / "cfg.yaml"),
                           "--trades", "--output", str(out)], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    return [(f["symbol"], f["action"], f["t_ms"] - 900_000, f["price"], f["size"], f["fee"], f["pnl"])
            for f in report["fills"] if f["reason"] != "end_of_data"]


def test_catch_up_equals_replay_trade_for_trade(setup):
    tmp_path, env = setup
    proc = trader(env, "--mode", "paper", "--until-caught-up")
    assert "engine ok." in proc.stderr
    fills = db_fills(tmp_path / "paper.db")
    assert len(fills) > 50
    assert fills == replay_fills(tmp_path, env)
    assert oct(os.stat(tmp_path / "paper.db").st_mode & 0o777) == "0o600"


def test_kill_minus_nine_then_restart_reaches_the_same_state(setup, tmp_path_factory):
    tmp_path, env = setup
    reference = tmp_path_factory.mktemp("ref")
    ref_env = {**env, "AI_QUANT_DB_PATH": str(reference / "paper.db"), "AI_QUANT_LOCK_PATH": str(reference / "l")}
    trader(ref_env, "--mode", "paper", "--until-caught-up")
    expected = db_fills(reference / "paper.db")
    killed = 0
    for fraction in (0.3, 0.6):  # kill -9 twice, mid-way through the catch-up
        proc = subprocess.Popen([sys.executable, "-m", "live", "--mode", "paper", "--until-caught-up"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and rows_in(tmp_path / "paper.db") < fraction * len(expected):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    trader(env, "--mode", "paper", "--until-caught-up")
    assert killed >= 1, "the daemon finished before it could be killed; the test proved nothing"
    got = db_fills(tmp_path / "paper.db")
    assert len(got) == len(set(got)), "a fill row was duplicated"
    assert got == expected


def test_second_daemon_refuses_the_lock(setup):
    tmp_path, env = setup
    log = (tmp_path / "first.log").open("wb")  # a file, not a pipe nobody reads: a catch-up logs every fill
    first = subprocess.Popen([sys.executable, "-m", "live", "--mode", "paper"], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(200):
            if (tmp_path / "paper.lock").exists() and (tmp_path / "paper.lock").read_text().strip():
                break
            time.sleep(0.05)
        second = trader(env, "--mode", "paper", "--until-caught-up", check=False)
        assert second.returncode == 1
        assert "refusing to start" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        log.close()


def test_kill_file_close_only_then_halt_all_then_clear(setup, shared_data):
    tmp_path, env = setup
    db = tmp_path / "candles_dbs" / "candles_15m.db"
    db.unlink()
    split1, split2 = 1516000000000, 1516600000000
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split1)
    kill_file = tmp_path / "kill"
    env = {**env, "AI_QUANT_KILL_SWITCH_FILE": str(kill_file)}
    trader(env, "--mode", "paper", "--until-caught-up")
    before = db_fills(tmp_path / "paper.db")
    assert any(a == "OPEN" for _, a, *_ in before)

    kill_file.write_text("close_only\n")
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split2)
    trader(env, "--mode", "paper", "--until-caught-up")
    during = db_fills(tmp_path / "paper.db")[len(before):]
    assert during, "exits still run under close_only"
    assert {a for _, a, *_ in during} <= {"REDUCE", "CLOSE"}

    kill_file.write_text("halt_all\n")
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split2 + 86_400_000 * 2)
    n = len(db_fills(tmp_path / "paper.db"))
    trader(env, "--mode", "paper", "--until-caught-up")
    assert len(db_fills(tmp_path / "paper.db")) == n, "halt_all blocks exits too"

    kill_file.unlink()  # removing the file clears a file-sourced kill (docs/RISK.md)
    copy_candles(shared_data / "candles_15m.db", db)
    trader(env, "--mode", "paper", "--until-caught-up")
    after = db_fills(tmp_path / "paper.db")[n:]
    assert any(a == "OPEN" for _, a, *_ in after)


def test_broken_yaml_keeps_last_good_config(setup):
    from live.daemon import TraderDaemon
    from live.env import load_settings

    tmp_path, env = setup
    daemon = TraderDaemon(load_settings(env), until_caught_up=True)
    daemon._start()
    try:
        daemon.process_pending()
        good_id = daemon.cfg.config_id
        time.sleep(0.01)
        (tmp_path / "cfg.yaml").write_text("global: {trade: {sl_atr_mult: [oops\n")
        daemon._reload_config()
        assert daemon.cfg.config_id == good_id
        assert daemon.errors == 1
    finally:
        daemon.log.close()
        daemon.conn.close()
        daemon.lock.release()
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        errors = conn.execute("SELECT message FROM runtime_logs WHERE level = 'ERROR'").fetchall()
    assert any("keeping the last good config" in m for (m,) in errors)


def test_exit_interval_catch_up_equals_replay(tmp_path, shared_data):
    """Signals on 1h, stops/targets on the 5m bars inside: the daemon and the replay still agree."""
    dbs = tmp_path / "candles_dbs"
    copy_candles(shared_data / "candles_1h.db", dbs / "candles_1h.db")
    # 5m bars up to the last whole hour: the trader steps the 5m bars of a running hour as they close,
    # the replay of a snapshot only the hours whose 5m bars are all in (the last hour lacks 04:55)
    last_hour = sqlite3.connect(shared_data / "candles_1h.db").execute("SELECT MAX(t) FROM candles").fetchone()[0]
    copy_candles(shared_data / "candles_5m.db", dbs / "candles_5m.db", before_ms=last_hour)
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("engine: {interval: 15m}",
                                                      "engine: {interval: 1h, exit_interval: 5m}"))
    env = {**os.environ, "AI_QUANT_STRATEGY_YAML": str(tmp_path / "cfg.yaml"), "AI_QUANT_CANDLES_DB_DIR": str(dbs),
           "AI_QUANT_DB_PATH": str(tmp_path / "paper.db"), "AI_QUANT_LOCK_PATH": str(tmp_path / "paper.lock"),
           "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "0", "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0"}
    env.pop("AI_QUANT_KILL_SWITCH_FILE", None)
    trader(env, "--mode", "paper", "--until-caught-up")
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db", str(dbs / "candles_1h.db"),
                           "--exit-candles-db", str(dbs / "candles_5m.db"), "--config", str(tmp_path / "cfg.yaml"),
                           "--trades", "--output", str(out)], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    fills = json.loads(out.read_text())["fills"]
    expected = [(f["symbol"], f["action"], f["price"], f["size"]) for f in fills if f["reason"] != "end_of_data"]
    assert any(f["t_ms"] % 3_600_000 for f in fills), "some exits happen on 5m bars inside the hour"
    got = [(s, a, p, z) for s, a, _, p, z, _, _ in db_fills(tmp_path / "paper.db")]
    assert got == expected


def test_flat_now_paper_positions_stay_closed_when_the_daemon_continues(setup, shared_data):
    tmp_path, env = setup
    db = tmp_path / "candles_dbs" / "candles_15m.db"
    db.unlink()
    split = 1516600000000
    copy_candles(shared_data / "candles_15m.db", db, before_ms=split)
    trader(env, "--mode", "paper", "--until-caught-up")
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        held = {r[0] for r in conn.execute("SELECT symbol FROM position_state")}
    assert held, "the first half must end with open positions for this test to mean anything"
    kill = tmp_path / "kill"
    proc = subprocess.run([sys.executable, "tools/flat_now.py", "--kill-file", str(kill), "--pause-mode",
                           "close_only", "--paper", "--paper-db", str(tmp_path / "paper.db"), "--candles-db",
                           str(db), "--yes"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert kill.read_text().strip() == "close_only"
    n = len(db_fills(tmp_path / "paper.db"))
    copy_candles(shared_data / "candles_15m.db", db)
    trader({**env, "AI_QUANT_KILL_SWITCH_FILE": str(kill)}, "--mode", "paper", "--until-caught-up")
    after = db_fills(tmp_path / "paper.db")[n:]
    assert not [row for row in after if row[0] in held], "a flattened position came back to life"
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM position_state").fetchone()[0] == 0


MODES_CONFIG = CONFIG + """
modes:
  primary: {global: {trade: {allocation_pct: 0.05}}}
  fallback: {global: {trade: {allocation_pct: 0.04}}}
  conservative: {global: {trade: {allocation_pct: 0.03}}}
  flat: {global: {trade: {size_multiplier: 0.0, bump_to_min_notional: false}}}
"""


def test_kill_event_steps_the_mode_down_applies_its_overlay_and_persists_it(setup):
    from live.daemon import TraderDaemon
    from live.env import load_settings

    tmp_path, env = setup
    (tmp_path / "cfg.yaml").write_text(MODES_CONFIG)
    kill, mode_file = tmp_path / "kill", tmp_path / "state" / "strategy_mode.txt"
    env = {**env, "AI_QUANT_STRATEGY_MODE": "primary", "AI_QUANT_MODE_SWITCH_ENABLE": "1",
           "AI_QUANT_STRATEGY_MODE_FILE": str(mode_file), "AI_QUANT_KILL_SWITCH_FILE": str(kill)}
    daemon = TraderDaemon(load_settings(env), until_caught_up=True)
    daemon._start()
    try:
        daemon.process_pending()
        assert daemon.cfg.get("trade.allocation_pct") == 0.05
        kill.write_text("close_only\n")
        daemon.risk.poll(force=True)
        assert daemon._maybe_switch_mode() is False
        assert daemon.strategy_mode == "fallback" and mode_file.read_text().strip() == "fallback"
        assert daemon.cfg.get("trade.allocation_pct") == 0.04
        assert daemon.engine.params[0, P_ALLOCATION_PCT] == 0.04
    finally:
        daemon.close()
    # a restart without the env var resumes the persisted mode
    env.pop("AI_QUANT_STRATEGY_MODE")
    again = TraderDaemon(load_settings(env), until_caught_up=True)
    again._start()
    try:
        assert again.strategy_mode == "fallback" and again.cfg.get("trade.allocation_pct") == 0.04
    finally:
        again.close()


def test_entry_rate_limit_binds_within_a_bar(setup):
    """Per-minute limits run on the bar clock: at most N entries leave in one bar's burst."""
    tmp_path, env = setup
    env = {**env, "AI_QUANT_RISK_MAX_ENTRY_ORDERS_PER_MIN": "1"}
    trader(env, "--mode", "paper", "--until-caught-up")
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        per_bar = conn.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM trades WHERE action IN ('OPEN', 'ADD') "
                               "GROUP BY bar_t_ms)").fetchone()[0]
        blocks = conn.execute("SELECT COUNT(*) FROM audit_events WHERE event = 'RISK_BLOCK'").fetchone()[0]
    assert per_bar == 1
    assert blocks > 0


def test_reduce_losses_count_toward_the_daily_loss_stop(setup):
    from live.daemon import TraderDaemon
    from live.env import load_settings

    tmp_path, env = setup
    env = {**env, "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "90"}
    daemon = TraderDaemon(load_settings(env), until_caught_up=True)
    daemon._start()
    try:
        daemon.process_pending()
        day = daemon.risk.state()["day"]
        with sqlite3.connect(tmp_path / "paper.db") as conn:
            expected = conn.execute("SELECT SUM(pnl - fee_usd) FROM trades WHERE action IN ('REDUCE', 'CLOSE') "
                                    "AND substr(timestamp, 1, 10) = ?", (day,)).fetchone()[0]
            reduces = conn.execute("SELECT COUNT(*) FROM trades WHERE action = 'REDUCE'").fetchone()[0]
        assert reduces > 0
        assert daemon.risk.state()["day_realized_pnl"] == pytest.approx(expected, abs=1e-9)
    finally:
        daemon.close()


def test_export_state_of_the_paper_daemon_seeds_a_replay(setup):
    tmp_path, env = setup
    trader(env, "--mode", "paper", "--until-caught-up")
    state = tmp_path / "state.json"
    proc = subprocess.run([sys.executable, "tools/export_state.py", "--source", "paper", "--db", str(tmp_path / "paper.db"),
                           "--output", str(state)], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(state.read_text())
    assert exported["positions"], "the catch-up ends with open positions"
    assert all(p["leverage"] >= 1 and p["margin_used"] > 0 for p in exported["positions"])
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db",
                           str(tmp_path / "candles_dbs" / "candles_15m.db"), "--config", str(tmp_path / "cfg.yaml"),
                           "--init-state", str(state), "--start", "2018-01-29", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["initial_balance"] == exported["balance"]
