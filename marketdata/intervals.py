"""Candle interval names and the one error type of the data layer.

Every reader and tool agrees on one spelling per interval ("1h", never "1H" or "1hr") so that the
`interval` column of a candle DB and the file name `candles_{interval}.db` always match.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

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


def parse_time_ms(text: str | None, name: str) -> int | None:
    """A window bound from the command line: ISO date/datetime (UTC unless an offset is given) or
    epoch seconds/milliseconds (a number above 1e11 is taken as milliseconds)."""
    if text is None or not str(text).strip():
        return None
    t = str(text).strip()
    if t.isdigit():
        n = int(t)
        return n if n > 10**11 else n * 1000
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise MarketDataError(f"{name}: cannot parse {text!r} (use 2025-06-01, 2025-06-01T12:00 or epoch ms)") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
