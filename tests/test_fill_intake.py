"""Fill intake against the sandbox exchange (real SDK, real WebSocket, real SQLite): every exchange
fill is stored once whichever feeds bring it, matched oid -> cloid -> time, orphans become
synthetic manual_* intents, and the REST cursor only moves after a commit."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.utils.types import Cloid

from live.fill_intake import CURSOR_KEY, OVERLAP_MS, FillIntake
from live.hl_broker import HyperliquidBroker
from live.market_ws import MarketWs, WsConfig, ws_url
from live.oms import Oms
from live.sandbox import AssetSpec, SandboxExchange
from live.secrets import load_secrets
from live.trading_db import load_engine_state, open_positions, open_trading_db

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
BACKFILL_MS = 2 * HOUR


class World:
    def __init__(self, tmp_path: Path):
        self.wallet = eth_account.Account.create()
        bars = {"BTC": [(T0 + i * HOUR, 30_000.0, 30_050.0, 29_950.0, 30_000.0, 10.0) for i in range(40)]}
        self.ex = SandboxExchange([AssetSpec("BTC", 5, 50)], bars, {self.wallet.address: 10_000.0},
                                  start_bar=5).start()
        path = tmp_path / "secrets.json"
        path.write_text(json.dumps({"secret_key": self.wallet.key.hex(), "main_address": self.wallet.address}))
        path.chmod(0o600)
        self.broker = HyperliquidBroker(self.ex.base_url, load_secrets(path), timeout_s=5)
        self.conn = open_trading_db(tmp_path / "live.db", timeout_s=0.2)
        self.oms = Oms(self.conn)
        self.intake = FillIntake(self.oms, self.broker.fills_by_time, now_ms=lambda: self.ex.now_ms,
                                 backfill_ms=BACKFILL_MS, rest_every_s=3600)
        cfg = WsConfig(url=ws_url(self.ex.base_url), user=self.wallet.address, user_channels=("userFills",),
                       backoff_min_s=0.05, backoff_max_s=0.2)
        self.ws = MarketWs(cfg, on_user_fills=self.intake.offer_ws).start()
        assert self.ws.wait_connected(5)
        wait_until(lambda: self.ex.ws_subscription_count() == 2)
        self.manual = Exchange(self.wallet, self.ex.base_url)

    def wait_ws_fills(self, n: int) -> None:
        """Until the WS thread has buffered n fills (pushes are asynchronous)."""
        wait_until(lambda: self.intake.pending() >= n)

    def rows(self, sql: str, *args) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(sql, args)]

    def close(self) -> None:
        self.ws.stop()
        self.conn.close()
        self.ex.stop()


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def sent_intent(world: World, *, side="BUY", size=0.001, seq=0, action="OPEN"):
    intent, created = world.oms.create_intent(symbol="BTC", action=action, side=side, size=size,
                                              notional=size * 30_000, decision_ts_ms=T0, seq=seq)
    assert created
    return intent


def test_fill_from_order_reply_ws_and_rest_is_stored_once(world):
    intent = sent_intent(world)
    res = world.broker.submit("BTC", True, 0.001, 30_300.0, reduce_only=False, cloid=intent.client_order_id)
    assert res.status == "FILLED"
    world.oms.set_status(intent, "SENT", oid=res.oid, sent=True)
    for f in world.broker.fills_for_oid(res.oid):     # the order path stores the reply's fills first
        assert world.oms.record_fill(intent, f, "oid")
    n_exchange = len(world.ex.fills(world.wallet.address))
    world.wait_ws_fills(n_exchange)
    ws = world.intake.drain_ws()
    rest = world.intake.backfill()
    assert (ws.new, ws.duplicate, rest.new, rest.duplicate) == (0, n_exchange, 0, n_exchange)
    assert world.rows("SELECT COUNT(*) FROM oms_fills") == [(n_exchange,)]
    assert world.rows("SELECT COUNT(*) FROM trades") == [(0,)]    # the bar transaction writes those
    assert world.intake.pending() == 0


def test_late_fill_of_a_resting_order_comes_in_by_ws_matched_by_oid(world):
    intent = sent_intent(world, size=0.002)
    res = world.broker.submit("BTC", True, 0.002, 29_960.0, reduce_only=False, cloid=intent.client_order_id,
                              tif="Gtc")
    assert res.status == "RESTING"
    world.oms.set_status(intent, "SENT", oid=res.oid, sent=True)
    world.ex.advance(1)                                  # bar low 29 950 crosses the bid
    world.wait_ws_fills(1)
    got = world.intake.drain_ws()
    assert (got.new, got.orphans, dict(got.matched_via)) == (1, 0, {"oid": 1})
    assert world.oms.get(intent.intent_id).status == "FILLED"
    (action, size, meta), = world.rows("SELECT action, size, meta_json FROM trades")
    assert (action, size, json.loads(meta)["source"]) == ("OPEN", 0.002, "ws")
    again = world.intake.backfill()
    assert (again.new, again.duplicate) == (0, 1)
    assert world.intake.counts == {"ws": 1}


def test_manual_trade_is_an_orphan_with_a_synthetic_filled_intent(world):
    reply = world.manual.order("BTC", False, 0.003, 29_700.0, {"limit": {"tif": "Ioc"}})
    assert "filled" in reply["response"]["data"]["statuses"][0]
    fills = world.ex.fills(world.wallet.address)
    world.wait_ws_fills(len(fills))
    got = world.intake.drain_ws()
    assert (got.new, got.orphans, got.touched) == (len(fills), len(fills), {"BTC"})
    f = fills[0]
    manual_id = f"manual_{f['hash'][2:14]}_{f['tid']}"
    (status, action, side, reason), = world.rows("SELECT status, action, side, reason FROM oms_intents")
    assert world.rows("SELECT intent_id FROM oms_intents") == [(manual_id,)]
    assert (status, action, side, reason) == ("FILLED", "OPEN", "SELL", "manual")
    events = world.rows("SELECT event, symbol FROM audit_events")
    assert events == [("ORPHAN_FILL", "BTC")] * len(fills)
    (pos,) = open_positions(world.conn)
    assert (pos["symbol"], pos["side"], pos["size"]) == ("BTC", "SHORT", 0.003)


def test_cloid_then_time_proximity_matching(world):
    # an UNKNOWN intent (the reply was lost): its fill carries our cloid
    lost = sent_intent(world, seq="lost")
    world.oms.set_status(lost, "UNKNOWN", sent=True)
    world.manual.order("BTC", True, 0.001, 30_300.0, {"limit": {"tif": "Ioc"}},
                       cloid=Cloid(lost.client_order_id))
    world.wait_ws_fills(1)
    got = world.intake.drain_ws()
    assert dict(got.matched_via) == {"cloid": 1}
    lost = world.oms.get(lost.intent_id)
    assert lost.status == "FILLED" and lost.exchange_order_id == str(world.ex.fills(world.wallet.address)[0]["oid"])
    # a fill without cloid near the send time of an intent whose oid is unknown: time proximity
    near = sent_intent(world, side="SELL", size=0.001, seq="near", action="CLOSE")
    world.oms.set_status(near, "SENT", sent=True)
    sent = world.oms.get(near.intent_id).sent_ts_ms
    fill = {"coin": "BTC", "px": "30000.0", "sz": "0.001", "side": "A", "time": sent + 1_500, "dir": "Close Long",
            "startPosition": "0.001", "closedPnl": "0.0", "hash": "0x" + "ab" * 32, "oid": 987654, "tid": 42,
            "fee": "0.01", "feeToken": "USDC", "crossed": True}
    far = dict(fill, time=sent + 700_000, tid=43, hash="0x" + "cd" * 32, oid=987655)
    world.intake.offer_ws({"isSnapshot": False, "fills": [fill, far]})
    got = world.intake.drain_ws()
    assert dict(got.matched_via) == {"time": 1, "orphan": 1}
    assert world.oms.get(near.intent_id).status == "FILLED"


def test_rest_cursor_moves_only_after_success_and_snapshot_history_is_skipped(world, tmp_path):
    world.manual.order("BTC", True, 0.001, 30_300.0, {"limit": {"tif": "Ioc"}})
    n0 = len(world.ex.fills(world.wallet.address))
    world.wait_ws_fills(n0)
    world.intake.drain_ws()
    world.ex.faults.fail_next("userFillsByTime", status=500)
    assert world.intake.backfill().new == 0 and world.intake.rest_failures == 1
    assert load_engine_state(world.conn, CURSOR_KEY) is None          # failed call: no cursor
    first = world.intake.backfill()
    assert (first.new, first.duplicate) == (0, n0)
    assert world.intake.cursor_ms() == world.ex.now_ms
    world.ex.advance(3)
    # a fill the WS missed (its frame never reached us) is found by the next REST window
    world.ws.stop()
    assert not world.ws.health()["connected"]
    world.manual.order("BTC", False, 0.001, 29_700.0, {"limit": {"tif": "Ioc"}})
    got = world.intake.backfill()
    assert got.new == len(world.ex.fills(world.wallet.address)) - n0 and dict(got.matched_via) == {"orphan": got.new}
    assert world.intake.cursor_ms() == world.ex.now_ms and world.intake.counts["rest"] == got.new
    # a DB that cannot commit: the buffered WS fills stay for the next loop
    world.intake.offer_ws({"isSnapshot": False, "fills": [dict(world.ex.fills(world.wallet.address)[-1], tid=999,
                                                              hash="0x" + "ef" * 32)]})
    blocker = sqlite3.connect(tmp_path / "live.db")
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        world.intake.drain_ws()
    assert world.intake.pending() == 1
    blocker.rollback()
    blocker.close()
    assert world.intake.drain_ws().new == 1 and world.intake.pending() == 0
    # an isSnapshot frame is history: fills older than the REST window are not revived
    old = dict(world.ex.fills(world.wallet.address)[0], tid=1000, hash="0x" + "12" * 32,
               time=world.intake.cursor_ms() - OVERLAP_MS - 1)
    world.intake.offer_ws({"isSnapshot": True, "fills": [old]})
    assert world.intake.drain_ws().new == 0
