"""The decision kernel: the ONE definition of what the strategy does on a closed bar.

Everything here is a scalar function over numbers and preallocated arrays (no Python objects,
no allocation, no exceptions), so that ``make_kernel(jit)`` compiles the same source for a CUDA
thread (``numba.cuda.jit(device=True)``), for the CPU sweep and for the canonical engine
(``numba.njit``). The sweep and the engine differ only in how they fill feature rows (precomputed
arrays vs streaming indicators); the decisions, fills and accounting are this code in both.

Same-bar rules (spec/strategy.md, "Decisions on a closed bar"):
1. funding is charged at the bar's open on positions held into it;
2. exits on the bar's range, in order stop-loss, partial take-profit, full take-profit; a bar that
   touches both the stop and a target closes at the stop (conservative); a bar that opens beyond a
   level fills at the open;
3. on the close: trailing stop, break-even, then smart exits (trend flip, RSI overextension) at the close;
4. entries ranked by confidence*100 + ADX (ties by symbol index), capped by max open positions and
   total margin; pyramiding adds to open positions in the signal's direction;
5. mark-to-market equity, drawdown and daily returns at the bar close.
Stops, targets and trailing distances are in units of the ATR at entry, so they do not drift
with later volatility.
"""

from __future__ import annotations

import math
import types
from collections import namedtuple

from strategy.features import (
    F_ADX,
    F_ADX_SLOPE,
    F_ATR,
    F_BB_WIDTH,
    F_BB_WIDTH_AVG,
    F_CLOSE,
    F_EMA_FAST,
    F_EMA_MACRO,
    F_EMA_SLOW,
    F_HIGH,
    F_LOW,
    F_MACD_HIST,
    F_MACD_HIST_PREV,
    F_OPEN,
    F_RSI,
    F_STOCH_K,
    F_VOL_SMA,
    F_VOL_TREND,
    F_VOLUME,
)
from strategy.layout import (
    A_BALANCE,
    A_DAY,
    A_DAY_EQ,
    A_EQUITY,
    A_FEES,
    A_FUNDING,
    A_GROSS_LOSS,
    A_GROSS_PROFIT,
    A_INITIAL,
    A_LAST_T,
    A_MARGIN_USED,
    A_MAX_DD,
    A_NFILLS,
    A_OPEN_COUNT,
    A_PEAK,
    A_REALIZED,
    A_RET_DOWN_SQ,
    A_RET_M2,
    A_RET_MEAN,
    A_RET_N,
    A_TRADES,
    A_WINS,
    ACT_ADD,
    ACT_CLOSE,
    ACT_OPEN,
    ACT_REDUCE,
    FL_ACTION,
    FL_ADX,
    FL_ATR,
    FL_BALANCE,
    FL_CONF,
    FL_DECISION_PRICE,
    FL_FEE,
    FL_NOTIONAL,
    FL_PNL,
    FL_PRICE,
    FL_REASON,
    FL_RSI,
    FL_SIDE,
    FL_SIZE,
    FL_SYM,
    FL_T,
    M_FINAL_BALANCE,
    M_MAX_DD,
    M_NFILLS,
    M_PROFIT_FACTOR,
    M_SHARPE,
    M_SORTINO,
    M_TOTAL_FEES,
    M_TOTAL_FUNDING,
    M_TOTAL_PNL,
    M_TOTAL_TRADES,
    M_WIN_RATE,
    NACCT,
    NPOS,
    POS_ADDS,
    POS_BASE_MARGIN,
    POS_CONF,
    POS_ENTRY,
    POS_ENTRY_ATR,
    POS_ENTRY_REASON,
    POS_FIRST_ENTRY,
    POS_LAST_ADD_T,
    POS_LAST_CLOSE,
    POS_LAST_EXIT_T,
    POS_LEVERAGE,
    POS_MARGIN,
    POS_MAX_SIZE,
    POS_OPEN_T,
    POS_SIDE,
    POS_SIZE,
    POS_STOP,
    POS_STOP_REASON,
    POS_TP1_DONE,
    POS_TP_MULT,
    POS_TRADE_FEES,
    POS_TRADE_FUNDING,
    POS_TRADE_PNL,
    R_BREAKEVEN_STOP,
    R_END_OF_DATA,
    R_PYRAMID,
    R_RSI_OVEREXTENSION,
    R_SIGNAL,
    R_STOP_LOSS,
    R_TAKE_PROFIT,
    R_TAKE_PROFIT_PARTIAL,
    R_TRAILING_STOP,
    R_TREND_FLIP,
    T_ADDS,
    T_CONF,
    T_ENTRY_PRICE,
    T_ENTRY_REASON,
    T_ENTRY_T,
    T_EXIT_PRICE,
    T_EXIT_REASON,
    T_EXIT_T,
    T_FEES,
    T_FUNDING,
    T_GROSS_PNL,
    T_NOTIONAL,
    T_PNL,
    T_SIDE,
    T_SIZE,
    T_SYM,
)
from strategy.params import (
    P_ADD_COOLDOWN_MINUTES,
    P_ADD_FRACTION_OF_BASE_MARGIN,
    P_ADD_MIN_CONFIDENCE,
    P_ADD_MIN_PROFIT_ATR,
    P_ADX_RISING_SATURATION,
    P_ADX_STRONG_GT,
    P_ADX_WEAK_LT,
    P_ALLOCATION_PCT,
    P_BLOCK_LONG_IF_K_GT,
    P_BLOCK_SHORT_IF_K_LT,
    P_BREAKEVEN_BUFFER_ATR,
    P_BREAKEVEN_START_ATR,
    P_BTC_ADX_OVERRIDE,
    P_BUMP_TO_MIN_NOTIONAL,
    P_CONFIDENCE_MULT_HIGH,
    P_CONFIDENCE_MULT_LOW,
    P_CONFIDENCE_MULT_MEDIUM,
    P_ENABLE_BREAKEVEN_STOP,
    P_ENABLE_DYNAMIC_LEVERAGE,
    P_ENABLE_DYNAMIC_SIZING,
    P_ENABLE_EXTENSION_FILTER,
    P_ENABLE_PARTIAL_TP,
    P_ENABLE_PYRAMIDING,
    P_ENABLE_RANGING_FILTER,
    P_ENABLE_RSI_OVEREXTENSION_EXIT,
    P_ENTRY_MIN_CONFIDENCE,
    P_HIGH_CONF_VOLUME_MULT,
    P_LEVERAGE,
    P_LEVERAGE_HIGH,
    P_LEVERAGE_LOW,
    P_LEVERAGE_MEDIUM,
    P_MACD_HIST_ENTRY_MODE,
    P_MAX_ADDS_PER_SYMBOL,
    P_MAX_DIST_EMA_FAST,
    P_MAX_OPEN_POSITIONS,
    P_MAX_TOTAL_MARGIN_PCT,
    P_MIN_ADX,
    P_MIN_ATR_PCT,
    P_MIN_NOTIONAL_USD,
    P_RANGING_ADX_BELOW,
    P_RANGING_BB_WIDTH_RATIO_BELOW,
    P_RANGING_MIN_SIGNALS,
    P_RANGING_RSI_HIGH,
    P_RANGING_RSI_LOW,
    P_REENTRY_COOLDOWN_MINUTES,
    P_REQUIRE_ADX_RISING,
    P_REQUIRE_BTC_ALIGNMENT,
    P_REQUIRE_MACRO_ALIGNMENT,
    P_REQUIRE_VOLUME_CONFIRMATION,
    P_REVERSE_ENTRY_SIGNAL,
    P_RSI_EXIT_LB_LO_PROFIT,
    P_RSI_EXIT_UB_LO_PROFIT,
    P_RSI_LONG_STRONG,
    P_RSI_LONG_WEAK,
    P_RSI_SHORT_STRONG,
    P_RSI_SHORT_WEAK,
    P_SIMULATE_FUNDING,
    P_SIZE_MULTIPLIER,
    P_SL_ATR_MULT,
    P_SLIPPAGE_BPS,
    P_TAKER_FEE_BPS,
    P_TP_ATR_MULT,
    P_TP_MULT_STRONG,
    P_TP_MULT_WEAK,
    P_TP_PARTIAL_ATR_MULT,
    P_TP_PARTIAL_PCT,
    P_TRAILING_DISTANCE_ATR,
    P_TRAILING_START_ATR,
    P_USE_STOCH_RSI_FILTER,
)

