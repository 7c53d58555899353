"""The per-bar step, entry ranking and the end of data: the order in which the rules run.

On every closed bar (spec/strategy.md, "Decisions on a closed bar"), ``step_bar``:
1. books the previous UTC day's return when the bar opens a new day (equity.roll_day);
2. per symbol with an open position: funding at the bar's open (book.charge_funding; a symbol
   without a bar pays at its last close), then the exits as [engine.exit_fill] says
   (``symbol_exits``): close -- stop, partial and full take-profit on each finer exit bar's close
   (when every one of them is there) or on the bar's close, first that fires wins, the stop
   tightening after each close, then the smart exits on the bar's close; touch -- the range exits
   (exits.range_exits) on the finer exit bars or the bar itself, then, if still open, the exits on
   the close (exits.close_exits: trailing, break-even, trend flip, RSI);
3. ranks the entry candidates (``rank_entries``): symbols with a bar now and a bar before (no
   entry right after a missing bar), warmed up, with a signal (entries.entry_signal); a signal
   against an open position first closes it at the close (signal_flip); then marks equity; by confidence x 100 + whole ADX, ties by
   symbol;
4. takes them (``take_entries``): first the adds, in symbol order, for candidates whose symbol
   holds a position on the signal's side (book.pyramid_in_symbol_order); then, in rank order, a
   new position opens when its tier is at least
   [trade.entry_min_confidence], fewer than
   [trade.max_open_positions] are open and the re-entry cooldown does not hold it
   (``reentry_blocked``) (book.open_position, which applies the margin cap);
5. marks equity again for drawdown at the close.
``finish`` closes what is still open at its last close (reason end_of_data) and books the last day.

The per-run state travels as two tuples, the same in the canonical engine and the sweep:
  book      = (pos, acct, rank_score, rank_idx, fills, trades)
  exit_bars = (o, h, lo, c, valid, close_ms, n): the n finer exit bars inside this bar, per symbol
              ([nsym, k] arrays and close_ms[k]); n == 0 checks exits on the bar itself.
"""

from __future__ import annotations

import math

from strategy.features import F
from strategy.kernel.book import (
    charge_funding,
    close_position,
    note_funding_rate,
    note_indicators,
    open_position,
    pyramid_in_symbol_order,
)
from strategy.kernel.entries import (
    entry_signal,
    features_ready,
    market_breadth,
    momentum_sign_agrees,
    pack_signal,
    rsi_not_extreme,
    signal_conf,
    signal_side,
)
from strategy.kernel.equity import mark_equity, note_daily_return, note_equity, roll_day
from strategy.kernel.exits import (
    close_exits,
    close_price_exits,
    glitch,
    range_exits,
    smart_exits,
    tighten_stop,
)
from strategy.kernel.registry import MS_PER_MINUTE, kernel_function
from strategy.layout import EXIT_FILL, POS, A, R
from strategy.params import P

PESC_FAST_ADX = 40.0  # the re-entry cooldown is shortest at ADX 40 and above ...
PESC_SLOW_ADX = 25.0  # ... and longest at ADX 25 and below


@kernel_function
def rank_of(sig, adx):
    """The ranking score of a signal: tier x 100 + the whole part of its ADX (the reference's
    integer ADX: ADX 31.9 and 31.2 tie, and the tie goes by symbol order)."""
    return signal_conf(sig) * 100.0 + math.floor(adx)


@kernel_function
def btc_regime(pos, valid, btc_idx):
    """The BTC regime entries read (gate 10), lagged one bar as the reference reads it: BTC's last
    close before this bar above its slow EMA then -> +1, below -> -1; 0 (unknown) without BTC data."""
    if btc_idx < 0:
        return 0.0
    b = pos[btc_idx]
    close = b[POS.PREV_CLOSE] if valid[btc_idx] != 0 else b[POS.LAST_CLOSE]
    slow = b[POS.PREV_EMA_SLOW] if valid[btc_idx] != 0 else b[POS.LAST_EMA_SLOW]
    if not (close > 0.0 and slow > 0.0):
        return 0.0
    if close > slow:
        return 1.0
    if close < slow:
        return -1.0
    return 0.0


