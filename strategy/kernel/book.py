"""The book: fills, fees, opening, adding, reducing and closing positions, funding.

Rules (config keys in brackets):
- Every order is a taker fill at the decision price moved against us by the slippage
  ([trade.slippage_bps] for opens and adds, [trade.exit_slippage_bps] for reduces and closes); its fee is [trade.taker_fee_bps] of the filled notional and leaves the
  balance at once. Opens and adds share one fill function (``taker_entry_fill``); reduces and
  closes fill in ``close_position``.
- An open commits its margin (notional / leverage) and takes a place under
  [trade.max_open_positions]; its stop starts [trade.sl_atr_mult] ATRs from the fill price and its
  take-profit multiple is fixed at entry (sizing.take_profit_mult). An add raises the size and
  moves the average entry; the ATR at entry, and so every stop and target distance, is kept.
- A close realises (price - entry) x size x side, books the round trip (net of fees and
  funding) as a win or a loss, releases its margin and its place; a reduce (partial take-profit)
  realises its fraction and releases that fraction of the margin.
- Funding [trade.simulate_funding]: at a bar's open a position pays side x size x price x rate
  (longs pay a positive rate, shorts receive it); the price is the bar's open, or the last close
  when the symbol has no bar (funding is owed either way).
- The runtime's own arithmetic (the exchange holds no position: ``drop_position``; it holds
  another size or fills at another price: ``resize_position``) goes through this module too, so
  the open-position count and the margin in use stay the sums over the open rows.
"""

from __future__ import annotations

import math

from strategy.features import F
from strategy.kernel.entries import entry_atr, signal_conf
from strategy.kernel.registry import BPS, MS_PER_HOUR, MS_PER_MINUTE, NEVER, kernel_function
from strategy.kernel.sizing import (
    capped_notional,
    confidence_mult,
    entry_leverage,
    market_size_mult,
    take_profit_mult,
)
from strategy.layout import ACT, FL, POS, A, R, T
from strategy.params import P


@kernel_function
def record_fill(fills, acct, t, s, action, side, price, decision_price, size, notional, fee, pnl, reason, conf,
                atr, adx, rsi):
    """Append one row to the decision trace (``FL`` layout); counts overflow past the buffer."""
    k = int(acct[A.NFILLS])
    if k < fills.shape[0]:
        row = fills[k]
        row[FL.T] = t
        row[FL.SYM] = s
        row[FL.ACTION] = action
        row[FL.SIDE] = side
        row[FL.PRICE] = price
        row[FL.DECISION_PRICE] = decision_price
        row[FL.SIZE] = size
        row[FL.NOTIONAL] = notional
        row[FL.FEE] = fee
        row[FL.PNL] = pnl
        row[FL.REASON] = reason
        row[FL.CONF] = conf
        row[FL.BALANCE] = acct[A.BALANCE]
        row[FL.ATR] = atr
        row[FL.ADX] = adx
        row[FL.RSI] = rsi
    acct[A.NFILLS] = k + 1


@kernel_function
def record_trade(trades, acct, ps, s, t, exit_price, exit_reason, net):
    """Append the closed round trip of position row ``ps`` (``T`` layout)."""
    k = int(acct[A.TRADES])
    if k < trades.shape[0]:
        row = trades[k]
        row[T.SYM] = s
        row[T.SIDE] = ps[POS.SIDE]
        row[T.ENTRY_T] = ps[POS.OPEN_T]
        row[T.EXIT_T] = t
        row[T.ENTRY_PRICE] = ps[POS.ENTRY]
        row[T.EXIT_PRICE] = exit_price
        row[T.SIZE] = ps[POS.MAX_SIZE]
        row[T.NOTIONAL] = ps[POS.MAX_SIZE] * ps[POS.ENTRY]
        row[T.PNL] = net
        row[T.FEES] = ps[POS.TRADE_FEES]
        row[T.FUNDING] = ps[POS.TRADE_FUNDING]
        row[T.ENTRY_REASON] = ps[POS.ENTRY_REASON]
        row[T.EXIT_REASON] = exit_reason
        row[T.CONF] = ps[POS.CONF]
        row[T.ADDS] = ps[POS.ADDS]
        row[T.GROSS_PNL] = ps[POS.TRADE_PNL]


