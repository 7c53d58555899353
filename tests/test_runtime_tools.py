"""Runtime logging, sd_notify and the operator tools, run as the operator runs them (subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live.runtime_log import RuntimeLogger, format_heartbeat, parse_heartbeat
from live.sdnotify import WatchdogPinger, notify, ready, stopping, watchdog, watchdog_interval_s
from live.trading_db import (
    audit,
    insert_trade,
    iso_utc,
    now_ms,
    open_positions,
    open_trading_db,
    upsert_position_state,
)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_tool(name: str, *args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([PY, str(REPO / "tools" / name), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


HB = dict(loops=1234, errors=2, symbols=50, open_pos=3, loop=0.42, ws_connected=True, kill="close_only",
          kill_reason="daily_loss:2024-03-05", strategy_mode="fallback", config_id="ab12cd34", version="0.1.0")


# ------------------------------------------------------------------ heartbeat and runtime_logs
def test_heartbeat_round_trip_and_format():
    line = format_heartbeat(**HB, ws_restarts=1)
    assert line == ("🫀 engine ok. loops=1234 errors=2 symbols=50 open_pos=3 loop=0.42s ws_connected=True "
                    "kill=close_only kill_reason=daily_loss:2024-03-05 strategy_mode=fallback config_id=ab12cd34 "
                    "version=0.1.0 ws_restarts=1")
    assert parse_heartbeat("2024-03-05T10:00:00Z INFO " + line) == {**HB, "ws_restarts": 1}
    quiet = {**HB, "kill": "off", "kill_reason": None, "strategy_mode": None, "ws_connected": False}
    assert parse_heartbeat(format_heartbeat(**quiet)) == quiet
    assert "kill_reason=manual_stop" in format_heartbeat(**{**HB, "kill_reason": "manual stop"})
    assert parse_heartbeat("some other line") is None
    with pytest.raises(ValueError, match="missing field"):
        format_heartbeat(loops=1)


def test_runtime_logger_batches_rows_from_threads(tmp_path):
    import threading

    db = tmp_path / "trading_engine.db"
    echo = io.StringIO()
    logger = RuntimeLogger(db, mode="paper", flush_interval_s=0.05, echo=echo)
    threads = [threading.Thread(target=lambda i=i: [logger.info(f"t{i} n{n}") for n in range(100)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    line = logger.heartbeat(**HB)
    logger.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM runtime_logs").fetchone()[0] == 401
    pid, mode, stream, level, msg = conn.execute(
        "SELECT pid, mode, stream, level, message FROM runtime_logs ORDER BY id DESC LIMIT 1").fetchone()
    assert (pid, mode, stream, level, msg) == (os.getpid(), "paper", "engine", "INFO", line)
    assert echo.getvalue().count("\n") == 401


# ------------------------------------------------------------------ sd_notify
@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_datagrams(tmp_path, monkeypatch, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"aiq-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
    sock.settimeout(2)
    try:
        assert ready("trading 50 symbols")
        assert sock.recv(4096) == b"READY=1\nSTATUS=trading 50 symbols"
        assert watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert stopping() and sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_sd_notify_is_a_no_op_without_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/socket"}) is False


def test_watchdog_interval_and_pinger():
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}) == 60.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    now = [0.0]
    sent = []
    pinger = WatchdogPinger(60.0, monotonic=lambda: now[0], send=lambda: sent.append(now[0]) or True)
    for t in (0, 10, 59.9, 60, 61, 130):
        now[0] = t
        pinger.maybe_ping()
    assert sent == [0, 60, 130]


# ------------------------------------------------------------------ prune_runtime_logs
def test_prune_runtime_logs(tmp_path):
    db = tmp_path / "trading_engine.db"
    conn = open_trading_db(db)
    day = 86_400_000
    now = now_ms()
    rows = [(now - d * day + 60_000, iso_utc(now - d * day + 60_000), 1, "paper", "engine", "INFO", f"d{d}") for d in range(30)]
    conn.executemany("INSERT INTO runtime_logs (ts_ms, ts, pid, mode, stream, level, message) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    dry = run_tool("prune_runtime_logs.py", "--db", str(db), "--keep-days", "14", "--dry-run")
    assert dry.returncode == 0 and "would prune 15 runtime_logs rows" in dry.stderr
    res = run_tool("prune_runtime_logs.py", "--db", str(db), "--vacuum", env={"AI_QUANT_RUNTIME_LOG_KEEP_DAYS": "7"})
    assert res.returncode == 0 and "pruned 22 runtime_logs rows" in res.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM runtime_logs").fetchone()[0] == 8
    bad = run_tool("prune_runtime_logs.py", "--db", str(db), "--keep-days", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "--keep-days 0: must be >= 1"
    missing = run_tool("prune_runtime_logs.py", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"--db {tmp_path / 'nope.db'}: no such file"
    default_missing = run_clean("prune_runtime_logs.py", env=clean_env(AI_QUANT_DB_PATH=str(tmp_path / "gone.db")))
    assert default_missing.returncode == 0
    assert default_missing.stderr.startswith(f"nothing to prune: no DB at {tmp_path / 'gone.db'}")


# ------------------------------------------------------------------ flat_now
def _paper_db(tmp_path) -> Path:
    db = tmp_path / "trading_engine.db"
    conn = open_trading_db(db)
    btc = insert_trade(conn, {"symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 100.0, "size": 2.0,
                              "balance": 1000.0, "entry_atr": 2.0, "leverage": 3.0})
    eth = insert_trade(conn, {"symbol": "ETH", "type": "SHORT", "action": "OPEN", "price": 50.0, "size": 4.0,
                              "balance": 999.0})
    upsert_position_state(conn, "BTC", open_trade_id=btc, trailing_sl=95.0)
    upsert_position_state(conn, "ETH", open_trade_id=eth)
    conn.close()
    return db


def _candles(tmp_path) -> Path:
    path = tmp_path / "candles_1h.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE candles (symbol TEXT, interval TEXT, t INTEGER, t_close INTEGER, o REAL, h REAL,"
                 " l REAL, c REAL, v REAL, n INTEGER, PRIMARY KEY (symbol, interval, t))")
    conn.executemany("INSERT INTO candles VALUES (?, '1h', ?, ?, 0, 0, 0, ?, 0, 0)",
                     [("BTC", 0, 3_599_999, 104.0), ("BTC", 3_600_000, 7_199_999, 110.0)])
    conn.commit()
    conn.close()
    return path


def clean_env(**extra: str) -> dict:
    """The test process's env without any AI_QUANT_* (the operator's shell must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    return {**env, "AI_QUANT_STRATEGY_YAML": "/nonexistent/strategy.yaml", **extra}


