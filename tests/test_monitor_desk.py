"""The desk figures behind the monitor's charts and banners, read from real trading DBs."""

from __future__ import annotations

import sqlite3

from test_monitor import HB, log_row
from test_monitor_browser import CHECKPOINT_SYMBOLS, build_desk_db

from live.monitor.snapshot import HISTORY_POINTS, DeskReader, build_snapshot
from live.runtime_log import format_heartbeat
from live.trading_db import audit, insert_trade, iso_utc, now_ms, open_trading_db


def test_kill_comes_from_whichever_of_heartbeat_and_audit_row_is_newer(tmp_path):
    db = tmp_path / "paper.db"
    now = build_desk_db(db, kill="off")
    conn = open_trading_db(db)
    audit(conn, "RISK_KILL", None, "warning", {"mode": "halt_all", "reason": "manual", "effective": "halt_all"},
          ts_ms=now - 60_000)  # older than the heartbeat (5 s old): the heartbeat's 'off' is newer
    conn.close()
    assert build_snapshot("paper", db)["kill"]["mode"] == "off"
    conn = open_trading_db(db)
    audit(conn, "RISK_KILL", None, "warning", {"mode": "halt_all", "reason": "manual", "effective": "halt_all"})
    conn.close()
    kill = build_snapshot("paper", db)["kill"]
    assert (kill["mode"], kill["level"], kill["source"]) == ("halt_all", 2, "audit:RISK_KILL")
    conn = open_trading_db(db)
    audit(conn, "RISK_CLEAR", None, "info", {"cleared": ["manual"], "by": "file", "effective": "off"})
    conn.close()
    assert build_snapshot("paper", db)["kill"]["mode"] == "off"


def test_round_trips_daily_pnl_and_positions_from_the_checkpoint(tmp_path):
    db = tmp_path / "paper.db"
    build_desk_db(db)
    snap = build_snapshot("paper", db)
    trips = snap["round_trips"]
    assert [t["symbol"] for t in trips] == ["ETH", "SOL", "ETH", "SOL"]
    assert trips[-1]["net"] == 98.0 and trips[-1]["side"] == "LONG"  # 100 pnl - 2 x 1 fee
    assert sum(d["net"] for d in snap["daily_pnl"]) == snap["balance"] - 10_000.0
    assert snap["balance_series"]["balance"][-1] == snap["balance"]
    pepe = next(p for p in snap["open_positions"] if p["symbol"] == "PEPE")
    assert pepe["mark_price"] == 0.00001201 and pepe["funding_paid"] == -0.03
    assert abs(pepe["unrealised_pnl"] - (0.00001234 - 0.00001201) * 40_000_000) < 1e-9
    assert snap["equity"] == snap["balance"] + snap["unrealised_pnl"]
    assert [d["symbol"] for d in snap["data_lag"]] == CHECKPOINT_SYMBOLS
    assert {d["source"] for d in snap["data_lag"]} == {"checkpoint"}


def test_data_lag_per_symbol_from_the_candles_db(tmp_path):
    from marketdata.candles import write_candles

    db, candles = tmp_path / "paper.db", tmp_path / "candles_1h.db"
    now = build_desk_db(db)
    hour = 3_600_000
    last = now // hour * hour - hour
    write_candles(candles, [dict(symbol="BTC", t=last, o=1.0, h=1.0, l=1.0, c=1.0, v=1.0),
                            dict(symbol="ETH", t=last - 5 * hour, o=1.0, h=1.0, l=1.0, c=1.0, v=1.0)], "1h")
    lag = {d["symbol"]: d for d in DeskReader("paper", db, candles_db=candles).snapshot(now)["data_lag"]}
    assert lag["BTC"]["last_bar_ms"] == last + hour and lag["BTC"]["source"] == "candles_db"
    assert lag["ETH"]["lag_s"] - lag["BTC"]["lag_s"] == 5 * 3600


def test_balance_series_is_incremental_thinned_and_restarts_on_a_new_db(tmp_path):
    db = tmp_path / "paper.db"
    conn = open_trading_db(db)
    t0 = now_ms() - 10 * 86_400_000
    rows = [(iso_utc(t0 + i * 60_000), "BTC", "LONG", "OPEN", 1.0, 1.0, 0.0, 0.0, 10_000.0 + i)
            for i in range(2 * HISTORY_POINTS + 10)]
    conn.executemany("INSERT INTO trades (timestamp, symbol, type, action, price, size, pnl, fee_usd, balance) "
                     "VALUES (?,?,?,?,?,?,?,?,?)", rows)
    log_row(conn, now_ms(), format_heartbeat(**HB))
    conn.close()
    reader = DeskReader("paper", db)
    series = reader.snapshot()["balance_series"]
    assert HISTORY_POINTS <= len(series["t_ms"]) <= 2 * HISTORY_POINTS
    assert series["balance"][-1] == 10_000.0 + 2 * HISTORY_POINTS + 9  # the newest point is kept
    conn = open_trading_db(db)
    insert_trade(conn, {"timestamp": iso_utc(now_ms()), "symbol": "BTC", "type": "LONG", "action": "CLOSE",
                        "price": 1.0, "size": 1.0, "pnl": 5.0, "fee_usd": 0.0, "balance": 1.0})
    conn.close()
    assert reader.snapshot()["balance_series"]["balance"][-1] == 1.0
    db.unlink()
    conn = sqlite3.connect(db)
    conn.close()
    open_trading_db(db).close()
    assert reader.snapshot()["balance_series"]["balance"] == []
