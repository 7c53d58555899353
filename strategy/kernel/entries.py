"""Entries: readiness, the entry gates, the signal and its confidence tier, BTC alignment, the
pullback and slow-drift entries, the breadth regime filter and auto-reverse.

A symbol may enter on a bar's close when it had a bar before this one too (no entry right after a
missing bar), the indicators its rules read are warmed up (``features_ready``), and every gate of
``entry_signal`` admits it. The gates, in order (config keys in brackets):

 1. trend_side          fast EMA above the slow one and the close above the fast EMA: a long; the
                        mirror: a short; else nothing
 2. macro_aligned       [filters.require_macro_alignment] the slow EMA is on the side's side of the macro EMA
 3. adx_above_min       ADX > effective_min_adx: [thresholds.entry.min_adx], at most 25 while ADX rises
                        fast, x [ave_adx_mult] on a volatile bar (AVE: ATR > [ave_atr_ratio_gt] x its mean)
 4. adx_rising          [filters.require_adx_rising] below [filters.adx_rising_saturation], ADX must be rising
 5. not_extended        [filters.enable_extension_filter] |close - fast EMA| / fast EMA <=
                        [thresholds.entry.max_dist_ema_fast]
 6. macd_confirms       [thresholds.entry.macd_hist_entry_mode] accel: the MACD histogram grows in the
                        side's direction; sign: it has the side's sign; none: no check
 7. stoch_rsi_allows    [filters.use_stoch_rsi_filter] no long with stoch-RSI K > [block_long_if_k_gt],
                        no short with K < [block_short_if_k_lt]
 8. not_ranging         [filters.enable_ranging_filter] refused when at least
                        [thresholds.ranging.min_signals] of: ADX < [adx_below], Bollinger width <
                        [bb_width_ratio_below] x its average, [rsi_low] <= RSI <= [rsi_high];
                        never while the slow EMA drifts (``drifting``, slow-drift entries on)
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
When the standard entry gives nothing: the pullback entry (``pullback_entry``, tier
[thresholds.entry.pullback_confidence]), then the slow-drift entry (``slow_drift_entry``, always
low). Every entry notes the ADX it cleared (standard: effective_min_adx; pullback:
[pullback_min_adx]; slow drift: [slow_drift_min_adx]) for the trend-exhaustion exit.
14. reverse             [trade.reverse_entry_signal] flips the side; with
                        [market_regime.enable_auto_reverse] the breadth (``market_breadth``) decides
15. breadth_allows      [market_regime.enable_regime_filter] no short at a high breadth, no long at a low one
New positions only (bar.take_entries; adds are not filtered): SSF ``momentum_sign_agrees`` and
REEF ``rsi_not_extreme``.
"""

from __future__ import annotations

import math

from strategy.features import F
from strategy.kernel.registry import kernel_function
from strategy.layout import CONF, MACD, POS, SIDE
from strategy.params import P

TMC_ADX_SLOPE = 0.5    # an ADX rising faster than this ...
TMC_MAX_MIN_ADX = 25.0  # ... caps the entry's minimum ADX at 25


@kernel_function
def features_ready(feat, params, s):
    """The indicators this config's entry rules read are all warmed up, and the symbol has had
    [engine.symbol_warmup_bars] bars of its own (this one included; the reference's per-symbol
    ``lookback``)."""
    f = feat[s]
    p = params[s]
    if f[F.BAR_COUNT] < p[P.SYMBOL_WARMUP_BARS]:
        return False
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
def volatility_expanded(p, f):
    """AVE [thresholds.entry.ave_enabled, ave_atr_ratio_gt]: the ATR is more than ave_atr_ratio_gt
    times its mean over [ave_avg_atr_window] bars (while that mean is not known yet, or is 0, it
    is not)."""
    avg = f[F.AVG_ATR]
    return p[P.AVE_ENABLED] != 0.0 and avg > 0.0 and f[F.ATR] / avg > p[P.AVE_ATR_RATIO_GT]


@kernel_function
def effective_min_adx(p, f):
    """The ADX a standard entry must clear: [thresholds.entry.min_adx], at most 25 while ADX is
    rising fast (slope above 0.5: the reference's TMC), then times [ave_adx_mult] on a volatile bar
    (``volatility_expanded``; a multiple <= 0 counts as 1). The position keeps it for its
    trend-exhaustion exit."""
    level = p[P.MIN_ADX]
    if f[F.ADX_SLOPE] > TMC_ADX_SLOPE and level > TMC_MAX_MIN_ADX:
        level = TMC_MAX_MIN_ADX
    if volatility_expanded(p, f) and p[P.AVE_ADX_MULT] > 0.0:
        level *= p[P.AVE_ADX_MULT]
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
def slow_ema_slope(f):
    """The slow EMA's slope over [thresholds.entry.slow_drift_slope_window] bars, as a fraction of
    the close; 0 while its history is shorter (the reference's reading)."""
    slope = f[F.EMA_SLOW_SLOPE]
    return 0.0 if math.isnan(slope) else slope


