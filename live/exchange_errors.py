"""Which exchange errors are worth another try, and the retry loop for reads.

A 502 from a proxy, a dropped reply, a timeout or a 429 says nothing about the account: the same
read a moment later usually works. The trader must ride through them (retry with backoff, then skip
the bar's entries) instead of exiting, which under systemd turns a flaky exchange into a crash loop.
A 4xx other than 429 is an answer (a bad request) and is not retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")

TRANSIENT_REQUEST_ERRORS = (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                            requests.exceptions.ChunkedEncodingError)


class ExchangeUnavailable(RuntimeError):
    """An exchange read kept failing for a transient reason; the message names the call."""


def is_transient(exc: BaseException) -> bool:
    """Timeouts, dropped connections, 5xx and 429: the exchange may answer the same call later."""
    from hyperliquid.utils.error import ClientError, ServerError

    if isinstance(exc, (ExchangeUnavailable, ServerError, *TRANSIENT_REQUEST_ERRORS)):
        return True
    return isinstance(exc, ClientError) and exc.status_code == 429


def describe(exc: BaseException) -> str:
    from hyperliquid.utils.error import ClientError, ServerError

    if isinstance(exc, ServerError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, ClientError):
        return f"HTTP {exc.status_code} {exc.error_message}"
    return f"{type(exc).__name__}: {exc}"[:200]


def with_retries(call: Callable[[], T], what: str, *, attempts: int, base_delay_s: float = 0.25,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """call(), retried on transient errors with doubling delays; ExchangeUnavailable after the last."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt >= attempts:
                raise ExchangeUnavailable(f"{what}: {describe(exc)} after {attempt} attempt(s)") from exc
            sleep(base_delay_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
