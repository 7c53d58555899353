"""Entries: readiness, the entry gates, the signal and its confidence tier, BTC alignment.

A symbol may enter on a bar's close when it had a bar before this one too (no entry right after a
missing bar), the indicators its rules read are warmed up (``features_ready``), and every gate of
``entry_signal`` admits it. The gates, in order (config keys in brackets):

 1. trend_side          the fast EMA above the slow one gives a long, below a short, equal nothing
 2. macro_aligned       [filters.require_macro_alignment] the close is on the side's side of the macro EMA
 3. adx_above_min       ADX >= [thresholds.entry.min_adx]
 4. adx_rising          [filters.require_adx_rising] below [filters.adx_rising_saturation], ADX must be rising
 5. not_extended        [filters.enable_extension_filter] |close - fast EMA| / fast EMA <=
                        [thresholds.entry.max_dist_ema_fast]
 6. macd_confirms       [thresholds.entry.macd_hist_entry_mode] accel: the MACD histogram grows in the
                        side's direction; sign: it has the side's sign; none: no check
 7. stoch_rsi_allows    [filters.use_stoch_rsi_filter] no long with stoch-RSI K > [block_long_if_k_gt],
                        no short with K < [block_short_if_k_lt]
 8. not_ranging         [filters.enable_ranging_filter] refused when at least
                        [thresholds.ranging.min_signals] of: ADX < [adx_below], Bollinger width <
                        [bb_width_ratio_below] x its average, [rsi_low] <= RSI <= [rsi_high]
 9. rsi_momentum        RSI above [tp_and_momentum.rsi_long_strong] (ADX > adx_strong_gt) or
                        [rsi_long_weak] for a long; below [rsi_short_strong | rsi_short_weak] for a short
10. btc_allows          [filters.require_btc_alignment] BTC's EMAs agree with the side, unless BTC's
                        ADX > [thresholds.entry.btc_adx_override] (or BTC has no bar or is not warm)
11. atr_above_min       ATR / close >= [trade.min_atr_pct]
12. volume_confirms     [filters.require_volume_confirmation] volume > its SMA and the SMA rising
13. confidence tier     high on a volume spike, else medium (``confidence_tier``); a new position
                        needs it >= [trade.entry_min_confidence] (bar.take_entries; adds do not)
14. reverse             [trade.reverse_entry_signal] flips the side
"""

from __future__ import annotations

import math

from strategy.features import F
from strategy.kernel.registry import kernel_function
from strategy.layout import CONF, MACD, SIDE
from strategy.params import P

TMC_ADX_SLOPE = 0.5    # an ADX rising faster than this ...
TMC_MAX_MIN_ADX = 25.0  # ... caps the entry's minimum ADX at 25


@kernel_function
def features_ready(feat, params, s):
    """The indicators this config's entry rules read are all warmed up."""
    f = feat[s]
    p = params[s]
    for k in (F.EMA_FAST, F.EMA_SLOW, F.ADX, F.ATR, F.RSI, F.MACD_HIST, F.VOL_SMA, F.VOL_TREND):
        if math.isnan(f[k]):
            return False
    if p[P.REQUIRE_MACRO_ALIGNMENT] != 0.0 and math.isnan(f[F.EMA_MACRO]):
        return False
    if p[P.REQUIRE_ADX_RISING] != 0.0 and math.isnan(f[F.ADX_SLOPE]):
        return False
    if p[P.MACD_HIST_ENTRY_MODE] == MACD.ACCEL and math.isnan(f[F.MACD_HIST_PREV]):
        return False
    if p[P.USE_STOCH_RSI_FILTER] != 0.0 and math.isnan(f[F.STOCH_K]):
        return False
    if p[P.ENABLE_RANGING_FILTER] != 0.0 and (math.isnan(f[F.BB_WIDTH]) or math.isnan(f[F.BB_WIDTH_AVG])):
        return False
    return True


@kernel_function
def trend_side(f):
    """Gate 1: SIDE.LONG when the fast EMA is above the slow one, SIDE.SHORT below, else FLAT."""
    fast = f[F.EMA_FAST]
    slow = f[F.EMA_SLOW]
    if fast > slow:
        return SIDE.LONG
    if fast < slow:
        return SIDE.SHORT
    return SIDE.FLAT


