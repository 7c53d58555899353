"""The step at every closed (sub-)bar, entry ranking and the end of data: the order the rules run in.

A main bar may hold k sub-bars (the finer candles of [engine.exit_interval] and/or
[engine.entry_interval], one grid). Each is stepped as it closes, then the main close; the
canonical engine, the sweep (CPU and CUDA) and the trader call these same functions in this order
(docs/STRATEGY.md, "The order of one closed bar"):

``step_sub_bar`` (sub-bar j; the feature rows still hold the last CLOSED main bar):
1. on j == 0, funding at the bar's open for every open position (book.charge_funding);
2. with exit sub-bars, the exits of every open position on it (``sub_bar_exits``): close -- the
   price exits on its close and the stop tightening; touch -- the range exits; a position open
   while its sub-bar is missing is flagged (POS.SUB_MISSING);
3. with entry sub-bars, the entries on its close (``rank_entries`` / ``take_entries``) from the last
   closed main bar's indicators with the sub-bar's OHLC (``stage_sub_prices``, staged by the driver).

``step_main_close`` (the feature rows hold this bar):
1. books the previous UTC day's return when the bar opens a new day (equity.roll_day);
2. per symbol with a bar and a position: funding first when the bar has no sub-bars; then
   ``main_bar_exits``: close -- indicators noted; on the bar's close when exits are not on
   sub-bars or one was missing: price exits and stop tightening; then the smart exits unless the
   last price evaluation fired (POS.SUB_FIRED); touch -- the range exits on the bar under the same
   condition, then the exits on the close (exits.close_exits);
3. ranks the entry candidates (``rank_entries``): symbols with a bar now and a bar before (no
   entry right after a missing bar), warmed up, with a signal (entries.entry_signal); a signal
   against an open position first closes it at the close (signal_flip); by confidence x 100 + whole
   ADX, ties by symbol;
4. takes them (``take_entries``): first the adds, in symbol order, for candidates whose symbol
   holds a position on the signal's side (book.pyramid_in_symbol_order); then, in rank order, a new
   position opens when its tier is at least [trade.entry_min_confidence], fewer than
   [trade.max_entry_orders_per_loop] opened in this bar (its entry sub-bars included), fewer than
   [trade.max_open_positions] are open and the re-entry cooldown does not hold it
   (``reentry_blocked``) (book.open_position, which applies the margin cap);
5. marks equity for drawdown at the close.
``step_bar`` runs a bar whose features are already in place (sub-bars, then the close: the rule tests).
``finish`` closes what is still open at its last close (reason end_of_data) and books the last day.

Everything carried from one sub-bar to the next lives in the pos/acct rows (POS.SEEN_CLOSE,
SUB_FIRED, SUB_MISSING; A.SUB_BAR_OPEN, SUB_NEXT, BAR_OPENS): a checkpoint between two sub-bars
resumes exactly. The per-run state travels as one tuple, the same in the engine and the sweep:
  book = (pos, acct, rank_score, rank_idx, fills, trades)
  sub  = (o, h, lo, c, valid, close_ms): one sub-bar, rows over symbols and its close time.
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
    breadth_read,
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
    if valid[btc_idx] != 0:
        return regime_sign(b[POS.PREV_CLOSE], b[POS.PREV_EMA_SLOW])
    return regime_sign(b[POS.LAST_CLOSE], b[POS.LAST_EMA_SLOW])


@kernel_function
def btc_regime_before(pos, btc_idx):
    """The BTC regime an entry sub-bar reads: BTC's last main close (before this bar) vs its slow
    EMA then, the bar the sub-bar's indicators come from."""
    if btc_idx < 0:
        return 0.0
    return regime_sign(pos[btc_idx, POS.LAST_CLOSE], pos[btc_idx, POS.LAST_EMA_SLOW])


@kernel_function
def regime_sign(close, slow):
    """+1 close above the slow EMA, -1 below, 0 equal or unknown."""
    if not (close > 0.0 and slow > 0.0):
        return 0.0
    if close > slow:
        return 1.0
    if close < slow:
        return -1.0
    return 0.0