def run_clean(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "tools" / name), *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_flat_now_paper_with_candle_prices(tmp_path):
    db, kill = _paper_db(tmp_path), tmp_path / "ai-quant-kill"
    args = ["--kill-file", str(kill), "--pause-mode", "close_only", "--paper", "--paper-db", str(db),
            "--candles-db", str(_candles(tmp_path)), "--yes"]
    res = run_tool("flat_now.py", *args)
    # ETH has no candle: it is NOT booked at the entry price (a fake pnl 0) without --allow-entry-price
    assert res.returncode == 1, res.stderr
    assert kill.read_text() == "close_only\n"
    assert "paper: NOT closed ETH SHORT 4: no candle price in" in res.stderr
    assert "Done: paused=1 paper_closed=1 live_closed=0 paper_refused=1" in res.stderr
    conn = open_trading_db(db)
    assert [p["symbol"] for p in open_positions(conn)] == ["ETH"]
    assert [r[0] for r in conn.execute("SELECT symbol FROM position_state")] == ["ETH"]  # its state is kept
    conn.close()
    res = run_tool("flat_now.py", *args, "--allow-entry-price")
    assert res.returncode == 0, res.stderr
    assert "paper: closed ETH SHORT 4 at the ENTRY price 50 (no candle price; --allow-entry-price)" in res.stderr
    conn = open_trading_db(db)
    rows = conn.execute("SELECT symbol, type, action, price, size, pnl, balance, confidence, meta_json FROM trades "
                        "WHERE action = 'CLOSE' ORDER BY id").fetchall()
    assert [tuple(r)[:8] for r in rows] == [
        ("BTC", "SYSTEM", "CLOSE", 110.0, 2.0, 20.0, 1019.0, "N/A"),  # last close 110 -> +20
        ("ETH", "SYSTEM", "CLOSE", 50.0, 4.0, 0.0, 1019.0, "N/A"),    # --allow-entry-price: entry price, pnl 0
    ]
    assert json.loads(rows[1]["meta_json"])["price_source"] == "entry"
    assert conn.execute("SELECT COUNT(*) FROM position_state").fetchone()[0] == 0
    assert open_positions(conn) == []
    assert [r[0] for r in conn.execute("SELECT event FROM audit_events")] == ["FLAT_NOW", "FLAT_NOW"]
    again = run_tool("flat_now.py", "--kill-file", str(kill), "--paper-db", str(db), "--yes")
    assert again.returncode == 0 and "paper_closed=0" in again.stderr


