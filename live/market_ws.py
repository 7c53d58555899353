"""Hyperliquid market-data WebSocket: mids, BBO and candles with reconnect-and-resubscribe.

The SDK's WebsocketManager never reconnects, so a dropped socket there silently freezes prices; a
trader acting on a frozen mid is worse than one that knows it has none. This client owns its
socket on a background thread (its own asyncio loop), reconnects with exponential backoff,
re-sends every subscription on each new connection, pings every 50 s, and forces a reconnect
when no data frame has arrived for `silent_reconnect_s`. Readers on other threads get snapshots
with ages (`mid(symbol, max_age_s)` returns None rather than an old price) and a per-channel
staleness report in `health()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

BboListener = Callable[[str, float | None, float | None, int | None], None]
CandleListener = Callable[[dict], None]
UserFillsListener = Callable[[dict], None]


def ws_url(base_url: str) -> str:
    """The SDK's rule: http(s)://host -> ws(s)://host/ws."""
    return "ws" + base_url.rstrip("/")[4:] + "/ws"


@dataclass(frozen=True)
class WsConfig:
    url: str
    symbols: tuple[str, ...] = ()
    bbo: bool = False
    candle_intervals: tuple[str, ...] = ()
    ping_s: float = 50.0
    stale_s: float = 30.0  # a channel older than this is reported stale by health()
    silent_reconnect_s: float = 90.0  # no data frame at all for this long -> reconnect
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    sub_send_ms: int = 10
    open_timeout_s: float = 10.0
    max_queue: int = 2000
    mids_from_bbo: bool = False
    mids_from_bbo_fallback_age_s: float = 5.0
    user: str | None = None  # account address for the user channels below
    user_channels: tuple[str, ...] = ()  # e.g. ("userFills",): the trader's own fills

    def market_subscriptions(self) -> list[dict]:
        """Channels that tick with the market (their silence means stale data)."""
        subs: list[dict] = [{"type": "allMids"}]
        if self.bbo:
            subs += [{"type": "bbo", "coin": s} for s in self.symbols]
        subs += [{"type": "candle", "coin": s, "interval": iv} for s in self.symbols for iv in self.candle_intervals]
        return subs

    def subscriptions(self) -> list[dict]:
        """Everything sent on each (re)connect; user channels are quiet when nothing trades, so
        they are re-subscribed but never counted as stale."""
        subs = self.market_subscriptions()
        if self.user:
            subs += [{"type": ch, "user": self.user.lower()} for ch in self.user_channels]
        return subs


def channel_key(sub: dict) -> str:
    parts = [sub["type"], sub.get("coin"), sub.get("interval")]
    return ":".join(p for p in parts if p)


@dataclass
class _Counters:
    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    silent_reconnects: int = 0
    errors: int = 0
    acks: int = 0
    frames: int = 0
    last_error: str = ""
    connected_since: float | None = None
    last_pong: float | None = None
    channel_seen: dict[str, float] = field(default_factory=dict)
    channel_frames: dict[str, int] = field(default_factory=dict)