@kernel_function
def rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx, acct, t, fills, trades,
                 on_sub):
    """Collect entry candidates and insertion-sort them by (-score, symbol); returns their count.
    A signal against an open position closes it at the close first (reason signal_flip), and the
    signal then competes as a new entry on the same bar. ``on_sub``: an entry sub-bar's close (the
    BTC regime and the anomaly filter's previous close are then the ones before this sub-bar)."""
    n = 0
    regime = btc_regime_before(pos, btc_idx) if on_sub else btc_regime(pos, valid, btc_idx)
    breadth = market_breadth(pos, valid, on_sub) if pos.shape[0] > 0 and breadth_read(params[0]) else 50.0
    for s in range(pos.shape[0]):
        if valid[s] == 0 or prev_valid[s] == 0:
            continue
        if not features_ready(feat, params, s):
            continue
        if on_sub:  # the last close seen before this sub-bar, against the last main bar's fast EMA
            prev_close, prev_fast = pos[s, POS.SEEN_CLOSE], pos[s, POS.LAST_EMA_FAST]
        else:
            prev_close, prev_fast = pos[s, POS.PREV_CLOSE], pos[s, POS.PREV_EMA_FAST]
        side, conf, level = entry_signal(feat, valid, params, s, btc_idx, prev_close, prev_fast, regime, breadth)
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
    per bar (its entry sub-bars included), the SSF and REEF filters, fewer than max_open_positions
    open and no re-entry cooldown."""
    pyramid_in_symbol_order(feat, params, pos, acct, t, n, rank_score, rank_idx, fills)
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
        if acct[A.BAR_OPENS] >= p[P.MAX_ENTRY_ORDERS_PER_LOOP]:
            continue  # counted over the main bar and its entry sub-bars
        if not (momentum_sign_agrees(p, feat[s], side) and rsi_not_extreme(p, feat[s], side)):
            continue
        if acct[A.OPEN_COUNT] >= p[P.MAX_OPEN_POSITIONS]:
            continue
        if reentry_blocked(p, ps, side, feat[s, F.ADX], t):
            continue
        if open_position(pos, acct, params, feat, s, t, side, conf, equity, fills):
            acct[A.BAR_OPENS] += 1.0


@kernel_function
def stage_sub_prices(feat, o, h, lo, c, sub_valid):
    """Entry sub-bars read the last closed main bar's indicators with the sub-bar's OHLC (the
    reference's entry candles): write the OHLC of every symbol with this sub-bar into its feature
    row. The volume and every indicator stay the main bar's. The main close overwrites the rows of
    the symbols that print a main bar; the drivers call this before ``step_sub_bar`` (layout v2
    stages the same values cooperatively into its warp-shared rows)."""
    for s in range(feat.shape[0]):
        if sub_valid[s] != 0:
            feat[s, F.OPEN] = o[s]
            feat[s, F.HIGH] = h[s]
            feat[s, F.LOW] = lo[s]
            feat[s, F.CLOSE] = c[s]


@kernel_function
def sub_bar_exits(t, feat, params, s, book, o, h, lo, c):
    """The exits of symbol ``s`` on one present exit sub-bar, as [engine.exit_fill] says: close --
    the price exits on its close (``close_price_exits``; the glitch guard against the last close
    seen), the stop tightening on it, and what happened kept in ``POS.SUB_FIRED`` for the smart
    exits of the main close; touch -- the range exits on its range. The recorded ATR/ADX/RSI are
    the last main close's (``feat`` still holds that bar: nothing later is known yet)."""
    pos, acct, _rank_score, _rank_idx, fills, trades = book
    f = feat[s]
    p = params[s]
    ps = pos[s]
    if p[P.EXIT_FILL] == EXIT_FILL.CLOSE:
        if glitch(p, ps, c, ps[POS.SEEN_CLOSE]):
            ps[POS.SUB_FIRED] = -1.0  # no exit is decided on a bad print
            return
        fired = close_price_exits(pos, acct, params, s, t, c, f[F.ATR], f[F.ADX], f[F.RSI], fills, trades)
        if fired == 2:
            return  # flat: the row was reset (SUB_FIRED 0)
        tighten_stop(p, ps, c)
        ps[POS.SUB_FIRED] = fired
    else:
        range_exits(pos, acct, params, s, t, o, h, lo, f[F.ATR], f[F.ADX], f[F.RSI], fills, trades)


@kernel_function
def step_sub_bar(bar_open_ms, j, sub, feat, prev_valid, funding_row, params, btc_idx, book, exit_sub, entry_sub):
    """Sub-bar ``j`` of the main bar opening at ``bar_open_ms`` has closed (``sub`` = (o, h, lo, c,
    valid) rows over symbols and its close time). In order:
    1. on the first sub-bar, funding at the bar's open for every open position (the sub-bar's open,
       or the last close when the symbol has none);
    2. with ``exit_sub``, the exits of every open position on it (``sub_bar_exits``); a position
       open while its sub-bar is missing is flagged (``POS.SUB_MISSING``) so that the main close
       also evaluates the main bar;
    3. with ``entry_sub``, the entries on its close: the candidates of the symbols with this
       sub-bar and the previous main bar (``prev_valid``), from the last closed main bar's
       indicators with the sub-bar's OHLC (``stage_sub_prices``), ranked as at a main close, and
       taken under the bar's [trade.max_entry_orders_per_loop] (``A.BAR_OPENS``).
    Every row it needs across sub-bars lives in ``pos``/``acct``, so a checkpoint taken between
    two sub-bars resumes exactly."""
    pos, acct, rank_score, rank_idx, fills, trades = book
    o, h, lo, c, sv, close_ms = sub
    t = float(close_ms)
    acct[A.SUB_BAR_OPEN] = float(bar_open_ms)
    acct[A.SUB_NEXT] = j + 1.0
    if entry_sub == 0 and acct[A.OPEN_COUNT] == 0.0:
        return  # nothing to fund or exit, and no entry here (a flat symbol's last seen close is not read)
    for s in range(pos.shape[0]):
        ps = pos[s]
        if ps[POS.SIDE] == 0.0:
            continue
        if j == 0:
            charge_funding(pos, acct, params, s, funding_row[s], o[s] if sv[s] != 0 else ps[POS.LAST_CLOSE])
        if exit_sub != 0:
            if sv[s] == 0:
                ps[POS.SUB_MISSING] = 1.0
            else:
                sub_bar_exits(t, feat, params, s, book, o[s], h[s], lo[s], c[s])
        if entry_sub == 0 and sv[s] != 0:
            ps[POS.SEEN_CLOSE] = c[s]
    if entry_sub != 0:
        n = rank_entries(feat, sv, prev_valid, params, pos, btc_idx, rank_score, rank_idx, acct, t, fills, trades,
                         True)
        take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, mark_equity(pos, acct), fills)
        for s in range(pos.shape[0]):
            if sv[s] != 0:
                pos[s, POS.SEEN_CLOSE] = c[s]