MS_PER_MINUTE = 60_000.0
MS_PER_DAY = 86_400_000
NEVER = -1.0e18  # "no previous exit/add" time
PF_NO_LOSS = 999.0  # profit factor reported when there is profit and no loss
BPS = 1.0e-4
SQRT_365 = math.sqrt(365.0)

Kernel = namedtuple(
    "Kernel",
    "init_state step_bar step_bar_sub finish write_metrics entry_signal features_ready close_position "
    "open_position add_to_position mark_equity drop_position resize_position",
)


def record_fill(
    fills,
    acct,
    t,
    s,
    action,
    side,
    price,
    decision_price,
    size,
    notional,
    fee,
    pnl,
    reason,
    conf,
    atr,
    adx,
    rsi,
):
    k = int(acct[A_NFILLS])
    if k < fills.shape[0]:
        fills[k, FL_T] = t
        fills[k, FL_SYM] = s
        fills[k, FL_ACTION] = action
        fills[k, FL_SIDE] = side
        fills[k, FL_PRICE] = price
        fills[k, FL_DECISION_PRICE] = decision_price
        fills[k, FL_SIZE] = size
        fills[k, FL_NOTIONAL] = notional
        fills[k, FL_FEE] = fee
        fills[k, FL_PNL] = pnl
        fills[k, FL_REASON] = reason
        fills[k, FL_CONF] = conf
        fills[k, FL_BALANCE] = acct[A_BALANCE]
        fills[k, FL_ATR] = atr
        fills[k, FL_ADX] = adx
        fills[k, FL_RSI] = rsi
    acct[A_NFILLS] = k + 1


def record_trade(trades, acct, pos, s, t, exit_price, exit_reason, net):
    k = int(acct[A_TRADES])
    if k < trades.shape[0]:
        trades[k, T_SYM] = s
        trades[k, T_SIDE] = pos[s, POS_SIDE]
        trades[k, T_ENTRY_T] = pos[s, POS_OPEN_T]
        trades[k, T_EXIT_T] = t
        trades[k, T_ENTRY_PRICE] = pos[s, POS_ENTRY]
        trades[k, T_EXIT_PRICE] = exit_price
        trades[k, T_SIZE] = pos[s, POS_MAX_SIZE]
        trades[k, T_NOTIONAL] = pos[s, POS_MAX_SIZE] * pos[s, POS_ENTRY]
        trades[k, T_PNL] = net
        trades[k, T_FEES] = pos[s, POS_TRADE_FEES]
        trades[k, T_FUNDING] = pos[s, POS_TRADE_FUNDING]
        trades[k, T_ENTRY_REASON] = pos[s, POS_ENTRY_REASON]
        trades[k, T_EXIT_REASON] = exit_reason
        trades[k, T_CONF] = pos[s, POS_CONF]
        trades[k, T_ADDS] = pos[s, POS_ADDS]
        trades[k, T_GROSS_PNL] = pos[s, POS_TRADE_PNL]


