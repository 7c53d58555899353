"""Exits: the stop, the targets, the trailing and break-even stops, the smart exits.

Stops and targets are in units of the ATR at entry (``POS.ENTRY_ATR``), so they do not drift with
later volatility. [engine.exit_fill] chooses the price an exit sees:

close (the default, as the reference backtester): each evaluation sees one price, the close of the
bar or of each finer exit bar (``close_price_exits``): the stop-loss (recomputed from the average
entry with its ADX modifiers, ``stop_loss_level``), the trailing / break-even stop once set, the
partial and the full take-profit; the first that fires wins and fills at that close (moved by the
exit slippage). After each evaluation the trailing and break-even stops tighten on that close.
The glitch guard (``glitch``) skips an evaluation on a bad print. The smart exits
(``smart_exit_reason``: trend breakdown, trend exhaustion, macro breakdown, stagnation, funding
headwind, TSME,
MMDE, RSI overextension) run on the main bar's close unless an exit fired on it.

touch: stop, partial and full take-profit on the bar's range (``range_exits``; on each finer exit
bar when an exit interval is set), filled at the level (at the open on a gap; a bar touching the
stop and a target closes at the stop); then, if still open, the trailing and break-even stops
tighten on the close and the smart exits run (``close_exits``).
"""

from __future__ import annotations

import math

from strategy.features import F
from strategy.kernel.book import close_position, note_indicators
from strategy.kernel.registry import kernel_function
from strategy.layout import CONF, POS, SIDE, R
from strategy.params import P

# The reference's fixed stop and trailing modifiers (its kernel_exits: not config keys there either).
SL_UNDERWATER_FALLING_ADX = 0.8   # ASE: ADX falling and the position underwater -> tighter
SL_STRONG_TREND_ADX = 40.0        # DASE: ADX above this and in profit ...
SL_STRONG_TREND_PROFIT_ATR = 0.5  # ... by more than this many ATRs -> wider
SL_STRONG_TREND = 1.15
SL_SATURATED_ADX = 45.0           # SLB: ADX above this -> wider
SL_SATURATED = 1.10
TRAIL_VOL_BUFFER_RATIO = 1.2      # VBTS: Bollinger width above 1.2 x its average ...
TRAIL_VOL_BUFFER = 1.25           # ... widens the trailing distance
TRAIL_HIGH_PROFIT_ATR = 2.0       # above 2 ATRs in profit the distance is re-chosen:
TRAIL_RUNNING_ADX = 35.0          #   ADX above 35 and rising -> the base distance,
TRAIL_ATR_RISING = 0.75           #   else a rising ATR -> 0.75 x base, else 0.5 x base
TRAIL_QUIET = 0.5
TRAIL_WEAK_ADX = 25.0             # otherwise below ADX 25 -> 0.7 x base
TRAIL_WEAK = 0.7
TRAIL_FLOOR_MOMENTUM = 0.7        # the distance is at least 0.7 ATR while RSI runs with the position
TRAIL_FLOOR = 0.5                 # (long RSI > 60, short RSI < 40), else at least 0.5 ATR
TRAIL_RSI_LONG = 60.0
TRAIL_RSI_SHORT = 40.0
# Smart exits (the reference's fixed constants)
WEAK_CROSS_GAP = 0.001            # an EMA cross within 0.1 % of the slow EMA ...
WEAK_CROSS_ADX = 25.0             # ... with ADX above 25 is not a breakdown
STAGNATION_ATR_RATIO = 0.70       # ATR under 70 % of the entry ATR while underwater
TSME_ADX = 50.0                   # trend saturation momentum exit: ADX above 50
MMDE_ADX = 35.0                   # MACD momentum divergence exit: ADX above 35 ...
MMDE_PROFIT_ATR = 1.5             # ... and more than 1.5 ATRs in profit
MS_PER_HOUR = 3_600_000.0
# The funding-headwind exit's threshold (the reference's ladder, in entry ATRs of adverse move):
# by the hourly rate's size, then adjusted for volatility, time held, trend, momentum, confidence
# and profit (funding_headwind_level).
HEADWIND_RATE_1, HEADWIND_LEVEL_1 = 0.0001, 0.15    # |hourly rate| above 0.0001 -> 0.15 ATR
HEADWIND_RATE_2, HEADWIND_LEVEL_2 = 0.00006, 0.25
HEADWIND_RATE_3, HEADWIND_LEVEL_3 = 0.00004, 0.40
HEADWIND_RATE_4, HEADWIND_LEVEL_4 = 0.00002, 0.60
HEADWIND_NEAR_ZERO_RATE, HEADWIND_NEAR_ZERO_LEVEL = 0.00001, 0.95  # under it 0.95 ...
HEADWIND_LEVEL_ELSE = 0.80                                         # ... else 0.80