@kernel_function
def main_bar_exits(t, feat, params, s, book, on_main):
    """The exits of symbol ``s`` at the main close. close: the indicators are noted; with
    ``on_main`` (no exit sub-bars, or one was missing) the price exits on the main close and the
    stop tightening on it; then the smart exits unless the last price evaluation fired (or was a
    glitch). touch: with ``on_main`` the range exits on the main bar's range; then, if still open,
    the exits on the close (``close_exits``)."""
    pos, acct, _rank_score, _rank_idx, fills, trades = book
    f = feat[s]
    p = params[s]
    ps = pos[s]
    if p[P.EXIT_FILL] == EXIT_FILL.CLOSE:
        note_indicators(ps, f)
        fired = ps[POS.SUB_FIRED]
        if on_main:
            if glitch(p, ps, f[F.CLOSE], ps[POS.SEEN_CLOSE]):
                return
            fired = close_price_exits(pos, acct, params, s, t, f[F.CLOSE], f[F.ATR], f[F.ADX], f[F.RSI], fills,
                                      trades)
            if fired == 2:
                return
            tighten_stop(p, ps, f[F.CLOSE])
        if fired == 0:
            smart_exits(pos, acct, params, feat, s, t, fills, trades)
    else:
        if on_main and range_exits(pos, acct, params, s, t, f[F.OPEN], f[F.HIGH], f[F.LOW], f[F.ATR], f[F.ADX],
                                   f[F.RSI], fills, trades):
            return
        close_exits(pos, acct, params, feat, s, t, fills, trades)