class MarketWs:
    """Thread-safe market snapshot fed by one reconnecting WebSocket (start() / stop())."""

    def __init__(self, config: WsConfig, *, on_bbo: BboListener | None = None,
                 on_candle: CandleListener | None = None, on_user_fills: UserFillsListener | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._on_bbo, self._on_candle = on_bbo, on_candle
        self._on_user_fills = on_user_fills
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._mids: dict[str, float] = {}
        self._mids_at: float | None = None
        self._bbo: dict[str, tuple[float | None, float | None, float]] = {}
        self._seq = 0
        self._bbo_seq = 0
        self._c = _Counters()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> MarketWs:
        if self._thread is None:
            self._thread = threading.Thread(target=self._thread_main, name="market-ws", daemon=True)
            self._thread.start()
            self._started.wait(5)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> MarketWs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    # ---- snapshot API (any thread) ------------------------------------------------------
    def mid(self, symbol: str, max_age_s: float | None = None) -> float | None:
        """Latest mid, or None when unknown or older than max_age_s (never a stale price).

        With mids_from_bbo the BBO midpoint is used while it is younger than the fallback age;
        otherwise allMids, whose age is the time of the last allMids frame.
        """
        now = self._monotonic()
        with self._lock:
            if self.config.mids_from_bbo:
                quote = self._bbo.get(symbol)
                if quote and quote[0] and quote[1] and now - quote[2] <= self.config.mids_from_bbo_fallback_age_s:
                    if max_age_s is None or now - quote[2] <= max_age_s:
                        return (quote[0] + quote[1]) / 2.0
            px = self._mids.get(symbol)
            if px is None or self._mids_at is None:
                return None
            if max_age_s is not None and now - self._mids_at > max_age_s:
                return None
            return px

    def mids(self, max_age_s: float | None = None) -> dict[str, float]:
        with self._lock:
            names = list(self._mids)
        return {s: px for s in names if (px := self.mid(s, max_age_s)) is not None}

    def bbo(self, symbol: str, max_age_s: float | None = None) -> tuple[float | None, float | None] | None:
        """(bid, ask) of the last BBO frame; None when unknown or older than max_age_s."""
        with self._lock:
            quote = self._bbo.get(symbol)
        if quote is None or (max_age_s is not None and self._monotonic() - quote[2] > max_age_s):
            return None
        return quote[0], quote[1]

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq

    @property
    def bbo_seq(self) -> int:
        with self._lock:
            return self._bbo_seq

    def wait_mids(self, after_seq: int, timeout_s: float) -> int:
        """Block until a mids update newer than after_seq (or timeout); returns the current seq."""
        deadline = self._monotonic() + timeout_s
        with self._changed:
            while self._seq <= after_seq:
                left = deadline - self._monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._seq

    def wait_connected(self, timeout_s: float = 10.0, min_connects: int = 1) -> bool:
        deadline = self._monotonic() + timeout_s
        while self._monotonic() < deadline:
            with self._lock:
                if self._c.connects >= min_connects and self._c.connected_since is not None:
                    return True
            time.sleep(0.01)
        return False

    def health(self) -> dict[str, Any]:
        """Connection state, counters and per-channel ages; `ok` is False when anything is stale."""
        now = self._monotonic()
        with self._lock:
            c = self._c
            ages = {key: (round(now - c.channel_seen[key], 3) if key in c.channel_seen else None)
                    for key in map(channel_key, self.config.market_subscriptions())}
            stale = sorted(k for k, age in ages.items() if age is None or age > self.config.stale_s)
            connected = c.connected_since is not None
            return {
                "ok": connected and not stale,
                "connected": connected,
                "url": self.config.url,
                "connect_attempts": c.connect_attempts,
                "connects": c.connects,
                "reconnects": max(c.connects - 1, 0),
                "disconnects": c.disconnects,
                "silent_reconnects": c.silent_reconnects,
                "errors": c.errors,
                "last_error": c.last_error,
                "subscriptions": len(self.config.subscriptions()),
                "user_fill_frames": c.channel_frames.get("userFills", 0),
                "acks": c.acks,
                "frames": c.frames,
                "seq": self._seq,
                "bbo_seq": self._bbo_seq,
                "mids_age_s": None if self._mids_at is None else round(now - self._mids_at, 3),
                "pong_age_s": None if c.last_pong is None else round(now - c.last_pong, 3),
                "channel_ages_s": ages,
                "stale": stale,
            }

    # ---- connection loop (WS thread) ----------------------------------------------------
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        failures = 0
        while not self._stop.is_set():
            delivered = await self._one_connection()
            failures = 0 if delivered else failures + 1
            if self._stop.is_set():
                break
            delay = min(self.config.backoff_max_s, self.config.backoff_min_s * 2 ** max(failures - 1, 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _one_connection(self) -> bool:
        """Run one socket until it drops, goes silent or stop(); True if it delivered data."""
        with self._lock:
            self._c.connect_attempts += 1
            frames_before = self._c.frames
        try:
            async with connect(self.config.url, open_timeout=self.config.open_timeout_s, ping_interval=None,
                               max_queue=self.config.max_queue, max_size=2**24) as ws:
                self._mark_connected()
                await self._serve(ws)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._record_error(f"{type(exc).__name__}: {exc}")
        finally:
            self._mark_disconnected()
        with self._lock:
            return self._c.frames > frames_before

    async def _serve(self, ws: ClientConnection) -> None:
        tasks = [asyncio.create_task(coro) for coro in (self._subscribe_all(ws), self._ping_loop(ws),
                                                        self._read_loop(ws), self._stop.wait())]
        try:
            done, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    async def _subscribe_all(self, ws: ClientConnection) -> None:
        for sub in self.config.subscriptions():
            await ws.send(json.dumps({"method": "subscribe", "subscription": sub}))
            await asyncio.sleep(self.config.sub_send_ms / 1000.0)

    async def _ping_loop(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ping_s)
            await ws.send(json.dumps({"method": "ping"}))

    async def _read_loop(self, ws: ClientConnection) -> None:
        last_data = self._monotonic()
        me = asyncio.current_task()
        while True:
            # Python < 3.12: wait_for can swallow a cancel that lands as a frame arrives; without
            # this check the loop outlives its connection and stop() hangs.
            if self._stop.is_set() or (me is not None and me.cancelling()):
                raise asyncio.CancelledError
            left = self.config.silent_reconnect_s - (self._monotonic() - last_data)
            if left <= 0:
                with self._lock:
                    self._c.silent_reconnects += 1
                self._record_error(f"no data for {self.config.silent_reconnect_s:g}s: reconnecting")
                return
            try:
                text = await asyncio.wait_for(ws.recv(), min(left, 1.0))
            except TimeoutError:
                continue
            if self._handle(text):
                last_data = self._monotonic()

    # ---- frames -----------------------------------------------------------------------
    def _handle(self, text: str | bytes) -> bool:
        """Apply one frame; True when it carried market data (pongs and acks do not count)."""
        try:
            msg = json.loads(text)
        except ValueError:
            return False  # "Websocket connection established." and the like
        if not isinstance(msg, dict):
            return False
        channel, data = msg.get("channel"), msg.get("data")
        now = self._monotonic()
        with self._lock:
            self._c.frames += 1
            if channel == "pong":
                self._c.last_pong = now
                return False
            if channel == "subscriptionResponse":
                self._c.acks += 1
                return False
            if channel == "error":
                self._c.errors += 1
                self._c.last_error = str(data)[:200]
                return False
        if channel == "allMids" and isinstance(data, dict):
            return self._apply_mids(data.get("mids"), now)
        if channel == "bbo" and isinstance(data, dict):
            return self._apply_bbo(data, now)
        if channel == "candle":
            return self._apply_candles(data if isinstance(data, list) else [data], now)
        if channel == "userFills" and isinstance(data, dict):
            return self._apply_user_fills(data)
        return False

    def _apply_user_fills(self, data: dict) -> bool:
        """Hand the frame (isSnapshot included) to the listener; it counts as data for the
        silent-socket watchdog."""
        with self._lock:
            self._c.channel_frames["userFills"] = self._c.channel_frames.get("userFills", 0) + 1
        if self._on_user_fills is not None and isinstance(data.get("fills"), list):
            self._on_user_fills(data)
        return True

    def _apply_mids(self, mids: Any, now: float) -> bool:
        if not isinstance(mids, dict):
            return False
        parsed = {str(k): px for k, v in mids.items() if (px := _positive(v)) is not None}
        with self._changed:
            self._mids.update(parsed)
            self._mids_at = now
            self._seq += 1
            self._c.channel_seen["allMids"] = now
            self._changed.notify_all()
        return True

    def _apply_bbo(self, data: dict, now: float) -> bool:
        coin = data.get("coin")
        sides = data.get("bbo")
        if not isinstance(coin, str) or not isinstance(sides, list) or len(sides) != 2:
            return False
        bid, ask = (_positive(s.get("px")) if isinstance(s, dict) else None for s in sides)
        exch_time = data.get("time") if isinstance(data.get("time"), int) else None
        with self._changed:
            self._bbo[coin] = (bid, ask, now)
            self._bbo_seq += 1
            if self.config.mids_from_bbo:
                self._seq += 1
            self._c.channel_seen[f"bbo:{coin}"] = now
            self._changed.notify_all()
        if self._on_bbo is not None:
            self._on_bbo(coin, bid, ask, exch_time)
        return True

    def _apply_candles(self, items: list, now: float) -> bool:
        seen = False
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("s"), str) or not isinstance(item.get("i"), str):
                continue
            seen = True
            with self._lock:
                self._c.channel_seen[f"candle:{item['s']}:{item['i']}"] = now
            if self._on_candle is not None:
                self._on_candle(item)
        return seen

    # ---- bookkeeping --------------------------------------------------------------------
    def _mark_connected(self) -> None:
        with self._lock:
            self._c.connects += 1
            self._c.connected_since = self._monotonic()

    def _mark_disconnected(self) -> None:
        with self._lock:
            if self._c.connected_since is not None:
                self._c.disconnects += 1
            self._c.connected_since = None

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._c.errors += 1
            self._c.last_error = text[:200]


def _positive(value: Any) -> float | None:
    try:
        px = float(value)
    except (TypeError, ValueError):
        return None
    return px if math.isfinite(px) and px > 0 else None