@kernel_function
def rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx, acct, t, fills, trades):
    """Collect entry candidates and insertion-sort them by (-score, symbol); returns their count.
    A signal against an open position closes it at the close first (reason signal_flip), and the
    signal then competes as a new entry on the same bar."""
    n = 0
    regime = btc_regime(pos, valid, btc_idx)
    breadth = market_breadth(pos, valid)
    for s in range(pos.shape[0]):
        if valid[s] == 0 or prev_valid[s] == 0:
            continue
        if not features_ready(feat, params, s):
            continue
        side, conf, level = entry_signal(feat, valid, params, s, btc_idx, pos[s], regime, breadth)
        if side == 0.0:
            continue
        held = pos[s, POS.SIDE]
        if held != 0.0 and held != side:
            f = feat[s]
            close_position(pos, acct, params, s, t, f[F.CLOSE], 1.0, R.SIGNAL_FLIP, f[F.ATR], f[F.ADX], f[F.RSI],
                           fills, trades)
        pos[s, POS.SIGNAL_ADX_THRESHOLD] = level
        sig = pack_signal(side, conf)
        score = rank_of(sig, feat[s, F.ADX])
        rank_score[s] = sig
        j = n
        while j > 0:
            other = rank_idx[j - 1]
            o_score = rank_of(rank_score[other], feat[other, F.ADX])
            if o_score >= score:
                break
            rank_idx[j] = other
            j -= 1
        rank_idx[j] = s
        n += 1
    return n


@kernel_function
def reentry_cooldown_ms(p, adx):
    """The re-entry cooldown for a candidate with this ADX: [trade.reentry_cooldown_min_mins] at
    ADX >= 40, [reentry_cooldown_max_mins] at ADX <= 25, linear in between."""
    lo = p[P.REENTRY_COOLDOWN_MIN_MINS]
    hi = p[P.REENTRY_COOLDOWN_MAX_MINS]
    if adx >= PESC_FAST_ADX:
        mins = lo
    elif not adx > PESC_SLOW_ADX:
        mins = hi
    else:
        mins = hi + (adx - PESC_SLOW_ADX) / (PESC_FAST_ADX - PESC_SLOW_ADX) * (lo - hi)
    return mins * MS_PER_MINUTE


@kernel_function
def reentry_blocked(p, ps, side, adx, t):
    """The re-entry cooldown (the reference's PESC), switched on by [trade.reentry_cooldown_minutes]
    != 0: a new position is refused while the symbol's last full close was on the same side, was
    not a signal flip, and is more recent than ``reentry_cooldown_ms``. The other side is never
    delayed."""
    if p[P.REENTRY_COOLDOWN_MINUTES] == 0.0:
        return False
    if ps[POS.LAST_EXIT_SIDE] != side or ps[POS.LAST_EXIT_REASON] == R.SIGNAL_FLIP:
        return False
    return t - ps[POS.LAST_EXIT_T] < reentry_cooldown_ms(p, adx)


@kernel_function
def take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, equity, fills):
    """Adds first, in symbol order (book.pyramid_in_symbol_order); then opens in rank order: a new
    position needs entry_min_confidence, at most [trade.max_entry_orders_per_loop] new positions
    per bar, the SSF and REEF filters, fewer than max_open_positions open and no re-entry cooldown."""
    pyramid_in_symbol_order(feat, params, pos, acct, t, n, rank_score, rank_idx, fills)
    opened = 0
    for i in range(n):
        s = rank_idx[i]
        p = params[s]
        ps = pos[s]
        sig = rank_score[s]
        conf = signal_conf(sig)
        side = signal_side(sig)
        if ps[POS.SIDE] != 0.0:
            continue  # held on the signal's side: its add was offered above
        if conf < p[P.ENTRY_MIN_CONFIDENCE]:
            continue  # gates new positions only: an add answers to add_min_confidence
        if opened >= p[P.MAX_ENTRY_ORDERS_PER_LOOP]:
            continue
        if not (momentum_sign_agrees(p, feat[s], side) and rsi_not_extreme(p, feat[s], side)):
            continue
        if acct[A.OPEN_COUNT] >= p[P.MAX_OPEN_POSITIONS]:
            continue
        if reentry_blocked(p, ps, side, feat[s, F.ADX], t):
            continue
        if open_position(pos, acct, params, feat, s, t, side, conf, equity, fills):
            opened += 1


@kernel_function
def sub_bars_complete(sub_valid, s, nsub):
    """Finer exits only when every exit bar of the bar is there: a missing one could hide the
    extreme that hit a stop, so an incomplete set falls back to the main bar's range."""
    for j in range(nsub):
        if sub_valid[s, j] == 0:
            return False
    return True


@kernel_function
def symbol_exits(t, feat, params, s, book, exit_bars):
    """The exits of symbol ``s`` as [engine.exit_fill] says: on the closes (``close_exits_on_closes``)
    or on the ranges (``touch_exits``)."""
    if params[s, P.EXIT_FILL] == EXIT_FILL.CLOSE:
        close_exits_on_closes(t, feat, params, s, book, exit_bars)
    else:
        touch_exits(t, feat, params, s, book, exit_bars)