@kernel_function
def step_main_close(bar_open_ms, bar_close_ms, feat, valid, prev_valid, funding_row, params, btc_idx, book, nsub,
                    exit_sub):
    """The main bar has closed (``feat`` holds its indicators); its ``nsub`` sub-bars, if any, went
    through ``step_sub_bar`` before. The order is in the module docstring."""
    pos, acct, rank_score, rank_idx, fills, trades = book
    t = float(bar_close_ms)
    roll_day(acct, bar_open_ms)
    for s in range(pos.shape[0]):
        ps = pos[s]
        if nsub == 0 and ps[POS.SIDE] != 0.0:
            # funding is owed whether or not the symbol printed a candle: mark at the last close
            charge_funding(pos, acct, params, s, funding_row[s],
                           feat[s, F.OPEN] if valid[s] != 0 else ps[POS.LAST_CLOSE])
        if valid[s] != 0:
            note_funding_rate(ps, funding_row[s], bar_close_ms - bar_open_ms)
            if ps[POS.SIDE] != 0.0:
                main_bar_exits(t, feat, params, s, book, exit_sub == 0 or ps[POS.SUB_MISSING] != 0.0)
            ps[POS.PREV_CLOSE] = ps[POS.LAST_CLOSE]
            ps[POS.LAST_CLOSE] = feat[s, F.CLOSE]
            ps[POS.SEEN_CLOSE] = feat[s, F.CLOSE]
            ps[POS.PREV_EMA_SLOW] = ps[POS.LAST_EMA_SLOW]
            ps[POS.LAST_EMA_SLOW] = feat[s, F.EMA_SLOW]
            ps[POS.PREV_EMA_FAST] = ps[POS.LAST_EMA_FAST]
            ps[POS.LAST_EMA_FAST] = feat[s, F.EMA_FAST]
        ps[POS.SUB_FIRED] = 0.0
        ps[POS.SUB_MISSING] = 0.0
    n = rank_entries(feat, valid, prev_valid, params, pos, btc_idx, rank_score, rank_idx, acct, t, fills, trades,
                     False)
    equity = mark_equity(pos, acct)
    take_entries(feat, params, pos, acct, t, n, rank_score, rank_idx, equity, fills)
    note_equity(acct, mark_equity(pos, acct))
    acct[A.LAST_T] = t
    acct[A.SUB_BAR_OPEN] = -1.0
    acct[A.SUB_NEXT] = 0.0
    acct[A.BAR_OPENS] = 0.0


@kernel_function
def step_bar(bar_open_ms, bar_close_ms, feat, valid, prev_valid, funding_row, params, btc_idx, book, exit_bars):
    """One closed bar whose features are already in ``feat`` (the rule tests): its exit sub-bars
    (``exit_bars`` = (o, h, lo, c, valid [nsym, k], close_ms [k], k)) through ``step_sub_bar``, then
    ``step_main_close``. The engine and the sweep interleave the feature update between the two
    (cpu_replay.engine.advance_bar, gpu.kernels), so that the sub-bars see only the last closed bar."""
    sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms, nsub = exit_bars
    for j in range(nsub):
        step_sub_bar(bar_open_ms, j, (sub_o[:, j], sub_h[:, j], sub_l[:, j], sub_c[:, j], sub_valid[:, j],
                                      sub_close_ms[j]), feat, prev_valid, funding_row, params, btc_idx, book, 1, 0)
    step_main_close(bar_open_ms, bar_close_ms, feat, valid, prev_valid, funding_row, params, btc_idx, book, nsub,
                    1 if nsub > 0 else 0)


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
