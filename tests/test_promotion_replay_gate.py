"""Replay alignment gate: the pure comparison rules, and the scheduled CLI's fail-closed paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory import replay_gate as rg
from tests.test_promotion_fixtures import make_trading_db

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "run_scheduled_replay_alignment_gate.py"
IV = 3_600_000
T0 = 1_750_000_000_000 // IV * IV


def fill(sym="BTC", side="LONG", action="OPEN", bar=T0, price=100.0, size=1.5, dt=5_000):
    return rg.Fill(sym, side, action, bar, bar + dt, price, size)


def test_window_and_decision_bar():
    start, end = rg.window_bounds(T0 + 2 * 60_000 + 10, 240, 2)
    assert (start, end) == (T0 - 240 * 60_000 + 10, T0 + 10)
    assert rg.window_closes(start, end, IV) == (T0 - 3 * IV, T0)
    assert rg.decision_bar(T0 + 7_000, IV) == T0  # trader fills 7 s after the close
    assert rg.decision_bar(T0 - 1, IV) == T0  # an engine stamping t_close = close - 1
    assert rg.decision_bar(T0 + IV // 2 + 1, IV) == T0 + IV


def test_identical_fills_pass():
    live = [fill(), fill(action="CLOSE", bar=T0 + IV, price=101.25)]
    res = rg.compare_fills(live, list(live), lo=T0, hi=T0 + IV)
    assert res["ok"] and res["matched"] == 2 and res["reason_codes"] == []


@pytest.mark.parametrize("replay, code, kind", [
    ([fill(size=1.5 * (1 + 1e-6))], "state_initialisation_gap", "size_mismatch"),
    ([fill(price=100.000001)], "market_data_alignment_gap", "price_mismatch"),
    ([fill(side="SHORT")], "deterministic_logic_divergence", "live_only"),
    ([fill(), fill(sym="ETH", bar=T0 + IV)], "deterministic_logic_divergence", "replay_only"),
])
def test_mismatches_are_classified(replay, code, kind):
    res = rg.compare_fills([fill()], replay, lo=T0, hi=T0 + 2 * IV)
    assert not res["ok"] and code in res["reason_codes"]
    assert kind in {d["kind"] for d in res["diffs"]}


def test_tolerance_is_relative_1e9():
    ok = rg.compare_fills([fill(price=5e-5)], [fill(price=5e-5 * (1 + 5e-10))], lo=T0, hi=T0)
    bad = rg.compare_fills([fill(price=5e-5)], [fill(price=5e-5 * (1 + 2e-9))], lo=T0, hi=T0)
    assert ok["ok"] and bad["reason_codes"] == ["market_data_alignment_gap"]


def test_missing_candle_and_insufficient_trades_and_residuals():
    res = rg.compare_fills([fill(bar=T0 + IV)], [], lo=T0, hi=T0 + 2 * IV, missing_bars={("BTC", T0 + IV)})
    assert res["reason_codes"] == ["market_data_alignment_gap"]
    assert rg.compare_fills([], [], lo=T0, hi=T0)["reason_codes"] == ["insufficient_live_trades"]
    edge = rg.compare_fills([fill(), fill(bar=T0 + 2 * IV)], [fill()], lo=T0, hi=T0 + 2 * IV, strict=False)
    assert edge["ok"] and len(edge["residuals"]) == 1
    assert not rg.compare_fills([fill(), fill(bar=T0 + 2 * IV)], [fill()], lo=T0, hi=T0 + 2 * IV)["ok"]


def test_state_at_rebuilds_positions_before_the_window():
    rows = [
        {"t_ms": T0 - 5 * IV, "symbol": "SYSTEM", "action": "SYSTEM", "balance": 10_000.0},
        {"t_ms": T0 - 4 * IV + 3000, "symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 100.0, "size": 2.0,
         "balance": 9_999.0, "entry_atr": 1.5, "leverage": 3.0, "margin_used": 66.0},
        {"t_ms": T0 - 3 * IV + 3000, "symbol": "BTC", "type": "LONG", "action": "ADD", "price": 106.0, "size": 1.0,
         "balance": 9_998.5, "margin_used": 35.0},
        {"t_ms": T0 - 2 * IV + 3000, "symbol": "ETH", "type": "SHORT", "action": "OPEN", "price": 50.0, "size": 4.0,
         "balance": 9_998.0, "entry_atr": 0.5},
        {"t_ms": T0 - IV + 3000, "symbol": "ETH", "type": "SHORT", "action": "CLOSE", "price": 49.0, "size": 4.0,
         "balance": 10_002.0},
        {"t_ms": T0 + 3000, "symbol": "BTC", "type": "LONG", "action": "CLOSE", "price": 110.0, "size": 3.0,
         "balance": 10_030.0},
    ]
    st = rg.state_at(rows, IV, T0)
    assert st["balance"] == 10_002.0 and st["version"] == 1
    (btc,) = st["positions"]
    assert btc["size"] == 3.0 and btc["entry_price"] == pytest.approx(102.0) and btc["adds_count"] == 1
    assert btc["margin_used"] == 101.0 and btc["entry_atr"] == 1.5
    assert rg.state_at(rows[1:1], IV, T0) is None



def test_trading_db_rows_rebuild_a_valid_init_state_with_an_added_position(tmp_path):
    """read_trading_rows carries what state_at needs (entry_atr, leverage, margin_used, confidence,
    bar_t_ms) from a real trading DB, so an open position with an ADD becomes a replayable init state."""
    from cpu_replay.state_io import check_init_state
    from factory.promotion import read_trading_rows
    from live.trading_db import insert_trade, iso_utc, open_trading_db

    db = tmp_path / "trading.db"
    con = open_trading_db(db)
    for t, sym, side, action, price, size, extra in (
        (T0 - 5 * IV, "SYSTEM", None, "SYSTEM", None, None, {}),
        (T0 - 4 * IV + 3000, "BTC", "LONG", "OPEN", 100.0, 2.0,
         {"entry_atr": 1.5, "leverage": 3.0, "margin_used": 66.0, "confidence": "high"}),
        (T0 - 3 * IV + 3000, "BTC", "LONG", "ADD", 106.0, 1.0, {"entry_atr": 1.7, "margin_used": 35.0}),
    ):
        insert_trade(con, {"timestamp": iso_utc(t), "symbol": sym, "type": side, "action": action, "price": price,
                           "size": size, "balance": 10_000.0, "bar_t_ms": t - t % IV, **extra})
    con.close()
    rows = read_trading_rows(db, 0)
    assert rows[1]["bar_t_ms"] == T0 - 4 * IV and rows[1]["confidence"] == "high"
    st = rg.state_at(rows, IV, T0)
    (btc,) = st["positions"]
    assert btc["entry_atr"] == 1.5 and btc["leverage"] == 3.0 and btc["margin_used"] == 101.0
    assert btc["confidence"] == "high" and btc["adds_count"] == 1 and btc["size"] == 3.0
    (pos,) = check_init_state(json.loads(json.dumps(st)))  # what replay --init-state accepts
    assert pos["atr"] == 1.5 and pos["leverage"] == 3.0 and pos["margin"] == 101.0 and pos["adds"] == 1

    old = tmp_path / "old.db"  # a DB from before these columns: read as None, never an error
    make_trading_db(old, [("2025-06-15T10:00:00", "BTC", "LONG", "OPEN", 1.0, 1.0, 1.0, 0.0, 0.0, 1.0)])
    con = __import__("sqlite3").connect(old)
    con.execute("ALTER TABLE trades DROP COLUMN margin_used")
    con.commit()
    con.close()
    (row,) = read_trading_rows(old, 0)
    assert row["margin_used"] is None and row["bar_t_ms"] is None and row["entry_atr"] is None


# --- the scheduled CLI, for real --------------------------------------------------------------
def run_tool(tmp_path: Path, **env_over: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    env.update({"AI_QUANT_REPLAY_GATE_BUNDLE_ROOT": str(tmp_path / "gate"),
                "AI_QUANT_REPLAY_GATE_BLOCKER_FILE": str(tmp_path / "gate" / "release_blocker.json")})
    env.update(env_over)
    res = subprocess.run([sys.executable, str(TOOL), "--now-ms", str(T0 + 2 * 60_000)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    blocker = json.loads((tmp_path / "gate" / "release_blocker.json").read_text())
    return res, blocker


def test_cli_missing_candles_db_blocks(tmp_path):
    res, blocker = run_tool(tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert blocker["blocked"] is True and blocker["reason_codes"] == ["market_data_alignment_gap"]
    assert "AI_QUANT_REPLAY_GATE_CANDLES_DB is not set" in blocker["detail"]
    assert blocker["schema_version"] == 1 and blocker["generated_at_ms"] == T0 + 2 * 60_000
    assert blocker["window"] == {"start_ms": T0 - 240 * 60_000, "end_ms": T0, "interval": "1h"}
    assert Path(blocker["report_path"]).is_file() and Path(blocker["bundle_dir"]).is_dir()


def test_cli_missing_trading_db_blocks_and_keeps_last_passed(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "release_blocker.json").write_text(json.dumps({"last_passed_at_ms": 123, "blocked": False}))
    candles = tmp_path / "candles_1h.db"
    candles.write_bytes(b"")
    res, blocker = run_tool(tmp_path, AI_QUANT_REPLAY_GATE_CANDLES_DB=str(candles),
                            AI_QUANT_REPLAY_GATE_PAPER_DB=str(tmp_path / "nope.db"))
    assert res.returncode == 1
    assert blocker["reason_codes"] == ["state_initialisation_gap"] and "trading DB not found" in blocker["detail"]
    assert blocker["last_passed_at_ms"] == 123


def _inputs(tmp_path: Path, candles_bytes: bytes | None = None) -> dict:
    candles = tmp_path / "candles_1h.db"
    if candles_bytes is not None:
        candles.write_bytes(candles_bytes)
    db = make_trading_db(tmp_path / "paper.db", [("2025-06-15T10:00:05", "SYSTEM", "", "SYSTEM", 0, 0, 0, 0, 0, 10_000.0)])
    cfg = tmp_path / "strategy.yaml"
    cfg.write_text("global:\n  engine:\n    interval: 1h\n")
    return {"AI_QUANT_REPLAY_GATE_CANDLES_DB": str(candles), "AI_QUANT_REPLAY_GATE_PAPER_DB": str(db),
            "AI_QUANT_REPLAY_GATE_CONFIG": str(cfg)}


def test_cli_unreadable_candles_db_blocks(tmp_path):
    res, blocker = run_tool(tmp_path, **_inputs(tmp_path, b"this is not a sqlite database" * 100))
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert blocker["blocked"] is True and blocker["reason_codes"] == ["market_data_alignment_gap"]
    assert "file is not a database" in blocker["detail"]


def test_cli_crash_writes_blocked(tmp_path):
    res, blocker = run_tool(tmp_path, **_inputs(tmp_path, b""), AI_QUANT_REPLAY_GATE_INTERVAL="7x")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert blocker["blocked"] is True and blocker["reason_codes"] == ["scheduler_unhandled_exception"]
    report = json.loads(Path(blocker["report_path"]).read_text())
    assert report["blocked"] is True and "Traceback" in report["traceback"]


# --- end to end on real Hyperliquid BTC candles ------------------------------------------------
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HL_CANDLES = DATA / "hyperliquid" / "candles_1h.db"


def _iso(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _trader_db_from_replay(path: Path, fills: list[dict], upto_ms: int, tamper_at: int | None = None) -> Path:
    """A trading DB whose fills are the canonical replay's, stamped 5 s after each bar close."""
    rows = [(_iso(fills[0]["t_ms"] - 7 * IV), "SYSTEM", "", "SYSTEM", 0, 0, 0, 0, 0, 10_000.0)]
    for f in fills:
        if f["action"] == "FUNDING" or f["t_ms"] > upto_ms:
            continue
        size = f["size"] * (1 + 1e-6) if f["t_ms"] == tamper_at else f["size"]
        rows.append((_iso(f["t_ms"] + 5_000), f["symbol"], f["side"], f["action"], f["price"], size, f["notional"],
                     f["pnl"], f["fee"], f["balance"]))
    make_trading_db(path, rows)
    import sqlite3
    con = sqlite3.connect(path)
    for f in fills:
        if f["action"] == "OPEN":
            con.execute("UPDATE trades SET entry_atr=? WHERE timestamp=?", (f["atr"], _iso(f["t_ms"] + 5_000)))
    con.commit()
    con.close()
    return path