@kernel_function
def profit_atr(ps, price):
    """How many entry ATRs ``price`` is in the position's favour, from the average entry."""
    return (price - ps[POS.ENTRY]) * ps[POS.SIDE] / ps[POS.ENTRY_ATR]


@kernel_function
def stop_loss_mult(p, ps, price):
    """The stop's ATR multiple on this evaluation, [trade.sl_atr_mult] adjusted in the reference's
    order: x0.8 when ADX is falling and the position is underwater; x1.15 when ADX > 40 and more than
    0.5 ATR in profit; x1.10 when ADX > 45. Recomputed every evaluation, never ratcheted."""
    mult = p[P.SL_ATR_MULT]
    prof = profit_atr(ps, price)
    adx = ps[POS.IND_ADX]
    if ps[POS.IND_ADX_SLOPE] < 0.0 and prof < 0.0:
        mult *= SL_UNDERWATER_FALLING_ADX
    if adx > SL_STRONG_TREND_ADX and prof > SL_STRONG_TREND_PROFIT_ATR:
        mult *= SL_STRONG_TREND
    if adx > SL_SATURATED_ADX:
        mult *= SL_SATURATED
    return mult


@kernel_function
def stop_loss_level(p, ps, price):
    """The stop from the average entry: entry -/+ entry ATR x ``stop_loss_mult``."""
    return ps[POS.ENTRY] - ps[POS.SIDE] * stop_loss_mult(p, ps, price) * ps[POS.ENTRY_ATR]


@kernel_function
def partial_tp_mult(p, ps):
    """The partial take-profit's ATR multiple: [trade.tp_partial_atr_mult], or the take-profit's
    when that is 0."""
    m = p[P.TP_PARTIAL_ATR_MULT]
    return m if m > 0.0 else ps[POS.TP_MULT]


@kernel_function
def partial_leaves_too_little(p, ps, price):
    """The partial is held back when what it leaves, size x (1 - tp_partial_pct) x price, is under
    [trade.tp_partial_min_notional_usd]."""
    left = ps[POS.SIZE] * (1.0 - p[P.TP_PARTIAL_PCT]) * price
    return left < p[P.TP_PARTIAL_MIN_NOTIONAL_USD]


@kernel_function
def full_tp_active(p, ps):
    """Before the partial, or without partials, the take-profit is live; after the partial only
    when [trade.tp_partial_atr_mult] > 0 (with 0 the rest is left to the trailing and smart exits)."""
    if p[P.ENABLE_PARTIAL_TP] == 0.0 or ps[POS.TP1_DONE] == 0.0:
        return True
    return p[P.TP_PARTIAL_ATR_MULT] > 0.0


@kernel_function
def level_hit(side, o, h, lo, level, is_stop):
    """Fill price when the bar reaches ``level`` (the open if it gapped through), else NaN."""
    if (side > 0.0) == is_stop:
        # long stop / short target: price falls to the level
        if o <= level:
            return o
        if lo <= level:
            return level
    else:
        if o >= level:
            return o
        if h >= level:
            return level
    return math.nan


