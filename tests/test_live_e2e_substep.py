"""The live trader on 1h signals with 5m exits, against the sandbox exchange through the real SDK,
on real candles (../shared/data, 2018 5m bars): the exchange reveals one 5m bar at a time, the
candle DBs get it (and the 1h bar at the hour), the clock moves to its close + the grace and the
trader runs one loop. Every exit reaches the exchange on the 5m bar the replay books it on (at
most one 5m bar + the grace later), every entry on the bar the replay opens it; none waits for
the hour to close."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import eth_account
import numpy as np
import pytest
from test_daemon_substep import ENTRY_SUB_CONFIG, GRACE, M5, SUB_CONFIG, H, hours, reveal, world
from test_live_e2e import live_env

from cpu_replay.api import run_replay
from live.clock import ManualClock
from live.daemon import TraderDaemon
from live.env import load_settings
from live.sandbox import AssetSpec, BookSpec, SandboxExchange
from marketdata.candles import load_market_data
from strategy.config import load_config

SYMBOLS = ("DASH", "ETH", "LTC")   # quoted in BTC (~0.016 .. 0.1): szDecimals 0 keeps 5 significant figures
LIVE_HOURS = 96


class SubBarWorld:
    def __init__(self, tmp_path: Path, shared: Path, live_from: int, config: str = SUB_CONFIG):
        self.tmp, self.shared, self.live_from, self.next = tmp_path, shared, live_from, live_from
        # candle DBs and the config (paper env unused); fills at the decision price, as the replay books them
        world(tmp_path, shared, before_ms=live_from, config=config.replace(
            "trade: {", "trade: {slippage_bps: 0.0, exit_slippage_bps: 0.0, "))
        self.wallet = eth_account.Account.create()
        with sqlite3.connect(shared / "candles_5m.db") as conn:
            timeline = [r[0] for r in conn.execute("SELECT DISTINCT t FROM candles WHERE symbol IN (?, ?, ?) "
                                                   "ORDER BY t", SYMBOLS)]
        self.ex = SandboxExchange([AssetSpec(s, 0, 50) for s in SYMBOLS], str(shared / "candles_5m.db"),
                                  {self.wallet.address: 10_000.0}, interval="5m",
                                  start_bar=timeline.index(live_from - M5), book=BookSpec(half_spread_bps=0.0)).start()
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps({"secret_key": self.wallet.key.hex(), "main_address": self.wallet.address}))
        os.chmod(secrets, 0o600)
        self.env = live_env(tmp_path, self.ex.base_url, secrets)
        self.env.update({"AI_QUANT_SYMBOLS": ",".join(SYMBOLS), "AI_QUANT_CANDLE_CLOSE_GRACE_MS": str(GRACE),
                         "AI_QUANT_LIVE_MAX_BAR_AGE_S": "30"})
        # the trader starts a minute after the last bar closed: too old to trade, warm-up only
        self.wall = ManualClock(now_ms=live_from + 60_000)
        self.daemon = None

    def start(self) -> TraderDaemon:
        self.daemon = TraderDaemon(load_settings(self.env), wall=self.wall)
        self.daemon._start()
        ws = self.daemon.market_ws
        if ws is not None:
            assert ws.wait_mids(0, 5.0) > 0, "no WS mids from the sandbox"
        self.daemon.loop_once()
        return self.daemon

    def tick(self) -> int:
        """The next 5m bar closes on the exchange and in the candle DBs; the trader runs one loop."""
        ws = self.daemon.market_ws
        seq = ws.seq if ws is not None else 0
        self.ex.advance(1)
        t = self.ex.now_ms - M5
        if ws is not None and ws.health()["connected"]:
            ws.wait_mids(seq, 2.0)
        reveal(self.tmp, self.shared, from_ms=self.next, before_ms=t + M5)
        self.next = t + M5
        self.wall.set_wall_ms(t + M5 + GRACE)
        return self.daemon.loop_once()

    def crash(self) -> None:
        """The trader's process is gone (every step it took is committed): its handles close."""
        self.daemon.close()
        self.daemon = None

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
        self.ex.stop()


def replay_fills(tmp_path: Path, start_ms: int) -> list[dict]:
    """The replay of the same candles, trading from `start_ms` (indicators warm from the first bar,
    as the trader's warm-up), from the account's 10,000."""
    dbs = tmp_path / "candles_dbs"
    cfg = load_config(tmp_path / "cfg.yaml", live=True)
    md = load_market_data(str(dbs / "candles_1h.db"), "1h", symbols=list(SYMBOLS))
    exit_md = load_market_data(str(dbs / "candles_5m.db"), "5m", symbols=list(SYMBOLS))
    report = run_replay(cfg, md, exit_md=exit_md, initial_balance=10_000.0, start_ms=start_ms)
    return [f for f in report["fills"] if f["reason"] != "end_of_data" and f["action"] != "FUNDING"]