@kernel_function
def drifting(p, f):
    """[thresholds.entry.enable_slow_drift_entries]: the slow EMA moves at least
    [slow_drift_min_slope_pct] of the close over the slope window, either way."""
    return p[P.ENABLE_SLOW_DRIFT_ENTRIES] != 0.0 and abs(slow_ema_slope(f)) >= p[P.SLOW_DRIFT_MIN_SLOPE_PCT]


@kernel_function
def not_ranging(p, f):
    """Gate 8 [filters.enable_ranging_filter, thresholds.ranging.*]: fewer than min_signals ranging
    votes; a market that is ``drifting`` (slow-drift entries on) is not ranging, whatever the votes."""
    if p[P.ENABLE_RANGING_FILTER] != 0.0 and not drifting(p, f):
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
def standard_entry(feat, valid, params, s, btc_idx, prev_close, btc_regime):
    """(side, confidence tier) of a standard trend entry; side SIDE.FLAT = none. The gates of the
    module docstring, in that order; the first that refuses ends the check."""
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
    return side, confidence_tier(p, f)                     # 13 (gated in bar.take_entries)


@kernel_function
def trend_aligned(p, f, side):
    """The fast EMA on the side's side of the slow one, and the macro alignment (gate 2) when
    required: the "alignment" the pullback and slow-drift entries read."""
    return (f[F.EMA_FAST] - f[F.EMA_SLOW]) * side > 0.0 and macro_aligned(p, f, side)


@kernel_function
def quiet_entry_gates(p, f, prev_close, min_adx):
    """The gates the pullback and slow-drift entries share: no anomaly, not extended, not ranging,
    the volume confirmation, and ADX at least ``min_adx`` (no ADX-rising, stoch-RSI or RSI-limit
    gates)."""
    return (not_anomalous(p, f, prev_close) and not_extended(p, f) and not_ranging(p, f)
            and volume_confirms(p, f) and f[F.ADX] >= min_adx)


@kernel_function
def momentum_and_rsi_agree(f, side, require_sign, rsi_long_min, rsi_short_max):
    """The pullback / slow-drift confirmation: the MACD histogram has the side's sign (when
    required), and RSI >= the long minimum (long) or <= the short maximum (short)."""
    if require_sign != 0.0 and not f[F.MACD_HIST] * side > 0.0:
        return False
    if side > 0.0:
        return f[F.RSI] >= rsi_long_min
    return f[F.RSI] <= rsi_short_max


@kernel_function
def pullback_entry(feat, valid, params, s, btc_idx, prev_close, prev_fast, btc_regime):
    """Pullback continuation [thresholds.entry.enable_pullback_entries]: the close crossed the fast
    EMA this bar (long: the previous close at or under the previous fast EMA, this close above the
    fast EMA; short: the mirror), in an aligned trend (``trend_aligned``), BTC allowing, past
    ``quiet_entry_gates`` at [pullback_min_adx], with ``momentum_and_rsi_agree``
    ([pullback_require_macd_sign], [pullback_rsi_long_min], [pullback_rsi_short_max]). Returns the
    side (SIDE.FLAT = none); its tier is [pullback_confidence]."""
    p = params[s]
    f = feat[s]
    if p[P.ENABLE_PULLBACK_ENTRIES] == 0.0:
        return SIDE.FLAT
    if not quiet_entry_gates(p, f, prev_close, p[P.PULLBACK_MIN_ADX]):
        return SIDE.FLAT
    close = f[F.CLOSE]
    fast = f[F.EMA_FAST]
    side = SIDE.FLAT
    if prev_close <= prev_fast and close > fast:
        side = SIDE.LONG
    elif prev_close >= prev_fast and close < fast:
        side = SIDE.SHORT
    if side == SIDE.FLAT:
        return SIDE.FLAT
    if not (trend_aligned(p, f, side) and btc_allows(feat, valid, params, s, btc_idx, side, btc_regime)):
        return SIDE.FLAT
    if not momentum_and_rsi_agree(f, side, p[P.PULLBACK_REQUIRE_MACD_SIGN], p[P.PULLBACK_RSI_LONG_MIN],
                                  p[P.PULLBACK_RSI_SHORT_MAX]):
        return SIDE.FLAT
    return side