def reset_position(pos, s, t):
    for j in range(NPOS):
        if j != POS_LAST_CLOSE:
            pos[s, j] = 0.0
    pos[s, POS_LAST_EXIT_T] = t
    pos[s, POS_LAST_ADD_T] = NEVER


def drop_position(pos, acct, s):
    """Forget an open position with no fill (the exchange holds none): its margin and its place
    under max_open_positions are released, no trade is booked, the reentry clock is unchanged."""
    if pos[s, POS_SIDE] == 0.0:
        return
    acct[A_MARGIN_USED] -= pos[s, POS_MARGIN]
    acct[A_OPEN_COUNT] -= 1.0
    for j in range(NPOS):
        if j != POS_LAST_CLOSE and j != POS_LAST_EXIT_T:
            pos[s, j] = 0.0
    pos[s, POS_LAST_ADD_T] = NEVER


def resize_position(pos, acct, s, size, entry, opened_now):
    """Set an open position to the size and average entry the runtime observed (real fills, the
    exchange's position). Its margin follows the entry notional at the same leverage (the opening
    margin too when the position opened on this bar). Returns the change of its unrealised pnl
    at the last close (0 for a flat row or before any close)."""
    if pos[s, POS_SIDE] == 0.0:
        return 0.0
    old_size = pos[s, POS_SIZE]
    old_entry = pos[s, POS_ENTRY]
    last = pos[s, POS_LAST_CLOSE]
    side = pos[s, POS_SIDE]
    old_notional = old_size * old_entry
    new_notional = size * entry
    if old_notional > 0.0:
        ratio = new_notional / old_notional
        acct[A_MARGIN_USED] += pos[s, POS_MARGIN] * (ratio - 1.0)
        pos[s, POS_MARGIN] *= ratio
        if opened_now:
            pos[s, POS_BASE_MARGIN] *= ratio
    if opened_now:
        pos[s, POS_FIRST_ENTRY] = entry
    if pos[s, POS_MAX_SIZE] <= old_size + 1e-12:
        pos[s, POS_MAX_SIZE] = size
    pos[s, POS_SIZE] = size
    pos[s, POS_ENTRY] = entry
    if not math.isfinite(last):
        return 0.0
    return side * (size * (last - entry) - old_size * (last - old_entry))


def close_position(pos, acct, params, s, t, decision_price, fraction, reason, atr, adx, rsi, fills, trades):
    """Sell (long) or buy back (short) `fraction` of the position; fraction >= 1 closes it."""
    side = pos[s, POS_SIDE]
    full = fraction >= 1.0
    size_before = pos[s, POS_SIZE]
    size = size_before if full else size_before * fraction
    if not full and not size > 0.0:
        return  # a zero-size reduce is no order: nothing to fill or record
    price = decision_price * (1.0 - side * params[s, P_SLIPPAGE_BPS] * BPS)
    notional = price * size
    fee = notional * params[s, P_TAKER_FEE_BPS] * BPS
    pnl = (price - pos[s, POS_ENTRY]) * size * side
    acct[A_BALANCE] += pnl - fee
    acct[A_FEES] += fee
    acct[A_REALIZED] += pnl
    pos[s, POS_TRADE_PNL] += pnl
    pos[s, POS_TRADE_FEES] += fee
    action = ACT_CLOSE if full else ACT_REDUCE
    record_fill(
        fills,
        acct,
        t,
        s,
        action,
        side,
        price,
        decision_price,
        size,
        notional,
        fee,
        pnl,
        reason,
        pos[s, POS_CONF],
        atr,
        adx,
        rsi,
    )
    if full:
        net = pos[s, POS_TRADE_PNL] - pos[s, POS_TRADE_FEES] - pos[s, POS_TRADE_FUNDING]
        if net > 0.0:
            acct[A_WINS] += 1.0
            acct[A_GROSS_PROFIT] += net
        else:
            acct[A_GROSS_LOSS] -= net
        record_trade(trades, acct, pos, s, t, price, reason, net)
        acct[A_TRADES] += 1.0
        acct[A_MARGIN_USED] -= pos[s, POS_MARGIN]
        acct[A_OPEN_COUNT] -= 1.0
        reset_position(pos, s, t)
    else:
        released = pos[s, POS_MARGIN] * fraction
        pos[s, POS_MARGIN] -= released
        acct[A_MARGIN_USED] -= released
        pos[s, POS_SIZE] = size_before - size


def confidence_mult(params, s, conf):
    if params[s, P_ENABLE_DYNAMIC_SIZING] == 0.0:
        return 1.0
    if conf >= 2.0:
        return params[s, P_CONFIDENCE_MULT_HIGH]
    if conf >= 1.0:
        return params[s, P_CONFIDENCE_MULT_MEDIUM]
    return params[s, P_CONFIDENCE_MULT_LOW]


def entry_leverage(params, s, conf):
    if params[s, P_ENABLE_DYNAMIC_LEVERAGE] == 0.0:
        return params[s, P_LEVERAGE]
    if conf >= 2.0:
        return params[s, P_LEVERAGE_HIGH]
    if conf >= 1.0:
        return params[s, P_LEVERAGE_MEDIUM]
    return params[s, P_LEVERAGE_LOW]


