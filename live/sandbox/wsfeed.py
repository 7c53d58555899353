"""WebSocket `/ws`: subscriptions, acks, pings and the pushes that follow venue events."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import WSMsgType, web

from live.sandbox import wire
from live.sandbox.matching import Venue

CONNECTED_TEXT = "Websocket connection established."
USER_CHANNELS = ("userFills", "orderUpdates", "userEvents", "userFundings")
COIN_CHANNELS = ("l2Book", "trades", "bbo", "candle")


class Hub:
    def __init__(self, venue: Venue):
        self.venue = venue
        self.conns: dict[web.WebSocketResponse, list[dict]] = {}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        self.conns[ws] = []
        try:
            await ws.send_str(CONNECTED_TEXT)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(ws, msg.data)
        finally:
            self.conns.pop(ws, None)
        return ws

    async def close_all(self) -> None:
        for ws in list(self.conns):
            await ws.close()
        self.conns.clear()

    async def _on_text(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            await _send(ws, {"channel": "error", "data": f"Error parsing JSON: {text[:200]}"})
            return
        method = msg.get("method") if isinstance(msg, Mapping) else None
        if method == "ping":
            await _send(ws, {"channel": "pong"})
            return
        sub = msg.get("subscription") if isinstance(msg, Mapping) else None
        if method not in ("subscribe", "unsubscribe") or not _valid_subscription(sub):
            await _send(ws, {"channel": "error", "data": f"Invalid subscription {json.dumps(sub)}"})
            return
        subs = self.conns.get(ws, [])
        if method == "subscribe":
            subs.append(_normalise(sub))
        else:
            norm = _normalise(sub)
            if norm in subs:
                subs.remove(norm)
        await _send(ws, {"channel": "subscriptionResponse", "data": {"method": method, "subscription": sub}})
        if method == "subscribe":
            await self._snapshot(ws, _normalise(sub))

    async def _snapshot(self, ws: web.WebSocketResponse, sub: dict) -> None:
        v, kind = self.venue, sub["type"]
        if kind == "allMids":
            await _send(ws, {"channel": "allMids", "data": {"mids": wire.all_mids(v)}})
        elif kind == "l2Book" and sub["coin"] in v.asset_index:
            await _send(ws, {"channel": "l2Book", "data": wire.l2_book(v, sub["coin"])})
        elif kind == "bbo" and sub["coin"] in v.asset_index:
            await _send(ws, {"channel": "bbo", "data": wire.bbo(v, sub["coin"])})
        elif kind == "candle" and sub["coin"] in v.asset_index and sub.get("interval") == v.path.interval:
            bar = v.path.current(sub["coin"])
            if bar is not None:
                await _send(ws, {"channel": "candle", "data": wire.candle(v, sub["coin"], bar)})
        elif kind == "userFills":
            fills = wire.user_fills(v, sub["user"])[::-1]
            await _send(ws, {"channel": "userFills", "data": {"user": sub["user"], "isSnapshot": True, "fills": fills}})

    async def publish(self, events: list[tuple]) -> None:
        """Turn venue events into pushes for every matching subscription."""
        if not events or not self.conns:
            return
        v = self.venue
        for kind, key, payload in events:
            if kind == "fills":
                await self._push("userFills", key, {"user": key, "fills": payload})
                await self._push("userEvents", key, {"fills": payload}, channel="user")
            elif kind == "order":
                await self._push("orderUpdates", key, [payload])
            elif kind == "funding":
                await self._push("userEvents", key, {"funding": payload}, channel="user")
                await self._push("userFundings", key, {"user": key, "fundings": [payload]})
            elif kind == "trades":
                await self._push("trades", key, payload)
            elif kind == "candle":
                await self._push("candle", key, wire.candle(v, key, payload), interval=v.path.interval)
            elif kind == "market":
                await self._push("allMids", None, {"mids": wire.all_mids(v)})
                for coin in v.asset_index:
                    await self._push("l2Book", coin, lambda c=coin: wire.l2_book(v, c))
                    await self._push("bbo", coin, lambda c=coin: wire.bbo(v, c))

    async def _push(self, kind: str, key, data, *, channel: str | None = None, interval: str | None = None) -> None:
        body = None
        for ws, subs in list(self.conns.items()):
            for sub in subs:
                if sub["type"] != kind or not _matches(sub, key, interval):
                    continue
                if body is None:
                    body = json.dumps({"channel": channel or kind, "data": data() if callable(data) else data})
                await _send_text(ws, body)
                break


def _valid_subscription(sub) -> bool:
    if not isinstance(sub, Mapping) or not isinstance(sub.get("type"), str):
        return False
    kind = sub["type"]
    if kind in USER_CHANNELS:
        return isinstance(sub.get("user"), str)
    if kind in COIN_CHANNELS:
        return isinstance(sub.get("coin"), str) and (kind != "candle" or isinstance(sub.get("interval"), str))
    return kind == "allMids"


def _normalise(sub: Mapping) -> dict:
    out = dict(sub)
    if "user" in out:
        out["user"] = out["user"].lower()
    return out


def _matches(sub: dict, key, interval: str | None) -> bool:
    if key is None:
        return True
    if sub["type"] in USER_CHANNELS:
        return sub["user"] == key
    if sub.get("coin") != key:
        return False
    return interval is None or sub.get("interval") == interval


async def _send(ws: web.WebSocketResponse, msg: dict) -> None:
    await _send_text(ws, json.dumps(msg))


async def _send_text(ws: web.WebSocketResponse, text: str) -> None:
    if ws.closed:
        return
    try:
        await ws.send_str(text)
    except (ConnectionError, RuntimeError):
        pass