@kernel_function
def macro_aligned(p, f, side):
    """Gate 2 [filters.require_macro_alignment]: the close is beyond the macro EMA in the side's direction."""
    if p[P.REQUIRE_MACRO_ALIGNMENT] != 0.0 and (f[F.CLOSE] - f[F.EMA_MACRO]) * side <= 0.0:
        return False
    return True


@kernel_function
def effective_min_adx(p, f):
    """The ADX an entry must clear: [thresholds.entry.min_adx], at most 25 while ADX is rising
    fast (slope above 0.5: the reference's TMC). The position keeps it for its trend-exhaustion exit."""
    level = p[P.MIN_ADX]
    if f[F.ADX_SLOPE] > TMC_ADX_SLOPE and level > TMC_MAX_MIN_ADX:
        level = TMC_MAX_MIN_ADX
    return level


@kernel_function
def adx_above_min(p, f):
    """Gate 3: ADX strictly above ``effective_min_adx`` (the trend is strong enough)."""
    return f[F.ADX] > effective_min_adx(p, f)


@kernel_function
def adx_rising(p, f):
    """Gate 4 [filters.require_adx_rising, adx_rising_saturation]: below saturation, ADX must be rising."""
    if p[P.REQUIRE_ADX_RISING] != 0.0 and f[F.ADX] < p[P.ADX_RISING_SATURATION]:
        if f[F.ADX_SLOPE] <= 0.0:
            return False
    return True


@kernel_function
def not_extended(p, f):
    """Gate 5 [filters.enable_extension_filter, thresholds.entry.max_dist_ema_fast]: not too far from the fast EMA."""
    if p[P.ENABLE_EXTENSION_FILTER] != 0.0:
        fast = f[F.EMA_FAST]
        if abs(f[F.CLOSE] - fast) / fast > p[P.MAX_DIST_EMA_FAST]:
            return False
    return True


@kernel_function
def macd_confirms(p, f, side):
    """Gate 6 [thresholds.entry.macd_hist_entry_mode]: accel, sign or none (MACD.*)."""
    mode = p[P.MACD_HIST_ENTRY_MODE]
    hist = f[F.MACD_HIST]
    if mode == MACD.ACCEL and (hist - f[F.MACD_HIST_PREV]) * side <= 0.0:
        return False
    if mode == MACD.SIGN and hist * side <= 0.0:
        return False
    return True


@kernel_function
def stoch_rsi_allows(p, f, side):
    """Gate 7 [filters.use_stoch_rsi_filter, thresholds.stoch_rsi.block_long_if_k_gt, block_short_if_k_lt]."""
    if p[P.USE_STOCH_RSI_FILTER] != 0.0:
        k = f[F.STOCH_K]
        if side > 0.0 and k > p[P.BLOCK_LONG_IF_K_GT]:
            return False
        if side < 0.0 and k < p[P.BLOCK_SHORT_IF_K_LT]:
            return False
    return True


@kernel_function
def not_ranging(p, f):
    """Gate 8 [filters.enable_ranging_filter, thresholds.ranging.*]: fewer than min_signals ranging votes."""
    if p[P.ENABLE_RANGING_FILTER] != 0.0:
        votes = 0.0
        if f[F.ADX] < p[P.RANGING_ADX_BELOW]:
            votes += 1.0
        if f[F.BB_WIDTH] < p[P.RANGING_BB_WIDTH_RATIO_BELOW] * f[F.BB_WIDTH_AVG]:
            votes += 1.0
        if p[P.RANGING_RSI_LOW] <= f[F.RSI] <= p[P.RANGING_RSI_HIGH]:
            votes += 1.0
        if votes >= p[P.RANGING_MIN_SIGNALS]:
            return False
    return True


@kernel_function
def rsi_momentum(p, f, side):
    """Gate 9 [thresholds.tp_and_momentum.rsi_long_strong/weak, rsi_short_strong/weak, adx_strong_gt]."""
    strong = f[F.ADX] > p[P.ADX_STRONG_GT]
    rsi = f[F.RSI]
    if side > 0.0:
        rsi_min = p[P.RSI_LONG_STRONG] if strong else p[P.RSI_LONG_WEAK]
        if rsi <= rsi_min:
            return False
    else:
        rsi_max = p[P.RSI_SHORT_STRONG] if strong else p[P.RSI_SHORT_WEAK]
        if rsi >= rsi_max:
            return False
    return True