def sized_notional(params, s, margin, lev):
    """Notional for a margin, after the minimum-notional rule; 0 means skip.

    A margin of 0 (size_multiplier 0, allocation_pct 0, add_fraction_of_base_margin 0) means "no
    new risk": it is never bumped up to the minimum notional."""
    if not margin > 0.0:
        return 0.0
    notional = margin * lev
    min_notional = params[s, P_MIN_NOTIONAL_USD]
    if notional < min_notional:
        if params[s, P_BUMP_TO_MIN_NOTIONAL] == 0.0:
            return 0.0
        notional = min_notional
    return notional


def take_profit_mult(params, s, adx):
    if adx > params[s, P_ADX_STRONG_GT]:
        return params[s, P_TP_MULT_STRONG]
    if adx < params[s, P_ADX_WEAK_LT]:
        return params[s, P_TP_MULT_WEAK]
    return params[s, P_TP_ATR_MULT]


def open_position(pos, acct, params, feat, s, t, side, conf, equity, fills):
    """Open a new position at the close; returns False when sizing or margin caps refuse it."""
    close = feat[s, F_CLOSE]
    atr = feat[s, F_ATR]
    margin = (
        equity * params[s, P_ALLOCATION_PCT] * confidence_mult(params, s, conf) * params[s, P_SIZE_MULTIPLIER]
    )
    lev = entry_leverage(params, s, conf)
    notional = sized_notional(params, s, margin, lev)
    if notional <= 0.0:
        return False
    margin = notional / lev
    if acct[A_MARGIN_USED] + margin > params[s, P_MAX_TOTAL_MARGIN_PCT] * equity:
        return False
    size = notional / close
    price = close * (1.0 + side * params[s, P_SLIPPAGE_BPS] * BPS)
    fill_notional = price * size
    fee = fill_notional * params[s, P_TAKER_FEE_BPS] * BPS
    acct[A_BALANCE] -= fee
    acct[A_FEES] += fee
    acct[A_MARGIN_USED] += margin
    acct[A_OPEN_COUNT] += 1.0
    pos[s, POS_SIDE] = side
    pos[s, POS_SIZE] = size
    pos[s, POS_ENTRY] = price
    pos[s, POS_FIRST_ENTRY] = price
    pos[s, POS_ENTRY_ATR] = atr
    pos[s, POS_STOP] = price - side * params[s, P_SL_ATR_MULT] * atr
    pos[s, POS_STOP_REASON] = R_STOP_LOSS
    pos[s, POS_TP1_DONE] = 0.0
    pos[s, POS_ADDS] = 0.0
    pos[s, POS_OPEN_T] = t
    pos[s, POS_LAST_ADD_T] = t
    pos[s, POS_MARGIN] = margin
    pos[s, POS_BASE_MARGIN] = margin
    pos[s, POS_LEVERAGE] = lev
    pos[s, POS_CONF] = conf
    pos[s, POS_TP_MULT] = take_profit_mult(params, s, feat[s, F_ADX])
    pos[s, POS_TRADE_PNL] = 0.0
    pos[s, POS_TRADE_FEES] = fee
    pos[s, POS_TRADE_FUNDING] = 0.0
    pos[s, POS_MAX_SIZE] = size
    pos[s, POS_ENTRY_REASON] = R_SIGNAL
    record_fill(
        fills,
        acct,
        t,
        s,
        ACT_OPEN,
        side,
        price,
        close,
        size,
        fill_notional,
        fee,
        0.0,
        R_SIGNAL,
        conf,
        atr,
        feat[s, F_ADX],
        feat[s, F_RSI],
    )
    return True


def add_to_position(pos, acct, params, feat, s, t, conf, equity, fills):
    """Pyramid into an open position when it is far enough in profit; False when refused."""
    if params[s, P_ENABLE_PYRAMIDING] == 0.0:
        return False
    if pos[s, POS_ADDS] >= params[s, P_MAX_ADDS_PER_SYMBOL]:
        return False
    if conf < params[s, P_ADD_MIN_CONFIDENCE]:
        return False
    if t - pos[s, POS_LAST_ADD_T] < params[s, P_ADD_COOLDOWN_MINUTES] * MS_PER_MINUTE:
        return False
    side = pos[s, POS_SIDE]
    close = feat[s, F_CLOSE]
    if (close - pos[s, POS_ENTRY]) * side < params[s, P_ADD_MIN_PROFIT_ATR] * pos[s, POS_ENTRY_ATR]:
        return False
    lev = pos[s, POS_LEVERAGE]
    margin = pos[s, POS_BASE_MARGIN] * params[s, P_ADD_FRACTION_OF_BASE_MARGIN]
    notional = sized_notional(params, s, margin, lev)
    if notional <= 0.0:
        return False
    margin = notional / lev
    if acct[A_MARGIN_USED] + margin > params[s, P_MAX_TOTAL_MARGIN_PCT] * equity:
        return False
    size = notional / close
    price = close * (1.0 + side * params[s, P_SLIPPAGE_BPS] * BPS)
    fill_notional = price * size
    fee = fill_notional * params[s, P_TAKER_FEE_BPS] * BPS
    acct[A_BALANCE] -= fee
    acct[A_FEES] += fee
    acct[A_MARGIN_USED] += margin
    new_size = pos[s, POS_SIZE] + size
    pos[s, POS_ENTRY] = (pos[s, POS_ENTRY] * pos[s, POS_SIZE] + price * size) / new_size
    pos[s, POS_SIZE] = new_size
    if new_size > pos[s, POS_MAX_SIZE]:
        pos[s, POS_MAX_SIZE] = new_size
    pos[s, POS_MARGIN] += margin
    pos[s, POS_ADDS] += 1.0
    pos[s, POS_LAST_ADD_T] = t
    pos[s, POS_TRADE_FEES] += fee
    record_fill(
        fills,
        acct,
        t,
        s,
        ACT_ADD,
        side,
        price,
        close,
        size,
        fill_notional,
        fee,
        0.0,
        R_PYRAMID,
        conf,
        feat[s, F_ATR],
        feat[s, F_ADX],
        feat[s, F_RSI],
    )
    return True


