"""Hyperliquid's number rules: wire strings, tick sizes and size decimals.

Kept apart from the matching code because both the order validator and the book
builder must agree on exactly the same tick arithmetic, or the sandbox would reject
prices it quoted itself.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

MAX_PERP_DECIMALS = 6
MAX_SIG_FIGS = 5


def fmt(x: float | Decimal, dp: int = 8) -> str:
    """Exchange-style decimal string: no exponent, no trailing zeros, integers as "N.0"."""
    d = Decimal(str(round(float(x), dp))) if not isinstance(x, Decimal) else x
    if d == 0:
        return "0.0"
    s = f"{d.normalize():f}"
    return s if "." in s else s + ".0"


def fmt_sig(x: float, sig: int = 6) -> str:
    """Mid prices may sit between ticks, so they are shown with one extra significant figure."""
    if x == 0 or not math.isfinite(x):
        return "0.0"
    return fmt(Decimal(f"{x:.{sig}g}"))


def parse_decimal(text: object) -> Decimal | None:
    """Parse a wire number; None when it is not a finite decimal string."""
    if not isinstance(text, str):
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def decimals_of(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def sig_figs_of(d: Decimal) -> int:
    digits = d.normalize().as_tuple().digits
    return len(digits)


def price_is_valid(px: Decimal, sz_decimals: int) -> bool:
    """5 significant figures and at most 6 - szDecimals decimals; integers are always valid."""
    if px <= 0:
        return False
    if px == px.to_integral_value():
        return True
    return sig_figs_of(px) <= MAX_SIG_FIGS and decimals_of(px) <= MAX_PERP_DECIMALS - sz_decimals


def size_is_valid(sz: Decimal, sz_decimals: int) -> bool:
    return sz > 0 and decimals_of(sz) <= sz_decimals


def tick_for(px: float, sz_decimals: int) -> Decimal:
    """Smallest valid price step near px (never coarser than 1, since integers always pass)."""
    exponent = math.floor(math.log10(px)) - (MAX_SIG_FIGS - 1)
    exponent = max(exponent, -(MAX_PERP_DECIMALS - sz_decimals))
    return Decimal(1).scaleb(min(exponent, 0))


def round_px(px: float, sz_decimals: int, *, up: bool) -> float:
    """Round a price onto the tick grid, up (asks) or down (bids)."""
    tick = tick_for(px, sz_decimals)
    steps = (Decimal(repr(px)) / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return float(max(steps, Decimal(1)) * tick)


def round_sz(sz: float, sz_decimals: int) -> float:
    """Sizes are truncated to szDecimals (a level never shows more than it holds)."""
    q = Decimal(1).scaleb(-sz_decimals)
    return float(Decimal(repr(sz)).quantize(q, rounding=ROUND_FLOOR))
