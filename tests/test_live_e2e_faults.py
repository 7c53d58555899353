"""Live daemon faults against the sandbox: a submit delayed past the client timeout, and a daemon
killed between writing an intent and sending it."""

from __future__ import annotations

import sqlite3

import pytest
from test_live_e2e import LiveWorld

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
        rows = conn.execute("SELECT status, last_error FROM oms_intents").fetchall()
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
            (status, cloid), = conn.execute("SELECT status, client_order_id FROM oms_intents").fetchall()
        assert status == "NEW"
        world.crash()

        restarted = world.start()  # same DB, same bar still tradeable: re-run, found by dedupe key, sent once
        fills = world.ex.fills(world.wallet.address)
        assert fills and {f["cloid"] for f in fills} == {cloid}
        rows = restarted.conn.execute("SELECT status, client_order_id FROM oms_intents").fetchall()
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
        rows = restarted.conn.execute("SELECT status FROM oms_intents").fetchall()
        assert [r[0] for r in rows] == ["EXPIRED"]
        assert restarted.conn.execute("SELECT COUNT(*) FROM audit_events WHERE event = 'INTENT_EXPIRED'").fetchone()[0] == 1
        agree(world)
    finally:
        world.stop()
