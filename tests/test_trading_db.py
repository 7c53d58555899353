"""The trading DB on real SQLite files: schema contract, durability settings, idempotent fills."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from live.trading_db import (
    audit,
    engine_fill_hash,
    insert_trade,
    last_balance,
    load_engine_state,
    open_positions,
    open_trading_db,
    save_engine_state,
    transaction,
    upsert_position_state,
)

EXPECTED = {
    "trades": ["id", "timestamp", "symbol", "type", "action", "price", "size", "notional", "reason", "confidence",
               "pnl", "fee_usd", "fee_token", "fee_rate", "balance", "entry_atr", "leverage", "margin_used",
               "meta_json", "fill_hash", "fill_tid", "config_id", "bar_t_ms"],
    "position_state": ["symbol", "open_trade_id", "trailing_sl", "last_funding_time", "updated_at", "adds_count",
                       "tp1_taken", "last_add_time", "entry_adx_threshold", "state_json"],
    "runtime_logs": ["id", "ts_ms", "ts", "pid", "mode", "stream", "level", "message"],
    "audit_events": ["id", "timestamp", "ts_ms", "symbol", "event", "level", "data_json"],
    "engine_state": ["key", "value_json"],
}


def test_schema_pragmas_and_permissions(tmp_path):
    db = tmp_path / "trading_engine.db"
    conn = open_trading_db(db)
    for table, cols in EXPECTED.items():
        assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == cols
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    insert_trade(conn, {"symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 1.0, "size": 1.0})
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode) == 0o600
    idx = {r[1] for r in conn.execute("PRAGMA index_list(runtime_logs)")}
    assert "idx_runtime_logs_ts_ms" in idx


def test_reopen_migrates_an_older_schema(tmp_path):
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, symbol TEXT, type TEXT,"
                " action TEXT, price REAL, size REAL, notional REAL, reason TEXT, confidence TEXT, pnl REAL,"
                " fee_usd REAL, fee_token TEXT, fee_rate REAL, balance REAL, entry_atr REAL, leverage REAL,"
                " margin_used REAL, meta_json TEXT, fill_hash TEXT, fill_tid INTEGER, UNIQUE(fill_hash, fill_tid))")
    raw.commit()
    raw.close()
    conn = open_trading_db(db)
    assert [r[1] for r in conn.execute("PRAGMA table_info(trades)")] == EXPECTED["trades"]


def test_insert_trade_is_idempotent_on_fill_hash(tmp_path):
    conn = open_trading_db(tmp_path / "t.db")
    h = engine_fill_hash("paper:cfg1", 1_700_000_000_000, "btc", "open", 0)
    assert h == engine_fill_hash("paper:cfg1", 1_700_000_000_000, "BTC", "OPEN", 0)
    assert h != engine_fill_hash("paper:cfg1", 1_700_000_000_000, "BTC", "OPEN", 1)
    row = {"symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 50_000.0, "size": 0.1, "fill_hash": h}
    first = insert_trade(conn, row)
    assert insert_trade(conn, row) == first
    assert conn.execute("SELECT COUNT(*), fill_tid FROM trades").fetchone()[:] == (1, 0)
    with pytest.raises(ValueError, match="action"):
        insert_trade(conn, {"symbol": "BTC", "action": "BUY"})
    with pytest.raises(ValueError, match="unknown trade column"):
        insert_trade(conn, {"symbol": "BTC", "action": "OPEN", "qty": 1})


def test_kill_9_then_replay_never_duplicates(tmp_path):
    db = tmp_path / "t.db"
    script = textwrap.dedent(f"""
        import os, signal
        from live.trading_db import open_trading_db, insert_trade, engine_fill_hash
        conn = open_trading_db({str(db)!r})
        for i, t in enumerate((1000, 2000, 3000)):
            insert_trade(conn, {{"symbol": "ETH", "type": "LONG", "action": "OPEN" if i == 0 else "ADD",
                                 "price": 2000.0 + i, "size": 1.0, "bar_t_ms": t,
                                 "fill_hash": engine_fill_hash("paper:x", t, "ETH", "OPEN" if i == 0 else "ADD", 0)}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    conn = open_trading_db(db)
    assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 3  # synchronous=FULL: all survived
    for i, t in enumerate((1000, 2000, 3000, 4000)):  # the restarted engine replays from the last checkpoint
        action = "OPEN" if i == 0 else "ADD"
        insert_trade(conn, {"symbol": "ETH", "type": "LONG", "action": action, "price": 2000.0 + i, "size": 1.0,
                            "bar_t_ms": t, "fill_hash": engine_fill_hash("paper:x", t, "ETH", action, 0)})
    assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 4


def test_open_positions_replays_trades_and_uses_position_state(tmp_path):
    conn = open_trading_db(tmp_path / "t.db")
    ts = "2024-03-05T10:00:00.000+00:00"
    btc = insert_trade(conn, {"timestamp": ts, "symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 100.0,
                              "size": 2.0, "entry_atr": 3.0, "leverage": 3.0, "margin_used": 66.0,
                              "confidence": "high", "balance": 1000.0})
    insert_trade(conn, {"timestamp": "2024-03-05T11:00:00+00:00", "symbol": "BTC", "type": "LONG",
                        "action": "ADD", "price": 130.0, "size": 1.0, "margin_used": 43.0, "balance": 999.0})
    insert_trade(conn, {"symbol": "BTC", "type": "LONG", "action": "REDUCE", "price": 140.0, "size": 1.5,
                        "balance": 1020.0})
    insert_trade(conn, {"symbol": "ETH", "type": "SHORT", "action": "OPEN", "price": 10.0, "size": 5.0})
    insert_trade(conn, {"symbol": "ETH", "type": "SHORT", "action": "CLOSE", "price": 9.0, "size": 5.0,
                        "balance": 1025.0})
    upsert_position_state(conn, "BTC", open_trade_id=btc, trailing_sl=120.5, tp1_taken=1, adds_count=1,
                          state_json={"stop": 120.5})
    upsert_position_state(conn, "BTC", trailing_sl=121.0)  # update keeps the other columns
    (pos,) = open_positions(conn)
    assert pos["symbol"] == "BTC" and pos["side"] == "LONG"
    assert pos["size"] == pytest.approx(1.5)
    assert pos["entry_price"] == pytest.approx(110.0)  # (100*2 + 130*1) / 3
    assert (pos["adds_count"], pos["tp1_taken"], pos["trailing_sl"]) == (1, 1, 121.0)
    assert pos["open_time_ms"] == 1_709_632_800_000 and pos["last_add_time_ms"] == 1_709_636_400_000
    assert pos["margin_used"] == pytest.approx(109.0) and pos["state"] == {"stop": 120.5}
    assert last_balance(conn) == 1025.0


def test_audit_engine_state_and_transaction(tmp_path):
    conn = open_trading_db(tmp_path / "t.db")
    audit(conn, "RISK_BLOCK", "btc", "warn", {"reason": "entry_rate"}, ts_ms=1_700_000_000_000)
    row = conn.execute("SELECT timestamp, ts_ms, symbol, event, level, data_json FROM audit_events").fetchone()
    assert tuple(row) == ("2023-11-14T22:13:20.000+00:00", 1_700_000_000_000, "BTC", "RISK_BLOCK", "warn",
                          '{"reason": "entry_rate"}')
    save_engine_state(conn, "checkpoint", {"last_bar_t_ms": 5, "balance": 1.5})
    save_engine_state(conn, "checkpoint", {"last_bar_t_ms": 6, "balance": 2.5})
    assert load_engine_state(conn, "checkpoint") == {"last_bar_t_ms": 6, "balance": 2.5}
    assert load_engine_state(conn, "missing", 7) == 7
    with pytest.raises(RuntimeError), transaction(conn):
        insert_trade(conn, {"symbol": "SOL", "action": "SYSTEM"})
        raise RuntimeError("crash between two writes")
    assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 0
