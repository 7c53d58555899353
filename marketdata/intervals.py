"""Candle interval names and the one error type of the data layer.

Every reader and tool agrees on one spelling per interval ("1h", never "1H" or "1hr") so that the
`interval` column of a candle DB and the file name `candles_{interval}.db` always match.
"""

from __future__ import annotations

import re

INTERVALS_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}

_UNIT_ALIASES = {"m": "m", "min": "m", "mins": "m", "h": "h", "hr": "h", "hrs": "h", "hour": "h",
                 "hours": "h", "d": "d", "day": "d", "days": "d"}
_INTERVAL_RE = re.compile(r"^(\d+)\s*([a-z]+)$")


class MarketDataError(ValueError):
    """A user-facing data problem; its message is always a single line (printed as-is by tools)."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


def normalize_interval(interval: str) -> str:
    """Return the canonical spelling ("1H", "1hr" -> "1h"); unknown intervals are an error."""
    text = str(interval).strip().lower()
    match = _INTERVAL_RE.match(text)
    if match:
        unit = _UNIT_ALIASES.get(match.group(2))
        if unit is not None:
            text = f"{int(match.group(1))}{unit}"
    if text not in INTERVALS_MS:
        known = " ".join(INTERVALS_MS)
        raise MarketDataError(f"unknown interval {interval!r}: expected one of {known}")
    return text


def interval_ms(interval: str) -> int:
    """Bar length in milliseconds for an interval name in any accepted spelling."""
    return INTERVALS_MS[normalize_interval(interval)]
