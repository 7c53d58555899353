"""Time sources for the runtime.

Risk limits, kill-switch polling and daily resets all depend on time; injecting the clock lets the
tests drive hours of wall-clock behaviour in microseconds, and keeps the rate limiters on a
monotonic source that cannot jump when NTP steps the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock epoch milliseconds (UTC); used for day boundaries and timestamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; used for rate limits and polling."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told; wall and monotonic time advance together."""

    def __init__(self, now_ms: int = 1_700_000_000_000, monotonic: float = 1000.0) -> None:
        self._now_ms = int(now_ms)
        self._mono = float(monotonic)

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("ManualClock cannot go backwards")
        self._mono += seconds
        self._now_ms += int(round(seconds * 1000))

    def set_wall_ms(self, now_ms: int) -> None:
        """Move the wall clock (e.g. to just before UTC midnight); monotonic follows forward."""
        delta_ms = int(now_ms) - self._now_ms
        if delta_ms < 0:
            raise ValueError("ManualClock cannot go backwards")
        self.advance(delta_ms / 1000.0)
