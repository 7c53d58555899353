"""Resting protective orders (live/protection.py) in live mode against the sandbox, real SDK.

exit_fill close: every engine position holds a reduce-only stop-market trigger at
POS.STOP - side x k x POS.ENTRY_ATR (k = AI_QUANT_LIVE_PROTECTIVE_STOP_ATR), sized to the position
and following it bar by bar; the trader dies, the price crashes through that stop, the exchange
closes the position; on restart the engine books the close with reason protective_stop at the
exchange's price, and engine, trading DB and exchange agree with no second close sent."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_live_e2e import HOUR, LiveWorld, append_bars, assert_agree, audits, run_until_position

from live.hl_broker import round_price
from live.protection import protective_level
from strategy.layout import POS_SIDE, POS_SIZE


def triggers(world) -> list[dict]:
    return [o for o in world.ex.open_orders(world.wallet.address) if o["isTrigger"]]


def assert_protected(world, k: float = 1.5) -> dict:
    """The exchange holds exactly the engine position's catastrophe stop."""
    ps = world.daemon.engine.state.pos[0]
    held = world.ex.positions(world.wallet.address)
    if ps[POS_SIDE] == 0:
        assert triggers(world) == [] and not held
        return {}
    order, = triggers(world)
    level = round_price(protective_level(ps, k), 5)
    assert float(order["triggerPx"]) == level and order["orderType"] == "Stop Market" and order["reduceOnly"]
    assert float(order["sz"]) == pytest.approx(abs(held["BTC"]["szi"]), abs=1e-9)
    assert order["side"] == ("A" if ps[POS_SIDE] > 0 else "B")
    return order


def crash_through(world, order: dict) -> tuple:
    """The next bar gaps 3% through the resting stop (exchange and candle DB alike)."""
    t, o = world.rows[world.next_bar][2], world.rows[world.next_bar][4]
    stop = float(order["triggerPx"])
    if order["side"] == "A":   # a long's sell stop: the price falls through it
        low = stop * 0.97
        bar = (min(o, stop * 0.99), min(o, stop * 0.99), low, low * 1.005)
    else:
        high = stop * 1.03
        bar = (max(o, stop * 1.01), high, max(o, stop * 1.01), high * 0.995)
    o2, h2, l2, c2 = bar[0], max(bar), min(bar), bar[3]
    world.ex.replace_bar("BTC", t, o2, h2, l2, c2)
    row = list(world.rows[world.next_bar])
    row[4:8] = [o2, h2, l2, c2]
    world.rows[world.next_bar] = tuple(row)
    return tuple(row)


