"""HTTP `/info`, `/exchange` and WebSocket `/ws` on one port, plus the in-process handle.

`SandboxExchange` owns a background thread with its own event loop; every public method
hops onto that loop so the venue is only ever touched by one thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from live.sandbox import wire
from live.sandbox.auth import AuthError, Signers
from live.sandbox.faults import Fault, Faults
from live.sandbox.matching import BookSpec, Venue, VenueError
from live.sandbox.pricepath import (
    AssetSpec,
    Bar,
    PricePath,
    SandboxConfigError,
    bars_from_tuples,
    default_asset_spec,
    load_candles_db,
    shift_bars,
)
from live.sandbox.wsfeed import Hub

DESERIALIZE_ERROR = "Failed to deserialize the JSON body into the target type"


class SandboxExchange:
    """A local Hyperliquid: real SDK clients talk to it over HTTP and WebSocket."""

    def __init__(
        self,
        assets: Sequence[AssetSpec] | None = None,
        price_path: Mapping[str, Sequence] | str | Path | None = None,
        accounts: Mapping[str, float] | None = None,
        *,
        interval: str = "1h",
        host: str = "127.0.0.1",
        port: int = 0,
        start_bar: int = 0,
        book: BookSpec = BookSpec(),
        funding: Mapping[str, Mapping[int, tuple[float, float | None]]] | None = None,
        agents: Mapping[str, str] | None = None,
        shift_to_now: bool = False,
    ):
        _check_options(port, start_bar)
        bars = _load_bars(price_path, interval, [a.name for a in assets] if assets else None)
        if assets is None:
            assets = [default_asset_spec(coin, rows) for coin, rows in sorted(bars.items())]
        missing = [a.name for a in assets if a.name not in bars]
        if missing:
            raise SandboxConfigError(f"price_path: no bars for {', '.join(missing)}")
        bars = {a.name: bars[a.name] for a in assets}
        funding = {c: dict(r) for c, r in (funding or {}).items()}
        if shift_to_now:
            offset = _offset_to_now(bars, interval, start_bar)
            bars = shift_bars(bars, offset)
            funding = {c: {t + offset: r for t, r in rows.items()} for c, rows in funding.items()}
        self.venue = Venue(assets, PricePath(bars, interval, start_bar), accounts or {}, book, funding)
        self.signers = Signers(set(self.venue.accounts))
        for agent, owner in (agents or {}).items():
            self.signers.approve(owner, agent)
        self.faults = Faults()
        self.hub = Hub(self.venue)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.faults._drop_ws = lambda: self._call_async(self.hub.close_all)

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxExchange:
        """Serve on a background thread (idempotent); port 0 picks a free port."""
        if self._loop is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="hl-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> SandboxExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
        except BaseException as exc:  # reported to start()'s caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/info", self._info)
        app.router.add_post("/exchange", self._exchange)
        app.router.add_get("/ws", self.hub.handle)
        return app

    # ---- test / operator handle ---------------------------------------------------------
    def advance(self, n_bars: int = 1) -> int:
        """Reveal n bars: resting orders fill, candles/mids/books and user events are pushed."""
        return self._call(lambda: self.venue.advance(n_bars))

    def replace_bar(self, coin: str, t: int, o: float, h: float, low: float, c: float, v: float = 10.0) -> None:
        """Move the price of a bar not revealed yet (tests: a crash through a resting stop)."""
        self._call(lambda: self.venue.path.replace_future(coin, Bar(int(t), o, h, low, c, v)))

    def positions(self, user: str) -> dict[str, dict[str, float]]:
        def read() -> dict[str, dict[str, float]]:
            acct = self.venue.accounts.get(user.lower())
            if acct is None:
                return {}
            return {c: {"szi": p.szi, "entryPx": p.entry_px, "unrealizedPnl": p.szi * (self.venue.mid(c) - p.entry_px),
                        "cumFunding": p.funding_all_time}
                    for c, p in acct.positions.items() if p.szi}
        return self._call(read)

    def fills(self, user: str) -> list[dict]:
        """Every fill of user, oldest first (copies of the wire dicts)."""
        return self._call(lambda: [dict(f) for f in wire.user_fills(self.venue, user)[::-1]])

    def open_orders(self, user: str) -> list[dict]:
        return self._call(lambda: wire.open_orders(self.venue, user, frontend=True))

    def account_value(self, user: str) -> float:
        return self._call(lambda: self.venue.account_value(self.venue.account(user)))

    def balance(self, user: str) -> float:
        return self._call(lambda: self.venue.account(user).balance)

    def mid(self, coin: str) -> float:
        return self._call(lambda: self.venue.mid(coin))

    def ws_subscription_count(self) -> int:
        """Subscriptions held by connected WebSocket clients (lets tests wait for subscribe)."""
        return self._call(lambda: sum(len(subs) for subs in self.hub.conns.values()))

    def approve_agent(self, user: str, agent: str) -> None:
        self._call(lambda: self.signers.approve(user, agent))

    @property
    def now_ms(self) -> int:
        return self.venue.path.now_ms

    def at_end(self) -> bool:
        return self.venue.path.at_end()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the server loop (then push its events); direct call when not started."""
        if self._loop is None:
            out = fn()
            self.venue.events.clear()
            return out

        async def run() -> Any:
            out = fn()
            await self._flush()
            return out

        if threading.current_thread() is self._thread:
            raise RuntimeError("SandboxExchange methods must not be called from its own loop")
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def _call_async(self, coro_fn: Callable[[], Any]) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(10)

    async def _flush(self) -> None:
        events, self.venue.events = self.venue.events, []
        await self.hub.publish(events)

    # ---- HTTP handlers ------------------------------------------------------------------
    async def _info(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _unprocessable(f"{DESERIALIZE_ERROR}: missing field `type`")
        handler = _INFO.get(body["type"])
        if handler is None:
            return _unprocessable(f"{DESERIALIZE_ERROR}: unknown variant `{body['type']}`")
        return await self._guarded(request, body["type"], lambda: handler(self.venue, body))

    async def _exchange(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        action = body.get("action") if isinstance(body, dict) else None
        if not isinstance(action, dict) or not isinstance(action.get("type"), str):
            return _unprocessable(f"{DESERIALIZE_ERROR}: missing field `action`")
        return await self._guarded(request, action["type"], lambda: self._run_action(body, action))

    async def _guarded(self, request: web.Request, key: str, run: Callable[[], Any]) -> web.StreamResponse:
        fault = self.faults.take(key)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "fail":
            return _failure(fault)
        try:
            payload = run() if fault is None or fault.kind != "drop" or fault.execute else None
        except VenueError as exc:
            payload = {"status": "err", "response": str(exc)}
        await self._flush()
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("sandbox fault: reply dropped")
        return web.json_response(payload, dumps=_dumps)

    def _run_action(self, body: dict, action: dict) -> dict:
        try:
            signer = self.signers.recover(body)
            user = self.signers.account_for(signer)
            if action["type"] == "approveAgent" and user != signer:
                raise AuthError("Agent wallets cannot approve other agents.")
            self.signers.use_nonce(signer, body["nonce"])
            expires = body.get("expiresAfter")
            if isinstance(expires, int) and expires < int(time.time() * 1000):
                raise AuthError(f"Action expired: expiresAfter {expires}")
            vault = body.get("vaultAddress")
            if isinstance(vault, str):
                user = self.signers.account_for(vault.lower())
        except AuthError as exc:
            return {"status": "err", "response": str(exc)}
        return self._dispatch(user, action)

    def _dispatch(self, user: str, action: dict) -> dict:
        v, kind = self.venue, action["type"]
        if kind == "order":
            statuses = v.place_orders(user, _list(action.get("orders")))
            return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}
        if kind in ("cancel", "cancelByCloid"):
            statuses = v.cancel(user, _list(action.get("cancels")), by_cloid=kind == "cancelByCloid")
            return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}
        if kind == "batchModify":
            statuses = v.modify(user, _list(action.get("modifies")))
            return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}
        if kind == "updateLeverage":
            v.update_leverage(user, action.get("asset"), bool(action.get("isCross", True)), action.get("leverage"))
            return {"status": "ok", "response": {"type": "default"}}
        if kind == "approveAgent":
            self.signers.approve(user, str(action.get("agentAddress", "")))
            return {"status": "ok", "response": {"type": "default"}}
        return {"status": "err", "response": f"Unsupported action in sandbox: {kind}"}


