"""REST `candleSnapshot` backfill and tail polling for the candle DBs.

Hyperliquid serves only the last ~5000 bars of an interval, so a request further back returns
nothing: ranges are clamped to that window instead of spending requests on empty pages. Ranges are
split into chunks with a one-bar overlap so a bar on a chunk boundary can never fall between two
requests. Only throttling (429) and server-side failures (5xx, timeouts, refused connections) are
retried, honouring Retry-After; any other error means the request itself is wrong.

This talks HTTP directly (not through the SDK's `Info`) because `Info.__init__` fetches the whole
meta and spot universe first, which a poller that runs for months does not need.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from marketdata.candles import write_candles
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from marketdata.sanity import candle_problem

CANDLE_REST_LIMIT = 5000
DEFAULT_CHUNK_BARS = 1500
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_BASE_DELAY_S = 0.5
MAX_RETRY_AFTER_S = 60.0


class CandleFetchError(MarketDataError):
    """A candleSnapshot request that failed for good (message names symbol, interval and cause)."""


class HttpStatusError(Exception):
    def __init__(self, status: int, text: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status
        self.retry_after_s = retry_after_s


class InfoClient:
    """POST {base_url}/info with a keep-alive session and a per-request timeout."""

    def __init__(self, base_url: str, timeout_s: float = 10.0, session: requests.Session | None = None) -> None:
        self.url = base_url.rstrip("/") + "/info"
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def post(self, body: dict) -> Any:
        resp = self.session.post(self.url, json=body, timeout=self.timeout_s)
        if resp.status_code != 200:
            raise HttpStatusError(resp.status_code, resp.text, _retry_after(resp.headers.get("Retry-After")))
        try:
            return resp.json()
        except ValueError:
            raise HttpStatusError(resp.status_code, f"not JSON: {resp.text[:80]!r}") from None

    def close(self) -> None:
        self.session.close()


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or not math.isfinite(seconds) or seconds < 0 else min(seconds, MAX_RETRY_AFTER_S)


class Pacer:
    """Keeps at least min_gap_s between consecutive requests (HL rate-limits by weight per minute)."""

    def __init__(self, min_gap_s: float = 0.5, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.min_gap_s = max(0.0, min_gap_s)
        self._monotonic, self._sleep = monotonic, sleep
        self._last: float | None = None

    def wait(self) -> None:
        if self._last is not None:
            left = self.min_gap_s - (self._monotonic() - self._last)
            if left > 0:
                self._sleep(left)
        self._last = self._monotonic()


@dataclass
class FetchResult:
    rows: list[dict] = field(default_factory=list)
    requests: int = 0
    skipped: int = 0  # malformed or inconsistent items the exchange sent

    @property
    def first_t(self) -> int | None:
        return self.rows[0]["t"] if self.rows else None

    @property
    def last_t(self) -> int | None:
        return self.rows[-1]["t"] if self.rows else None


def clamp_to_rest_window(start_ms: int, end_ms: int, step_ms: int) -> int:
    """The earliest bar open the exchange can still return for a range ending at end_ms.

    One bar of slack: when end_ms sits exactly on a boundary the bar opening there does not exist
    yet, so the exchange's 5000 bars end one bar earlier.
    """
    oldest = (end_ms // step_ms) * step_ms - CANDLE_REST_LIMIT * step_ms
    return max(int(start_ms), oldest)


def candle_chunks(start_ms: int, end_ms: int, step_ms: int, chunk_bars: int = DEFAULT_CHUNK_BARS) -> list[tuple[int, int]]:
    """[start, end] request windows of chunk_bars bars; each starts on the previous one's last bar."""
    if chunk_bars < 2:
        raise MarketDataError(f"chunk_bars must be >= 2, got {chunk_bars}")
    first = (int(start_ms) // step_ms) * step_ms
    chunks, lo = [], first
    while lo <= end_ms:
        hi = min(lo + (chunk_bars - 1) * step_ms, int(end_ms))
        chunks.append((lo, hi))
        if hi >= end_ms:
            break
        lo = (hi // step_ms) * step_ms  # one-bar overlap
    return chunks


def parse_candles(payload: Any, symbol: str, interval: str) -> tuple[list[dict], int]:
    """Rows for write_candles from candle dicts (REST or WS), plus how many items were rejected.

    An item is rejected when a field is missing, it is off the interval grid, it breaks the
    readers' sanity rule (marketdata.sanity.candle_problem: finite, 0 < price <= bound, o and c
    inside [l, h], plausible time), or it names another coin/interval: writing any of those would
    poison indicators, and every reader would then refuse the whole DB.
    """
    iv = normalize_interval(interval)
    step = interval_ms(iv)
    rows, skipped = [], 0
    for item in payload if isinstance(payload, list) else [payload]:
        row = _candle_row(item, symbol, iv, step)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return rows, skipped


def _candle_row(item: Any, symbol: str, iv: str, step: int) -> dict | None:
    if not isinstance(item, dict) or item.get("s", symbol) != symbol or item.get("i", iv) != iv:
        return None
    try:
        t = int(item["t"])
        o, h, lo, c = (float(item[k]) for k in ("o", "h", "l", "c"))
        v = float(item.get("v") or 0.0)
        n = int(item["n"]) if item.get("n") is not None else None
        t_close = int(item["T"]) if item.get("T") is not None else t + step - 1
    except (KeyError, TypeError, ValueError):
        return None
    if t % step or candle_problem(t, o, h, lo, c, v, t_close_ms=t_close) is not None:
        return None
    return {"symbol": symbol, "t": t, "t_close": t_close, "o": o, "h": h, "l": lo, "c": c, "v": v, "n": n}


def request_with_retry(client: InfoClient, body: dict, *, retries: int = 3,
                       sleep: Callable[[float], None] = time.sleep) -> Any:
    """POST once plus up to `retries` retries on 429/5xx/timeouts, waiting Retry-After when given."""
    for attempt in range(retries + 1):
        try:
            return client.post(body)
        except HttpStatusError as exc:
            if exc.status not in RETRY_STATUSES or attempt == retries:
                raise
            delay = exc.retry_after_s if exc.retry_after_s is not None else RETRY_BASE_DELAY_S * 2**attempt
        except (requests.ConnectionError, requests.Timeout):
            if attempt == retries:
                raise
            delay = RETRY_BASE_DELAY_S * 2**attempt
        sleep(delay)
    raise AssertionError("unreachable")


def fetch_candles(client: InfoClient, symbol: str, interval: str, start_ms: int, end_ms: int, *,
                  chunk_bars: int = DEFAULT_CHUNK_BARS, pacer: Pacer | None = None, retries: int = 3,
                  sleep: Callable[[float], None] = time.sleep) -> FetchResult:
    """Every bar the exchange has with start_ms <= t <= end_ms, ascending and de-duplicated."""
    iv = normalize_interval(interval)
    step = interval_ms(iv)
    start = clamp_to_rest_window(start_ms, end_ms, step)
    result, by_t = FetchResult(), {}
    for lo, hi in candle_chunks(start, end_ms, step, chunk_bars):
        if pacer is not None:
            pacer.wait()
        body = {"type": "candleSnapshot", "req": {"coin": symbol, "interval": iv, "startTime": lo, "endTime": hi}}
        try:
            payload = request_with_retry(client, body, retries=retries, sleep=sleep)
        except (HttpStatusError, requests.RequestException) as exc:
            raise CandleFetchError(f"candleSnapshot {symbol} {iv} [{lo}..{hi}] at {client.url}: {exc}") from None
        result.requests += 1
        rows, skipped = parse_candles(payload, symbol, iv)
        result.skipped += skipped
        for row in rows:
            if lo <= row["t"] <= hi:
                by_t[row["t"]] = row
    result.rows = [by_t[t] for t in sorted(by_t)]
    return result


def backfill(db_path: str | Path, client: InfoClient, symbol: str, interval: str, start_ms: int, end_ms: int,
             **fetch_kw) -> FetchResult:
    """Fetch [start_ms, end_ms] and upsert it into the candle DB (one transaction)."""
    result = fetch_candles(client, symbol, interval, start_ms, end_ms, **fetch_kw)
    if result.rows:
        write_candles(db_path, result.rows, interval)
    return result