def test_cli_passes_on_an_aligned_trader_and_blocks_a_diverged_one(tmp_path):
    if not HL_CANDLES.is_file():
        pytest.skip(f"../shared/data absent: {HL_CANDLES} not found")
    from cpu_replay.api import run_replay
    from marketdata.candles import load_market_data
    from strategy.config import config_from_dict

    cfg_doc = "global:\n  engine:\n    interval: 1h\n"
    md = load_market_data(str(HL_CANDLES), "1h")
    fills = run_replay(config_from_dict({"global": {"engine": {"interval": "1h"}}}), md)["fills"]
    # a window that starts flat: the first OPEN after a CLOSE, plus the three bars after it
    opens = [f for i, f in enumerate(fills) if f["action"] == "OPEN" and i > 0 and fills[i - 1]["action"] == "CLOSE"]
    lo = opens[1]["t_ms"]
    hi = lo + 3 * IV
    in_window = [f for f in fills if lo <= f["t_ms"] <= hi and f["action"] != "FUNDING"]
    assert len(in_window) >= 1
    cfg = tmp_path / "strategy.yaml"
    cfg.write_text(cfg_doc)
    env = {"AI_QUANT_REPLAY_GATE_CANDLES_DB": str(HL_CANDLES), "AI_QUANT_REPLAY_GATE_CONFIG": str(cfg),
           "AI_QUANT_REPLAY_GATE_WARMUP_BARS": "5000"}

    def run(db: Path):
        e = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
        e.update(env, AI_QUANT_REPLAY_GATE_PAPER_DB=str(db), AI_QUANT_REPLAY_GATE_BUNDLE_ROOT=str(tmp_path / "gate"))
        res = subprocess.run([sys.executable, str(TOOL), "--now-ms", str(hi + 2 * 60_000)], env=e, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        return res, json.loads((tmp_path / "gate" / "release_blocker.json").read_text())

    res, blocker = run(_trader_db_from_replay(tmp_path / "aligned.db", fills, hi))
    assert res.returncode == 0, res.stderr
    assert blocker["blocked"] is False and blocker["last_passed_at_ms"] == hi + 2 * 60_000
    report = json.loads(Path(blocker["report_path"]).read_text())
    assert report["matched"] == report["live_fills"] == len(in_window)

    res, blocker = run(_trader_db_from_replay(tmp_path / "diverged.db", fills, hi, tamper_at=in_window[0]["t_ms"]))
    assert res.returncode == 1
    assert blocker["reason_codes"] == ["state_initialisation_gap"]
    assert blocker["last_passed_at_ms"] == hi + 2 * 60_000  # carried over from the passing run


def test_replay_end_of_data_closes_are_not_trader_fills():
    fills = [{"t_ms": T0, "symbol": "BTC", "action": "OPEN", "side": "LONG", "price": 1.0, "size": 2.0, "reason": "signal"},
             {"t_ms": T0 + IV, "symbol": "BTC", "action": "CLOSE", "side": "LONG", "price": 1.1, "size": 2.0,
              "reason": "end_of_data"},
             {"t_ms": T0 + IV, "symbol": "BTC", "action": "FUNDING", "side": "LONG", "price": 0, "size": 0}]
    assert [f.action for f in rg.fills_from_replay(fills, IV, T0, T0 + IV)] == ["OPEN"]