def test_close_mode_stop_rests_follows_the_position_and_a_crash_while_down_is_booked_on_restart(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        run_until_position(world, limit=150)
        order = assert_protected(world)
        hb = daemon.protection.heartbeat()
        assert hb == {"protect": f"BTC:stop@{float(order['triggerPx']):g}#{order['oid']}", "unprotected": "none"}
        moved = set()
        for _ in range(6):   # it follows the engine's stop and size while the position lasts
            world.step()
            order = assert_protected(world)
            if not order:
                run_until_position(world, limit=150)
                order = assert_protected(world)
            moved.add(order["triggerPx"])
        intent_id, cloid = daemon.conn.execute(
            "SELECT intent_id, client_order_id FROM oms_intents WHERE action = 'PROTECT' AND status = 'SENT'").fetchone()
        assert order["cloid"] == cloid
        size = float(daemon.engine.state.pos[0, POS_SIZE])

        world.crash()                                   # the trader is gone; its stop is not
        row = crash_through(world, order)
        before = len(world.ex.fills(world.wallet.address))
        world.ex.advance(1)
        append_bars(world.candles, [row])
        world.wall.set_wall_ms(row[2] + HOUR + 2_500)
        world.next_bar += 1
        fills = world.ex.fills(world.wallet.address)[before:]
        assert fills and all(f["cloid"] == cloid for f in fills) and world.ex.positions(world.wallet.address) == {}

        daemon = world.start()                          # restart: booked before the bar runs
        trades = daemon.conn.execute("SELECT reason, price, size, pnl, fee_usd, fill_hash, fill_tid FROM trades "
                                     "WHERE reason = 'protective_stop'").fetchall()
        assert [(t[5], t[6]) for t in trades] == [(f["hash"], f["tid"]) for f in fills]
        assert sum(t[2] for t in trades) == pytest.approx(size, abs=1e-9)
        assert sum(t[3] for t in trades) == pytest.approx(sum(float(f["closedPnl"]) for f in fills))
        assert daemon.oms.get(intent_id).status == "FILLED"
        assert [a["intent_id"] for a in audits(tmp_path / "live.db", "PROTECTIVE_STOP_FILLED")] == [intent_id]
        after = world.ex.fills(world.wallet.address)[before + len(fills):]
        assert not [f for f in after if f["dir"].startswith("Close")], "a second close was sent"
        assert_agree(world)
        assert_protected(world)
        with sqlite3.connect(tmp_path / "live.db") as conn:
            open_statuses = conn.execute("SELECT COUNT(*) FROM oms_intents WHERE status IN ('NEW', 'UNKNOWN')").fetchone()
            n_trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
            reasons = json.dumps(conn.execute("SELECT DISTINCT reason FROM trades").fetchall())
        assert open_statuses == (0,)
        assert n_trades == len(world.ex.fills(world.wallet.address)), reasons
        print(f"protective stop: {len(moved)} levels while held, crash fill {fills[0]['px']} x {size:g}")
    finally:
        world.stop()


TOUCH_CONFIG = """
global:
  trade: {entry_min_confidence: low, reentry_cooldown_minutes: 30, add_cooldown_minutes: 30,
          slippage_bps: 1.0, exit_slippage_bps: 1.0}
  thresholds: {entry: {min_adx: 18.0, macd_hist_entry_mode: sign}}
  filters: {enable_ranging_filter: false, require_adx_rising: false}
  engine: {interval: 1h, exit_fill: touch}
"""
LEVEL_EXITS = ("stop_loss", "trailing_stop", "breakeven_stop", "take_profit", "take_profit_partial")


def test_touch_mode_exits_are_trigger_fills_at_the_level_and_the_replay_books_the_same(tmp_path):
    """exit_fill touch: the stop and the targets rest as sl/tp triggers; every stop/target exit of the
    live run is one of their fills, at the level moved by the sandbox's 1 bp half-spread (the
    config's exit_slippage_bps says the same 1 bp), and the replay of the same bars from the same
    engine state books the same exits at the same bars."""
    from cpu_replay.api import run_replay
    from marketdata.candles import load_market_data
    from strategy.config import load_config

    world = LiveWorld(tmp_path)
    (tmp_path / "cfg.yaml").write_text(TOUCH_CONFIG)
    try:
        daemon = world.start()
        start_state, start_t = daemon.engine.state.copy(), daemon.last_bar_t
        kinds = set()
        for _ in range(140):
            world.step()
            kinds |= {(o["orderType"], o["triggerCondition"].split()[1]) for o in triggers(world)}
        conn = daemon.conn
        live = conn.execute(
            "SELECT t.bar_t_ms, t.reason, t.action, t.price, i.action, i.meta_json FROM trades t "
            "LEFT JOIN oms_intents i ON i.intent_id = json_extract(t.meta_json, '$.intent_id') "
            f"WHERE t.reason IN ({','.join('?' * len(LEVEL_EXITS))}) ORDER BY t.id", LEVEL_EXITS).fetchall()
        assert live and all(r[4] == "PROTECT" for r in live), live   # every level exit is a trigger fill
        assert {"Stop Market", "Take Profit Market"} <= {k for k, _ in kinds}
        end_t = daemon.last_bar_t
        assert_agree(world)
    finally:
        world.stop()
    cfg = load_config(tmp_path / "cfg.yaml")
    md = load_market_data(str(world.candles), "1h", start_ms=start_t, end_ms=end_t)
    report = run_replay(cfg, md, resume=start_state, with_trades=True)
    replay = [(f["t_ms"] - HOUR, f["reason"], f["action"], f["price"]) for f in report["fills"]
              if f["reason"] in LEVEL_EXITS]
    assert [(b, r, a) for b, r, a, *_ in live] == [(b, r, a) for b, r, a, _ in replay]
    for (_, _, _, px, _, _), (_, _, _, replay_px) in zip(live, replay, strict=True):
        assert px == pytest.approx(replay_px, rel=1.2e-4)   # the level, 1 bp and a tick of rounding apart
    print(f"touch: {len(live)} level exits, all trigger fills, same bars as the replay: "
          f"{sorted({r for _, r, *_ in live})}")


def engine_pos(db) -> tuple[float, float]:
    from test_live_e2e_kill import db_rows

    from live import checkpoint

    rows = db_rows(db, "SELECT value_json FROM engine_state WHERE key = 'engine'")
    if not rows:
        return 0.0, 0.0
    pos = checkpoint.decode(json.loads(rows[0][0])).pos
    return float(pos[0, POS_SIDE]), float(pos[0, POS_SIZE])


def test_sigkill_while_holding_then_the_exchange_stop_fills_and_the_restart_books_it_once(tmp_path):
    """A real kill -9 of `python -m live --mode live` while it holds a position; the sandbox price then
    crashes through the resting protective stop and the exchange closes the position; the restarted
    trader books that close (protective_stop) and sends nothing: engine, trading DB and exchange agree."""
    import time

    from test_live_e2e import WARM
    from test_live_e2e_kill import Child, db_rows, drive, last_bar

    from live.trading_db import open_positions

    world = LiveWorld(tmp_path)
    db, log = tmp_path / "live.db", tmp_path / "daemon.log"
    last_warm_close_ms = world.rows[WARM - 1][2] + HOUR
    max_age_s = (time.time() * 1000 - last_warm_close_ms) / 1000 - 1800   # bars after the warm-up trade
    world.env.update({"AI_QUANT_LIVE_MAX_BAR_AGE_S": f"{max_age_s:.0f}", "AI_QUANT_LOOP_TARGET_SECS": "0.5",
                      "AI_QUANT_HEARTBEAT_SECS": "1", "AI_QUANT_LIVE_BACKFILL_MS": str(20 * 365 * 24 * HOUR),
                      "AI_QUANT_LIVE_REST_FILLS_SYNC_SECS": "1", "PYTHONUNBUFFERED": "1"})
    child = Child(world.env, log)
    try:
        deadline = time.monotonic() + 60
        while last_bar(db) != world.rows[world.next_bar - 1][2]:
            assert child.alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        for _ in range(150):
            drive(world, child, db, log)
            if engine_pos(db)[0] != 0:
                break
        side, size = engine_pos(db)
        assert side != 0, "no position to protect"
        deadline = time.monotonic() + 20
        while not triggers(world):
            assert child.alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        order, = triggers(world)
        child.kill9()

        row = crash_through(world, order)
        before = len(world.ex.fills(world.wallet.address))
        world.ex.advance(1)
        append_bars(world.candles, [row])
        world.next_bar += 1
        stop_fills = world.ex.fills(world.wallet.address)[before:]
        assert stop_fills and {f["cloid"] for f in stop_fills} == {order["cloid"]}
        assert world.ex.positions(world.wallet.address) == {}

        child = Child(world.env, log)
        deadline = time.monotonic() + 60
        while not db_rows(db, "SELECT 1 FROM trades WHERE reason = 'protective_stop'") \
                or last_bar(db) != world.rows[world.next_bar - 1][2]:
            assert child.alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        drive(world, child, db, log)          # one more bar: nothing is sent for the booked close
        assert child.stop() == 0, log.read_text()[-3000:]
    finally:
        if child.alive():
            child.kill9()
        world.ex.stop()

    after = world.ex.fills(world.wallet.address)[before + len(stop_fills):]
    assert not [f for f in after if f["dir"].startswith("Close")], "a second close was sent"
    booked = db_rows(db, "SELECT fill_hash, fill_tid, size FROM trades WHERE reason = 'protective_stop'")
    assert [(h, t) for h, t, _ in booked] == [(f["hash"], f["tid"]) for f in stop_fills]
    assert sum(s for *_, s in booked) == pytest.approx(size, abs=1e-9)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        db_pos = {p["symbol"]: p["size"] for p in open_positions(conn)}
    exchange = {c: p["szi"] for c, p in world.ex.positions(world.wallet.address).items()}
    engine_side, engine_size = engine_pos(db)
    assert db_pos.keys() == exchange.keys() == ({"BTC"} if engine_side else set())
    for coin, szi in exchange.items():
        assert engine_side * engine_size == pytest.approx(szi, abs=5e-6) and db_pos[coin] == pytest.approx(abs(szi))
    n_fills = len(world.ex.fills(world.wallet.address))
    assert db_rows(db, "SELECT COUNT(*) FROM trades") == [(n_fills,)] == db_rows(db, "SELECT COUNT(*) FROM oms_fills")
    assert db_rows(db, "SELECT status FROM oms_intents WHERE client_order_id = ?".replace("?", f"'{order['cloid']}'")) \
        == [("FILLED",)]