def _user(body: Mapping) -> str:
    return str(body.get("user", "")).lower()


_INFO: dict[str, Callable[[Venue, dict], Any]] = {
    "spotMeta": lambda v, b: {"universe": [], "tokens": []},
    "perpDexs": lambda v, b: [None],
    "meta": lambda v, b: wire.meta(v),
    "metaAndAssetCtxs": lambda v, b: [wire.meta(v), [wire.asset_ctx(v, a.name) for a in v.assets]],
    "allMids": lambda v, b: wire.all_mids(v),
    "candleSnapshot": lambda v, b: wire.candle_snapshot(v, b.get("req") or {}),
    "fundingHistory": lambda v, b: wire.funding_history(v, b),
    "clearinghouseState": lambda v, b: wire.clearinghouse_state(v, _user(b)),
    "openOrders": lambda v, b: wire.open_orders(v, _user(b)),
    "frontendOpenOrders": lambda v, b: wire.open_orders(v, _user(b), frontend=True),
    "userFills": lambda v, b: wire.user_fills(v, _user(b)),
    "userFillsByTime": lambda v, b: wire.user_fills_by_time(v, b),
    "orderStatus": lambda v, b: wire.order_status(v, _user(b), b.get("oid")),
    "l2Book": lambda v, b: wire.l2_book(v, b.get("coin")) if b.get("coin") in v.asset_index else None,
}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except ValueError:
        return None