def charge_funding(pos, acct, params, s, rate, price):
    """Longs pay a positive rate, shorts receive it (notional at the bar's open)."""
    if params[s, P_SIMULATE_FUNDING] == 0.0 or rate == 0.0:
        return
    payment = pos[s, POS_SIDE] * pos[s, POS_SIZE] * price * rate
    acct[A_BALANCE] -= payment
    acct[A_FUNDING] += payment
    pos[s, POS_TRADE_FUNDING] += payment


def level_hit(side, o, h, lo, level, is_stop):
    """Fill price when the bar reaches `level` (the open if it gapped through), else NaN."""
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


def range_exits(pos, acct, params, s, t, o, h, lo, atr, adx, rsi, fills, trades):
    """Stop-loss, then partial and full take-profit on one bar's range. True if closed."""
    side = pos[s, POS_SIDE]
    px = level_hit(side, o, h, lo, pos[s, POS_STOP], True)
    if not math.isnan(px):
        close_position(
            pos, acct, params, s, t, px, 1.0, pos[s, POS_STOP_REASON], atr, adx, rsi, fills, trades
        )
        return True
    entry = pos[s, POS_ENTRY]
    entry_atr = pos[s, POS_ENTRY_ATR]
    if params[s, P_ENABLE_PARTIAL_TP] != 0.0 and pos[s, POS_TP1_DONE] == 0.0:
        level = entry + side * params[s, P_TP_PARTIAL_ATR_MULT] * entry_atr
        px = level_hit(side, o, h, lo, level, False)
        if not math.isnan(px):
            frac = params[s, P_TP_PARTIAL_PCT]
            pos[s, POS_TP1_DONE] = 1.0
            close_position(
                pos, acct, params, s, t, px, frac, R_TAKE_PROFIT_PARTIAL, atr, adx, rsi, fills, trades
            )
            if pos[s, POS_SIDE] == 0.0:
                return True
    level = entry + side * pos[s, POS_TP_MULT] * entry_atr
    px = level_hit(side, o, h, lo, level, False)
    if not math.isnan(px):
        close_position(pos, acct, params, s, t, px, 1.0, R_TAKE_PROFIT, atr, adx, rsi, fills, trades)
        return True
    return False


def close_exits(pos, acct, params, feat, s, t, fills, trades):
    """On the close: tighten the stop (trailing, break-even), then the smart exits."""
    side = pos[s, POS_SIDE]
    close = feat[s, F_CLOSE]
    entry = pos[s, POS_ENTRY]
    entry_atr = pos[s, POS_ENTRY_ATR]
    profit = (close - entry) * side
    if profit >= params[s, P_TRAILING_START_ATR] * entry_atr:
        trail = close - side * params[s, P_TRAILING_DISTANCE_ATR] * entry_atr
        if (trail - pos[s, POS_STOP]) * side > 0.0:
            pos[s, POS_STOP] = trail
            pos[s, POS_STOP_REASON] = R_TRAILING_STOP
    if params[s, P_ENABLE_BREAKEVEN_STOP] != 0.0 and profit >= params[s, P_BREAKEVEN_START_ATR] * entry_atr:
        be = entry + side * params[s, P_BREAKEVEN_BUFFER_ATR] * entry_atr
        if (be - pos[s, POS_STOP]) * side > 0.0:
            pos[s, POS_STOP] = be
            pos[s, POS_STOP_REASON] = R_BREAKEVEN_STOP
    fast = feat[s, F_EMA_FAST]
    slow = feat[s, F_EMA_SLOW]
    reason = 0.0
    if (side > 0.0 and fast < slow) or (side < 0.0 and fast > slow):
        reason = R_TREND_FLIP
    elif params[s, P_ENABLE_RSI_OVEREXTENSION_EXIT] != 0.0:
        rsi = feat[s, F_RSI]
        if (side > 0.0 and rsi > params[s, P_RSI_EXIT_UB_LO_PROFIT]) or (
            side < 0.0 and rsi < params[s, P_RSI_EXIT_LB_LO_PROFIT]
        ):
            reason = R_RSI_OVEREXTENSION
    if reason != 0.0:
        close_position(
            pos,
            acct,
            params,
            s,
            t,
            close,
            1.0,
            reason,
            feat[s, F_ATR],
            feat[s, F_ADX],
            feat[s, F_RSI],
            fills,
            trades,
        )


def features_ready(feat, params, s):
    """The indicators this config's entry rules read are all warmed up."""
    for f in (F_EMA_FAST, F_EMA_SLOW, F_ADX, F_ATR, F_RSI, F_MACD_HIST, F_VOL_SMA, F_VOL_TREND):
        if math.isnan(feat[s, f]):
            return False
    if params[s, P_REQUIRE_MACRO_ALIGNMENT] != 0.0 and math.isnan(feat[s, F_EMA_MACRO]):
        return False
    if params[s, P_REQUIRE_ADX_RISING] != 0.0 and math.isnan(feat[s, F_ADX_SLOPE]):
        return False
    if params[s, P_MACD_HIST_ENTRY_MODE] == 0.0 and math.isnan(feat[s, F_MACD_HIST_PREV]):
        return False
    if params[s, P_USE_STOCH_RSI_FILTER] != 0.0 and math.isnan(feat[s, F_STOCH_K]):
        return False
    if params[s, P_ENABLE_RANGING_FILTER] != 0.0 and (
        math.isnan(feat[s, F_BB_WIDTH]) or math.isnan(feat[s, F_BB_WIDTH_AVG])
    ):
        return False
    return True


