"""Turning Hyperliquid `/info` replies into store rows, with the narrow retry policy the runbook asks.

Only rate limiting (429) and temporary unavailability (503) are retried: any other error means the
request itself is wrong and repeating it would only hide that. `info` is any object with the
hyperliquid SDK's `Info.funding_history(name, startTime, endTime)` / `Info.meta()` methods.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

RETRY_STATUSES = (429, 503)
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
PAGE_LIMIT_GUARD = 10_000  # pages per symbol; a reply that never advances must not loop forever
_STANDALONE_STATUS = re.compile(r"(?<![\d.])(429|503)(?![\d.])")


def parse_funding_rows(symbol: str, payload: Any) -> list[tuple[str, int, float, float | None]]:
    """(symbol, time, funding_rate, premium) per well-formed item; malformed items are skipped."""
    rows = []
    for item in payload if isinstance(payload, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            time_ms = int(item["time"])
            rate = float(item["fundingRate"])
        except (KeyError, TypeError, ValueError):
            continue
        if not math.isfinite(rate) or time_ms <= 0:
            continue
        premium = _optional_float(item.get("premium"))
        rows.append((symbol, time_ms, rate, premium))
    return rows


def _optional_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_retryable(exc: BaseException) -> bool:
    """429/503 as a status attribute, or as a standalone number in the message ("5030" is not)."""
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and value in RETRY_STATUSES:
            return True
    return any(_STANDALONE_STATUS.search(str(arg)) for arg in (*exc.args, exc))


def call_with_retry(fn: Callable[[], Any], *, delays=RETRY_DELAYS_S, sleep=time.sleep) -> Any:
    """Call fn; on 429/503 wait delays[i] and retry (len(delays) retries); re-raise anything else."""
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the SDK raises plain Exception subclasses
            if attempt == len(delays) or not is_retryable(exc):
                raise
            sleep(delays[attempt])
    raise AssertionError("unreachable")


def fetch_funding_pages(info, symbol: str, start_ms: int, end_ms: int, *, sleep=time.sleep,
                        pause_s: float = 0.2) -> list[tuple[str, int, float, float | None]]:
    """Every funding row of [start_ms, end_ms], paging on the last time returned."""
    rows: list[tuple[str, int, float, float | None]] = []
    cursor = int(start_ms)
    for _ in range(PAGE_LIMIT_GUARD):
        payload = call_with_retry(lambda c=cursor: info.funding_history(symbol, c, int(end_ms)), sleep=sleep)
        page = [r for r in parse_funding_rows(symbol, payload) if r[1] >= cursor]
        if not page:
            break
        rows.extend(page)
        last = max(r[1] for r in page)
        if last >= end_ms:
            break
        cursor = last + 1
        if pause_s:
            sleep(pause_s)
    return rows


def universe_names(meta: Any) -> list[str]:
    """Tradable perp names from an `Info.meta()` reply.

    Entries flagged isDelisted stay in the reply for a while; they are not tradable, so they must
    not extend a symbol's last_seen bound.
    """
    universe = meta.get("universe") if isinstance(meta, dict) else None
    return [u["name"] for u in universe or []
            if isinstance(u, dict) and isinstance(u.get("name"), str) and not u.get("isDelisted")]