@kernel_function
def slow_drift_entry(feat, valid, params, s, btc_idx, prev_close, btc_regime):
    """Slow drift [thresholds.entry.enable_slow_drift_entries]: an aligned trend (``trend_aligned``)
    with the close beyond the slow EMA and the slow EMA's slope (``slow_ema_slope``) at least
    [slow_drift_min_slope_pct] in the side's direction, BTC allowing, past ``quiet_entry_gates`` at
    [slow_drift_min_adx], with ``momentum_and_rsi_agree`` ([slow_drift_require_macd_sign],
    [slow_drift_rsi_long_min], [slow_drift_rsi_short_max]). Returns the side (SIDE.FLAT = none);
    its tier is always CONF.LOW."""
    p = params[s]
    f = feat[s]
    if p[P.ENABLE_SLOW_DRIFT_ENTRIES] == 0.0:
        return SIDE.FLAT
    if not quiet_entry_gates(p, f, prev_close, p[P.SLOW_DRIFT_MIN_ADX]):
        return SIDE.FLAT
    side = SIDE.LONG if f[F.EMA_FAST] > f[F.EMA_SLOW] else SIDE.SHORT
    if not trend_aligned(p, f, side):
        return SIDE.FLAT
    if not ((f[F.CLOSE] - f[F.EMA_SLOW]) * side > 0.0
            and slow_ema_slope(f) * side >= p[P.SLOW_DRIFT_MIN_SLOPE_PCT]
            and btc_allows(feat, valid, params, s, btc_idx, side, btc_regime)):
        return SIDE.FLAT
    if not momentum_and_rsi_agree(f, side, p[P.SLOW_DRIFT_REQUIRE_MACD_SIGN], p[P.SLOW_DRIFT_RSI_LONG_MIN],
                                  p[P.SLOW_DRIFT_RSI_SHORT_MAX]):
        return SIDE.FLAT
    return side


@kernel_function
def reversed_by(p, side, breadth):
    """Gate 14: [trade.reverse_entry_signal] flips the side; with
    [market_regime.enable_auto_reverse] the breadth decides instead: flipped while
    [auto_reverse_breadth_low] <= breadth <= [auto_reverse_breadth_high] (a choppy market is
    faded), followed outside (a trending one)."""
    flip = p[P.REVERSE_ENTRY_SIGNAL] != 0.0
    if p[P.ENABLE_AUTO_REVERSE] != 0.0:
        flip = p[P.AUTO_REVERSE_BREADTH_LOW] <= breadth <= p[P.AUTO_REVERSE_BREADTH_HIGH]
    return -side if flip else side


@kernel_function
def breadth_allows(p, side, breadth):
    """The breadth regime filter [market_regime.enable_regime_filter]: no short while breadth is
    above [breadth_block_short_above], no long while it is below [breadth_block_long_below]."""
    if p[P.ENABLE_REGIME_FILTER] == 0.0:
        return True
    if side < 0.0 and breadth > p[P.BREADTH_BLOCK_SHORT_ABOVE]:
        return False
    if side > 0.0 and breadth < p[P.BREADTH_BLOCK_LONG_BELOW]:
        return False
    return True


@kernel_function
def entry_signal(feat, valid, params, s, btc_idx, prev_close, prev_fast, btc_regime, breadth):
    """(side, confidence tier, ADX threshold) of an entry on this bar's close; side SIDE.FLAT = no
    entry. The standard trend entry first (its threshold: ``effective_min_adx``); if it gives
    nothing, the pullback entry ([pullback_min_adx]); then the slow-drift entry
    ([slow_drift_min_adx]). The side is then reversed (``reversed_by``) and checked against the
    breadth (``breadth_allows``). The threshold is what the position's trend-exhaustion exit reads."""
    p = params[s]
    f = feat[s]
    side, conf = standard_entry(feat, valid, params, s, btc_idx, prev_close, btc_regime)
    level = effective_min_adx(p, f)
    if side == SIDE.FLAT:
        side = pullback_entry(feat, valid, params, s, btc_idx, prev_close, prev_fast, btc_regime)
        conf = p[P.PULLBACK_CONFIDENCE]
        level = p[P.PULLBACK_MIN_ADX]
    if side == SIDE.FLAT:
        side = slow_drift_entry(feat, valid, params, s, btc_idx, prev_close, btc_regime)
        conf = CONF.LOW
        level = p[P.SLOW_DRIFT_MIN_ADX]
    if side == SIDE.FLAT:
        return SIDE.FLAT, CONF.LOW, 0.0
    side = reversed_by(p, side, breadth)                   # 14
    if not breadth_allows(p, side, breadth):
        return SIDE.FLAT, CONF.LOW, 0.0
    return side, conf, level


@kernel_function
def breadth_read(p):
    """Whether any rule reads the breadth: [market_regime] is one portfolio-wide section, so every
    symbol's row says the same; without it the O(symbols) breadth pass is skipped on every bar."""
    return p[P.ENABLE_REGIME_FILTER] != 0.0 or p[P.ENABLE_AUTO_REVERSE] != 0.0


@kernel_function
def market_breadth(pos, valid, on_sub):
    """The percentage of symbols whose previous bar (their last before this one) had the fast EMA
    above the slow one, over the symbols whose EMAs were known then; 50 when none were. On an entry
    sub-bar (``on_sub``) no row has moved yet: every symbol's last main bar is its previous one."""
    bullish = 0.0
    known = 0.0
    for s in range(pos.shape[0]):
        ps = pos[s]
        moved = valid[s] != 0 and not on_sub
        fast = ps[POS.PREV_EMA_FAST] if moved else ps[POS.LAST_EMA_FAST]
        slow = ps[POS.PREV_EMA_SLOW] if moved else ps[POS.LAST_EMA_SLOW]
        if math.isnan(fast) or math.isnan(slow):
            continue
        known += 1.0
        if fast > slow:
            bullish += 1.0
    if known == 0.0:
        return 50.0
    return bullish / known * 100.0


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