@kernel_function
def init_state(pos, acct, initial_balance):
    """Every symbol flat, never exited; the account holds the initial balance."""
    for s in range(pos.shape[0]):
        ps = pos[s]
        for j in range(POS.N):
            ps[j] = 0.0
        ps[POS.LAST_EXIT_T] = NEVER
        ps[POS.LAST_ADD_T] = NEVER
        ps[POS.LAST_CLOSE] = math.nan
        ps[POS.PREV_CLOSE] = math.nan
        ps[POS.LAST_EMA_SLOW] = math.nan
        ps[POS.PREV_EMA_SLOW] = math.nan
        ps[POS.SEEN_CLOSE] = math.nan
        ps[POS.LAST_EMA_FAST] = math.nan
        ps[POS.PREV_EMA_FAST] = math.nan
    for j in range(A.N):
        acct[j] = 0.0
    acct[A.BALANCE] = initial_balance
    acct[A.EQUITY] = initial_balance
    acct[A.PEAK] = initial_balance
    acct[A.INITIAL] = initial_balance
    acct[A.DAY] = -1.0
    acct[A.DAY_EQ] = initial_balance
    acct[A.SUB_BAR_OPEN] = -1.0


@kernel_function
def survives_close(j):
    """Columns of a position row that belong to the symbol, not the position: kept when it closes."""
    return (j == POS.LAST_CLOSE or j == POS.PREV_CLOSE or j == POS.LAST_EXIT_T or j == POS.LAST_EXIT_SIDE
            or j == POS.LAST_EXIT_REASON or j == POS.LAST_EMA_SLOW or j == POS.PREV_EMA_SLOW
            or j == POS.SEEN_CLOSE or j == POS.LAST_EMA_FAST or j == POS.PREV_EMA_FAST or j == POS.FUNDING_RATE)


@kernel_function
def reset_position(ps, t):
    """A flat row after a full close at ``t``; the symbol's columns survive (``survives_close``),
    the reentry clock starts."""
    for j in range(POS.N):
        if not survives_close(j):
            ps[j] = 0.0
    ps[POS.LAST_EXIT_T] = t
    ps[POS.LAST_ADD_T] = NEVER


@kernel_function
def drop_position(pos, acct, s):
    """Forget an open position with no fill (the exchange holds none): its margin and its place
    under max_open_positions are released, no trade is booked, the reentry clock is unchanged."""
    ps = pos[s]
    if ps[POS.SIDE] == 0.0:
        return
    acct[A.MARGIN_USED] -= ps[POS.MARGIN]
    acct[A.OPEN_COUNT] -= 1.0
    for j in range(POS.N):
        if not survives_close(j):
            ps[j] = 0.0
    ps[POS.LAST_ADD_T] = NEVER


@kernel_function
def resize_position(pos, acct, s, size, entry, opened_now):
    """Set an open position to the size and average entry the runtime observed (real fills, the
    exchange's position). Its margin follows the entry notional at the same leverage (the opening
    margin too when the position opened on this bar). Returns the change of its unrealised pnl
    at the last close (0 for a flat row or before any close)."""
    ps = pos[s]
    if ps[POS.SIDE] == 0.0:
        return 0.0
    old_size = ps[POS.SIZE]
    old_entry = ps[POS.ENTRY]
    last = ps[POS.LAST_CLOSE]
    side = ps[POS.SIDE]
    old_notional = old_size * old_entry
    new_notional = size * entry
    if old_notional > 0.0:
        ratio = new_notional / old_notional
        acct[A.MARGIN_USED] += ps[POS.MARGIN] * (ratio - 1.0)
        ps[POS.MARGIN] *= ratio
        if opened_now:
            ps[POS.BASE_MARGIN] *= ratio
    if opened_now:
        ps[POS.FIRST_ENTRY] = entry
    if ps[POS.MAX_SIZE] <= old_size + 1e-12:
        ps[POS.MAX_SIZE] = size
    ps[POS.SIZE] = size
    ps[POS.ENTRY] = entry
    if not math.isfinite(last):
        return 0.0
    return side * (size * (last - entry) - old_size * (last - old_entry))