@kernel_function
def range_exits(pos, acct, params, s, t, o, h, lo, atr, adx, rsi, fills, trades):
    """Rules 1-3 on one bar's range: stop, then partial, then full take-profit. True if closed."""
    p = params[s]
    ps = pos[s]
    side = ps[POS.SIDE]
    # 1. stop (stop_loss / trailing_stop / breakeven_stop)
    px = level_hit(side, o, h, lo, ps[POS.STOP], True)
    if not math.isnan(px):
        close_position(pos, acct, params, s, t, px, 1.0, ps[POS.STOP_REASON], atr, adx, rsi, fills, trades)
        return True
    entry = ps[POS.ENTRY]
    entry_atr = ps[POS.ENTRY_ATR]
    # 2. partial take-profit, once
    if p[P.ENABLE_PARTIAL_TP] != 0.0 and ps[POS.TP1_DONE] == 0.0:
        level = entry + side * partial_tp_mult(p, ps) * entry_atr
        px = level_hit(side, o, h, lo, level, False)
        if not math.isnan(px):
            if partial_leaves_too_little(p, ps, px):
                return False  # held: the partial would leave a position under the minimum notional
            ps[POS.TP1_DONE] = 1.0
            close_position(pos, acct, params, s, t, px, p[P.TP_PARTIAL_PCT], R.TAKE_PROFIT_PARTIAL, atr, adx, rsi,
                           fills, trades)
            if ps[POS.SIDE] == 0.0:
                return True
    # 3. take-profit
    level = entry + side * ps[POS.TP_MULT] * entry_atr
    px = level_hit(side, o, h, lo, level, False)
    if full_tp_active(p, ps) and not math.isnan(px):
        close_position(pos, acct, params, s, t, px, 1.0, R.TAKE_PROFIT, atr, adx, rsi, fills, trades)
        return True
    return False


@kernel_function
def close_beyond(side, close, level, is_stop):
    """The close is at or beyond ``level``: against the position for a stop, in its favour for a target."""
    if (side > 0.0) == is_stop:
        return close <= level
    return close >= level


@kernel_function
def close_price_exits(pos, acct, params, s, t, close, atr, adx, rsi, fills, trades):
    """Rules 1-3 on one close (exit_fill close): stop, partial, full take-profit; the first that
    fires wins and fills at the close. Returns 0 (none), 1 (a partial fired) or 2 (closed)."""
    p = params[s]
    ps = pos[s]
    side = ps[POS.SIDE]
    sl = stop_loss_level(p, ps, close)
    if ps[POS.STOP_REASON] == R.STOP_LOSS:
        ps[POS.STOP] = sl  # no trailing / break-even stop yet: the stop shown is the stop-loss
    if close_beyond(side, close, sl, True):
        close_position(pos, acct, params, s, t, close, 1.0, R.STOP_LOSS, atr, adx, rsi, fills, trades)
        return 2
    if ps[POS.STOP_REASON] != R.STOP_LOSS and close_beyond(side, close, ps[POS.STOP], True):
        close_position(pos, acct, params, s, t, close, 1.0, ps[POS.STOP_REASON], atr, adx, rsi, fills, trades)
        return 2
    entry = ps[POS.ENTRY]
    entry_atr = ps[POS.ENTRY_ATR]
    if p[P.ENABLE_PARTIAL_TP] != 0.0 and ps[POS.TP1_DONE] == 0.0:
        if close_beyond(side, close, entry + side * partial_tp_mult(p, ps) * entry_atr, False):
            if partial_leaves_too_little(p, ps, close):
                return 0  # held: the partial would leave a position under the minimum notional
            ps[POS.TP1_DONE] = 1.0
            close_position(pos, acct, params, s, t, close, p[P.TP_PARTIAL_PCT], R.TAKE_PROFIT_PARTIAL, atr, adx,
                           rsi, fills, trades)
            return 2 if ps[POS.SIDE] == 0.0 else 1
    if full_tp_active(p, ps) and close_beyond(side, close, entry + side * ps[POS.TP_MULT] * entry_atr, False):
        close_position(pos, acct, params, s, t, close, 1.0, R.TAKE_PROFIT, atr, adx, rsi, fills, trades)
        return 2
    return 0


