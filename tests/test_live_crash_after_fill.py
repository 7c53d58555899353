"""A crash after the exchange filled an order but before the bar's trades/checkpoint commit, and a
restart only once that bar is too old to trade: the fill must still reach the engine and the trading
DB, and the daemon must not open a second position on top (found in review)."""

from __future__ import annotations

import pytest

from tests.test_live_e2e import HOUR, LiveWorld, append_bars, three_way


def test_crash_after_fill_before_record_then_late_restart(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        record = daemon.broker.record

        def die_after_the_fill(fills, **kw):
            if len(fills):
                raise SystemExit("crash: the exchange filled, the bar's commit did not happen")
            return record(fills, **kw)

        daemon.broker.record = die_after_the_fill
        with pytest.raises(SystemExit):
            for _ in range(150):
                world.step()
        world.crash()
        exchange_fills = world.ex.fills(world.wallet.address)
        assert len(exchange_fills) >= 1
        for _ in range(3):  # down for three bars while the exchange and the candle service go on
            row = world.rows[world.next_bar]
            world.ex.advance(1)
            append_bars(world.candles, [row])
            world.wall.set_wall_ms(row[2] + HOUR + 2_500)
            world.next_bar += 1
        restarted = world.start()
        for _ in range(2):
            world.step()
        exchange, engine, db = three_way(world)
        assert exchange.keys() == engine.keys() == db.keys()
        for sym in exchange:
            assert engine[sym] == pytest.approx(exchange[sym], abs=1e-5)
        stored = restarted.conn.execute("SELECT COUNT(*) FROM trades WHERE fill_hash IN "
                                        "(SELECT fill_hash FROM oms_fills)").fetchone()[0]
        assert stored == restarted.conn.execute("SELECT COUNT(*) FROM oms_fills").fetchone()[0]
    finally:
        world.stop()