def test_flat_now_defaults_to_the_daemons_paper_db_and_candle_db(tmp_path):
    from tools.flat_now import default_paper_db

    db, kill = _paper_db(tmp_path), tmp_path / "kill"
    dbs = tmp_path / "candles_dbs"
    dbs.mkdir()
    for iv, btc, eth in (("15m", 120.0, 40.0), ("1h", 1.0, 1.0)):
        conn = sqlite3.connect(dbs / f"candles_{iv}.db")
        conn.execute("CREATE TABLE candles (symbol TEXT, t INTEGER, c REAL)")
        conn.executemany("INSERT INTO candles VALUES (?, ?, ?)", [("BTC", 0, 1.0), ("BTC", 1, btc), ("ETH", 1, eth)])
        conn.commit()
        conn.close()
    yaml_path = tmp_path / "strategy.yaml"
    yaml_path.write_text("global:\n  engine:\n    interval: 15m\n")
    # the daemon's AI_QUANT_DB_PATH and the strategy YAML's interval, as a systemd env file would set them
    env = clean_env(AI_QUANT_DB_PATH=str(db), AI_QUANT_CANDLES_DB_DIR=str(dbs), AI_QUANT_STRATEGY_YAML=str(yaml_path))
    res = run_clean("flat_now.py", "--kill-file", str(kill), "--paper", "--yes", env=env)
    assert res.returncode == 0, res.stderr
    assert f"@ 120 (candles:{dbs / 'candles_15m.db'}) pnl=+40.00" in res.stderr  # BTC long 2 from 100
    assert f"@ 40 (candles:{dbs / 'candles_15m.db'}) pnl=+40.00" in res.stderr   # ETH short 4 from 50
    assert open_positions(open_trading_db(db)) == []
    # AI_QUANT_PAPER_DB_PATH wins; AI_QUANT_DB_PATH of a live daemon is never the paper DB; relative = repo
    assert default_paper_db({"AI_QUANT_PAPER_DB_PATH": "/a.db", "AI_QUANT_DB_PATH": "/b.db"}) == Path("/a.db")
    assert default_paper_db({"AI_QUANT_DB_PATH": "x/p.db"}) == REPO / "x/p.db"
    assert default_paper_db({"AI_QUANT_DB_PATH": "/b.db", "AI_QUANT_MODE": "live"}) == REPO / "trading_engine.db"


def test_flat_now_missing_or_bad_paper_db_is_an_error_after_the_pause(tmp_path):
    kill, missing = tmp_path / "kill", tmp_path / "state" / "paper.db"
    res = run_clean("flat_now.py", "--kill-file", str(kill), "--paper", "--yes",
                    env=clean_env(AI_QUANT_DB_PATH=str(missing)))
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines()[-1] == (f"paper DB {missing} does not exist: nothing flattened in paper; "
                                           f"the kill file {kill} WAS written (close_only)")
    assert kill.read_text() == "close_only\n" and not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all, just text " * 100)
    res = run_clean("flat_now.py", "--kill-file", str(kill), "--paper-db", str(junk), "--yes", env=clean_env())
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1].startswith(f"paper DB {junk} is unreadable")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    res = run_clean("flat_now.py", "--no-pause", "--paper-db", str(other), "--yes", env=clean_env())
    assert res.returncode == 2 and res.stderr.strip() == (f"paper DB {other} is not a trading DB (no trades table): "
                                                          "nothing flattened in paper; nothing was paused (--no-pause)")