@kernel_function
def low_conf_or(p, ps, key, low_key):
    """A low-confidence position reads ``low_key`` when it is above 0, else ``key``."""
    if ps[POS.CONF] == CONF.LOW and p[low_key] > 0.0:
        return p[low_key]
    return p[key]


@kernel_function
def trailing_distance(p, ps, prof):
    """The trailing distance in ATRs, the reference's way: base [trade.trailing_distance_atr] (or
    [trailing_distance_atr_low_conf] for a low-confidence position); x1.25 with
    [enable_vol_buffered_trailing] when the Bollinger width is above 1.2 x its average; above 2 ATRs
    in profit re-chosen as base (ADX > 35 and rising), 0.75 x base (ATR rising) or 0.5 x base;
    otherwise 0.7 x base below ADX 25; at least 0.7 ATR while RSI runs with the position, else 0.5."""
    base = low_conf_or(p, ps, P.TRAILING_DISTANCE_ATR, P.TRAILING_DISTANCE_ATR_LOW_CONF)
    d = base
    if p[P.ENABLE_VOL_BUFFERED_TRAILING] != 0.0 and ps[POS.IND_BBW_RATIO] > TRAIL_VOL_BUFFER_RATIO:
        d = base * TRAIL_VOL_BUFFER
    adx = ps[POS.IND_ADX]
    if prof > TRAIL_HIGH_PROFIT_ATR:
        if adx > TRAIL_RUNNING_ADX and ps[POS.IND_ADX_SLOPE] > 0.0:
            d = base
        elif ps[POS.IND_ATR_SLOPE] > 0.0:
            d = base * TRAIL_ATR_RISING
        else:
            d = base * TRAIL_QUIET
    elif adx < TRAIL_WEAK_ADX:
        d = base * TRAIL_WEAK
    rsi = ps[POS.IND_RSI]
    side = ps[POS.SIDE]
    floor = TRAIL_FLOOR
    if (side == SIDE.LONG and rsi > TRAIL_RSI_LONG) or (side == SIDE.SHORT and rsi < TRAIL_RSI_SHORT):
        floor = TRAIL_FLOOR_MOMENTUM
    return d if d > floor else floor


@kernel_function
def ratchet_trailing_stop(p, ps, close):
    """Rule 4 [trade.trailing_start_atr (or trailing_start_atr_low_conf)]: once the close is that
    many ATRs in profit, trail the stop ``trailing_distance`` ATRs behind the close (a ratchet)."""
    side = ps[POS.SIDE]
    entry_atr = ps[POS.ENTRY_ATR]
    prof = profit_atr(ps, close)
    if prof >= low_conf_or(p, ps, P.TRAILING_START_ATR, P.TRAILING_START_ATR_LOW_CONF):
        trail = close - side * trailing_distance(p, ps, prof) * entry_atr
        if (trail - ps[POS.STOP]) * side > 0.0:
            ps[POS.STOP] = trail
            ps[POS.STOP_REASON] = R.TRAILING_STOP


@kernel_function
def ratchet_breakeven_stop(p, ps, close):
    """Rule 5 [trade.enable_breakeven_stop, breakeven_start_atr, breakeven_buffer_atr]."""
    side = ps[POS.SIDE]
    entry = ps[POS.ENTRY]
    entry_atr = ps[POS.ENTRY_ATR]
    if p[P.ENABLE_BREAKEVEN_STOP] != 0.0 and (close - entry) * side >= p[P.BREAKEVEN_START_ATR] * entry_atr:
        be = entry + side * p[P.BREAKEVEN_BUFFER_ATR] * entry_atr
        if (be - ps[POS.STOP]) * side > 0.0:
            ps[POS.STOP] = be
            ps[POS.STOP_REASON] = R.BREAKEVEN_STOP


@kernel_function
def trend_flipped(ps, f):
    """Trend breakdown: the fast EMA crossed the slow one against the position -- except a weak
    cross (the EMAs within 0.1 % of the slow EMA while ADX is above 25)."""
    side = ps[POS.SIDE]
    fast = f[F.EMA_FAST]
    slow = f[F.EMA_SLOW]
    if not ((side == SIDE.LONG and fast < slow) or (side == SIDE.SHORT and fast > slow)):
        return False
    return not (abs(fast - slow) / slow < WEAK_CROSS_GAP and f[F.ADX] > WEAK_CROSS_ADX)


