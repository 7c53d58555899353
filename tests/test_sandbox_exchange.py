"""The sandbox Hyperliquid against the real hyperliquid-python-sdk over 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from pathlib import Path

import eth_account
import pytest
import requests
import yaml
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.error import ServerError
from hyperliquid.utils.signing import Cloid, get_timestamp_ms, sign_l1_action

from live.sandbox import AssetSpec, Bar, BookSpec, SandboxConfigError, SandboxExchange
from live.sandbox.numbers import price_is_valid, tick_for

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def flat_path(n: int, px: float, dip_at: int | None = None, dip_low: float | None = None) -> list[tuple]:
    bars = [(T0 + i * HOUR, px, px + 50, px - 50, px, 10.0) for i in range(n)]
    if dip_at is not None:
        bars[dip_at] = (T0 + dip_at * HOUR, px, px + 50, dip_low, px, 10.0)
    return bars


@pytest.fixture
def wallet():
    return eth_account.Account.create()


def make_ex(wallet, balance=100_000.0, btc=None, **kw) -> SandboxExchange:
    path = {"BTC": btc or flat_path(30, 30_000.0), "ETH": flat_path(30, 2_000.0)}
    assets = [AssetSpec("BTC", sz_decimals=5, max_leverage=50), AssetSpec("ETH", sz_decimals=4, max_leverage=25)]
    return SandboxExchange(assets, path, {wallet.address: balance}, start_bar=5, **kw).start()


@pytest.fixture
def ex(wallet):
    sandbox = make_ex(wallet)
    yield sandbox
    sandbox.stop()


def statuses(resp: dict) -> list:
    assert resp["status"] == "ok", resp
    return resp["response"]["data"]["statuses"]


# ---- startup and market data ------------------------------------------------------------

def test_startup_and_meta(ex):
    info = Info(ex.base_url, skip_ws=True)
    assert info.name_to_asset("BTC") == 0 and info.name_to_asset("ETH") == 1
    assert info.asset_to_sz_decimals == {0: 5, 1: 4}
    meta = info.meta()
    assert meta["universe"][1] == {"name": "ETH", "szDecimals": 4, "maxLeverage": 25, "marginTableId": 25}
    meta2, ctxs = info.meta_and_asset_ctxs()
    assert meta2 == meta and len(ctxs) == 2
    assert ctxs[0]["markPx"] == "30000.0" and ctxs[0]["impactPxs"] == ["29997.0", "30003.0"]
    assert info.all_mids() == {"BTC": "30000.0", "ETH": "2000.0"}
    book = info.l2_snapshot("BTC")
    assert book["levels"][0][0] == {"px": "29997.0", "sz": "8.33416", "n": 1}
    assert float(book["levels"][1][0]["px"]) == 30003.0 and len(book["levels"][0]) == 20


def _recorded(name: str, body_type: str):
    path = DATA / "hl_protocol" / name
    if not path.is_file():
        pytest.skip(f"../shared/data absent: {path}")
    for it in yaml.safe_load(path.read_text())["interactions"]:
        if json.loads(it["request"]["body"])["type"] == body_type:
            return json.loads(it["response"]["body"]["string"])
    raise AssertionError(f"{name}: no {body_type} interaction")


def _shape(x):
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    return type(x).__name__


def test_candle_snapshot_matches_recorded_shape_and_limits(wallet):
    recorded = _recorded("test_get_candles_snapshot.yaml", "candleSnapshot")
    long_path = [(T0 + i * HOUR, 100.0 + i % 7, 101.0 + i % 7, 99.0, 100.5, 3.0) for i in range(5_100)]
    sandbox = SandboxExchange([AssetSpec("BTC", 5)], {"BTC": long_path}, {wallet.address: 1.0}, start_bar=5_050)
    with sandbox:
        info = Info(sandbox.base_url, skip_ws=True)
        got = info.candles_snapshot("BTC", "1h", 0, T0 + 10_000 * HOUR)
    assert _shape(got[0]) == _shape(recorded[0])
    assert len(got) == 5_000 and got[-1]["t"] == T0 + 5_050 * HOUR and got[0]["t"] == T0 + 51 * HOUR
    assert all(c["T"] == c["t"] + HOUR - 1 for c in got) and [c["t"] for c in got] == sorted(c["t"] for c in got)
    assert got[-1]["o"] == "103.0" and got[-1]["c"] == "100.5" and got[-1]["i"] == "1h" and got[-1]["s"] == "BTC"


def test_other_replies_use_recorded_keys(ex, wallet):
    x = Exchange(wallet, ex.base_url)
    statuses(x.market_open("BTC", True, 0.01))
    statuses(x.order("ETH", True, 0.01, 1_500.0, {"limit": {"tif": "Gtc"}}))
    info = Info(ex.base_url, skip_ws=True)
    mids = _recorded("test_get_all_mids.yaml", "allMids")
    assert all(isinstance(v, str) for v in mids.values()) and all(isinstance(v, str) for v in info.all_mids().values())
    rec_state = _recorded("test_get_user_state.yaml", "clearinghouseState")
    state = info.user_state(wallet.address)
    assert set(rec_state) <= set(state)
    rec_pos = rec_state["assetPositions"][0]["position"]
    assert set(rec_pos) - {"maxTradeSzs"} <= set(state["assetPositions"][0]["position"])
    assert set(rec_state["marginSummary"]) == set(state["marginSummary"])
    rec_fill = _recorded("test_get_user_fills.yaml", "userFills")[0]
    fill = info.user_fills(wallet.address)[0]
    assert set(rec_fill) <= set(fill) and _shape({k: fill[k] for k in rec_fill}) == _shape(rec_fill)
    rec_order = _recorded("test_get_open_orders.yaml", "openOrders")[0]
    order = info.open_orders(wallet.address)[0]
    assert set(rec_order) <= set(order) and _shape({k: order[k] for k in rec_order}) == _shape(rec_order)
    rec_book = _recorded("test_get_l2_snapshot.yaml", "l2Book")
    book = info.l2_snapshot("BTC")
    assert set(rec_book) == set(book) and set(rec_book["levels"][0][0]) == set(book["levels"][0][0])


def test_funding_history_and_payment(wallet):
    funding = {"BTC": {T0 + i * HOUR: (0.0001, None if i % 2 else 0.0002) for i in range(30)}}
    sandbox = make_ex(wallet, funding=funding)
    with sandbox:
        info = Info(sandbox.base_url, skip_ws=True)
        hist = info.funding_history("BTC", T0)
        assert len(hist) == 6 and hist[0] == {"coin": "BTC", "fundingRate": "0.0001", "premium": "0.0002", "time": T0}
        assert "premium" not in hist[1]
        x = Exchange(wallet, sandbox.base_url)
        statuses(x.market_open("BTC", True, 0.1))
        before = sandbox.balance(wallet.address)
        sandbox.advance(1)
        paid = before - sandbox.balance(wallet.address)
        assert paid == pytest.approx(0.1 * 30_000.0 * 0.0001)
        pos = info.user_state(wallet.address)["assetPositions"][0]["position"]
        assert float(pos["cumFunding"]["allTime"]) == pytest.approx(0.3)


# ---- orders -----------------------------------------------------------------------------

def test_market_open_close_round_trip(ex, wallet):
    x = Exchange(wallet, ex.base_url)
    info = Info(ex.base_url, skip_ws=True)
    opened = statuses(x.market_open("BTC", True, 0.01))[0]["filled"]
    assert opened["totalSz"] == "0.01" and opened["avgPx"] == "30003.0"
    pos = info.user_state(wallet.address)["assetPositions"][0]["position"]
    assert pos["szi"] == "0.01" and pos["entryPx"] == "30003.0" and pos["leverage"] == {"type": "cross", "value": 20}
    assert ex.positions(wallet.address)["BTC"]["szi"] == 0.01
    closed = statuses(x.market_close("BTC"))[0]["filled"]
    assert closed["avgPx"] == "29997.0"
    assert info.user_state(wallet.address)["assetPositions"] == [] and ex.positions(wallet.address) == {}
    f_open, f_close = ex.fills(wallet.address)
    assert (f_open["dir"], f_open["startPosition"], f_open["side"], f_open["crossed"]) == ("Open Long", "0.0", "B", True)
    assert (f_close["dir"], f_close["startPosition"], f_close["side"]) == ("Close Long", "0.01", "A")
    assert float(f_close["closedPnl"]) == pytest.approx(-0.06)
    assert float(f_open["fee"]) == pytest.approx(0.01 * 30_003 * 0.00045, abs=1e-6)
    assert f_open["oid"] == opened["oid"] and f_open["tid"] != f_close["tid"] and f_open["hash"].startswith("0x")
    fees = float(f_open["fee"]) + float(f_close["fee"])
    assert ex.balance(wallet.address) == pytest.approx(100_000.0 - 0.06 - fees)
    assert info.user_fills(wallet.address) == [f_close, f_open]
    assert info.user_fills_by_time(wallet.address, f_open["time"], f_open["time"]) == [f_open, f_close]
    assert info.user_fills_by_time(wallet.address, f_open["time"] + 1) == []
    assert x.market_close("BTC") is None


def test_flip_and_partial_fill_against_thin_book(wallet):
    sandbox = make_ex(wallet, book=BookSpec(depth_levels=2, level_notional=3_000.0))
    with sandbox:
        x = Exchange(wallet, sandbox.base_url)
        got = statuses(x.market_open("BTC", True, 0.5))[0]["filled"]
        assert got["totalSz"] == "0.19995"  # two $3000 levels: 0.09999 @ 30003 + 0.09996 @ 30010
        fills = sandbox.fills(wallet.address)
        assert [f["px"] for f in fills] == ["30003.0", "30010.0"] and len({f["hash"] for f in fills}) == 2
        statuses(x.order("BTC", False, 0.29995, 29_000.0, {"limit": {"tif": "Ioc"}}))
        assert sandbox.fills(wallet.address)[-1]["dir"] == "Long > Short"
        assert sandbox.positions(wallet.address)["BTC"]["szi"] == pytest.approx(0.19995 - 0.10001 - 0.10003)


def test_gtc_rests_then_fills_on_advance(wallet):
    sandbox = make_ex(wallet, btc=flat_path(30, 30_000.0, dip_at=6, dip_low=29_400.0))
    with sandbox:
        x = Exchange(wallet, sandbox.base_url)
        info = Info(sandbox.base_url, skip_ws=True)
        oid = statuses(x.order("BTC", True, 0.01, 29_500.0, {"limit": {"tif": "Gtc"}}))[0]["resting"]["oid"]
        assert [o["oid"] for o in info.open_orders(wallet.address)] == [oid]
        assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "open"
        assert sandbox.advance(1) == 1
        (fill,) = sandbox.fills(wallet.address)
        assert (fill["px"], fill["crossed"], fill["dir"], fill["oid"]) == ("29500.0", False, "Open Long", oid)
        assert float(fill["fee"]) == pytest.approx(0.01 * 29_500 * 0.00015)
        assert info.open_orders(wallet.address) == []
        assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "filled"
        assert fill["time"] == T0 + 7 * HOUR - 1


def test_stop_loss_trigger_closes_position(wallet):
    sandbox = make_ex(wallet, btc=flat_path(30, 30_000.0, dip_at=7, dip_low=29_000.0))
    with sandbox:
        x = Exchange(wallet, sandbox.base_url)
        statuses(x.market_open("BTC", True, 0.01))
        sl = {"trigger": {"isMarket": True, "triggerPx": 29_200.0, "tpsl": "sl"}}
        assert "resting" in statuses(x.order("BTC", False, 0.01, 29_200.0, sl, reduce_only=True))[0]
        bad = {"trigger": {"isMarket": True, "triggerPx": 31_000.0, "tpsl": "sl"}}
        assert statuses(x.order("BTC", False, 0.01, 31_000.0, bad, reduce_only=True)) == [{"error": "Invalid TP/SL price."}]
        sandbox.advance(1)
        assert sandbox.positions(wallet.address)  # bar 6 does not reach the stop
        sandbox.advance(1)
        last = sandbox.fills(wallet.address)[-1]
        # a market stop: it sells into the book where the price crossed 29200 (best bid 29197)
        assert (last["px"], last["dir"], float(last["closedPnl"])) == ("29197.0", "Close Long", pytest.approx(-8.06))
        assert sandbox.positions(wallet.address) == {} and sandbox.open_orders(wallet.address) == []


def test_cancel_and_cancel_by_cloid(ex, wallet):
    x = Exchange(wallet, ex.base_url)
    info = Info(ex.base_url, skip_ws=True)
    gtc = {"limit": {"tif": "Gtc"}}
    oid = statuses(x.order("BTC", True, 0.01, 29_000.0, gtc))[0]["resting"]["oid"]
    cloid = Cloid.from_int(42)
    resting = statuses(x.order("ETH", False, 0.01, 2_100.0, gtc, cloid=cloid))[0]["resting"]
    assert resting["cloid"] == cloid.to_raw()
    assert len(info.open_orders(wallet.address)) == 2
    assert statuses(x.cancel("BTC", oid)) == ["success"]
    assert statuses(x.cancel("BTC", oid)) == [{"error": "Order was never placed, already canceled, or filled."}]
    assert statuses(x.cancel_by_cloid("ETH", cloid)) == ["success"]
    assert info.open_orders(wallet.address) == []
    assert info.query_order_by_cloid(wallet.address, cloid)["order"]["status"] == "canceled"
    assert info.query_order_by_oid(wallet.address, 1) == {"status": "unknownOid"}


@pytest.mark.parametrize(
    ("coin", "is_buy", "sz", "px", "tif", "reduce_only", "error"),
    [
        ("BTC", True, 0.0001, 30_000.0, "Gtc", False, "Order must have minimum value of $10."),
        ("ETH", True, 0.00251, 2_000.0, "Gtc", False, "Order has invalid size."),
        ("BTC", True, 0.01, 29_000.5, "Gtc", False, "Price must be divisible by tick size."),
        ("ETH", True, 0.01, 1_999.123, "Gtc", False, "Price must be divisible by tick size."),
        ("BTC", False, 0.01, 29_000.0, "Ioc", True, "Reduce only order would increase position."),
        ("BTC", True, 0.01, 29_000.0, "Ioc", False, "Order could not immediately match against any resting orders."),
        ("BTC", True, 0.01, 30_010.0, "Alo", False, "Post only order would have immediately matched, bbo was 29997.0@30003.0."),
        ("BTC", True, 1.0, 30_000.0, "Gtc", False, "Insufficient margin to place order."),
    ],
)
def test_order_rejections_have_exchange_texts(wallet, coin, is_buy, sz, px, tif, reduce_only, error):
    sandbox = make_ex(wallet, balance=1_000.0)
    with sandbox:
        x = Exchange(wallet, sandbox.base_url)
        got = x.order(coin, is_buy, sz, px, {"limit": {"tif": tif}}, reduce_only=reduce_only)
        assert statuses(got) == [{"error": error}]
        assert sandbox.open_orders(wallet.address) == [] and sandbox.fills(wallet.address) == []


def test_reduce_only_on_same_side_of_open_position_rejected(ex, wallet):
    x = Exchange(wallet, ex.base_url)
    statuses(x.market_open("ETH", False, 0.01))
    assert statuses(x.order("ETH", False, 0.01, 1_900.0, {"limit": {"tif": "Ioc"}}, reduce_only=True)) == [
        {"error": "Reduce only order would increase position."}]
    assert ex.positions(wallet.address)["ETH"]["szi"] == -0.01


def test_leverage_rules_and_margin(wallet):
    sandbox = make_ex(wallet, balance=1_000.0)
    with sandbox:
        x = Exchange(wallet, sandbox.base_url)
        info = Info(sandbox.base_url, skip_ws=True)
        assert x.update_leverage(51, "BTC")["status"] == "err"
        assert x.update_leverage(50, "BTC") == {"status": "ok", "response": {"type": "default"}}
        assert "filled" in statuses(x.market_open("BTC", True, 1.0))[0]  # $30k at 50x needs $600
        pos = info.user_state(wallet.address)["assetPositions"][0]["position"]
        assert pos["leverage"]["value"] == 50 and float(pos["marginUsed"]) == pytest.approx(600.0)
        assert x.update_leverage(1, "BTC")["status"] == "err"  # would need $30k of margin


def test_price_rule_table():
    assert price_is_valid(Decimal("123456"), 5)  # integers always pass
    assert price_is_valid(Decimal("0.0012345"), 0) is False  # 7 decimals > 6
    assert price_is_valid(Decimal("0.001234"), 0) and not price_is_valid(Decimal("1.23456"), 0)
    assert tick_for(30_000.0, 5) == Decimal(1) and tick_for(2_000.0, 4) == Decimal("0.1")
    assert tick_for(0.00005, 0) == Decimal("0.000001")


# ---- refused inputs -------------------------------------------------------------------------

def _bad(i: int, row: tuple) -> dict:
    bars = flat_path(10, 100.0)
    bars[i] = row
    return {"BTC": bars}


@pytest.mark.parametrize("path, needle", [
    (_bad(3, (T0 + 3 * HOUR, None, 150.0, 50.0, 100.0, 1.0)), f"BTC row 3 t={T0 + 3 * HOUR} ("),
    (_bad(3, (T0 + 3 * HOUR, None, 150.0, 50.0, 100.0, 1.0)), "): o is NULL"),
    (_bad(4, (T0 + 4 * HOUR, 100.0, float("inf"), 50.0, 100.0, 1.0)), "h=inf is not finite"),
    (_bad(4, (T0 + 4 * HOUR, 100.0, 150.0, 50.0, float("nan"), 1.0)), "c=nan is not finite"),
    (_bad(4, (T0 + 4 * HOUR, 100.0, 150.0, -50.0, 100.0, 1.0)), "l=-50.0 is not a price"),
    (_bad(4, (T0 + 4 * HOUR, 0.0, 150.0, 50.0, 100.0, 1.0)), "o=0.0 is not a price"),
    (_bad(4, (T0 + 4 * HOUR, 100.0, 150.0, 120.0, 100.0, 1.0)), "outside [l=120.0, h=150.0]"),
    (_bad(4, (T0 + 3 * HOUR, 100.0, 150.0, 50.0, 100.0, 1.0)), f"BTC t={T0 + 3 * HOUR} (" ),
    (_bad(4, (T0 + 3 * HOUR, 100.0, 150.0, 50.0, 100.0, 1.0)), "duplicate bar time"),
    (_bad(0, (T0, 100.0, 150.0, 50.0, 100.0)), "needs (t, o, h, l, c, v)"),
])
def test_bad_price_path_refused_with_one_line(wallet, path, needle):
    with pytest.raises(SandboxConfigError) as exc:
        SandboxExchange([AssetSpec("BTC", 5)], path, {wallet.address: 1.0})
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("price_path: BTC")


def test_bad_book_port_and_start_bar_refused(wallet):
    path = {"BTC": flat_path(10, 100.0)}
    for kw, needle in [({"half_spread_bps": -1.0}, "book: half_spread_bps=-1.0"),
                       ({"half_spread_bps": float("nan")}, "book: half_spread_bps=nan"),
                       ({"level_notional": 0.0}, "book: level_notional=0.0 must be > 0"),
                       ({"depth_levels": 0}, "book: depth_levels=0"),
                       ({"level_step_bps": -2.0}, "book: level_step_bps=-2.0")]:
        with pytest.raises(SandboxConfigError, match=re.escape(needle)):
            BookSpec(**kw)
    for kw, needle in [({"port": 70_000}, "port: 70000 is not within 0..65535"), ({"port": -1}, "port: -1"),
                       ({"start_bar": -1}, "start_bar: -1 must be a whole number >= 0")]:
        with pytest.raises(SandboxConfigError, match=re.escape(needle)):
            SandboxExchange([AssetSpec("BTC", 5)], path, {wallet.address: 1.0}, **kw)


def test_bars_given_as_bar_objects_are_checked_too(wallet):
    good = [Bar(T0 + i * HOUR, 100.0, 101.0, 99.0, 100.0, 1.0) for i in range(10)]
    with SandboxExchange([AssetSpec("BTC", 5)], {"BTC": good}, {wallet.address: 1.0}, start_bar=2) as sandbox:
        assert sandbox.mid("BTC") == pytest.approx(100.0, rel=1e-3)
    good[5] = Bar(T0 + 5 * HOUR, 100.0, 101.0, 99.0, -1.0, 1.0)
    with pytest.raises(SandboxConfigError, match=re.escape("c=-1.0 is not a price")):
        SandboxExchange([AssetSpec("BTC", 5)], {"BTC": good}, {wallet.address: 1.0})


# ---- signatures and nonces ----------------------------------------------------------------

def test_unknown_signer_rejected(ex, wallet):
    stranger = eth_account.Account.create()
    got = Exchange(stranger, ex.base_url).market_open("BTC", True, 0.01)
    assert got == {"status": "err", "response": f"User or API Wallet {stranger.address.lower()} does not exist."}
    assert ex.fills(wallet.address) == []


def test_approved_agent_trades_for_owner(ex, wallet):
    owner = Exchange(wallet, ex.base_url)
    resp, agent_key = owner.approve_agent("bot")
    assert resp == {"status": "ok", "response": {"type": "default"}}
    agent = eth_account.Account.from_key(agent_key)
    x = Exchange(agent, ex.base_url, account_address=wallet.address)
    statuses(x.market_open("BTC", False, 0.01))
    assert ex.positions(wallet.address)["BTC"]["szi"] == -0.01
    assert x.market_close("BTC") is not None and ex.positions(wallet.address) == {}


def test_nonce_must_be_fresh(ex, wallet):
    action = {"type": "updateLeverage", "asset": 0, "isCross": True, "leverage": 10}
    nonce = get_timestamp_ms()
    body = {"action": action, "nonce": nonce, "signature": sign_l1_action(wallet, action, None, nonce, None, False),
            "vaultAddress": None, "expiresAfter": None}
    first = requests.post(ex.base_url + "/exchange", json=body, timeout=5).json()
    again = requests.post(ex.base_url + "/exchange", json=body, timeout=5).json()
    assert first == {"status": "ok", "response": {"type": "default"}}
    assert again["status"] == "err" and again["response"].startswith("Invalid nonce")
    bad = requests.post(ex.base_url + "/exchange", data="{not json", timeout=5)
    assert bad.status_code == 422


# ---- faults -----------------------------------------------------------------------------

def test_delayed_order_fills_exactly_once(ex, wallet):
    ex.faults.delay_next("order", seconds=1.0)
    x = Exchange(wallet, ex.base_url, timeout=0.3)
    cloid = Cloid.from_int(99)
    with pytest.raises(requests.exceptions.Timeout):
        x.market_open("BTC", True, 0.01, cloid=cloid)
    info = Info(ex.base_url, skip_ws=True)
    deadline = time.time() + 5
    while info.query_order_by_cloid(wallet.address, cloid)["status"] == "unknownOid" and time.time() < deadline:
        time.sleep(0.05)
    assert info.query_order_by_cloid(wallet.address, cloid)["order"]["status"] == "filled"
    time.sleep(0.2)
    assert [f["cloid"] for f in ex.fills(wallet.address)] == [cloid.to_raw()]
    assert ex.positions(wallet.address)["BTC"]["szi"] == 0.01


def test_dropped_and_failed_orders(ex, wallet):
    x = Exchange(wallet, ex.base_url, timeout=5)
    ex.faults.fail_next("order", status=500)
    with pytest.raises(ServerError):
        x.market_open("BTC", True, 0.01)
    assert ex.fills(wallet.address) == []
    ex.faults.drop_next("order")
    with pytest.raises(requests.exceptions.ConnectionError):
        x.market_open("BTC", True, 0.01)
    assert len(ex.fills(wallet.address)) == 1  # the dropped reply's order did execute
    ex.faults.drop_next("order", execute=False)
    with pytest.raises(requests.exceptions.ConnectionError):
        x.market_open("BTC", True, 0.01)
    assert len(ex.fills(wallet.address)) == 1
    statuses(x.market_open("BTC", True, 0.01))
    assert ex.positions(wallet.address)["BTC"]["szi"] == 0.02


# ---- websocket --------------------------------------------------------------------------

class Inbox:
    def __init__(self):
        self.msgs: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, msg):
        with self.cond:
            self.msgs.append(msg)
            self.cond.notify_all()

    def wait_for(self, pred, timeout=5.0) -> dict:
        end = time.time() + timeout
        with self.cond:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = end - time.time()
                assert left > 0, f"no matching message in {self.msgs[-5:]}"
                self.cond.wait(left)


def wait_until(pred, timeout=5.0):
    end = time.time() + timeout
    while not pred():
        assert time.time() < end, "timed out"
        time.sleep(0.01)


def test_websocket_pushes_reach_sdk(wallet):
    sandbox = make_ex(wallet, btc=flat_path(30, 30_000.0, dip_at=6, dip_low=29_400.0))
    with sandbox:
        info = Info(sandbox.base_url, skip_ws=False)
        inbox = Inbox()
        try:
            for sub in ({"type": "allMids"}, {"type": "userFills", "user": wallet.address},
                        {"type": "orderUpdates", "user": wallet.address}, {"type": "candle", "coin": "BTC", "interval": "1h"},
                        {"type": "userEvents", "user": wallet.address}, {"type": "l2Book", "coin": "BTC"},
                        {"type": "bbo", "coin": "ETH"}, {"type": "trades", "coin": "BTC"}):
                info.subscribe(sub, inbox)
            wait_until(lambda: sandbox.ws_subscription_count() == 8)
            snap = inbox.wait_for(lambda m: m["channel"] == "userFills")
            assert snap["data"] == {"user": wallet.address.lower(), "isSnapshot": True, "fills": []}
            inbox.wait_for(lambda m: m["channel"] == "allMids" and m["data"]["mids"]["BTC"] == "30000.0")

            x = Exchange(wallet, sandbox.base_url)
            oid = statuses(x.order("BTC", True, 0.01, 29_500.0, {"limit": {"tif": "Gtc"}}))[0]["resting"]["oid"]
            upd = inbox.wait_for(lambda m: m["channel"] == "orderUpdates" and m["data"][0]["status"] == "open")
            assert upd["data"][0]["order"]["oid"] == oid and upd["data"][0]["order"]["limitPx"] == "29500.0"

            sandbox.advance(1)
            fills = inbox.wait_for(lambda m: m["channel"] == "userFills" and not m["data"].get("isSnapshot"))
            assert fills["data"]["fills"][0]["oid"] == oid and fills["data"]["fills"][0]["px"] == "29500.0"
            inbox.wait_for(lambda m: m["channel"] == "orderUpdates" and m["data"][0]["status"] == "filled")
            inbox.wait_for(lambda m: m["channel"] == "user" and m["data"]["fills"][0]["oid"] == oid)
            candle = inbox.wait_for(lambda m: m["channel"] == "candle" and m["data"]["t"] == T0 + 6 * HOUR)
            assert candle["data"]["l"] == "29400.0" and candle["data"]["T"] == T0 + 7 * HOUR - 1
            inbox.wait_for(lambda m: m["channel"] == "l2Book" and m["data"]["coin"] == "BTC")
            inbox.wait_for(lambda m: m["channel"] == "bbo" and m["data"]["bbo"][0]["px"] == "1999.8")
            trade = inbox.wait_for(lambda m: m["channel"] == "trades")
            assert trade["data"][0]["users"][0] == wallet.address.lower()

            sandbox.faults.drop_ws()
            wait_until(lambda: sandbox.ws_subscription_count() == 0)
        finally:
            info.disconnect_websocket()
