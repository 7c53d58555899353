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


def assert_rests_what_the_engine_says(world) -> None:
    """After each bar the exchange's trigger orders are exactly wanted_for(engine state): level, size,
    kind, side (resized on adds and partial closes, moved with the stop, gone with the position)."""
    from live.protection import wanted_for

    daemon = world.daemon
    want = sorted((w.tpsl, w.trigger_px, w.size, "B" if w.is_buy else "A")
                  for w in wanted_for("BTC", daemon.engine.params[0], daemon.engine.state.pos[0], 1.5, 5))
    got = sorted(("sl" if o["orderType"] == "Stop Market" else "tp", float(o["triggerPx"]), float(o["sz"]), o["side"])
                 for o in triggers(world))
    assert got == want


def assert_monitor_shows(daemon, tmp_path, order: dict) -> None:
    """`trader monitor` and the heartbeat show the resting order (price, oid); a position whose
    order is gone is flagged (on a copy of the DB where the order's intent is no longer open)."""
    from live.monitor.snapshot import build_snapshot

    daemon._heartbeat(0.0)
    daemon.log.flush()
    snap = build_snapshot("live", tmp_path / "live.db")
    pos, = snap["open_positions"]
    assert pos["unprotected"] is False
    assert pos["protection"] == [{"role": "stop", "trigger_px": float(order["triggerPx"]), "size": float(order["sz"]),
                                  "oid": str(order["oid"])}]
    fields = snap["heartbeat"]["fields"]
    assert fields["protect"] == f"BTC:stop@{float(order['triggerPx']):g}#{order['oid']}"
    assert fields["unprotected"] is None
    bare = tmp_path / "bare.db"
    with sqlite3.connect(tmp_path / "live.db") as src, sqlite3.connect(bare) as dst:
        src.backup(dst)
        dst.execute("UPDATE oms_intents SET status = 'CANCELLED' WHERE action = 'PROTECT'")
    snap = build_snapshot("live", bare)
    assert snap["open_positions"][0]["unprotected"] is True
    assert any(b["text"].startswith("UNPROTECTED: BTC") for b in snap["banners"])


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


@pytest.mark.parametrize("thin", [False, True], ids=["deep_book", "thin_book"])
def test_close_mode_stop_rests_follows_the_position_and_a_crash_while_down_is_booked_on_restart(tmp_path, thin):
    """thin: the book (3 levels of $400) cannot absorb the whole stop: the exchange closes part of the
    position, the engine books that fraction as protective_stop and keeps (and re-protects) the rest."""
    from live.sandbox import BookSpec

    world = LiveWorld(tmp_path, book=BookSpec(depth_levels=3, level_notional=400.0) if thin else BookSpec())
    try:
        daemon = world.start()
        run_until_position(world, limit=150)
        order = assert_protected(world)
        hb = daemon.protection.heartbeat()
        assert hb == {"protect": f"BTC:stop@{float(order['triggerPx']):g}#{order['oid']}", "unprotected": "none"}
        assert_monitor_shows(daemon, tmp_path, order)
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
        filled = sum(float(f["sz"]) for f in fills)
        assert fills and all(f["cloid"] == cloid for f in fills)
        left = world.ex.positions(world.wallet.address)
        assert (filled < size - 1e-9 and abs(left["BTC"]["szi"]) == pytest.approx(size - filled, abs=1e-9)) if thin \
            else (filled == pytest.approx(size, abs=1e-9) and left == {})

        daemon = world.start()                          # restart: booked before the bar runs
        trades = daemon.conn.execute("SELECT reason, price, size, pnl, fee_usd, fill_hash, fill_tid FROM trades "
                                     "WHERE reason = 'protective_stop'").fetchall()
        assert [(t[5], t[6]) for t in trades] == [(f["hash"], f["tid"]) for f in fills]
        assert sum(t[2] for t in trades) == pytest.approx(filled, abs=1e-9)
        assert sum(t[3] for t in trades) == pytest.approx(sum(float(f["closedPnl"]) for f in fills))
        assert daemon.oms.get(intent_id).status == "FILLED"
        assert [a["intent_id"] for a in audits(tmp_path / "live.db", "PROTECTIVE_STOP_FILLED")] == [intent_id]
        after = world.ex.fills(world.wallet.address)[before + len(fills):]
        closed_after = sum(float(f["sz"]) for f in after if f["dir"].startswith("Close"))
        assert filled + closed_after <= size + 1e-9, "a second close was sent for what the stop closed"
        if not thin:
            assert closed_after == 0
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
            assert_rests_what_the_engine_says(world)
        conn = daemon.conn
        live = conn.execute(
            "SELECT t.bar_t_ms, t.reason, t.action, t.price, i.action, i.meta_json FROM trades t "
            "LEFT JOIN oms_intents i ON i.intent_id = json_extract(t.meta_json, '$.intent_id') "
            f"WHERE t.reason IN ({','.join('?' * len(LEVEL_EXITS))}) ORDER BY t.id", LEVEL_EXITS).fetchall()
        assert live and all(r[4] == "PROTECT" for r in live), live   # every level exit is a trigger fill
        assert {"Stop Market", "Take Profit Market"} <= {k for k, _ in kinds}
        modified = dict(conn.execute("SELECT order_type, COUNT(*) FROM oms_orders WHERE order_type LIKE '%modify' "
                                     "GROUP BY order_type").fetchall())
        assert modified.get("trigger_sl_modify", 0) > 0 and modified.get("trigger_tp_modify", 0) > 0
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