@kernel_function
def note_indicators(ps, f):
    """Keep the main bar's indicators the exits read (stop and trailing modifiers) on the position:
    the exits on the next bar's exit sub-bars read them, as the bar's own are not known until its
    close."""
    prev_atr = ps[POS.IND_ATR]
    ps[POS.IND_ATR_SLOPE] = f[F.ATR] - prev_atr if prev_atr > 0.0 else 0.0
    ps[POS.IND_ATR] = f[F.ATR]
    ps[POS.IND_ADX] = f[F.ADX]
    ps[POS.IND_ADX_SLOPE] = f[F.ADX_SLOPE]
    avg = f[F.BB_WIDTH_AVG]
    ps[POS.IND_BBW_RATIO] = f[F.BB_WIDTH] / avg if avg > 0.0 else 1.0
    ps[POS.IND_RSI] = f[F.RSI]
    ps[POS.HIST_B3] = ps[POS.HIST_B2]
    ps[POS.HIST_B2] = ps[POS.HIST_B1]
    ps[POS.HIST_B1] = f[F.MACD_HIST_PREV]


@kernel_function
def taker_entry_fill(acct, p, close, side, notional, margin):
    """Buy (long) or sell (short) ``notional`` worth at the close as a taker, for an open or an add:
    the price moves [trade.slippage_bps] against us, the fee is [trade.taker_fee_bps] of the filled
    notional and leaves the balance; the margin is committed. Returns (size, price, notional, fee)."""
    size = notional / close
    price = close * (1.0 + side * p[P.SLIPPAGE_BPS] * BPS)
    fill_notional = price * size
    fee = fill_notional * p[P.TAKER_FEE_BPS] * BPS
    acct[A.BALANCE] -= fee
    acct[A.FEES] += fee
    acct[A.MARGIN_USED] += margin
    return size, price, fill_notional, fee


@kernel_function
def close_position(pos, acct, params, s, t, decision_price, fraction, reason, atr, adx, rsi, fills, trades):
    """Sell (long) or buy back (short) ``fraction`` of the position; fraction >= 1 closes it. The
    fill is the decision price moved [trade.exit_slippage_bps] against us, the fee
    [trade.taker_fee_bps] of the filled notional."""
    p = params[s]
    ps = pos[s]
    side = ps[POS.SIDE]
    full = fraction >= 1.0
    size_before = ps[POS.SIZE]
    size = size_before if full else size_before * fraction
    if not full and not size > 0.0:
        return  # a zero-size reduce is no order: nothing to fill or record
    price = decision_price * (1.0 - side * p[P.EXIT_SLIPPAGE_BPS] * BPS)
    notional = price * size
    fee = notional * p[P.TAKER_FEE_BPS] * BPS
    pnl = (price - ps[POS.ENTRY]) * size * side
    acct[A.BALANCE] += pnl - fee
    acct[A.FEES] += fee
    acct[A.REALIZED] += pnl
    ps[POS.TRADE_PNL] += pnl
    ps[POS.TRADE_FEES] += fee
    action = ACT.CLOSE if full else ACT.REDUCE
    record_fill(fills, acct, t, s, action, side, price, decision_price, size, notional, fee, pnl, reason,
                ps[POS.CONF], atr, adx, rsi)
    if full:
        net = ps[POS.TRADE_PNL] - ps[POS.TRADE_FEES] - ps[POS.TRADE_FUNDING]
        if net > 0.0:
            acct[A.WINS] += 1.0
            acct[A.GROSS_PROFIT] += net
        else:
            acct[A.GROSS_LOSS] -= net
        record_trade(trades, acct, ps, s, t, price, reason, net)
        acct[A.TRADES] += 1.0
        acct[A.MARGIN_USED] -= ps[POS.MARGIN]
        acct[A.OPEN_COUNT] -= 1.0
        reset_position(ps, t)
        ps[POS.LAST_EXIT_SIDE] = side
        ps[POS.LAST_EXIT_REASON] = reason
    else:
        released = ps[POS.MARGIN] * fraction
        ps[POS.MARGIN] -= released
        acct[A.MARGIN_USED] -= released
        ps[POS.SIZE] = size_before - size