@kernel_function
def trend_exhausted(p, ps, f):
    """Trend exhaustion: ADX under the level the entry had to clear; for positions without one,
    [trade.smart_exit_adx_exhaustion_lt_low_conf] (low confidence, when above 0) or
    [trade.smart_exit_adx_exhaustion_lt] (0 = off)."""
    level = ps[POS.ENTRY_ADX_THRESHOLD]
    if not level > 0.0:
        level = low_conf_or(p, ps, P.SMART_EXIT_ADX_EXHAUSTION_LT, P.SMART_EXIT_ADX_EXHAUSTION_LT_LOW_CONF)
    return level > 0.0 and f[F.ADX] < level


@kernel_function
def macro_broken(p, ps, f):
    """EMA macro breakdown [filters.require_macro_alignment]: the close crossed the macro EMA
    against the position."""
    if p[P.REQUIRE_MACRO_ALIGNMENT] == 0.0:
        return False
    side = ps[POS.SIDE]
    return (f[F.CLOSE] - f[F.EMA_MACRO]) * side < 0.0


@kernel_function
def stagnant(ps, f):
    """Stagnation: volatility has dried up (ATR under 70 % of the entry ATR) while underwater."""
    return f[F.ATR] < STAGNATION_ATR_RATIO * ps[POS.ENTRY_ATR] and profit_atr(ps, f[F.CLOSE]) < 0.0


@kernel_function
def hist_fading(ps, f, bars):
    """The MACD histogram moved against the position on each of the last ``bars`` bars (2 or 3)."""
    side = ps[POS.SIDE]
    if not (f[F.MACD_HIST] - f[F.MACD_HIST_PREV]) * side < 0.0:
        return False
    if not (f[F.MACD_HIST_PREV] - ps[POS.HIST_B2]) * side < 0.0:
        return False
    return bars < 3 or (ps[POS.HIST_B2] - ps[POS.HIST_B3]) * side < 0.0


@kernel_function
def saturated_trend_fading(p, ps, f):
    """TSME: ADX above 50, at least [trade.tsme_min_profit_atr] ATRs in profit, ADX falling (with
    [trade.tsme_require_adx_slope_negative]) and the histogram fading two bars in a row."""
    if not f[F.ADX] > TSME_ADX or profit_atr(ps, f[F.CLOSE]) < p[P.TSME_MIN_PROFIT_ATR]:
        return False
    if p[P.TSME_REQUIRE_ADX_SLOPE_NEGATIVE] != 0.0 and not f[F.ADX_SLOPE] < 0.0:
        return False
    return hist_fading(ps, f, 2)


@kernel_function
def momentum_diverging(ps, f):
    """MMDE: more than 1.5 ATRs in profit, ADX above 35 and the histogram fading three bars in a row."""
    if not (profit_atr(ps, f[F.CLOSE]) > MMDE_PROFIT_ATR and f[F.ADX] > MMDE_ADX):
        return False
    return hist_fading(ps, f, 3)


@kernel_function
def rsi_overextended(p, ps, f):
    """RSI overextension [trade.enable_rsi_overextension_exit]: under [rsi_exit_profit_atr_switch]
    ATRs in profit a long exits above [rsi_exit_ub_lo_profit] (short: below rsi_exit_lb_lo_profit),
    from it on above [rsi_exit_ub_hi_profit] (below rsi_exit_lb_hi_profit); the _low_conf values
    replace them for a low-confidence position when above 0."""
    if p[P.ENABLE_RSI_OVEREXTENSION_EXIT] == 0.0:
        return False
    side = ps[POS.SIDE]
    rsi = f[F.RSI]
    if profit_atr(ps, f[F.CLOSE]) < p[P.RSI_EXIT_PROFIT_ATR_SWITCH]:
        ub = low_conf_or(p, ps, P.RSI_EXIT_UB_LO_PROFIT, P.RSI_EXIT_UB_LO_PROFIT_LOW_CONF)
        lb = low_conf_or(p, ps, P.RSI_EXIT_LB_LO_PROFIT, P.RSI_EXIT_LB_LO_PROFIT_LOW_CONF)
    else:
        ub = low_conf_or(p, ps, P.RSI_EXIT_UB_HI_PROFIT, P.RSI_EXIT_UB_HI_PROFIT_LOW_CONF)
        lb = low_conf_or(p, ps, P.RSI_EXIT_LB_HI_PROFIT, P.RSI_EXIT_LB_HI_PROFIT_LOW_CONF)
    return (side == SIDE.LONG and rsi > ub) or (side == SIDE.SHORT and rsi < lb)