# ------------------------------------------------------------------ what rests, from the rule's wording
def _params(tmp_path, engine: str = "close", **trade) -> object:
    from strategy.config import load_config

    body = {"enable_partial_tp": True, "tp_partial_pct": 0.5, "tp_partial_atr_mult": 2.0, **trade}
    text = "global:\n  trade: {" + ", ".join(f"{k}: {str(v).lower()}" for k, v in body.items()) + "}\n" \
        f"  engine: {{interval: 1h, exit_fill: {engine}}}\n"
    (tmp_path / "p.yaml").write_text(text)
    return load_config(tmp_path / "p.yaml").params_matrix(["BTC"])[0]


def _pos(side: float, stop: float, size: float = 2.0, tp1_done: float = 0.0):
    import numpy as np

    from strategy.layout import (
        NPOS,
        POS_ENTRY,
        POS_ENTRY_ATR,
        POS_OPEN_T,
        POS_STOP,
        POS_TP1_DONE,
        POS_TP_MULT,
    )

    ps = np.zeros(NPOS)
    ps[[POS_SIDE, POS_SIZE, POS_ENTRY, POS_ENTRY_ATR, POS_STOP, POS_TP_MULT, POS_TP1_DONE, POS_OPEN_T]] = \
        [side, size, 100.0, 2.0, stop, 6.0, tp1_done, 1_700_000_000_000]
    return ps


@pytest.mark.parametrize(("side", "stop", "k", "want"), [
    (1.0, 96.0, 1.5, [("stop", "sl", False, 2.0, 93.0)]),          # long: k x entry ATR below the stop
    (-1.0, 104.0, 1.5, [("stop", "sl", True, 2.0, 107.0)]),        # short: above it, a buy stop
    (1.0, 100.0, 1.5, [("stop", "sl", False, 2.0, 97.0)]),         # stop at break-even: the gap stays k ATRs
    (1.0, 96.0, 0.0, []),                                          # k = 0: nothing rests
])
def test_close_mode_rests_one_catastrophe_stop_k_entry_atrs_beyond_the_engine_stop(tmp_path, side, stop, k, want):
    from live.protection import wanted_for

    got = wanted_for("BTC", _params(tmp_path), _pos(side, stop), k, 5)
    assert [(w.role, w.tpsl, w.is_buy, w.size, w.trigger_px) for w in got] == want


