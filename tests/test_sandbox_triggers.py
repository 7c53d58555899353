"""Trigger orders on the sandbox exchange, as Hyperliquid does them, through the real SDK: a
reduce-only market stop / take-profit rests (openOrders, frontendOpenOrders with triggerPx,
orderType, isTrigger, reduceOnly), fires when the price crosses its trigger, fills as a market
order against the book at the crossing (the bar's open on a gap) within a 10% slippage cap, is
reported through userFills; it can be modified and cancelled by oid and by cloid."""

from __future__ import annotations

import eth_account
import pytest
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.signing import Cloid

from live.sandbox import AssetSpec, BookSpec, SandboxExchange

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
SL = {"trigger": {"isMarket": True, "triggerPx": 29_200.0, "tpsl": "sl"}}


def path(n: int = 30, px: float = 30_000.0, bar: dict | None = None) -> list[tuple]:
    """Flat bars (range +-50); `bar` maps an index to its (o, h, l, c)."""
    rows = [(T0 + i * HOUR, px, px + 50, px - 50, px, 10.0) for i in range(n)]
    for i, (o, h, lo, c) in (bar or {}).items():
        rows[i] = (T0 + i * HOUR, o, h, lo, c, 10.0)
    return rows


def make(wallet, bar=None, book=BookSpec()) -> SandboxExchange:
    return SandboxExchange([AssetSpec("BTC", 5, 50)], {"BTC": path(bar=bar)}, {wallet.address: 100_000.0},
                           start_bar=5, book=book).start()


@pytest.fixture
def wallet():
    return eth_account.Account.create()


def ok(resp: dict) -> list:
    assert resp["status"] == "ok", resp
    return resp["response"]["data"]["statuses"]


def test_trigger_order_is_listed_as_the_api_lists_it(wallet):
    ex = make(wallet)
    try:
        x, info = Exchange(wallet, ex.base_url), Info(ex.base_url, skip_ws=True)
        ok(x.market_open("BTC", True, 0.01))
        cloid = Cloid("0x" + "ab" * 16)
        oid = ok(x.order("BTC", False, 0.01, 26_280.0, SL, reduce_only=True, cloid=cloid))[0]["resting"]["oid"]
        plain, = info.open_orders(wallet.address)
        assert (plain["oid"], plain["side"], plain["sz"], plain["limitPx"], plain["cloid"]) == \
            (oid, "A", "0.01", "26280.0", cloid.to_raw())
        front, = info.frontend_open_orders(wallet.address)
        assert front["isTrigger"] is True and front["triggerPx"] == "29200.0" and front["reduceOnly"] is True
        assert front["orderType"] == "Stop Market" and front["triggerCondition"] == "Price below 29200.0"
        assert front["tif"] is None
        status = info.query_order_by_cloid(wallet.address, cloid)
        assert status["status"] == "order" and status["order"]["status"] == "open"
        # a take-profit above the price is "Take Profit Market"; a stop on the wrong side is refused
        tp = {"trigger": {"isMarket": True, "triggerPx": 31_000.0, "tpsl": "tp"}}
        ok(x.order("BTC", False, 0.01, 27_900.0, tp, reduce_only=True))
        kinds = sorted(o["orderType"] for o in info.frontend_open_orders(wallet.address))
        assert kinds == ["Stop Market", "Take Profit Market"]
        wrong = {"trigger": {"isMarket": True, "triggerPx": 31_000.0, "tpsl": "sl"}}
        assert ok(x.order("BTC", False, 0.01, 27_900.0, wrong, reduce_only=True)) == [{"error": "Invalid TP/SL price."}]
    finally:
        ex.stop()


def test_stop_fires_on_the_crossing_and_fills_at_the_book_there(wallet):
    ex = make(wallet, bar={7: (30_000.0, 30_050.0, 29_000.0, 29_900.0)})
    try:
        x = Exchange(wallet, ex.base_url)
        ok(x.market_open("BTC", True, 0.01))
        cloid = Cloid("0x" + "cd" * 16)
        ok(x.order("BTC", False, 0.01, 26_280.0, SL, reduce_only=True, cloid=cloid))
        ex.advance(1)  # bar 6 stays above the trigger
        assert ex.positions(wallet.address) and len(ex.open_orders(wallet.address)) == 1
        ex.advance(1)  # bar 7 dips through 29200: the stop sells into the bids below 29200
        last = ex.fills(wallet.address)[-1]
        assert last["dir"] == "Close Long" and last["cloid"] == cloid.to_raw() and last["crossed"] is True
        assert float(last["px"]) == 29_197.0   # the best bid of the book at 29200 (1 bp half-spread)
        assert last["time"] == T0 + 8 * HOUR - 1
        assert ex.positions(wallet.address) == {} and ex.open_orders(wallet.address) == []
        user_fills = Info(ex.base_url, skip_ws=True).user_fills(wallet.address)
        assert user_fills[0]["tid"] == last["tid"]
        st = Info(ex.base_url, skip_ws=True).query_order_by_cloid(wallet.address, cloid)
        assert st["order"]["status"] == "filled"
    finally:
        ex.stop()