@kernel_function
def open_position(pos, acct, params, feat, s, t, side, conf, equity, fills):
    """Open a new position at the close; returns False when sizing or the margin cap refuse it."""
    p = params[s]
    f = feat[s]
    ps = pos[s]
    close = f[F.CLOSE]
    atr = entry_atr(p, f)
    margin = (equity * p[P.ALLOCATION_PCT] * confidence_mult(p, conf) * p[P.SIZE_MULTIPLIER]
              * market_size_mult(p, f[F.ADX], atr, close))
    lev = entry_leverage(p, conf)
    notional = capped_notional(p, acct, margin, lev, equity)
    if notional <= 0.0:
        return False
    margin = notional / lev
    size, price, fill_notional, fee = taker_entry_fill(acct, p, close, side, notional, margin)
    acct[A.OPEN_COUNT] += 1.0
    ps[POS.SIDE] = side
    ps[POS.SIZE] = size
    ps[POS.ENTRY] = price
    ps[POS.FIRST_ENTRY] = price
    ps[POS.ENTRY_ATR] = atr
    ps[POS.STOP] = price - side * p[P.SL_ATR_MULT] * atr
    ps[POS.STOP_REASON] = R.STOP_LOSS
    ps[POS.TP1_DONE] = 0.0
    ps[POS.ADDS] = 0.0
    ps[POS.OPEN_T] = t
    ps[POS.LAST_ADD_T] = t
    ps[POS.MARGIN] = margin
    ps[POS.BASE_MARGIN] = margin
    ps[POS.LEVERAGE] = lev
    ps[POS.CONF] = conf
    ps[POS.TP_MULT] = take_profit_mult(p, f[F.ADX])
    ps[POS.ENTRY_ADX_THRESHOLD] = ps[POS.SIGNAL_ADX_THRESHOLD]  # set by the ranking (entries.entry_signal)
    ps[POS.HIST_B1] = math.nan  # the histogram history starts with this position
    ps[POS.HIST_B2] = math.nan
    ps[POS.HIST_B3] = math.nan
    note_indicators(ps, f)
    ps[POS.TRADE_PNL] = 0.0
    ps[POS.TRADE_FEES] = fee
    ps[POS.TRADE_FUNDING] = 0.0
    ps[POS.MAX_SIZE] = size
    ps[POS.ENTRY_REASON] = R.SIGNAL
    record_fill(fills, acct, t, s, ACT.OPEN, side, price, close, size, fill_notional, fee, 0.0, R.SIGNAL, conf,
                atr, f[F.ADX], f[F.RSI])
    return True


@kernel_function
def add_allowed(p, ps, f, t, conf):
    """Pyramiding [trade.enable_pyramiding] admits an add when the position has fewer than
    [trade.max_adds_per_symbol] adds, the signal's tier is at least [trade.add_min_confidence],
    [trade.add_cooldown_minutes] have passed since the last open/add, and the close is at least
    [trade.add_min_profit_atr] entry ATRs in profit."""
    if p[P.ENABLE_PYRAMIDING] == 0.0:
        return False
    if ps[POS.ADDS] >= p[P.MAX_ADDS_PER_SYMBOL]:
        return False
    if conf < p[P.ADD_MIN_CONFIDENCE]:
        return False
    if t - ps[POS.LAST_ADD_T] < p[P.ADD_COOLDOWN_MINUTES] * MS_PER_MINUTE:
        return False
    if (f[F.CLOSE] - ps[POS.ENTRY]) * ps[POS.SIDE] < p[P.ADD_MIN_PROFIT_ATR] * ps[POS.ENTRY_ATR]:
        return False
    return True


@kernel_function
def add_margin(p, acct):
    """The margin of an add, the reference's pyramid sizing: balance x [trade.allocation_pct] x
    [trade.add_fraction_of_base_margin] (no confidence or market multiple), x [trade.size_multiplier]
    (ours: 0 = no new risk)."""
    return acct[A.BALANCE] * p[P.ALLOCATION_PCT] * p[P.ADD_FRACTION_OF_BASE_MARGIN] * p[P.SIZE_MULTIPLIER]