@kernel_function
def close_exits_on_closes(t, feat, params, s, book, exit_bars):
    """exit_fill close: the price exits on each finer exit bar's close (in time order), or on the
    bar's close, each followed by the stop tightening on that close; then the smart exits on the
    bar's close unless an exit fired on the last close evaluated."""
    pos, acct, _rank_score, _rank_idx, fills, trades = book
    _sub_o, _sub_h, _sub_l, sub_c, sub_valid, sub_close_ms, nsub = exit_bars
    f = feat[s]
    p = params[s]
    ps = pos[s]
    fired = 0
    prev = ps[POS.LAST_CLOSE]
    if nsub > 0 and sub_bars_complete(sub_valid, s, nsub):
        # the exit sub-bars read the indicators of the last main close (this bar's come at its close)
        for j in range(nsub):
            close = sub_c[s, j]
            if glitch(p, ps, close, prev):
                fired = -1  # no exit is decided on a bad print
            else:
                fired = close_price_exits(pos, acct, params, s, float(sub_close_ms[j]), close, f[F.ATR], f[F.ADX],
                                          f[F.RSI], fills, trades)
                if fired == 2:
                    return
                tighten_stop(p, ps, close)
            prev = close
        note_indicators(ps, f)
    else:
        note_indicators(ps, f)
        if glitch(p, ps, f[F.CLOSE], prev):
            return
        fired = close_price_exits(pos, acct, params, s, t, f[F.CLOSE], f[F.ATR], f[F.ADX], f[F.RSI], fills, trades)
        if fired == 2:
            return
        tighten_stop(p, ps, f[F.CLOSE])
    if fired == 0:
        smart_exits(pos, acct, params, feat, s, t, fills, trades)


@kernel_function
def touch_exits(t, feat, params, s, book, exit_bars):
    """exit_fill touch: range exits on the finer exit bars (in time order) or on the bar itself,
    then the exits on the close if it is still open."""
    pos, acct, _rank_score, _rank_idx, fills, trades = book
    sub_o, sub_h, sub_l, _sub_c, sub_valid, sub_close_ms, nsub = exit_bars
    f = feat[s]
    closed = False
    if nsub > 0 and sub_bars_complete(sub_valid, s, nsub):
        for j in range(nsub):
            if range_exits(pos, acct, params, s, float(sub_close_ms[j]), sub_o[s, j], sub_h[s, j], sub_l[s, j],
                           f[F.ATR], f[F.ADX], f[F.RSI], fills, trades):
                closed = True
                break
    else:
        closed = range_exits(pos, acct, params, s, t, f[F.OPEN], f[F.HIGH], f[F.LOW], f[F.ATR], f[F.ADX],
                             f[F.RSI], fills, trades)
    if not closed:
        close_exits(pos, acct, params, feat, s, t, fills, trades)


@kernel_function
def step_bar(bar_open_ms, bar_close_ms, feat, valid, prev_valid, funding_row, params, btc_idx, book, exit_bars):
    """Process one closed bar for every symbol (the order is in the module docstring)."""
    pos, acct, rank_score, rank_idx, fills, trades = book
    t = float(bar_close_ms)
    roll_day(acct, bar_open_ms)
    for s in range(pos.shape[0]):
        ps = pos[s]
        if ps[POS.SIDE] != 0.0 and valid[s] == 0:
            # funding is owed whether or not the symbol printed a candle: mark at the last close
            charge_funding(pos, acct, params, s, funding_row[s], ps[POS.LAST_CLOSE])
        if valid[s] == 0:
            continue
        note_funding_rate(ps, funding_row[s], bar_close_ms - bar_open_ms)
        if ps[POS.SIDE] != 0.0:
            charge_funding(pos, acct, params, s, funding_row[s], feat[s, F.OPEN])
            symbol_exits(t, feat, params, s, book, exit_bars)
        ps[POS.PREV_CLOSE] = ps[POS.LAST_CLOSE]
        ps[POS.LAST_CLOSE] = feat[s, F.CLOSE]
        ps[POS.PREV_EMA_SLOW] = ps[POS.LAST_EMA_SLOW]
        ps[POS.LAST_EMA_SLOW] = feat[s, F.EMA_SLOW]
        ps[POS.PREV_EMA_FAST] = ps[POS.LAST_EMA_FAST]
        ps[POS.LAST_EMA_FAST] = feat[s, F.EMA_FAST]
    n = rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx, acct, t, fills, trades)
    equity = mark_equity(pos, acct)
    take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, equity, fills)
    note_equity(acct, mark_equity(pos, acct))
    acct[A.LAST_T] = t


@kernel_function
def finish(pos, acct, fills, trades, params):
    """End of data: close what is open at its last close, then book the final day."""
    t = acct[A.LAST_T]
    for s in range(pos.shape[0]):
        if pos[s, POS.SIDE] != 0.0:
            close_position(pos, acct, params, s, t, pos[s, POS.LAST_CLOSE], 1.0, R.END_OF_DATA, math.nan,
                           math.nan, math.nan, fills, trades)
    note_equity(acct, acct[A.BALANCE])
    if acct[A.DAY] >= 0.0:
        note_daily_return(acct, acct[A.EQUITY])