def _unprocessable(text: str) -> web.Response:
    return web.Response(status=422, text=text, content_type="text/plain")


def _failure(fault: Fault) -> web.Response:
    if 400 <= fault.status < 500:
        body = {"code": fault.status, "msg": f"sandbox fault: HTTP {fault.status}", "data": None}
        return web.json_response(body, status=fault.status)
    return web.Response(status=fault.status, text=f"sandbox fault: HTTP {fault.status}", content_type="text/plain")


def _load_bars(price_path: Any, interval: str, symbols: list[str] | None) -> dict[str, list[Bar]]:
    if price_path is None:
        raise SandboxConfigError("price_path: required (per-asset candles or a candles DB path)")
    if isinstance(price_path, (str, Path)):
        return load_candles_db(price_path, interval, symbols)
    return {coin: bars_from_tuples(list(rows), coin) for coin, rows in price_path.items()}


def _check_options(port: object, start_bar: object) -> None:
    """A port outside 0..65535 fails deep inside socket.bind with OverflowError, and a negative start
    bar was silently clamped: both are refused up front with the option named."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise SandboxConfigError(f"port: {port!r} is not within 0..65535 (0 = any free port)")
    if not isinstance(start_bar, int) or start_bar < 0:
        raise SandboxConfigError(f"start_bar: {start_bar!r} must be a whole number >= 0")


def _offset_to_now(bars: Mapping[str, list[Bar]], interval: str, start_bar: int) -> int:
    """Shift so the starting bar closes at the latest wall-clock interval boundary."""
    from live.sandbox.pricepath import INTERVAL_MS

    step = INTERVAL_MS[interval]
    timeline = sorted({b.t for rows in bars.values() for b in rows})
    start_t = timeline[min(max(start_bar, 0), len(timeline) - 1)]
    now_open = (int(time.time() * 1000) // step) * step - step
    return now_open - start_t