@kernel_function
def glitch(p, ps, close, prev_close):
    """The glitch guard [trade.block_exits_on_extreme_dev]: a close more than
    [glitch_price_dev_pct] from the previous close, or more than [glitch_atr_mult] ATRs away from
    it, is taken for a bad print and no exit is decided on it."""
    if p[P.BLOCK_EXITS_ON_EXTREME_DEV] == 0.0 or not prev_close > 0.0:
        return False
    move = abs(close - prev_close)
    return move / prev_close > p[P.GLITCH_PRICE_DEV_PCT] or move > p[P.GLITCH_ATR_MULT] * ps[POS.IND_ATR]


@kernel_function
def funding_headwind_level(ps, f, t):
    """How far (in entry ATRs) a position paying funding may sit underwater before the headwind
    exit: the reference's ladder. By the hourly rate |r|: > 0.0001 -> 0.15, > 0.00006 -> 0.25,
    > 0.00004 -> 0.40, > 0.00002 -> 0.60, < 0.00001 -> 0.95, else 0.80. Then: x0.6 when the ATR is
    above 1.2 x the entry ATR; held more than 1 h: x max(0, 1 - (hours - 1) / 11), at least 0.35; the
    trend still with the position (fast vs slow EMA) and ADX > 25: at least 0.75; the histogram
    moving with the position: x1.5, at least 0.5; ADX > 35: x1.4; high confidence: x1.25; the close
    on the position's side of the macro EMA: x1.3; all three of those: x1.5 more; ATR under 0.2 % of
    the close: x1.25; RSI against the position's side (long < 35, short > 65): x1.3; ADX > 45: x1.6;
    ADX slope > 1: x1.4; ADX > 40: x1.25; more than 1.5 ATRs in profit with the ATR rising: x1.5;
    profit > 3 ATRs: x2, else > 2: x1.5; ADX falling: x0.75."""
    side = ps[POS.SIDE]
    r = abs(ps[POS.FUNDING_RATE])
    level = HEADWIND_LEVEL_ELSE
    if r > HEADWIND_RATE_1:
        level = HEADWIND_LEVEL_1
    elif r > HEADWIND_RATE_2:
        level = HEADWIND_LEVEL_2
    elif r > HEADWIND_RATE_3:
        level = HEADWIND_LEVEL_3
    elif r > HEADWIND_RATE_4:
        level = HEADWIND_LEVEL_4
    elif r < HEADWIND_NEAR_ZERO_RATE:
        level = HEADWIND_NEAR_ZERO_LEVEL
    entry_atr = ps[POS.ENTRY_ATR]
    atr = f[F.ATR]
    adx = f[F.ADX]
    if atr > entry_atr * 1.2:
        level *= 0.6
    hours = (t - ps[POS.OPEN_T]) / MS_PER_HOUR
    if hours > 1.0:
        decay = 1.0 - (hours - 1.0) / 11.0
        level *= decay if decay > 0.0 else 0.0
        if level < 0.35:
            level = 0.35
    if (f[F.EMA_FAST] - f[F.EMA_SLOW]) * side > 0.0 and adx > 25.0 and level < 0.75:
        level = 0.75
    improving = (f[F.MACD_HIST] - f[F.MACD_HIST_PREV]) * side > 0.0
    if improving:
        level *= 1.5
        if level < 0.5:
            level = 0.5
    if adx > 35.0:
        level *= 1.4
    high = ps[POS.CONF] == CONF.HIGH
    if high:
        level *= 1.25
    macro = f[F.EMA_MACRO] > 0.0 and (f[F.CLOSE] - f[F.EMA_MACRO]) * side > 0.0
    if macro:
        level *= 1.3
    if improving and macro and high:
        level *= 1.5
    if f[F.CLOSE] > 0.0 and atr / f[F.CLOSE] < 0.002:
        level *= 1.25
    rsi = f[F.RSI]
    if (side == SIDE.SHORT and rsi > 65.0) or (side == SIDE.LONG and rsi < 35.0):
        level *= 1.3
    if adx > 45.0:
        level *= 1.6
    if f[F.ADX_SLOPE] > 1.0:
        level *= 1.4
    if adx > 40.0:
        level *= 1.25
    prof = profit_atr(ps, f[F.CLOSE])
    if prof > 1.5 and ps[POS.IND_ATR_SLOPE] > 0.0:
        level *= 1.5
    if prof > 3.0:
        level *= 2.0
    elif prof > 2.0:
        level *= 1.5
    if f[F.ADX_SLOPE] < 0.0:
        level *= 0.75
    return level