def test_flat_now_live_broker_errors_skip_to_the_next_coin(tmp_path):
    import eth_account
    from hyperliquid.exchange import Exchange

    from live.sandbox import AssetSpec, SandboxExchange

    hour = 3_600_000
    t0 = 1_700_002_800_000 // hour * hour
    wallet = eth_account.Account.create()
    bars = {c: [(t0 + i * hour, px, px * 1.01, px * 0.99, px, 10.0) for i in range(20)]
            for c, px in (("BTC", 30_000.0), ("ETH", 2_000.0))}
    ex = SandboxExchange([AssetSpec("BTC", 5, 50), AssetSpec("ETH", 4, 25)], bars, {wallet.address: 10_000.0},
                         start_bar=5).start()
    try:
        x = Exchange(wallet, ex.base_url)
        x.market_open("BTC", True, 0.05)
        x.market_open("ETH", False, 0.5)
        secrets = tmp_path / "s.json"
        secrets.write_text(json.dumps({"secret_key": wallet.key.hex().removeprefix("0x"),
                                       "main_address": wallet.address}))
        os.chmod(secrets, 0o600)
        ex.faults.fail_next("allMids", 500, n=2)  # BTC (first) cannot get a price on its two attempts
        res = run_clean("flat_now.py", "--kill-file", str(tmp_path / "kill"), "--live", "--yes", "--max-retries",
                        "2", "--verify-sleep-s", "0", env=clean_env(AI_QUANT_SECRETS_PATH=str(secrets),
                                                                    AI_QUANT_HL_BASE_URL=ex.base_url))
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        assert "live: BTC attempt 1 failed: ExchangeUnavailable: allMids: HTTP 500" in res.stderr and "live: BTC attempt 2 failed" in res.stderr
        assert "live: positions still open after 2 attempts: BTC 0.05" in res.stderr
        assert "Done: paused=1 paper_closed=0 live_closed=1 live_remaining=1" in res.stderr
        assert set(ex.positions(wallet.address)) == {"BTC"}  # ETH was closed despite BTC's trouble
    finally:
        ex.stop()


def test_flat_now_refusals(tmp_path):
    db, kill = _paper_db(tmp_path), tmp_path / "kill"
    live = run_tool("flat_now.py", "--kill-file", str(kill), "--live")
    assert live.returncode == 2 and live.stderr.strip() == "--live requires --yes (it sends real reduce-only orders)"
    no_tty = run_tool("flat_now.py", "--kill-file", str(kill), "--paper-db", str(db))
    assert no_tty.returncode == 2 and "without --yes" in no_tty.stderr
    state = tmp_path / "state"
    default = run_tool("flat_now.py", "--paper-db", str(db), "--yes",
                       env={"AI_QUANT_KILL_SWITCH_FILE": "", "XDG_STATE_HOME": str(state)})
    # no kill file named: the trader's default path is paused (the paper close then fails: no candles)
    assert default.stderr.startswith(f"paused: wrote close_only to {state / 'openclaw-ai-quant' / 'kill'}")
    assert (state / "openclaw-ai-quant" / "kill").read_text() == "close_only\n"
    assert oct((state / "openclaw-ai-quant").stat().st_mode & 0o777) == "0o700"
    assert not kill.exists()
    live_yes = run_tool("flat_now.py", "--kill-file", str(kill), "--pause-mode", "halt_all", "--live", "--yes",
                        env={"AI_QUANT_SECRETS_PATH": str(tmp_path / "no-secrets.json")})
    assert live_yes.returncode == 2  # live flatten cannot start without secrets: one line, no traceback
    assert "Traceback" not in live_yes.stderr and "no-secrets.json" in live_yes.stderr.splitlines()[-1]
    assert kill.read_text() == "halt_all\n"  # the pause still happened: it is always safe