@pytest.mark.parametrize(("side", "tp1_done", "trade", "want"), [
    # long, partial pending: the stop, half the size at entry + 2 ATR, the full size at entry + 6 ATR
    (1.0, 0.0, {}, [("stop", "sl", 96.0, 2.0), ("tp1", "tp", 104.0, 1.0), ("tp", "tp", 112.0, 2.0)]),
    (-1.0, 0.0, {}, [("stop", "sl", 104.0, 2.0), ("tp1", "tp", 96.0, 1.0), ("tp", "tp", 88.0, 2.0)]),
    # partial taken: the stop and the full target
    (1.0, 1.0, {}, [("stop", "sl", 96.0, 2.0), ("tp", "tp", 112.0, 2.0)]),
    # tp_partial_atr_mult 0: the partial sits at the target and no target follows it
    (1.0, 0.0, {"tp_partial_atr_mult": 0.0}, [("stop", "sl", 96.0, 2.0), ("tp1", "tp", 112.0, 1.0)]),
    # a partial that would leave less than the minimum notional is held, the target with it
    (1.0, 0.0, {"tp_partial_min_notional_usd": 1000.0}, [("stop", "sl", 96.0, 2.0)]),
    # no partials: the stop and the target
    (1.0, 0.0, {"enable_partial_tp": False}, [("stop", "sl", 96.0, 2.0), ("tp", "tp", 112.0, 2.0)]),
])
def test_touch_mode_rests_the_stop_and_the_targets_themselves(tmp_path, side, tp1_done, trade, want):
    from live.protection import wanted_for

    p = _params(tmp_path, "touch", **trade)
    got = wanted_for("BTC", p, _pos(side, 100.0 - side * 4.0, tp1_done=tp1_done), 1.5, 5)
    assert [(w.role, w.tpsl, w.trigger_px, w.size) for w in got] == want
    assert all(w.is_buy == (side < 0) for w in got)


@pytest.mark.parametrize(("raw", "needle"), [("abc", "is not a number"), ("-1", "must be >= 0"),
                                             ("nan", "must be finite")])
def test_protective_stop_atr_env_is_checked_with_one_line(raw, needle):
    from live.env import EnvError, load_settings

    assert load_settings({}).live.protective_stop_atr == 1.5
    assert load_settings({"AI_QUANT_LIVE_PROTECTIVE_STOP_ATR": "0"}).live.protective_stop_atr == 0.0
    with pytest.raises(EnvError, match=f"AI_QUANT_LIVE_PROTECTIVE_STOP_ATR={raw!r} {needle}"):
        load_settings({"AI_QUANT_LIVE_PROTECTIVE_STOP_ATR": raw})


def test_a_stop_cancelled_behind_our_back_is_replaced_lost_replies_resolved_orphans_cancelled(tmp_path):
    """The OMS treats resting orders like the rest: a protective order cancelled by hand is noticed
    and replaced (its placement reply lost: UNKNOWN, resolved by cloid, not sent twice); a lost
    modify reply is resolved by asking; a trigger order with our cloid prefix that no intent owns is
    cancelled once the symbol is flat."""
    from hyperliquid.exchange import Exchange
    from hyperliquid.utils.signing import Cloid

    from live.oms import cloid_for

    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        run_until_position(world, limit=150)
        first = assert_protected(world)
        x = Exchange(world.wallet, world.ex.base_url)
        assert x.cancel("BTC", first["oid"])["response"]["data"]["statuses"] == ["success"]
        world.ex.faults.drop_next("order")             # the replacement lands, its reply is lost
        daemon.protection.verify()
        daemon.protection.sync()
        second = assert_protected(world)
        assert second["cloid"] != first["cloid"] and second["triggerPx"] == first["triggerPx"]
        rows = daemon.conn.execute("SELECT client_order_id, status FROM oms_intents WHERE action = 'PROTECT' "
                                   "ORDER BY created_ts_ms").fetchall()
        assert [tuple(r) for r in rows][-2:] == [(first["cloid"], "CANCELLED"), (second["cloid"], "SENT")]
        kinds = [r[0] for r in daemon.conn.execute("SELECT kind FROM oms_reconcile_events")]
        assert "RESOLVE_UNKNOWN" in kinds
        orphan = cloid_for("PROTECT:BTC:X:0:stop#9", daemon.oms.prefix)
        held = world.ex.positions(world.wallet.address)["BTC"]["szi"]
        far = round_price(float(second["triggerPx"]) * (0.8 if held > 0 else 1.2), 5)
        kind = {"trigger": {"isMarket": True, "triggerPx": far, "tpsl": "sl"}}
        x.order("BTC", held < 0, abs(held), far, kind, reduce_only=True, cloid=Cloid(orphan))
        world.ex.faults.drop_next("batchModify")        # a move whose reply is lost
        for _ in range(150):
            world.step()
            if not daemon._engine_positions():
                break
            order, = [o for o in triggers(world) if o["cloid"] != orphan]
            want = round_price(protective_level(daemon.engine.state.pos[0], 1.5), 5)
            assert float(order["triggerPx"]) == want
        assert not daemon._engine_positions()
        daemon.protection.verify()
        assert triggers(world) == []
        events = daemon.conn.execute("SELECT kind, client_order_id FROM oms_reconcile_events "
                                     "WHERE kind = 'CANCEL_ORPHAN_TRIGGER'").fetchall()
        assert [tuple(e) for e in events] == [("CANCEL_ORPHAN_TRIGGER", orphan)]
        lost = daemon.conn.execute("SELECT COUNT(*) FROM oms_orders WHERE order_type = 'trigger_sl_modify' "
                                   "AND status = 'UNKNOWN'").fetchone()[0]
        assert lost == 1   # the move whose reply was lost: the exchange was asked, the level above held
    finally:
        world.stop()