@kernel_function
def btc_allows(feat, valid, params, s, btc_idx, side):
    """Gate 10 [filters.require_btc_alignment, thresholds.entry.btc_adx_override]: BTC's EMA trend must
    agree unless its ADX is above the override (when BTC has a warmed-up bar)."""
    if params[s, P.REQUIRE_BTC_ALIGNMENT] == 0.0 or btc_idx < 0 or btc_idx == s:
        return True
    if valid[btc_idx] == 0:
        return True
    b = feat[btc_idx]
    b_fast = b[F.EMA_FAST]
    b_slow = b[F.EMA_SLOW]
    b_adx = b[F.ADX]
    if math.isnan(b_fast) or math.isnan(b_slow) or math.isnan(b_adx):
        return True
    if b_adx > params[s, P.BTC_ADX_OVERRIDE]:
        return True
    if side > 0.0:
        return b_fast > b_slow
    return b_fast < b_slow


@kernel_function
def atr_above_min(p, f):
    """Gate 11 [trade.min_atr_pct]: the market moves enough (ATR / close)."""
    return not f[F.ATR] / f[F.CLOSE] < p[P.MIN_ATR_PCT]


@kernel_function
def volume_confirmed(f):
    """Volume above its SMA and the SMA rising (gate 12 and the medium tier read it)."""
    return f[F.VOLUME] > f[F.VOL_SMA] and f[F.VOL_TREND] > 0.0


@kernel_function
def volume_confirms(p, f):
    """Gate 12 [filters.require_volume_confirmation]."""
    return p[P.REQUIRE_VOLUME_CONFIRMATION] == 0.0 or volume_confirmed(f)


@kernel_function
def confidence_tier(p, f):
    """A standard trend entry is CONF.HIGH on a volume spike (volume >
    [thresholds.entry.high_conf_volume_mult] x its SMA), else CONF.MEDIUM; ADX plays no part and
    a standard entry is never CONF.LOW (the reference's tiers: Low belongs to the pullback and
    slow-drift entries only)."""
    if f[F.VOLUME] > p[P.HIGH_CONF_VOLUME_MULT] * f[F.VOL_SMA]:
        return CONF.HIGH
    return CONF.MEDIUM


@kernel_function
def entry_signal(feat, valid, params, s, btc_idx):
    """(side, confidence tier) of an entry on this bar's close; side SIDE.FLAT = no entry.
    The gates of the module docstring, in that order; the first that refuses ends the check."""
    p = params[s]
    f = feat[s]
    side = trend_side(f)                                   # 1
    if side == SIDE.FLAT:
        return SIDE.FLAT, CONF.LOW
    if not (macro_aligned(p, f, side)                      # 2
            and adx_above_min(p, f)                        # 3
            and adx_rising(p, f)                           # 4
            and not_extended(p, f)                         # 5
            and macd_confirms(p, f, side)                  # 6
            and stoch_rsi_allows(p, f, side)               # 7
            and not_ranging(p, f)                          # 8
            and rsi_momentum(p, f, side)                   # 9
            and btc_allows(feat, valid, params, s, btc_idx, side)  # 10
            and atr_above_min(p, f)                        # 11
            and volume_confirms(p, f)):                    # 12
        return SIDE.FLAT, CONF.LOW
    conf = confidence_tier(p, f)                           # 13 (gated in bar.take_entries)
    if p[P.REVERSE_ENTRY_SIGNAL] != 0.0:                   # 14
        side = -side
    return side, conf


@kernel_function
def pack_signal(side, conf):
    """One number for the ranking scratch: side x (tier + 1) (0 = none)."""
    return side * (conf + 1.0)


@kernel_function
def signal_side(sig):
    """The side of a packed signal."""
    return SIDE.LONG if sig > 0.0 else SIDE.SHORT


@kernel_function
def signal_conf(sig):
    """The confidence tier of a packed signal."""
    return abs(sig) - 1.0