@kernel_function
def funding_headwind(p, ps, f, t):
    """The funding-headwind exit [trade.enable_funding_headwind_exit]: the position pays funding
    (a long at a positive hourly rate, a short at a negative one; the symbol's last settlement,
    ``book.note_funding_rate``), is underwater, and the close is more than
    ``funding_headwind_level`` entry ATRs from the average entry."""
    if p[P.ENABLE_FUNDING_HEADWIND_EXIT] == 0.0:
        return False
    side = ps[POS.SIDE]
    if not ps[POS.FUNDING_RATE] * side > 0.0:
        return False
    moved = (f[F.CLOSE] - ps[POS.ENTRY]) * side
    if not moved < 0.0:
        return False
    return -moved / ps[POS.ENTRY_ATR] > funding_headwind_level(ps, f, t)


@kernel_function
def smart_exit_reason(p, ps, f, t):
    """The first smart exit that fires, in the reference's order (0 = none): trend breakdown,
    trend exhaustion, macro breakdown, stagnation, funding headwind, TSME, MMDE, RSI overextension."""
    if trend_flipped(ps, f):
        return R.TREND_FLIP
    if trend_exhausted(p, ps, f):
        return R.TREND_EXHAUSTION
    if macro_broken(p, ps, f):
        return R.EMA_MACRO_BREAKDOWN
    if stagnant(ps, f):
        return R.STAGNATION
    if funding_headwind(p, ps, f, t):
        return R.FUNDING_HEADWIND
    if saturated_trend_fading(p, ps, f):
        return R.TSME
    if momentum_diverging(ps, f):
        return R.MMDE
    if rsi_overextended(p, ps, f):
        return R.RSI_OVEREXTENSION
    return 0.0


@kernel_function
def tighten_stop(p, ps, close):
    """Rules 4-5: the trailing and break-even stops move on a close (they never loosen)."""
    ratchet_trailing_stop(p, ps, close)
    ratchet_breakeven_stop(p, ps, close)


@kernel_function
def close_exits(pos, acct, params, feat, s, t, fills, trades):
    """Rules 4-7 on the close (exit_fill touch): tighten the stop, then the smart exits."""
    note_indicators(pos[s], feat[s])
    tighten_stop(params[s], pos[s], feat[s, F.CLOSE])
    smart_exits(pos, acct, params, feat, s, t, fills, trades)


@kernel_function
def smart_exits(pos, acct, params, feat, s, t, fills, trades):
    """The smart exits on the main bar's close (``smart_exit_reason``), filled at the close."""
    p = params[s]
    f = feat[s]
    ps = pos[s]
    close = f[F.CLOSE]
    reason = smart_exit_reason(p, ps, f, t)
    if reason != 0.0:
        close_position(pos, acct, params, s, t, close, 1.0, reason, f[F.ATR], f[F.ADX], f[F.RSI], fills, trades)