@kernel_function
def add_to_position(pos, acct, params, feat, s, t, conf, fills):
    """Pyramid into an open position (``add_allowed``) with ``add_margin`` at its leverage; a
    notional under [trade.min_notional_usd] is raised to it with [bump_to_min_notional] (the margin
    unchanged), else skipped; refused -- not scaled down -- when the margin in use plus this margin
    would exceed [trade.max_total_margin_pct] x the balance (exactly at the cap is allowed). False
    when refused."""
    p = params[s]
    f = feat[s]
    ps = pos[s]
    if not add_allowed(p, ps, f, t, conf):
        return False
    side = ps[POS.SIDE]
    close = f[F.CLOSE]
    lev = ps[POS.LEVERAGE]
    margin = add_margin(p, acct)
    if not margin > 0.0:
        return False
    notional = margin * lev
    if notional < p[P.MIN_NOTIONAL_USD]:
        if p[P.BUMP_TO_MIN_NOTIONAL] == 0.0:
            return False
        notional = p[P.MIN_NOTIONAL_USD]
    if acct[A.MARGIN_USED] + margin > p[P.MAX_TOTAL_MARGIN_PCT] * acct[A.BALANCE]:
        return False
    size, price, fill_notional, fee = taker_entry_fill(acct, p, close, side, notional, margin)
    new_size = ps[POS.SIZE] + size
    ps[POS.ENTRY] = (ps[POS.ENTRY] * ps[POS.SIZE] + price * size) / new_size
    ps[POS.SIZE] = new_size
    if new_size > ps[POS.MAX_SIZE]:
        ps[POS.MAX_SIZE] = new_size
    ps[POS.MARGIN] += margin
    ps[POS.ADDS] += 1.0
    ps[POS.LAST_ADD_T] = t
    reanchor_stop(p, ps)
    ps[POS.TRADE_FEES] += fee
    record_fill(fills, acct, t, s, ACT.ADD, side, price, close, size, fill_notional, fee, 0.0, R.PYRAMID, conf,
                f[F.ATR], f[F.ADX], f[F.RSI])
    return True


@kernel_function
def pyramid_in_symbol_order(feat, params, pos, acct, t, n, rank_score, rank_idx, fills):
    """The adds of a bar, before any new position and in symbol order (the reference's add
    trigger): every ranked candidate whose symbol holds a position on the candidate's side (the
    ranking closed any opposite one) is offered ``add_to_position`` with its signal's tier."""
    for s in range(pos.shape[0]):
        if pos[s, POS.SIDE] == 0.0:
            continue
        for i in range(n):
            if rank_idx[i] == s:
                add_to_position(pos, acct, params, feat, s, t, signal_conf(rank_score[s]), fills)
                break


@kernel_function
def reanchor_stop(p, ps):
    """After an add, a stop that is still the stop-loss is measured from the new average entry, as
    the targets are (never loosening it): risk per position does not grow with each add (the
    review's §6.1). With exit_fill close the stop is recomputed from the average entry anyway."""
    if ps[POS.STOP_REASON] != R.STOP_LOSS:
        return
    stop = ps[POS.ENTRY] - ps[POS.SIDE] * p[P.SL_ATR_MULT] * ps[POS.ENTRY_ATR]
    if (stop - ps[POS.STOP]) * ps[POS.SIDE] > 0.0:
        ps[POS.STOP] = stop


@kernel_function
def note_funding_rate(ps, rate, bar_ms):
    """Keep the symbol's funding rate per hour (the funding-headwind exit reads it): the bar's
    settlements summed (``rate``) over the bar's hours, at least one; a bar without a settlement
    keeps the last rate."""
    if rate != 0.0:
        hours = bar_ms / MS_PER_HOUR
        ps[POS.FUNDING_RATE] = rate / hours if hours > 1.0 else rate


@kernel_function
def charge_funding(pos, acct, params, s, rate, price):
    """Longs pay a positive rate, shorts receive it (notional at ``price``) [trade.simulate_funding]."""
    ps = pos[s]
    if params[s, P.SIMULATE_FUNDING] == 0.0 or rate == 0.0:
        return
    payment = ps[POS.SIDE] * ps[POS.SIZE] * price * rate
    acct[A.BALANCE] -= payment
    acct[A.FUNDING] += payment
    ps[POS.TRADE_FUNDING] += payment