def btc_allows(feat, valid, params, s, btc_idx, side):
    """BTC's EMA trend must agree unless its ADX is above the override (when BTC has a bar)."""
    if params[s, P_REQUIRE_BTC_ALIGNMENT] == 0.0 or btc_idx < 0 or btc_idx == s:
        return True
    if valid[btc_idx] == 0:
        return True
    b_fast = feat[btc_idx, F_EMA_FAST]
    b_slow = feat[btc_idx, F_EMA_SLOW]
    b_adx = feat[btc_idx, F_ADX]
    if math.isnan(b_fast) or math.isnan(b_slow) or math.isnan(b_adx):
        return True
    if b_adx > params[s, P_BTC_ADX_OVERRIDE]:
        return True
    if side > 0.0:
        return b_fast > b_slow
    return b_fast < b_slow


def entry_signal(feat, valid, params, s, btc_idx):
    """Signed signal: 0 = none, else side * (confidence + 1) (side +1 long, -1 short)."""
    close = feat[s, F_CLOSE]
    fast = feat[s, F_EMA_FAST]
    slow = feat[s, F_EMA_SLOW]
    adx = feat[s, F_ADX]
    rsi = feat[s, F_RSI]
    if fast > slow:
        side = 1.0
    elif fast < slow:
        side = -1.0
    else:
        return 0.0
    if params[s, P_REQUIRE_MACRO_ALIGNMENT] != 0.0 and (close - feat[s, F_EMA_MACRO]) * side <= 0.0:
        return 0.0
    if adx < params[s, P_MIN_ADX]:
        return 0.0
    if params[s, P_REQUIRE_ADX_RISING] != 0.0 and adx < params[s, P_ADX_RISING_SATURATION]:
        if feat[s, F_ADX_SLOPE] <= 0.0:
            return 0.0
    if params[s, P_ENABLE_EXTENSION_FILTER] != 0.0:
        if abs(close - fast) / fast > params[s, P_MAX_DIST_EMA_FAST]:
            return 0.0
    mode = params[s, P_MACD_HIST_ENTRY_MODE]
    hist = feat[s, F_MACD_HIST]
    if mode == 0.0 and (hist - feat[s, F_MACD_HIST_PREV]) * side <= 0.0:
        return 0.0
    if mode == 1.0 and hist * side <= 0.0:
        return 0.0
    if params[s, P_USE_STOCH_RSI_FILTER] != 0.0:
        k = feat[s, F_STOCH_K]
        if side > 0.0 and k > params[s, P_BLOCK_LONG_IF_K_GT]:
            return 0.0
        if side < 0.0 and k < params[s, P_BLOCK_SHORT_IF_K_LT]:
            return 0.0
    if params[s, P_ENABLE_RANGING_FILTER] != 0.0:
        votes = 0.0
        if adx < params[s, P_RANGING_ADX_BELOW]:
            votes += 1.0
        if feat[s, F_BB_WIDTH] < params[s, P_RANGING_BB_WIDTH_RATIO_BELOW] * feat[s, F_BB_WIDTH_AVG]:
            votes += 1.0
        if params[s, P_RANGING_RSI_LOW] <= rsi <= params[s, P_RANGING_RSI_HIGH]:
            votes += 1.0
        if votes >= params[s, P_RANGING_MIN_SIGNALS]:
            return 0.0
    strong = adx > params[s, P_ADX_STRONG_GT]
    if side > 0.0:
        rsi_min = params[s, P_RSI_LONG_STRONG] if strong else params[s, P_RSI_LONG_WEAK]
        if rsi <= rsi_min:
            return 0.0
    else:
        rsi_max = params[s, P_RSI_SHORT_STRONG] if strong else params[s, P_RSI_SHORT_WEAK]
        if rsi >= rsi_max:
            return 0.0
    if not btc_allows(feat, valid, params, s, btc_idx, side):
        return 0.0
    if feat[s, F_ATR] / close < params[s, P_MIN_ATR_PCT]:
        return 0.0
    volume = feat[s, F_VOLUME]
    vol_sma = feat[s, F_VOL_SMA]
    vol_confirms = volume > vol_sma and feat[s, F_VOL_TREND] > 0.0
    if params[s, P_REQUIRE_VOLUME_CONFIRMATION] != 0.0 and not vol_confirms:
        return 0.0
    if strong and volume > params[s, P_HIGH_CONF_VOLUME_MULT] * vol_sma:
        conf = 2.0
    elif adx > params[s, P_ADX_WEAK_LT] or vol_confirms:
        conf = 1.0
    else:
        conf = 0.0
    if conf < params[s, P_ENTRY_MIN_CONFIDENCE]:
        return 0.0
    if params[s, P_REVERSE_ENTRY_SIGNAL] != 0.0:
        side = -side
    return side * (conf + 1.0)


def mark_equity(pos, acct):
    nsym = pos.shape[0]
    equity = acct[A_BALANCE]
    for s in range(nsym):
        if pos[s, POS_SIDE] != 0.0:
            equity += (pos[s, POS_LAST_CLOSE] - pos[s, POS_ENTRY]) * pos[s, POS_SIZE] * pos[s, POS_SIDE]
    return equity


