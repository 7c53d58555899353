"""Entries: readiness, the entry gates, the signal and its confidence tier, BTC alignment.

A symbol may enter on a bar's close when it had a bar before this one too (no entry right after a
missing bar), the indicators its rules read are warmed up (``features_ready``), and every gate of
``entry_signal`` admits it. The gates, in order (config keys in brackets):

 1. trend_side          fast EMA above the slow one and the close above the fast EMA: a long; the
                        mirror: a short; else nothing
 2. macro_aligned       [filters.require_macro_alignment] the slow EMA is on the side's side of the macro EMA
 3. adx_above_min       ADX > effective_min_adx: [thresholds.entry.min_adx], at most 25 while ADX rises fast
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
 9. rsi_momentum        RSI beyond a limit sliding from [tp_and_momentum.rsi_long_weak] to
                        [rsi_long_strong] (short: rsi_short_weak to rsi_short_strong) as ADX goes from
                        min_adx to [adx_strong_gt]
10. btc_allows          [filters.require_btc_alignment] BTC's last close before this bar vs its slow
                        EMA then agrees with the side, unless the candidate's own ADX >
                        [thresholds.entry.btc_adx_override] (or there is no BTC data yet)
11. (none)              [trade.min_atr_pct] is an ATR floor of the new position (``entry_atr``), not a gate
12. volume_confirms     [filters.require_volume_confirmation] volume > its SMA and/or the SMA rising
                        ([filters.vol_confirm_include_prev]: or)
Before them all, ``not_anomalous`` [filters.enable_anomaly_filter]: no jump from the previous close
and no close far from the fast EMA.
13. confidence tier     high on a volume spike, else medium (``confidence_tier``); a new position
                        needs it >= [trade.entry_min_confidence] (bar.take_entries; adds do not)
14. reverse             [trade.reverse_entry_signal] flips the side
New positions only (bar.take_entries; adds are not filtered): SSF ``momentum_sign_agrees`` and
REEF ``rsi_not_extreme``.
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
    """Gate 1: SIDE.LONG when the fast EMA is above the slow one and the close above the fast EMA;
    SIDE.SHORT for the mirror; else FLAT."""
    fast = f[F.EMA_FAST]
    slow = f[F.EMA_SLOW]
    close = f[F.CLOSE]
    if fast > slow and close > fast:
        return SIDE.LONG
    if fast < slow and close < fast:
        return SIDE.SHORT
    return SIDE.FLAT


@kernel_function
def macro_aligned(p, f, side):
    """Gate 2 [filters.require_macro_alignment]: the slow EMA is beyond the macro EMA in the side's
    direction (the longer trends agree)."""
    if p[P.REQUIRE_MACRO_ALIGNMENT] != 0.0 and (f[F.EMA_SLOW] - f[F.EMA_MACRO]) * side <= 0.0:
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
def trend_strength(p, f):
    """How far ADX has come from [thresholds.entry.min_adx] towards [tp_and_momentum.adx_strong_gt],
    0..1 (the reference's DRE weight; a strong level not above min_adx counts as min_adx + 1)."""
    lo = p[P.MIN_ADX]
    hi = p[P.ADX_STRONG_GT]
    if not hi > lo:
        hi = lo + 1.0
    w = (f[F.ADX] - lo) / (hi - lo)
    return 0.0 if w < 0.0 else (1.0 if w > 1.0 else w)


@kernel_function
def rsi_momentum(p, f, side):
    """Gate 9 [thresholds.tp_and_momentum.rsi_long_weak/strong, rsi_short_weak/strong]: the RSI limit
    slides from the weak value to the strong one as ``trend_strength`` goes from 0 to 1; a long
    needs RSI above it, a short below."""
    w = trend_strength(p, f)
    rsi = f[F.RSI]
    if side > 0.0:
        return rsi > p[P.RSI_LONG_WEAK] + w * (p[P.RSI_LONG_STRONG] - p[P.RSI_LONG_WEAK])
    return rsi < p[P.RSI_SHORT_WEAK] + w * (p[P.RSI_SHORT_STRONG] - p[P.RSI_SHORT_WEAK])


@kernel_function
def btc_allows(feat, valid, params, s, btc_idx, side, btc_regime):
    """Gate 10 [filters.require_btc_alignment, thresholds.entry.btc_adx_override]: the BTC regime
    (``bar.btc_regime``: BTC's last close before this bar above its slow EMA then, +1, or below, -1)
    must agree with the side, unless the regime is unknown (0: no BTC data), the symbol is BTC, or
    the candidate's own ADX is above the override."""
    if params[s, P.REQUIRE_BTC_ALIGNMENT] == 0.0 or btc_idx < 0 or btc_idx == s or btc_regime == 0.0:
        return True
    if feat[s, F.ADX] > params[s, P.BTC_ADX_OVERRIDE]:
        return True
    return btc_regime * side > 0.0


@kernel_function
def entry_atr(p, f):
    """The ATR a new position measures its stops and targets in: at least [trade.min_atr_pct] of the
    close (an ATR floor; it never refuses an entry)."""
    floor = f[F.CLOSE] * p[P.MIN_ATR_PCT]
    atr = f[F.ATR]
    return atr if atr > floor else floor


@kernel_function
def momentum_sign_agrees(p, f, side):
    """SSF [trade.enable_ssf_filter], new positions only: a long needs a positive MACD histogram, a
    short a negative one."""
    if p[P.ENABLE_SSF_FILTER] == 0.0:
        return True
    return f[F.MACD_HIST] * side > 0.0


@kernel_function
def rsi_not_extreme(p, f, side):
    """REEF [trade.enable_reef_filter], new positions only: below ADX [reef_adx_threshold] no long
    above RSI [reef_long_rsi_block_gt] and no short below [reef_short_rsi_block_lt]; from it on the
    limits are [reef_long_rsi_extreme_gt] and [reef_short_rsi_extreme_lt]."""
    if p[P.ENABLE_REEF_FILTER] == 0.0:
        return True
    rsi = f[F.RSI]
    strong = not f[F.ADX] < p[P.REEF_ADX_THRESHOLD]
    if side > 0.0:
        return not rsi > (p[P.REEF_LONG_RSI_EXTREME_GT] if strong else p[P.REEF_LONG_RSI_BLOCK_GT])
    return not rsi < (p[P.REEF_SHORT_RSI_EXTREME_LT] if strong else p[P.REEF_SHORT_RSI_BLOCK_LT])


@kernel_function
def volume_confirms(p, f):
    """Gate 12 [filters.require_volume_confirmation]: volume above its SMA and the SMA rising; with
    [filters.vol_confirm_include_prev] either suffices (the reference backtester's reading)."""
    if p[P.REQUIRE_VOLUME_CONFIRMATION] == 0.0:
        return True
    above = f[F.VOLUME] > f[F.VOL_SMA]
    rising = f[F.VOL_TREND] > 0.0
    if p[P.VOL_CONFIRM_INCLUDE_PREV] != 0.0:
        return above or rising
    return above and rising


@kernel_function
def not_anomalous(p, f, prev_close):
    """[filters.enable_anomaly_filter]: no entry on a bar whose close moved more than
    [thresholds.anomaly.price_change_pct_gt] from the previous close, or lies more than
    [ema_fast_dev_pct_gt] from the fast EMA (a bad print or a spike, not a trend)."""
    if p[P.ENABLE_ANOMALY_FILTER] == 0.0:
        return True
    close = f[F.CLOSE]
    if prev_close > 0.0 and abs(close / prev_close - 1.0) > p[P.PRICE_CHANGE_PCT_GT]:
        return False
    return not abs(close - f[F.EMA_FAST]) / f[F.EMA_FAST] > p[P.EMA_FAST_DEV_PCT_GT]


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
def entry_signal(feat, valid, params, s, btc_idx, prev_close, btc_regime):
    """(side, confidence tier) of an entry on this bar's close; side SIDE.FLAT = no entry.
    The gates of the module docstring, in that order; the first that refuses ends the check."""
    p = params[s]
    f = feat[s]
    side = trend_side(f)                                   # 1
    if side == SIDE.FLAT:
        return SIDE.FLAT, CONF.LOW
    if not (not_anomalous(p, f, prev_close)                # anomaly filter
            and macro_aligned(p, f, side)                  # 2
            and adx_above_min(p, f)                        # 3
            and adx_rising(p, f)                           # 4
            and not_extended(p, f)                         # 5
            and macd_confirms(p, f, side)                  # 6
            and stoch_rsi_allows(p, f, side)               # 7
            and not_ranging(p, f)                          # 8
            and rsi_momentum(p, f, side)                   # 9
            and btc_allows(feat, valid, params, s, btc_idx, side, btc_regime)  # 10
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
