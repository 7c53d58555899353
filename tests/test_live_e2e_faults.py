"""Live daemon faults against the sandbox: a submit delayed past the client timeout, a daemon
killed between writing an intent and sending it, a dropped WebSocket, and stale WS mids."""

from __future__ import annotations

import sqlite3
import time

import pytest
from test_live_e2e import LiveWorld, audits

from live.sandbox import BookSpec


def first_entry_bar(world: LiveWorld, limit: int = 120) -> int:
    """Step until the daemon has sent its first order; returns how many steps that took."""
    for n in range(1, limit + 1):
        world.step()
        if world.ex.fills(world.wallet.address):
            return n
    raise AssertionError("no order in the window")


def agree(world: LiveWorld) -> None:
    exchange = {c: p["szi"] for c, p in world.ex.positions(world.wallet.address).items()}
    engine = world.daemon._engine_positions()
    assert engine.keys() == exchange.keys()
    for coin in exchange:
        assert engine[coin] == pytest.approx(exchange[coin], abs=1e-9)


def test_submit_delayed_past_timeout_is_one_position_not_two(tmp_path):
    world = LiveWorld(tmp_path, book=BookSpec())
    world.env["AI_QUANT_HL_TIMEOUT_S"] = "0.5"
    world.env["AI_QUANT_HL_ORDER_EXPIRES_S"] = "3"
    try:
        world.start()
        world.ex.faults.delay_next("order", seconds=1.5, n=1)
        first_entry_bar(world)
        fills = world.ex.fills(world.wallet.address)
        assert len({f["oid"] for f in fills}) == 1
        conn = world.daemon.conn
        rows = conn.execute("SELECT status, last_error FROM oms_intents WHERE action != 'PROTECT'").fetchall()
        assert [r[0] for r in rows] == ["FILLED"] and "Timeout" in rows[0][1]
        events = [tuple(r) for r in conn.execute("SELECT kind, result FROM oms_reconcile_events")]
        assert events == [("RESOLVE_UNKNOWN", "FILLED")]
        assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == len(fills)
        agree(world)
    finally:
        world.stop()