@pytest.mark.slow
@pytest.mark.parametrize("config", [SUB_CONFIG, ENTRY_SUB_CONFIG], ids=["5m exits", "5m exits and entries"])
def test_live_exits_and_entries_reach_the_exchange_on_the_5m_bar_the_replay_books_them(tmp_path, shared_data,
                                                                                       config):
    times = hours(shared_data)
    live_from = times[-LIVE_HOURS - 1]
    w = SubBarWorld(tmp_path, shared_data, live_from, config)
    started = time.monotonic()
    try:
        w.start()
        assert w.ex.fills(w.wallet.address) == [], "warm-up bars must not trade"
        steps, crash_at = [], live_from + LIVE_HOURS // 2 * H + 5 * M5
        while w.next < times[-1]:
            if w.next == crash_at:      # the trader dies mid-hour after its 10:20 bar and is restarted
                w.crash()
                w.start()
                assert w.daemon.steps.cursor.last_sub_t == crash_at - M5
            steps.append(w.tick())
        daemon = w.daemon
        exchange = sorted(w.ex.fills(w.wallet.address), key=lambda f: (f["time"], f["tid"]))
        rows = daemon.conn.execute("SELECT symbol, action, reason, timestamp, bar_t_ms FROM trades "
                                   "WHERE action != 'FUNDING' ORDER BY id").fetchall()
    finally:
        w.stop()
    assert steps == [2 if (t + M5) % H == 0 else 1 for t in range(live_from, times[-1], M5)], \
        "one step per 5m bar (and the close at the hour), none redone or skipped across the restart"
    want = replay_fills(tmp_path, live_from)
    inside = {f["action"] for f in want if f["t_ms"] % H}
    assert len(want) >= 6 and inside & {"CLOSE", "REDUCE"}, "the window must hold exits the replay books inside the hour"
    if config == ENTRY_SUB_CONFIG:
        assert inside & {"OPEN", "ADD"}, "... and entries (opens or adds on a 5m bar)"
    assert [(r[0], r[1]) for r in rows] == [(f["symbol"], f["action"]) for f in want]
    delays = []
    for f in want:
        sent = [x for x in exchange if x["coin"] == f["symbol"] and f["t_ms"] <= x["time"] <= f["t_ms"] + M5 + GRACE]
        assert sent, f"{f['symbol']} {f['action']} {f['reason']} booked at {f['t_ms']}: nothing sent within 5m"
        delays.append(min(x["time"] for x in sent) - f["t_ms"])
    n_inside = sum(1 for f in want if f["t_ms"] % H)
    print(f"live 1h/5m: {LIVE_HOURS} h = {LIVE_HOURS * 12} 5m bars in {time.monotonic() - started:.0f} s; "
          f"{len(want)} replay fills ({n_inside} inside the hour: {sorted(inside)}), {len(exchange)} exchange fills, "
          f"delay max {max(delays) / 1000:.0f} s, median {float(np.median(delays)) / 1000:.0f} s")


@pytest.mark.slow
def test_live_restart_after_downtime_mid_hour_warms_what_is_too_old_and_trades_on(tmp_path, shared_data):
    """Killed at 10:20 holding a position, back two hours later: the 5m bars and closes that are now
    too old to trade (AI_QUANT_LIVE_MAX_BAR_AGE_S) send nothing, the engine keeps its sub-bar order
    through them, the newest bar trades, and the trader goes on one step per 5m bar; engine, trading
    DB and exchange agree."""
    from test_live_e2e import assert_agree

    times = hours(shared_data)
    live_from = times[-72]
    w = SubBarWorld(tmp_path, shared_data, live_from, ENTRY_SUB_CONFIG)
    try:
        w.start()
        while not (w.daemon._engine_positions() and (w.next - 5 * M5) % H == 0):
            assert w.next < times[-24], "no position held mid-hour"
            w.tick()
        w.crash()
        down_from = w.next
        for _ in range(2 * 12 + 3):    # two hours and a quarter without the trader
            w.ex.advance(1)
        t = w.ex.now_ms - M5
        reveal(w.tmp, w.shared, from_ms=w.next, before_ms=t + M5)
        w.next = t + M5
        w.wall.set_wall_ms(t + M5 + GRACE)
        w.start()
        sent_while_old = [f for f in w.ex.fills(w.wallet.address) if down_from <= f["time"] < w.next]
        assert sent_while_old == [], "nothing is sent for bars that closed while the trader was down"
        last_sub = w.next - M5
        assert w.daemon.steps.cursor == type(w.daemon.steps.cursor)(last_sub // H * H - H, last_sub)
        assert w.daemon.engine.sub_position == (last_sub // H * H, (last_sub % H) // M5 + 1)
        steps = [w.tick() for _ in range(6 * 12)]
        assert steps == [2 if (t + M5) % H == 0 else 1 for t in range(w.next - 6 * H, w.next, M5)]
        w.daemon.reconciler.run()
        assert_agree(w)
    finally:
        w.stop()