def test_k_zero_rests_nothing_says_so_at_start_and_flags_the_position(tmp_path):
    world = LiveWorld(tmp_path)
    world.env["AI_QUANT_LIVE_PROTECTIVE_STOP_ATR"] = "0"
    try:
        daemon = world.start()
        daemon.log.flush()
        warned = [m for (m,) in daemon.conn.execute("SELECT message FROM runtime_logs WHERE level = 'WARNING'")
                  if "AI_QUANT_LIVE_PROTECTIVE_STOP_ATR=0" in m]
        assert len(warned) == 1 and "unprotected" in warned[0]
        run_until_position(world, limit=150)
        assert triggers(world) == [] and daemon.protection.heartbeat() == {"protect": "none", "unprotected": "BTC"}
    finally:
        world.stop()


def test_touch_stop_filled_before_the_trader_steps_its_bar_is_left_for_the_engine(tmp_path):
    """exit_fill touch, the stop fires at 10:05 and the trader only steps that bar after 11:00: in
    between, the fill intake and the reconciler see the exchange flat. Nothing is re-placed or
    refused, the engine position is not dropped; when the bar is stepped the engine's own stop exit
    is that fill (its reason, its bar), and nothing is sent."""
    world = LiveWorld(tmp_path)
    (tmp_path / "cfg.yaml").write_text(TOUCH_CONFIG)
    try:
        daemon = world.start()
        run_until_position(world, limit=150)
        stop, = [o for o in triggers(world) if o["orderType"] == "Stop Market"]
        n_intents = daemon.conn.execute("SELECT COUNT(*) FROM oms_intents WHERE action = 'PROTECT'").fetchone()[0]
        row = crash_through(world, stop)
        before = len(world.ex.fills(world.wallet.address))
        world.ex.advance(1)                              # the exchange moves; the candle is not in yet
        fills = world.ex.fills(world.wallet.address)[before:]
        assert fills and {f["cloid"] for f in fills} == {stop["cloid"]} and not world.ex.positions(world.wallet.address)
        daemon.intake.backfill()
        daemon.reconciler.run()
        daemon.protection.sync()
        assert daemon._engine_positions(), "the engine position was dropped before its bar"
        assert daemon.conn.execute("SELECT COUNT(*) FROM oms_intents WHERE action = 'PROTECT'").fetchone()[0] \
            == n_intents
        assert audits(tmp_path / "live.db", "PROTECTION_REFUSED") == []
        aligned = daemon.conn.execute("SELECT result FROM oms_reconcile_events WHERE kind = 'POSITION_ALIGNED'").fetchall()
        assert [r[0] for r in aligned] == ["left for the engine: a protective order filled inside a bar it has not "
                                           "processed"]
        append_bars(world.candles, [row])                # the bar closes; the trader steps it
        world.wall.set_wall_ms(row[2] + HOUR + 2_500)
        world.next_bar += 1
        daemon.loop_once()
        booked = daemon.conn.execute("SELECT reason, bar_t_ms, fill_hash FROM trades WHERE fill_hash IN "
                                     f"({','.join('?' * len(fills))})", [f["hash"] for f in fills]).fetchall()
        assert {r[0] for r in booked} <= {"stop_loss", "trailing_stop", "breakeven_stop"} and len(booked) == len(fills)
        assert {r[1] for r in booked} == {row[2]}
        after = world.ex.fills(world.wallet.address)[before + len(fills):]
        assert not [f for f in after if f["dir"].startswith("Close")]
        assert audits(tmp_path / "live.db", "PROTECTIVE_STOP_FILLED") == []   # the engine's exit, not a fallback
        assert_agree(world)
        assert_rests_what_the_engine_says(world)
    finally:
        world.stop()
