"""Fault injection: make the next N requests of one type slow, vanish or fail.

The type is an /exchange action type ("order", "cancel", "cancelByCloid",
"updateLeverage") or an /info type ("allMids", "clearinghouseState", ...); the two
namespaces do not overlap, so one key names one request kind.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    kind: str  # "delay" | "drop" | "fail"
    seconds: float = 0.0
    status: int = 500
    execute: bool = True  # drop: whether the request still takes effect before the connection is cut


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Fault]] = {}
        self._drop_ws: Callable[[], None] | None = None

    def _add(self, action: str, fault: Fault, n: int) -> None:
        with self._lock:
            self._pending.setdefault(action, deque()).extend([fault] * max(n, 1))

    def delay_next(self, action: str, seconds: float, n: int = 1) -> None:
        """The request is held for `seconds` before it is processed (a slow exchange)."""
        self._add(action, Fault("delay", seconds=seconds), n)

    def drop_next(self, action: str, n: int = 1, *, execute: bool = True) -> None:
        """The connection is cut without a reply; by default the request still took effect."""
        self._add(action, Fault("drop", execute=execute), n)

    def fail_next(self, action: str, status: int = 500, n: int = 1) -> None:
        """Reply with an HTTP error status; the request does not take effect."""
        self._add(action, Fault("fail", status=status), n)

    def drop_ws(self) -> None:
        """Close every WebSocket connection now (clients must reconnect and resubscribe)."""
        if self._drop_ws is not None:
            self._drop_ws()

    def take(self, action: str) -> Fault | None:
        with self._lock:
            queue = self._pending.get(action)
            return queue.popleft() if queue else None

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