def test_killed_between_intent_and_send_then_restart_sends_once(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()

        def die(intent):
            raise SystemExit("kill -9 stand-in: the intent is committed, the order not sent")

        daemon.before_send = die
        with pytest.raises(SystemExit):
            for _ in range(120):
                world.step()
        assert world.ex.fills(world.wallet.address) == []
        with sqlite3.connect(tmp_path / "live.db") as conn:
            (status, cloid), = conn.execute("SELECT status, client_order_id FROM oms_intents WHERE action != 'PROTECT'").fetchall()
        assert status == "NEW"
        world.crash()

        restarted = world.start()  # same DB, same bar still tradeable: re-run, found by dedupe key, sent once
        fills = world.ex.fills(world.wallet.address)
        assert fills and {f["cloid"] for f in fills} == {cloid}
        rows = restarted.conn.execute("SELECT status, client_order_id FROM oms_intents WHERE action != 'PROTECT'").fetchall()
        assert [tuple(r) for r in rows] == [("FILLED", cloid)]
        assert [tuple(r) for r in restarted.conn.execute("SELECT kind, result FROM oms_reconcile_events")] == [
            ("RESOLVE_NEW", "send_now")]
        agree(world)
        for _ in range(3):
            world.step()
        assert {f["cloid"] for f in world.ex.fills(world.wallet.address) if f["cloid"] == cloid} == {cloid}
        assert len([f for f in world.ex.fills(world.wallet.address) if f["cloid"] == cloid]) == len(fills)
    finally:
        world.stop()


def test_killed_intent_whose_bar_is_too_old_expires_on_restart(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        daemon.before_send = lambda intent: (_ for _ in ()).throw(SystemExit)
        with pytest.raises(SystemExit):
            for _ in range(120):
                world.step()
        world.crash()
        world.wall.advance(3 * 3600)  # down for three hours: the intent's bar is no longer tradeable
        restarted = world.start()
        assert world.ex.fills(world.wallet.address) == []
        rows = restarted.conn.execute("SELECT status FROM oms_intents WHERE action != 'PROTECT'").fetchall()
        assert [r[0] for r in rows] == ["EXPIRED"]
        assert restarted.conn.execute("SELECT COUNT(*) FROM audit_events WHERE event = 'INTENT_EXPIRED'").fetchone()[0] == 1
        agree(world)
    finally:
        world.stop()


def test_ws_drop_reconnects_resubscribes_and_misses_no_bar(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        ws = daemon.market_ws
        for _ in range(3):
            world.step()
        subs = world.ex.ws_subscription_count()
        assert subs == 3 and daemon._ws_connected() == 1   # allMids, bbo:BTC, userFills
        world.ex.faults.drop_ws()
        assert ws.wait_connected(5, min_connects=2)
        deadline = time.monotonic() + 5
        while world.ex.ws_subscription_count() < subs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert world.ex.ws_subscription_count() == subs
        frames = ws.health()["user_fill_frames"]     # 2: a snapshot per connection
        first_entry_bar(world)
        deadline = time.monotonic() + 5
        while ws.health()["user_fill_frames"] <= frames and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ws.health()["user_fill_frames"] > frames == 2   # the entry's fills came on the new socket
        daemon.loop_once()
        assert daemon.last_bar_t == world.rows[world.next_bar - 1][2]   # every revealed bar processed
        assert daemon.intake.counts == {} and sum(daemon.intake.duplicates.values()) >= 1
        assert not audits(tmp_path / "live.db", "WS_STALE")
        agree(world)
    finally:
        world.stop()


def stale_window(tmp_path, *, stale: bool, bars: int = 60) -> tuple[list[tuple], LiveWorld]:
    """From the first position on, `bars` bars with the WS feed dead (stale) or alive; returns the
    intents of that window (action, status) and the (still running) world."""
    tmp_path.mkdir()
    world = LiveWorld(tmp_path)
    world.env["AI_QUANT_WS_STALE_MIDS_S"] = "0.3"
    daemon = world.start()
    for _ in range(120):
        world.step()
        if daemon._engine_positions():
            break
    assert daemon._engine_positions()
    if stale:
        daemon.market_ws.stop()          # the feed dies; the connection is not coming back by itself
        time.sleep(0.35)
    daemon.loop_once()                   # stale loop 1 (no new bar); the next loop is strike 2: blocked
    assert daemon.ws_stale_strikes == int(stale) and not daemon.ws_entries_blocked
    first = daemon.conn.execute("SELECT COUNT(*) FROM oms_intents WHERE action != 'PROTECT'").fetchone()[0]
    for _ in range(bars):
        world.step()
    rows = daemon.conn.execute("SELECT action, status FROM oms_intents WHERE action != 'PROTECT' ORDER BY rowid").fetchall()[first:]
    return [tuple(r) for r in rows], world


def test_stale_mids_block_entries_but_exits_go_out_priced_from_rest(tmp_path):
    fresh, world = stale_window(tmp_path / "fresh", stale=False)
    world.stop()
    entries_when_fresh = sum(a in ("OPEN", "ADD") for a, _ in fresh)
    assert entries_when_fresh >= 1, "the window must hold entries for the block to mean anything"
    later, world = stale_window(tmp_path / "stale", stale=True)
    try:
        daemon = world.daemon
        assert later and {a for a, _ in later} <= {"REDUCE", "CLOSE"}, later
        assert any(a == "CLOSE" and st in ("FILLED", "PARTIAL") for a, st in later)
        assert not daemon._engine_positions()
        assert daemon.hl.rest_mid_fallbacks >= len(later)
        (stale,) = audits(tmp_path / "stale" / "live.db", "WS_STALE")
        assert stale["entries"] == "blocked" and stale["stale_loops"] == 2 and not stale["connected"]
        assert daemon._ws_connected() == 0 and daemon.ws_entries_blocked
        agree(world)
        print(f"stale WS: {len(later)} exit intents priced from REST, 0 entries "
              f"(the same bars with a live feed: {entries_when_fresh} entries)")
    finally:
        world.stop()
