"""Exits: the stop, the targets, the trailing and break-even stops, the smart exits.

Stops and targets are in units of the ATR at entry (``POS.ENTRY_ATR``), so they do not drift with
later volatility. [engine.exit_fill] chooses the price an exit sees:

close (the default, as the reference backtester): each evaluation sees one price, the close of the
bar or of each finer exit bar (``close_price_exits``): the stop (its level is the initial stop, or
the trailing / break-even stop once one of those tightened it), then the partial and the full
take-profit; the first that fires wins and fills at that close (moved by the slippage). A wick
through the stop does not stop the position out; a close beyond it fills at that worse close.
After each evaluation the trailing and break-even stops tighten on that close. The smart exits
(6, 7) run on the main bar's close, where the main bar's indicators are known, unless an exit
fired on that close.

touch: in the order they are checked on a bar:

On the bar's range (``range_exits``; on each finer exit bar instead when an exit interval is set):
1. Stop: the bar reaches the stop level -> close all, reason stop_loss (or trailing_stop /
   breakeven_stop once one of those moved the stop). The stop starts [trade.sl_atr_mult] ATRs
   from the entry. A bar that touches both the stop and a target closes at the stop
   (conservative: the range does not say which came first).
2. Partial take-profit [trade.enable_partial_tp]: once per position, at [trade.tp_partial_atr_mult]
   ATRs in profit, close [trade.tp_partial_pct] of the size (reason take_profit_partial).
3. Take-profit: at the entry's take-profit multiple (sizing.take_profit_mult) -> close the rest.
   A bar that opens beyond a level fills at the open (a gap), never at the level.

On the close (``close_exits``), when the range exits left the position open:
4. Trailing stop: once the close is [trade.trailing_start_atr] ATRs in profit, the stop moves to
   [trade.trailing_distance_atr] ATRs behind the close; it never loosens (a ratchet).
5. Break-even [trade.enable_breakeven_stop]: once [trade.breakeven_start_atr] ATRs in profit, the
   stop moves to the entry plus [trade.breakeven_buffer_atr] ATRs (if that is tighter).
6. Trend flip: the EMAs cross against the position -> close at the close (reason trend_flip).
7. RSI overextension [trade.enable_rsi_overextension_exit]: RSI above [trade.rsi_exit_ub_lo_profit]
   for a long, below [trade.rsi_exit_lb_lo_profit] for a short -> close at the close.
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
    """Rule 6: the fast EMA crossed the slow one against the position."""
    side = ps[POS.SIDE]
    fast = f[F.EMA_FAST]
    slow = f[F.EMA_SLOW]
    return (side == SIDE.LONG and fast < slow) or (side == SIDE.SHORT and fast > slow)


@kernel_function
def rsi_overextended(p, ps, f):
    """Rule 7 [trade.enable_rsi_overextension_exit, rsi_exit_ub_lo_profit, rsi_exit_lb_lo_profit]."""
    if p[P.ENABLE_RSI_OVEREXTENSION_EXIT] == 0.0:
        return False
    side = ps[POS.SIDE]
    rsi = f[F.RSI]
    return (side == SIDE.LONG and rsi > p[P.RSI_EXIT_UB_LO_PROFIT]) or (
        side == SIDE.SHORT and rsi < p[P.RSI_EXIT_LB_LO_PROFIT])


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
    """Rules 6-7 on the main bar's close: trend flip, RSI overextension; filled at the close."""
    p = params[s]
    f = feat[s]
    ps = pos[s]
    close = f[F.CLOSE]
    reason = 0.0
    if trend_flipped(ps, f):
        reason = R.TREND_FLIP
    elif rsi_overextended(p, ps, f):
        reason = R.RSI_OVEREXTENSION
    if reason != 0.0:
        close_position(pos, acct, params, s, t, close, 1.0, reason, f[F.ATR], f[F.ADX], f[F.RSI], fills, trades)