def note_equity(acct, equity):
    acct[A_EQUITY] = equity
    if equity > acct[A_PEAK]:
        acct[A_PEAK] = equity
    if acct[A_PEAK] > 0.0:
        dd = (acct[A_PEAK] - equity) / acct[A_PEAK]
        if dd > acct[A_MAX_DD]:
            acct[A_MAX_DD] = dd


def note_daily_return(acct, equity):
    """Welford update with one daily return (equity at a UTC day's last bar close)."""
    prev = acct[A_DAY_EQ]
    r = equity / prev - 1.0 if prev > 0.0 else 0.0
    n = acct[A_RET_N] + 1.0
    delta = r - acct[A_RET_MEAN]
    acct[A_RET_MEAN] += delta / n
    acct[A_RET_M2] += delta * (r - acct[A_RET_MEAN])
    acct[A_RET_N] = n
    if r < 0.0:
        acct[A_RET_DOWN_SQ] += r * r
    acct[A_DAY_EQ] = equity


def init_state(pos, acct, initial_balance):
    for s in range(pos.shape[0]):
        for j in range(NPOS):
            pos[s, j] = 0.0
        pos[s, POS_LAST_EXIT_T] = NEVER
        pos[s, POS_LAST_ADD_T] = NEVER
        pos[s, POS_LAST_CLOSE] = math.nan
    for j in range(NACCT):
        acct[j] = 0.0
    acct[A_BALANCE] = initial_balance
    acct[A_EQUITY] = initial_balance
    acct[A_PEAK] = initial_balance
    acct[A_INITIAL] = initial_balance
    acct[A_DAY] = -1.0
    acct[A_DAY_EQ] = initial_balance


def rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx):
    """Collect entry candidates and insertion-sort them by (-score, symbol); returns count."""
    n = 0
    for s in range(pos.shape[0]):
        if valid[s] == 0 or prev_valid[s] == 0:
            continue
        if not features_ready(feat, params, s):
            continue
        sig = entry_signal(feat, valid, params, s, btc_idx)
        if sig == 0.0:
            continue
        conf = abs(sig) - 1.0
        side = 1.0 if sig > 0.0 else -1.0
        if pos[s, POS_SIDE] != 0.0 and pos[s, POS_SIDE] != side:
            continue
        score = conf * 100.0 + feat[s, F_ADX]
        rank_score[s] = sig
        j = n
        while j > 0:
            other = rank_idx[j - 1]
            o_score = (abs(rank_score[other]) - 1.0) * 100.0 + feat[other, F_ADX]
            if o_score >= score:
                break
            rank_idx[j] = other
            j -= 1
        rank_idx[j] = s
        n += 1
    return n


def take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, equity, fills):
    for i in range(n):
        s = rank_idx[i]
        sig = rank_score[s]
        conf = abs(sig) - 1.0
        side = 1.0 if sig > 0.0 else -1.0
        if pos[s, POS_SIDE] != 0.0:
            add_to_position(pos, acct, params, feat, s, t, conf, equity, fills)
            continue
        if acct[A_OPEN_COUNT] >= params[s, P_MAX_OPEN_POSITIONS]:
            continue
        if t - pos[s, POS_LAST_EXIT_T] < params[s, P_REENTRY_COOLDOWN_MINUTES] * MS_PER_MINUTE:
            continue
        open_position(pos, acct, params, feat, s, t, side, conf, equity, fills)


def roll_day(acct, bar_open_ms):
    day = float(bar_open_ms // MS_PER_DAY)
    if day != acct[A_DAY]:
        if acct[A_DAY] >= 0.0:
            note_daily_return(acct, acct[A_EQUITY])
        acct[A_DAY] = day


def step_bar(
    bar_open_ms,
    bar_close_ms,
    feat,
    valid,
    prev_valid,
    funding_row,
    params,
    btc_idx,
    pos,
    acct,
    rank_score,
    rank_idx,
    fills,
    trades,
):
    """Process one closed bar for every symbol (see the module docstring for the order)."""
    step_bar_sub(
        bar_open_ms,
        bar_close_ms,
        feat,
        valid,
        prev_valid,
        funding_row,
        params,
        btc_idx,
        pos,
        acct,
        rank_score,
        rank_idx,
        fills,
        trades,
        feat,
        feat,
        feat,
        feat,
        funding_row,
        0,
    )


def sub_bars_complete(sub_valid, s, nsub):
    """Finer exits only when every exit bar of the hour is there: a missing one could hide the
    extreme that hit a stop, so an incomplete set falls back to the main bar's range."""
    for j in range(nsub):
        if sub_valid[s, j] == 0:
            return False
    return True


def sub_bar_exits(
    pos, acct, params, feat, s, sub_o, sub_h, sub_l, sub_valid, sub_close_ms, nsub, fills, trades
):
    """Range exits on each finer exit-interval bar inside the main bar, in time order. True if closed."""
    for j in range(nsub):
        if sub_valid[s, j] == 0:
            continue
        closed = range_exits(
            pos,
            acct,
            params,
            s,
            float(sub_close_ms[j]),
            sub_o[s, j],
            sub_h[s, j],
            sub_l[s, j],
            feat[s, F_ATR],
            feat[s, F_ADX],
            feat[s, F_RSI],
            fills,
            trades,
        )
        if closed:
            return True
    return False


def step_bar_sub(
    bar_open_ms,
    bar_close_ms,
    feat,
    valid,
    prev_valid,
    funding_row,
    params,
    btc_idx,
    pos,
    acct,
    rank_score,
    rank_idx,
    fills,
    trades,
    sub_o,
    sub_h,
    sub_l,
    sub_valid,
    sub_close_ms,
    nsub,
):
    """`step_bar` with exits checked on `nsub` finer bars (sub_*[s, j], j in time order) instead of
    the main bar's range; nsub == 0, or a symbol missing any of its finer bars, uses the main bar.
    Entries and on-close rules stay on the main bar."""
    t = float(bar_close_ms)
    nsym = pos.shape[0]
    roll_day(acct, bar_open_ms)
    for s in range(nsym):
        if pos[s, POS_SIDE] != 0.0 and valid[s] == 0:
            # funding is owed whether or not the symbol printed a candle: mark at the last close
            charge_funding(pos, acct, params, s, funding_row[s], pos[s, POS_LAST_CLOSE])
        if valid[s] == 0:
            continue
        if pos[s, POS_SIDE] != 0.0:
            charge_funding(pos, acct, params, s, funding_row[s], feat[s, F_OPEN])
            if nsub > 0 and sub_bars_complete(sub_valid, s, nsub):
                closed = sub_bar_exits(
                    pos,
                    acct,
                    params,
                    feat,
                    s,
                    sub_o,
                    sub_h,
                    sub_l,
                    sub_valid,
                    sub_close_ms,
                    nsub,
                    fills,
                    trades,
                )
            else:
                closed = range_exits(
                    pos,
                    acct,
                    params,
                    s,
                    t,
                    feat[s, F_OPEN],
                    feat[s, F_HIGH],
                    feat[s, F_LOW],
                    feat[s, F_ATR],
                    feat[s, F_ADX],
                    feat[s, F_RSI],
                    fills,
                    trades,
                )
            if not closed:
                close_exits(pos, acct, params, feat, s, t, fills, trades)
        pos[s, POS_LAST_CLOSE] = feat[s, F_CLOSE]
    equity = mark_equity(pos, acct)
    n = rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx)
    take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, equity, fills)
    note_equity(acct, mark_equity(pos, acct))
    acct[A_LAST_T] = t