# ------------------------------------------------------------------ exports and reality check
def test_export_state_and_csv(tmp_path):
    db = _paper_db(tmp_path)
    out = tmp_path / "paper_state.json"
    res = run_tool("export_state.py", "--source", "paper", "--output", str(out), "--db", str(db))
    assert res.returncode == 0, res.stderr
    state = json.loads(out.read_text())
    assert state["version"] == 1 and state["source"] == "paper" and state["balance"] == 999.0
    assert [(p["symbol"], p["side"], p["size"], p["entry_price"], p["trailing_sl"]) for p in state["positions"]] == [
        ("BTC", "LONG", 2.0, 100.0, 95.0), ("ETH", "SHORT", 4.0, 50.0, None)]
    assert set(state["positions"][0]) >= {"entry_atr", "confidence", "leverage", "margin_used", "adds_count",
                                          "tp1_taken", "open_time_ms", "last_add_time_ms"}
    missing = run_tool("export_state.py", "--source", "paper", "--output", str(out), "--db", str(tmp_path / "x.db"))
    assert missing.returncode == 1 and missing.stderr.strip() == f"{tmp_path / 'x.db'}: no such trading DB"
    bad = run_tool("export_state.py", "--source", "papr", "--output", str(out))
    assert bad.returncode == 2 and "--source 'papr'" in bad.stderr
    # --out (export_csv's spelling) is accepted too
    again = tmp_path / "again.json"
    assert run_tool("export_state.py", "--source", "paper", "--out", str(again), "--db", str(db)).returncode == 0
    assert json.loads(again.read_text())["balance"] == 999.0

    csv_out = tmp_path / "trades.csv"
    res = run_tool("export_csv.py", "--db", str(db), "--out", str(csv_out), "--hours", "1")
    assert res.returncode == 0 and res.stdout.strip() == str(csv_out)
    rows = list(csv.DictReader(csv_out.open()))
    assert [r["symbol"] for r in rows] == ["BTC", "ETH"] and rows[0]["price"] == "100.0"


def test_tools_resolve_the_trading_db_like_the_daemon(tmp_path):
    from tools.trading_dbs import TradingDbUnavailable, daemon_db_path

    assert daemon_db_path("paper", {"AI_QUANT_DB_PATH": "/p.db"}) == Path("/p.db")
    assert daemon_db_path("paper", {"AI_QUANT_DB_PATH": "x/p.db"}) == REPO / "x/p.db"  # anchored like the daemon
    assert daemon_db_path("live", {"AI_QUANT_MODE": "dry_live", "AI_QUANT_DB_PATH": "/l.db"}) == Path("/l.db")
    assert daemon_db_path("paper", {"AI_QUANT_MODE": "live", "AI_QUANT_DB_PATH": "/l.db"}) == REPO / "trading_engine.db"
    assert daemon_db_path("live", {}) == REPO / "trading_engine_live.db"
    assert daemon_db_path(None, {"AI_QUANT_MODE": "live"}) == REPO / "trading_engine_live.db"
    assert daemon_db_path("paper", {"AI_QUANT_PAPER_DB_PATH": "/a.db", "AI_QUANT_DB_PATH": "/b.db"}) == Path("/a.db")
    with pytest.raises(TradingDbUnavailable, match="AI_QUANT_MODE='papr'"):
        daemon_db_path("paper", {"AI_QUANT_MODE": "papr"})
    with pytest.raises(TradingDbUnavailable, match="AI_QUANT_HEARTBEAT_SECS"):
        daemon_db_path("paper", {"AI_QUANT_HEARTBEAT_SECS": "nan"})
    # the tools follow AI_QUANT_DB_PATH as the daemon does (they used to read <repo>/trading_engine.db)
    db, out = _paper_db(tmp_path), tmp_path / "state.json"
    res = run_clean("export_state.py", "--source", "paper", "--out", str(out), env=clean_env(AI_QUANT_DB_PATH=str(db)))
    assert res.returncode == 0 and json.loads(out.read_text())["balance"] == 999.0, res.stderr
    res = run_clean("export_csv.py", "--out", str(tmp_path / "t.csv"), env=clean_env(AI_QUANT_DB_PATH=str(db)))
    assert res.returncode == 0 and (tmp_path / "t.csv").read_text().count("\n") == 3, res.stderr
    res = run_clean("reality_check.py", env=clean_env(AI_QUANT_DB_PATH=str(db),
                                                      AI_QUANT_LIVE_DB_PATH=str(tmp_path / "none.db")))
    assert res.returncode == 0 and f"== {db}\n" in res.stdout and "missing db" in res.stdout, res.stderr
    # a DB without any balance is an error, not `"balance": null` with exit 0
    empty = tmp_path / "empty.db"
    open_trading_db(empty).close()
    res = run_clean("export_state.py", "--source", "paper", "--out", str(tmp_path / "e.json"),
                    env=clean_env(AI_QUANT_DB_PATH=str(empty)))
    assert res.returncode == 1 and "no trade carries a balance" in res.stderr and not (tmp_path / "e.json").exists()


