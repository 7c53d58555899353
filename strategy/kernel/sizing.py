"""Sizing: how much margin a new position commits, at what leverage, and its take-profit multiple.

Rules (config keys in brackets):
- Margin of an open = equity x [trade.allocation_pct] x confidence multiple x
  [trade.size_multiplier]. The confidence multiple is 1 unless [trade.enable_dynamic_sizing]; then
  it is [trade.confidence_mult_high | _medium | _low] by the signal's tier.
- Leverage is [trade.leverage] unless [trade.enable_dynamic_leverage]; then it is
  [trade.leverage_high | _medium | _low] by tier. An add uses the position's leverage.
- Notional = margin x leverage. Below [trade.min_notional_usd] it is raised to the minimum when
  [trade.bump_to_min_notional], else the order is skipped; a margin of 0 is never bumped (it means
  "no new risk").
- Margin cap: the order is refused when the margin in use plus its margin would exceed
  [trade.max_total_margin_pct] x equity.
- Take-profit multiple fixed at entry: [trade.tp_atr_mult].
"""

from __future__ import annotations

from strategy.kernel.registry import kernel_function
from strategy.layout import CONF, A
from strategy.params import P


@kernel_function
def tier_value(p, conf, high, medium, low):
    """The value of a per-tier key: column ``high``, ``medium`` or ``low`` of ``p`` by the tier."""
    if conf >= CONF.HIGH:
        return p[high]
    if conf >= CONF.MEDIUM:
        return p[medium]
    return p[low]


@kernel_function
def confidence_mult(p, conf):
    """The margin multiple of a confidence tier [trade.enable_dynamic_sizing, confidence_mult_*]."""
    if p[P.ENABLE_DYNAMIC_SIZING] == 0.0:
        return 1.0
    return tier_value(p, conf, P.CONFIDENCE_MULT_HIGH, P.CONFIDENCE_MULT_MEDIUM, P.CONFIDENCE_MULT_LOW)


@kernel_function
def clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


@kernel_function
def market_size_mult(p, adx, atr, close):
    """With [trade.enable_dynamic_sizing] the margin also scales with the trend and the volatility:
    x clamp(ADX / [adx_sizing_full_adx], [adx_sizing_min_mult], 1) (weaker trends smaller) x
    clamp([vol_baseline_pct] / (ATR / close), [vol_scalar_min], [vol_scalar_max]) (wilder markets
    smaller); 1 without dynamic sizing."""
    if p[P.ENABLE_DYNAMIC_SIZING] == 0.0:
        return 1.0
    adx_mult = clamp(adx / p[P.ADX_SIZING_FULL_ADX], p[P.ADX_SIZING_MIN_MULT], 1.0)
    atr_pct = atr / close
    vol_mult = p[P.VOL_SCALAR_MAX]
    if atr_pct > 0.0:
        vol_mult = clamp(p[P.VOL_BASELINE_PCT] / atr_pct, p[P.VOL_SCALAR_MIN], p[P.VOL_SCALAR_MAX])
    return adx_mult * vol_mult


@kernel_function
def entry_leverage(p, conf):
    """The leverage of a new position [trade.leverage, enable_dynamic_leverage, leverage_*], at
    most [trade.leverage_max_cap] when that is above 0."""
    lev = p[P.LEVERAGE]
    if p[P.ENABLE_DYNAMIC_LEVERAGE] != 0.0:
        lev = tier_value(p, conf, P.LEVERAGE_HIGH, P.LEVERAGE_MEDIUM, P.LEVERAGE_LOW)
    cap = p[P.LEVERAGE_MAX_CAP]
    if cap > 0.0 and lev > cap:
        return cap
    return lev


@kernel_function
def sized_notional(p, margin, lev):
    """Notional for a margin, after the minimum-notional rule; 0 means skip
    [trade.min_notional_usd, bump_to_min_notional].

    A margin of 0 (size_multiplier 0, allocation_pct 0, add_fraction_of_base_margin 0) means "no
    new risk": it is never bumped up to the minimum notional."""
    if not margin > 0.0:
        return 0.0
    notional = margin * lev
    min_notional = p[P.MIN_NOTIONAL_USD]
    if notional < min_notional:
        if p[P.BUMP_TO_MIN_NOTIONAL] == 0.0:
            return 0.0
        notional = min_notional
    return notional


@kernel_function
def capped_notional(p, acct, margin, lev, equity):
    """``sized_notional`` within the margin cap [trade.max_total_margin_pct]: with no headroom left
    nothing; an entry whose margin would break the cap is scaled down to the headroom, and skipped
    when that is under the minimum notional (a bump would break the cap again)."""
    notional = sized_notional(p, margin, lev)
    if notional <= 0.0:
        return 0.0
    headroom = p[P.MAX_TOTAL_MARGIN_PCT] * equity - acct[A.MARGIN_USED]
    if not headroom > 0.0:
        return 0.0
    if notional / lev > headroom:
        notional = headroom * lev
        if notional < p[P.MIN_NOTIONAL_USD]:
            return 0.0
    return notional


@kernel_function
def take_profit_mult(p, adx):
    """The take-profit ATR multiple of a new position: [trade.tp_atr_mult], for every position (the
    reference backtester's rule; its ADX-tiered tp_mult_strong/weak are computed there but never
    applied, and are accepted here as keys that do not act)."""
    return p[P.TP_ATR_MULT]
