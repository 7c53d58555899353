"""MarketWs against the sandbox exchange's real WebSocket on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from live.market_ws import MarketWs, WsConfig, channel_key, ws_url
from live.sandbox import AssetSpec, SandboxExchange

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR


def rising_path(px: float, n: int = 40) -> list[tuple]:
    return [(T0 + i * HOUR, px + i, px + i + 50, px + i - 50, px + i + 1, 10.0) for i in range(n)]


@pytest.fixture
def sandbox():
    ex = SandboxExchange([AssetSpec("BTC", 5), AssetSpec("ETH", 4)],
                         {"BTC": rising_path(30_000.0), "ETH": rising_path(2_000.0)}, {}, start_bar=5).start()
    yield ex
    ex.stop()


def config(ex: SandboxExchange, **kw) -> WsConfig:
    base = dict(url=ws_url(ex.base_url), symbols=("BTC", "ETH"), bbo=True, backoff_min_s=0.05, backoff_max_s=0.2)
    base.update(kw)
    return WsConfig(**base)


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_ws_url_follows_sdk_rule():
    assert ws_url("http://127.0.0.1:9000") == "ws://127.0.0.1:9000/ws"
    assert ws_url("https://api.hyperliquid.xyz/") == "wss://api.hyperliquid.xyz/ws"


def test_receives_mids_and_bbo(sandbox):
    with MarketWs(config(sandbox)) as ws:
        assert ws.wait_connected(5)
        wait_until(lambda: ws.bbo("ETH") is not None and ws.mid("BTC") is not None)
        assert ws.mid("BTC") == sandbox.mid("BTC") == 30_006.0
        assert ws.mid("ETH", max_age_s=5) == 2_006.0
        bid, ask = ws.bbo("BTC")
        assert bid < 30_006.0 < ask and (bid + ask) / 2 == pytest.approx(30_006.0)
        seq = ws.seq
        sandbox.advance(1)
        assert ws.wait_mids(seq, 3) > seq
        assert ws.mid("BTC") == 30_007.0
        h = ws.health()
        assert h["ok"] and h["connected"] and h["acks"] == 3 and h["subscriptions"] == 3 and h["stale"] == []
    assert ws.mid("DOGE") is None


def test_staleness_detected_when_exchange_stops_pushing(sandbox):
    with MarketWs(config(sandbox, stale_s=0.3)) as ws:
        wait_until(lambda: ws.health()["ok"])
        time.sleep(0.45)  # the sandbox only pushes on advance(): every channel ages
        h = ws.health()
        assert not h["ok"] and h["connected"]
        assert h["stale"] == ["allMids", "bbo:BTC", "bbo:ETH"]
        assert h["channel_ages_s"]["allMids"] > 0.3
        assert ws.mid("BTC", max_age_s=0.3) is None and ws.mid("BTC") == 30_006.0
        assert ws.bbo("BTC", max_age_s=0.3) is None
        sandbox.advance(1)
        wait_until(lambda: ws.health()["ok"])
        assert ws.mid("BTC", max_age_s=0.3) == 30_007.0


def test_reconnects_and_resubscribes_after_drop(sandbox):
    with MarketWs(config(sandbox)) as ws:
        wait_until(lambda: sandbox.ws_subscription_count() == 3 and ws.mid("BTC") is not None)
        sandbox.faults.drop_ws()
        assert ws.wait_connected(5, min_connects=2)
        wait_until(lambda: sandbox.ws_subscription_count() == 3)  # every subscription sent again
        seq = ws.seq
        sandbox.advance(2)
        wait_until(lambda: ws.mid("BTC") == 30_008.0)
        assert ws.seq > seq and ws.bbo("ETH", max_age_s=2) is not None
        h = ws.health()
        assert h["reconnects"] == 1 and h["disconnects"] == 1 and h["acks"] == 6 and h["ok"]


def test_silent_socket_is_replaced(sandbox):
    with MarketWs(config(sandbox, silent_reconnect_s=0.5)) as ws:
        wait_until(lambda: ws.health()["connects"] >= 2 and ws.health()["connected"], timeout=5)
        h = ws.health()
        assert h["silent_reconnects"] >= 1 and "no data for 0.5s" in h["last_error"]
        sandbox.advance(1)
        wait_until(lambda: ws.mid("BTC") == 30_007.0)


def test_backoff_when_exchange_is_down_and_prompt_stop():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = MarketWs(WsConfig(url=f"ws://127.0.0.1:{port}/ws", symbols=("BTC",), backoff_min_s=0.05,
                           backoff_max_s=0.2)).start()
    try:
        wait_until(lambda: ws.health()["connect_attempts"] >= 3)
        h = ws.health()
        assert not h["connected"] and not h["ok"] and h["connects"] == 0 and h["errors"] >= 3
        assert h["stale"] == ["allMids"] and ws.mid("BTC") is None
    finally:
        started = time.monotonic()
        ws.stop()
        assert time.monotonic() - started < 2.0


def frame(channel: str, data) -> str:
    return json.dumps({"channel": channel, "data": data})


def test_mids_from_bbo_with_allmids_fallback():
    """Frame parsing alone (no socket): BBO midpoint wins while fresh, allMids after the fallback age."""
    now = [100.0]
    ws = MarketWs(WsConfig(url="ws://unused", symbols=("BTC",), bbo=True, mids_from_bbo=True,
                           mids_from_bbo_fallback_age_s=5.0), monotonic=lambda: now[0])
    assert ws._handle("Websocket connection established.") is False
    assert ws._handle(frame("allMids", {"mids": {"BTC": "100.0", "BAD": "nan"}}))
    assert ws._handle(frame("bbo", {"coin": "BTC", "time": 1, "bbo": [{"px": "101.0"}, {"px": "103.0"}]}))
    assert ws.mid("BTC") == 102.0 and ws.mid("BAD") is None
    now[0] += 6.0
    assert ws.mid("BTC") == 100.0  # BBO too old: allMids value
    assert ws.mid("BTC", max_age_s=5.0) is None  # and allMids is old too
    assert ws._handle(frame("bbo", {"coin": "BTC", "time": 2, "bbo": [None, {"px": "103.0"}]}))
    assert ws.bbo("BTC") == (None, 103.0) and ws.mid("BTC") == 100.0  # one-sided book: no midpoint
    assert ws._handle(frame("pong", None)) is False and ws.health()["pong_age_s"] == 0.0
    assert ws.seq == 3 and ws.bbo_seq == 2


def test_candle_frames_reach_listener(sandbox):
    got: list[dict] = []
    with MarketWs(config(sandbox, bbo=False, candle_intervals=("1h",)), on_candle=got.append) as ws:
        wait_until(lambda: len(got) >= 2)  # snapshot on subscribe, one per coin
        sandbox.advance(1)
        wait_until(lambda: any(c["t"] == T0 + 6 * HOUR and c["s"] == "ETH" for c in got))
        btc = [c for c in got if c["s"] == "BTC" and c["t"] == T0 + 6 * HOUR][-1]
        assert btc["o"] == "30006.0" and btc["c"] == "30007.0" and btc["T"] == T0 + 7 * HOUR - 1
        assert channel_key({"type": "candle", "coin": "BTC", "interval": "1h"}) in ws.health()["channel_ages_s"]