def test_reality_check(tmp_path):
    db = _paper_db(tmp_path)
    conn = open_trading_db(db)
    audit(conn, "RISK_BLOCK", "BTC", "warn", {"reason": "entry_rate"})
    audit(conn, "RISK_BLOCK", "ETH", "warn", {})
    audit(conn, "RISK_KILL", None, "warn", {})
    audit(conn, "OLD", None, "info", {}, ts_ms=now_ms() - 5 * 3_600_000)
    insert_trade(conn, {"timestamp": iso_utc(now_ms() - 5 * 3_600_000), "symbol": "BTC", "type": "LONG",
                        "action": "CLOSE", "price": 90.0, "size": 1.0, "reason": "old_one"})
    conn.execute("INSERT INTO runtime_logs (ts_ms, ts, pid, mode, stream, level, message) VALUES (?, ?, 1, 'paper',"
                 " 'engine', 'INFO', ?)", (now_ms(), iso_utc(now_ms()), format_heartbeat(**HB)))
    conn.close()
    res = run_tool("reality_check.py", "--symbol", "btc", "--hours", "2", "--db", str(db))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "audit events in the last 2h: 3" in out and "  RISK_BLOCK: 2" in out and "OLD" not in out
    assert "kill=close_only kill_reason=daily_loss:2024-03-05" in out
    header = "  id timestamp type action price size pnl balance reason\n"
    assert f"trades of BTC in the last 2h: 1\n{header}  1 " in out and "old_one" not in out  # --hours filters trades
    assert " LONG OPEN 100 2 - 1000 " in out  # numbers as numbers, NULL as '-'
    assert "any age" not in out
    # a DB named with --db that is missing is an error (exit 1, one line), the others are still reported
    res = run_tool("reality_check.py", "--db", str(db), "--db", str(tmp_path / "live.db"))
    assert res.returncode == 1 and f"== {tmp_path / 'live.db'}\nmissing db" in res.stdout
    assert res.stderr == f"reality_check: {tmp_path / 'live.db'}: missing\n"
    res = run_tool("reality_check.py", "--symbol", "BTC", "--hours", "6", "--last", "5", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "trades of BTC in the last 6h: 2" in res.stdout and "last 2 trades of BTC (any age):" in res.stdout
    assert run_tool("reality_check.py", "--last", "-1", "--db", str(db)).returncode == 2


# ------------------------------------------------------------------ ensemble runner
def _spec(tmp_path) -> Path:
    base = tmp_path / "strategy_overrides.yaml"
    base.write_text("global:\n  trade:\n    size_multiplier: 1.0\n    leverage: 2.0\n")
    spec = tmp_path / "ensemble.yaml"
    spec.write_text(
        "strategies:\n"
        f"  - name: a\n    strategy_yaml: {base}\n"
        "    overrides: {trade.size_multiplier: 0.6, global.trade.leverage: 3.0}\n"
        "    env: {ROLE: a}\n"
        f"  - name: b\n    config: {base}\n"
        "    overrides: {trade.size_multiplier: 0.4}\n"
        "    env: {ROLE: b, AI_QUANT_KILL_SWITCH: close_only}\n")
    return spec


def test_ensemble_plan_writes_derived_yaml_and_env(tmp_path):
    import yaml

    out = tmp_path / "ens"
    res = run_tool("ensemble_runner.py", "--spec", str(_spec(tmp_path)), "--out-dir", str(out))
    assert res.returncode == 0, res.stderr
    a = yaml.safe_load((out / "strategy.a.yaml").read_text())
    assert a["global"]["trade"]["size_multiplier"] == 0.6 and a["global"]["trade"]["leverage"] == 3.0
    assert yaml.safe_load((out / "strategy.b.yaml").read_text())["global"]["trade"]["size_multiplier"] == 0.4
    assert f"AI_QUANT_STRATEGY_YAML={out / 'strategy.a.yaml'}" in res.stdout
    assert "AI_QUANT_MODE=dry_live" in res.stdout and "AI_QUANT_RUN_ID=ensemble:b" in res.stdout
    assert f"AI_QUANT_LOCK_PATH={out / 'a.lock'}" in res.stdout and "AI_QUANT_KILL_SWITCH=close_only" in res.stdout
    assert "dry run" in res.stderr


def test_ensemble_bad_spec_is_one_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("strategies: []\n")
    res = run_tool("ensemble_runner.py", "--spec", str(spec))
    assert res.returncode == 1 and res.stderr.strip() == f"{spec}: strategies must be a list of 1 to 3 entries"
    base = tmp_path / "base.yaml"
    base.write_text("global: {}\n")
    spec.write_text(f"strategies:\n  - name: a\n    strategy_yaml: {base}\n    overrides: {{trade.leverage: -4}}\n")
    res = run_tool("ensemble_runner.py", "--spec", str(spec), "--out-dir", str(tmp_path / "o"))
    assert res.returncode == 1 and res.stderr.startswith("strategies 'a': ") and res.stderr.count("\n") == 1


# a: stops cleanly on SIGTERM (leaves a mark); b: exits with 7 once a is up and listening
CHILD = """
import os, pathlib, signal, sys, time
mark, role = os.environ["MARK"], os.environ["ROLE"]
signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path(mark + role).write_text("term"), sys.exit(0)))
os.write(1, f"child {role} {os.environ['AI_QUANT_MODE']}\\n".encode())
if role == "a":
    pathlib.Path(mark + "ready").write_text("1")
for _ in range(400):
    if pathlib.Path(mark + "ready").exists():
        break
    time.sleep(0.05)
time.sleep(0 if role == "b" else 60)
sys.exit(7)
"""


def test_ensemble_launch_one_dies_others_stopped(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    res = run_tool("ensemble_runner.py", "--spec", str(_spec(tmp_path)), "--out-dir", str(tmp_path / "ens"),
                   "--mode", "paper", "--yes", "--daemon-cmd", f"{PY} {child}",
                   env={"MARK": str(tmp_path / "term_")})
    assert res.returncode == 7, res.stderr
    assert "b exited with code 7; stopping the others" in res.stderr
    assert (tmp_path / "term_a").read_text() == "term" and not (tmp_path / "term_b").exists()
    assert "child a paper" in res.stdout and "child b paper" in res.stdout


def test_ensemble_ctrl_c_is_130_and_kills_stubborn_children(tmp_path):
    stubborn = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.write(1, b'up\\n'); time.sleep(60)"
    proc = subprocess.Popen([PY, str(REPO / "tools/ensemble_runner.py"), "--spec", str(_spec(tmp_path)),
                             "--out-dir", str(tmp_path / "ens"), "--yes", "--terminate-timeout-s", "0.5",
                             "--daemon-cmd", f"{PY} -c \"{stubborn}\""],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, deadline = 0, time.monotonic() + 20
    while started < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        started += line.strip() == "up"
    if started < 2:
        proc.kill()
        pytest.fail(f"children did not start: {proc.communicate()[1]}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    pids = [int(line.split("pid ")[1].rstrip(")")) for line in err.splitlines() if line.startswith("started")]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ------------------------------------------------------------------ systemd examples
UNIT_PREFIX = "%h/openclaw-ai-quant"
PENDING_SCRIPTS = {"tools/run_scheduled_replay_alignment_gate.py"}  # written by the replay-gate work


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd ini: sections of repeatable keys (configparser cannot hold repeated Environment=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}: bad section line {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}: bad line {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def console_scripts() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def check_command(argv: list[str], unit: str) -> None:
    exe = argv[0].replace(UNIT_PREFIX, str(REPO))
    if exe == "/usr/bin/flock":
        args = [a for a in argv[1:] if not a.startswith("-")]
        return check_command(args[1:], unit)  # args[0] is the lock file
    if exe.startswith(str(REPO / ".venv" / "bin")):
        name = Path(exe).name
        if name in ("python", "python3"):
            script = argv[1]
            assert script in PENDING_SCRIPTS or (REPO / script).is_file(), f"{unit}: {script} missing"
        else:
            assert name in console_scripts(), f"{unit}: {name} is not a console script of pyproject"
        return
    assert Path(exe).is_absolute() and Path(exe).exists(), f"{unit}: {exe} does not exist"


def test_systemd_examples_parse_and_point_at_real_commands():
    units = sorted((REPO / "systemd").glob("*.service.example")) + sorted((REPO / "systemd").glob("*.timer.example"))
    names = {p.name.removesuffix(".example") for p in units}
    assert {"openclaw-ai-quant-trader.service", "openclaw-ai-quant-live.service",
            "openclaw-ai-quant-ws-sidecar.service", "openclaw-ai-quant-monitor.service",
            "openclaw-ai-quant-factory.service", "openclaw-ai-quant-factory.timer",
            "openclaw-ai-quant-prune-runtime-logs.service", "openclaw-ai-quant-prune-runtime-logs.timer",
            "openclaw-ai-quant-replay-alignment-gate.service", "openclaw-ai-quant-replay-alignment-gate.timer"} <= names
    for path in units:
        unit = parse_unit(path)
        if path.name.endswith(".timer.example"):
            assert unit["Timer"]["OnCalendar"][0].endswith("UTC")
            assert unit["Timer"]["Unit"][0] in names, f"{path.name}: timer targets an unknown unit"
            continue
        svc = unit["Service"]
        (exec_start,) = svc["ExecStart"]
        import shlex

        check_command(shlex.split(exec_start), path.name)
        assert svc["WorkingDirectory"] == [UNIT_PREFIX]
        assert "PrivateTmp" not in svc  # the runbook's /tmp kill file must stay visible


@pytest.mark.parametrize("name,mode", [("openclaw-ai-quant-trader", "paper"), ("openclaw-ai-quant-live", "live")])
def test_trader_units_are_notify_with_watchdog(name, mode):
    svc = parse_unit(REPO / "systemd" / f"{name}.service.example")["Service"]
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"] and svc["WatchdogSec"] == ["120"]
    assert svc["Restart"] == ["always"] and svc["RestartSec"] == ["5"]
    assert f"AI_QUANT_MODE={mode}" in svc["Environment"]
    assert svc["ExecStart"] == [f"{UNIT_PREFIX}/.venv/bin/trader run"]
    if mode == "live":
        assert svc["EnvironmentFile"] == ["%h/.config/openclaw/ai-quant-live.env"]
    else:  # the live env file's AI_QUANT_DB_PATH (the live DB) must never reach the paper trader
        assert svc["EnvironmentFile"] == ["-%h/.config/openclaw/ai-quant-paper.env"]
    # an env kill must be able to reach the unit: env file, or set-environment (+ PassEnvironment)
    assert "AI_QUANT_KILL_SWITCH" in " ".join(svc.get("PassEnvironment", [])).split()
    text = (REPO / "systemd" / f"{name}.service.example").read_text()
    assert "set-environment AI_QUANT_KILL_SWITCH=close_only" in text and "export" in text


def test_risk_doc_explains_the_kill_switch_under_systemd():
    text = (REPO / "docs" / "RISK.md").read_text()
    section = text[text.index("### Under systemd"):]
    for needle in ("does\n**nothing**", "~/.config/openclaw/ai-quant-live.env",
                   "systemctl --user set-environment AI_QUANT_KILL_SWITCH=close_only",
                   "systemctl --user unset-environment AI_QUANT_KILL_SWITCH", "PassEnvironment=AI_QUANT_KILL_SWITCH",
                   "no restart"):
        assert needle in section, needle


def test_factory_timer_is_nightly_and_never_overlaps():
    svc = parse_unit(REPO / "systemd" / "openclaw-ai-quant-factory.service.example")["Service"]
    assert svc["ExecStart"][0].startswith("/usr/bin/flock -n ") and "factory run --profile daily" in svc["ExecStart"][0]
    timer = parse_unit(REPO / "systemd" / "openclaw-ai-quant-factory.timer.example")["Timer"]
    assert timer["OnCalendar"] == ["*-*-* 00:30:00 UTC"]


def test_systemd_analyze_accepts_the_calendars():
    import shutil

    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    for name in ("factory", "prune-runtime-logs", "replay-alignment-gate"):
        timer = parse_unit(REPO / "systemd" / f"openclaw-ai-quant-{name}.timer.example")["Timer"]
        res = subprocess.run([exe, "calendar", timer["OnCalendar"][0]], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_env_example_lists_every_variable_the_code_reads():
    import re

    listed = set(re.findall(r"^#?((?:AI_QUANT|AIQ|HL)_[A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    used: dict[str, str] = {}
    for pkg in ("live", "tools", "factory", "cpu_replay", "marketdata", "gpu", "strategy"):
        for path in (REPO / pkg).rglob("*.py"):
            for name in re.findall(r"[\"'$\[]((?:AI_QUANT|AIQ|HL)_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()):
                used.setdefault(name, str(path.relative_to(REPO)))
    missing = {n: p for n, p in used.items() if n not in listed and not n.startswith("AI_QUANT_CANDLE_HORIZON_")}
    assert not missing, f".env.example lacks: {missing}"