def finish(pos, acct, fills, trades, params):
    """End of data: close what is open at its last close, then book the final day."""
    t = acct[A_LAST_T]
    for s in range(pos.shape[0]):
        if pos[s, POS_SIDE] != 0.0:
            close_position(
                pos,
                acct,
                params,
                s,
                t,
                pos[s, POS_LAST_CLOSE],
                1.0,
                R_END_OF_DATA,
                math.nan,
                math.nan,
                math.nan,
                fills,
                trades,
            )
    note_equity(acct, acct[A_BALANCE])
    if acct[A_DAY] >= 0.0:
        note_daily_return(acct, acct[A_EQUITY])


def write_metrics(acct, out):
    initial = acct[A_INITIAL]
    trades = acct[A_TRADES]
    out[M_TOTAL_PNL] = acct[A_BALANCE] - initial
    out[M_TOTAL_TRADES] = trades
    out[M_WIN_RATE] = acct[A_WINS] / trades if trades > 0.0 else 0.0
    if acct[A_GROSS_LOSS] > 0.0:
        out[M_PROFIT_FACTOR] = acct[A_GROSS_PROFIT] / acct[A_GROSS_LOSS]
    elif acct[A_GROSS_PROFIT] > 0.0:
        out[M_PROFIT_FACTOR] = PF_NO_LOSS
    else:
        out[M_PROFIT_FACTOR] = 0.0
    out[M_MAX_DD] = acct[A_MAX_DD]
    n = acct[A_RET_N]
    mean = acct[A_RET_MEAN]
    sharpe = 0.0
    if n > 1.0:
        std = math.sqrt(acct[A_RET_M2] / (n - 1.0))
        if std > 0.0:
            sharpe = mean / std * SQRT_365
    out[M_SHARPE] = sharpe
    sortino = 0.0
    if n > 0.0:
        down = math.sqrt(acct[A_RET_DOWN_SQ] / n)
        if down > 0.0:
            sortino = mean / down * SQRT_365
        elif mean > 0.0:
            sortino = PF_NO_LOSS
    out[M_SORTINO] = sortino
    out[M_TOTAL_FEES] = acct[A_FEES]
    out[M_TOTAL_FUNDING] = acct[A_FUNDING]
    out[M_FINAL_BALANCE] = acct[A_BALANCE]
    out[M_NFILLS] = acct[A_NFILLS]


JIT_FUNCTIONS = (
    "record_fill",
    "record_trade",
    "reset_position",
    "drop_position",
    "resize_position",
    "close_position",
    "confidence_mult",
    "entry_leverage",
    "sized_notional",
    "take_profit_mult",
    "open_position",
    "add_to_position",
    "charge_funding",
    "level_hit",
    "range_exits",
    "close_exits",
    "features_ready",
    "btc_allows",
    "entry_signal",
    "mark_equity",
    "note_equity",
    "note_daily_return",
    "init_state",
    "rank_entries",
    "take_entries",
    "roll_day",
    "step_bar",
    "sub_bars_complete",
    "sub_bar_exits",
    "step_bar_sub",
    "finish",
    "write_metrics",
)


def make_kernel(jit) -> Kernel:
    """Compile every kernel function with ``jit``; their calls resolve to each other's compiled form.

    The functions are rebound as globals of a fresh namespace (not closures): numba keys the
    on-disk cache of a closure on its pickled free variables, which differ in every process, so
    closures over jitted helpers would recompile every time.
    """
    ns = dict(globals())
    for name in JIT_FUNCTIONS:
        f = globals()[name]
        ns[name] = jit(types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__))
    return Kernel(**{name: ns[name] for name in Kernel._fields})


def _build_cpu_kernel():
    import numba

    return make_kernel(numba.njit(cache=True))


KERNEL_CPU = _build_cpu_kernel()