def test_a_gap_through_the_stop_fills_at_the_open_and_reduce_only_caps_the_size(wallet):
    ex = make(wallet, bar={7: (28_500.0, 28_600.0, 28_400.0, 28_500.0)})
    try:
        x = Exchange(wallet, ex.base_url)
        ok(x.market_open("BTC", True, 0.01))
        ok(x.order("BTC", False, 0.05, 26_280.0, SL, reduce_only=True))   # larger than the position
        ex.advance(2)
        last = ex.fills(wallet.address)[-1]
        assert float(last["px"]) == pytest.approx(28_497.0) and last["sz"] == "0.01"
        assert ex.positions(wallet.address) == {}
    finally:
        ex.stop()


def test_thin_book_fills_only_within_the_slippage_cap(wallet):
    book = BookSpec(depth_levels=3, level_notional=100.0, level_step_bps=500.0)  # 5% between levels
    ex = make(wallet, bar={7: (30_000.0, 30_050.0, 29_000.0, 29_900.0)}, book=book)
    try:
        x = Exchange(wallet, ex.base_url)
        ok(x.order("BTC", True, 0.0095, 34_000.0, {"limit": {"tif": "Ioc"}}))  # three asks
        held = ex.positions(wallet.address)["BTC"]["szi"]
        ok(x.order("BTC", False, held, 26_280.0, SL, reduce_only=True))
        ex.advance(2)
        fills = [f for f in ex.fills(wallet.address) if f["dir"] == "Close Long"]
        # bids at 29197, ~27737, ~26277: the third is more than 10% below 29200, so it is not taken
        assert [float(f["px"]) for f in fills] == [29_197.0, pytest.approx(27_737.0, abs=1)]
        assert ex.positions(wallet.address)["BTC"]["szi"] > 0 and ex.open_orders(wallet.address) == []
    finally:
        ex.stop()


def test_modify_by_oid_and_by_cloid_then_cancel_both_ways(wallet):
    ex = make(wallet)
    try:
        x, info = Exchange(wallet, ex.base_url), Info(ex.base_url, skip_ws=True)
        ok(x.market_open("BTC", True, 0.02))
        cloid = Cloid("0x" + "ef" * 16)
        oid = ok(x.order("BTC", False, 0.02, 26_280.0, SL, reduce_only=True, cloid=cloid))[0]["resting"]["oid"]
        moved = {"trigger": {"isMarket": True, "triggerPx": 29_500.0, "tpsl": "sl"}}
        new = ok(x.modify_order(oid, "BTC", False, 0.01, 26_550.0, moved, reduce_only=True))[0]["resting"]["oid"]
        assert new != oid
        front, = info.frontend_open_orders(wallet.address)
        assert (front["oid"], front["triggerPx"], front["sz"], front["cloid"]) == (new, "29500.0", "0.01", cloid.to_raw())
        by_cloid = {"trigger": {"isMarket": True, "triggerPx": 29_600.0, "tpsl": "sl"}}
        newer = ok(x.modify_order(cloid, "BTC", False, 0.02, 26_640.0, by_cloid, reduce_only=True,
                                  cloid=cloid))[0]["resting"]["oid"]
        front, = info.frontend_open_orders(wallet.address)
        assert (front["oid"], front["triggerPx"], front["sz"]) == (newer, "29600.0", "0.02")
        assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "canceled"
        # an order that is gone cannot be modified; a refused replacement leaves the old one standing
        assert "error" in ok(x.modify_order(oid, "BTC", False, 0.02, 26_640.0, by_cloid, reduce_only=True))[0]
        bad = {"trigger": {"isMarket": True, "triggerPx": 31_000.0, "tpsl": "sl"}}
        assert ok(x.modify_order(cloid, "BTC", False, 0.02, 27_900.0, bad, reduce_only=True)) == \
            [{"error": "Invalid TP/SL price."}]
        assert [o["oid"] for o in info.open_orders(wallet.address)] == [newer]
        assert ok(x.cancel_by_cloid("BTC", cloid)) == ["success"]
        oid2 = ok(x.order("BTC", False, 0.02, 26_280.0, SL, reduce_only=True))[0]["resting"]["oid"]
        assert ok(x.cancel("BTC", oid2)) == ["success"]
        assert info.open_orders(wallet.address) == []
        assert ok(x.cancel("BTC", oid2)) == [{"error": "Order was never placed, already canceled, or filled."}]
    finally:
        ex.stop()
