"""The canonical engine: streaming indicators + the decision kernel, one closed (sub-)bar at a time.

`advance_bar` is the single code path of the engine: the bar's sub-bars through `step_subs` (the
kernel's ``step_sub_bar``, each as it closes), then `close_bar` (the streaming indicators, then the
kernel's ``step_main_close``). `replay_loop` calls it for every bar of a data set (compiled end to
end, so a replay runs at millions of symbol-bars per second); the trading daemon calls the same two
pieces through `Engine.step_sub` as each sub-bar closes and `Engine.step_close` at the main close
(or both at once through `Engine.step`). All therefore make the same decisions from the same bars,
bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from strategy.features import NF
from strategy.indicators import STREAM, stream_state_len
from strategy.kernel import KERNEL_CPU
from strategy.layout import (
    A_BALANCE,
    A_BAR_OPENS,
    A_EQUITY,
    A_NFILLS,
    A_SUB_BAR_OPEN,
    A_SUB_NEXT,
    NACCT,
    NFILL,
    NPOS,
    NTRADE,
    POS_LAST_CLOSE,
    POS_SIDE,
    POS_SIZE,
    POS_SUB_FIRED,
    POS_SUB_MISSING,
    R_SYSTEM,
)
from strategy.params import P_EXIT_SLIPPAGE_BPS, P_SLIPPAGE_BPS, P_TAKER_FEE_BPS

_init_state = KERNEL_CPU.init_state
_step_sub_bar = KERNEL_CPU.step_sub_bar
_step_main_close = KERNEL_CPU.step_main_close
_stage_sub_prices = KERNEL_CPU.stage_sub_prices
_finish = KERNEL_CPU.finish
_stream_init = STREAM.init
_stream_update = STREAM.update
_close_position = KERNEL_CPU.close_position


@numba.njit(cache=True)
def step_subs(bar_open_ms, sub, feat, prev_valid, funding, params, btc_idx, book, j0, j1, exit_sub, entry_sub):
    """Sub-bars j0 .. j1-1 of the bar opening at ``bar_open_ms`` (``sub`` = (o, h, lo, c, valid [nsym, k],
    close_ms [k])), each through the kernel's step_sub_bar; ``feat`` holds the last closed main bar.
    With entry sub-bars the sub-bar's OHLC is staged into ``feat`` first (kernel stage_sub_prices)."""
    sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms = sub
    for j in range(j0, j1):
        if entry_sub != 0:
            _stage_sub_prices(feat, sub_o[:, j], sub_h[:, j], sub_l[:, j], sub_c[:, j], sub_valid[:, j])
        _step_sub_bar(bar_open_ms, j, (sub_o[:, j], sub_h[:, j], sub_l[:, j], sub_c[:, j], sub_valid[:, j],
                                       sub_close_ms[j]), feat, prev_valid, funding, params, btc_idx, book,
                      exit_sub, entry_sub)


@numba.njit(cache=True)
def close_bar(bar_open_ms, interval_ms, bar, valid, prev_valid, funding, params, wv, btc_idx, states, feat, book,
              nsub, exit_sub, trade):
    """The main bar closes: ``bar`` = (o, h, lo, c, v), arrays over symbols, feeds the streaming
    indicators, then (``trade``) the kernel's step_main_close; ``nsub`` sub-bars went before it."""
    o, h, lo, c, v = bar
    for s in range(o.shape[0]):
        if valid[s]:
            _stream_update(states[s], wv, o[s], h[s], lo[s], c[s], v[s], feat[s])
    if trade:
        _step_main_close(bar_open_ms, bar_open_ms + interval_ms, feat, valid, prev_valid, funding, params, btc_idx,
                         book, nsub, exit_sub if nsub > 0 else 0)


@numba.njit(cache=True)
def advance_bar(bar_open_ms, interval_ms, bar, valid, prev_valid, funding, params, wv, btc_idx, states, feat,
                book, sub, nsub, exit_sub, entry_sub, trade):
    """One whole bar: its ``nsub`` sub-bars (``step_subs``; none while warming up), then ``close_bar``
    (``book`` as in strategy.kernel.bar)."""
    if trade:
        step_subs(bar_open_ms, sub, feat, prev_valid, funding, params, btc_idx, book, 0, nsub, exit_sub, entry_sub)
    close_bar(bar_open_ms, interval_ms, bar, valid, prev_valid, funding, params, wv, btc_idx, states, feat, book,
              nsub, exit_sub, trade)


# per-bar account columns written by replay_loop beside the equity (cpu_replay.report.equity_curve)
CURVE_BALANCE, CURVE_EXPOSURE, CURVE_OPEN = 0, 1, 2
NCURVE = 3


@numba.njit(cache=True)
def record_bar(b, pos, acct, curve, sym_notional):
    """The account at bar b's close, as the engine holds it: realised balance (cash), gross
    exposure (sum of |size x mark|), open positions, and each symbol's signed notional at its mark
    (only when ``sym_notional`` has bar columns: it costs nsym x nbar)."""
    exposure = 0.0
    n_open = 0.0
    per_symbol = sym_notional.shape[1] > 0
    for s in range(pos.shape[0]):
        notional = 0.0
        if pos[s, POS_SIDE] != 0.0:
            notional = pos[s, POS_SIZE] * pos[s, POS_LAST_CLOSE] * pos[s, POS_SIDE]
            exposure += abs(notional)
            n_open += 1.0
        if per_symbol:
            sym_notional[s, b] = notional
    curve[b, CURVE_BALANCE] = acct[A_BALANCE]
    curve[b, CURVE_EXPOSURE] = exposure
    curve[b, CURVE_OPEN] = n_open


@numba.njit(cache=True)
def replay_loop(times, interval_ms, bars, valid, funding, params, wv, btc_idx, states, feat, book, sub, sub_mode,
                equity, first_idx, start_idx, end_idx, curve, sym_notional):
    """Replay bars [first_idx, end_idx): indicators warm up from first_idx, trading starts at
    start_idx. first_idx = 1 resumes a checkpoint whose last processed bar is bar 0.
    ``bars`` = (o, h, lo, c, v) [nsym, nbar]; ``sub`` = (sub_o, sub_h, sub_l, sub_c, sub_valid [nsym, nbar, k],
    sub_close_ms [nbar, k], k): the sub-bars of every bar, used for exits and/or entries as
    ``sub_mode`` = (exit_sub, entry_sub) says. ``equity[b]`` gets the equity
    marked at bar b's close; ``curve`` [nbar, NCURVE] and ``sym_notional`` [nsym, nbar] the rest of
    the account (record_bar) when they have rows, else nothing (a sweep-sized replay pays nothing)."""
    o, h, lo, c, v = bars
    sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms, nsub = sub
    exit_sub, entry_sub = sub_mode
    pos, acct, _rank_score, _rank_idx, fills, trades = book
    nsym = o.shape[0]
    valid_row = np.zeros(nsym, np.uint8)
    prev_row = np.zeros(nsym, np.uint8)
    for b in range(first_idx, end_idx):
        for s in range(nsym):
            valid_row[s] = 1 if valid[s, b] else 0
            prev_row[s] = 1 if (b > 0 and valid[s, b - 1]) else 0
        advance_bar(times[b], interval_ms, (o[:, b], h[:, b], lo[:, b], c[:, b], v[:, b]), valid_row, prev_row,
                    funding[:, b], params, wv, btc_idx, states, feat, book,
                    (sub_o[:, b, :], sub_h[:, b, :], sub_l[:, b, :], sub_c[:, b, :], sub_valid[:, b, :],
                     sub_close_ms[b]), nsub, exit_sub, entry_sub, b >= start_idx)
        equity[b] = acct[A_EQUITY]
        if curve.shape[0] > 0:
            record_bar(b, pos, acct, curve, sym_notional)
    _finish(pos, acct, fills, trades, params)


@numba.njit(cache=True)
def step_one_sub(bar_open_ms, j, sub, feat, prev_valid, funding, params, btc_idx, book, exit_sub, entry_sub):
    """Sub-bar j alone (``sub`` holds it as its only column): what Engine.step_sub runs."""
    sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms = sub
    if entry_sub != 0:
        _stage_sub_prices(feat, sub_o[:, 0], sub_h[:, 0], sub_l[:, 0], sub_c[:, 0], sub_valid[:, 0])
    _step_sub_bar(bar_open_ms, j, (sub_o[:, 0], sub_h[:, 0], sub_l[:, 0], sub_c[:, 0], sub_valid[:, 0],
                                   sub_close_ms[0]), feat, prev_valid, funding, params, btc_idx, book,
                  exit_sub, entry_sub)


@numba.njit(cache=True)
def flatten_all(t, params, pos, acct, fills, trades):
    """Close every open position at its last close (operator or safe-mode flatten)."""
    for s in range(pos.shape[0]):
        if pos[s, POS_SIDE] != 0.0:
            _close_position(pos, acct, params, s, float(t), pos[s, POS_LAST_CLOSE], 1.0, R_SYSTEM,
                            np.nan, np.nan, np.nan, fills, trades)


@numba.njit(cache=True)
def init_streams(states, wv):
    for s in range(states.shape[0]):
        _stream_init(states[s], wv)


@dataclass
class EngineState:
    """Everything the engine carries from one bar to the next (checkpointable)."""

    states: np.ndarray      # streaming indicator state [nsym, L]
    feat: np.ndarray        # last feature rows [nsym, NF]
    pos: np.ndarray         # positions [nsym, NPOS]
    acct: np.ndarray        # account [NACCT]

    @classmethod
    def fresh(cls, nsym: int, wv: np.ndarray, initial_balance: float) -> EngineState:
        states = np.zeros((nsym, stream_state_len(wv)))
        init_streams(states, wv)
        feat = np.full((nsym, NF), np.nan)
        pos = np.zeros((nsym, NPOS))
        acct = np.zeros(NACCT)
        _init_state(pos, acct, initial_balance)
        return cls(states, feat, pos, acct)

    def copy(self) -> EngineState:
        return EngineState(self.states.copy(), self.feat.copy(), self.pos.copy(), self.acct.copy())


class Engine:
    """Step-by-step driver of the canonical engine (the trading daemon's view).

    Fills are produced by the kernel's simulated broker (decision price moved by slippage, taker
    fee); callers route them to their Broker (paper DB, dry-run log, exchange).

    Sub-bars (the finer candles of [engine.exit_interval] and/or [engine.entry_interval], one grid):
    ``sub_exits`` -- exits are decided on them; ``sub_entries`` -- entries too. A main bar is either
    ``step`` (all at once) or, as the candles close, ``step_sub`` for j = 0 .. k-1 (every index, in
    order, a missing sub-bar with valid 0) and then ``step_close``: the same kernel calls in the same
    order, so both give the same fills bit for bit. The state between two ``step_sub`` calls is a
    complete checkpoint (``A.SUB_BAR_OPEN``, ``A.SUB_NEXT`` say where the bar stands).
    """

    def __init__(self, params: np.ndarray, wv: np.ndarray, symbols: list[str], interval_ms: int,
                 initial_balance: float, state: EngineState | None = None, max_fills_per_bar: int = 256,
                 sub_exits: bool = True, sub_entries: bool = False):
        self.symbols = list(symbols)
        self.params = np.ascontiguousarray(params, dtype=np.float64)
        self.wv = np.ascontiguousarray(wv, dtype=np.int64)
        self.interval_ms = int(interval_ms)
        self.btc_idx = self.symbols.index("BTC") if "BTC" in self.symbols else -1
        self.state = state or EngineState.fresh(len(self.symbols), self.wv, initial_balance)
        self.sub_exits = bool(sub_exits)
        self.sub_entries = bool(sub_entries)
        nsym = len(self.symbols)
        self._rank_score = np.zeros(nsym)
        self._rank_idx = np.zeros(nsym, np.int64)
        # a (sub-)bar makes at most ~3 fills per symbol (partial TP, close, open/add): sized so that
        # the kernel can never overflow it (an overflow would be found only after state had moved)
        self._max_fills_per_bar = max_fills_per_bar
        self._fills = np.zeros((max(max_fills_per_bar, 4 * nsym + 16), NFILL))
        self._trades = np.zeros((0, NTRADE))

    @property
    def sub_position(self) -> tuple[int, int]:
        """(open time of the main bar whose sub-bars are being stepped, sub-bars of it done);
        (-1, 0) right after a main close."""
        acct = self.state.acct
        return int(acct[A_SUB_BAR_OPEN]), int(acct[A_SUB_NEXT])

    def _room(self, steps: int) -> None:
        need = max(self._max_fills_per_bar, 4 * len(self.symbols) * steps + 16)
        if self._fills.shape[0] < need:
            self._fills = np.zeros((need, NFILL))

    def _book(self):
        st = self.state
        return (st.pos, st.acct, self._rank_score, self._rank_idx, self._fills, self._trades)

    def _funding(self, funding) -> np.ndarray:
        return np.zeros(len(self.symbols)) if funding is None else _f64(funding)

    def _collect(self, before_fills: float) -> np.ndarray:
        st = self.state
        k = int(st.acct[A_NFILLS])
        if k > self._fills.shape[0]:
            raise RuntimeError(f"{k} fills in one bar exceed the engine's per-bar buffer")
        st.acct[A_NFILLS] = before_fills + k
        return self._fills[:k].copy()

    def step_sub(self, bar_open_ms: int, j: int, sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms: int,
                 funding=None, prev_valid=None) -> np.ndarray:
        """Sub-bar ``j`` of the main bar opening at ``bar_open_ms`` has closed: rows over symbols
        (a symbol without this sub-bar: valid 0, prices ignored). ``funding``: the main bar's rates,
        charged at its open on j == 0 (ignored after). ``prev_valid``: the previous main bar's valid
        row (required with ``sub_entries``: a symbol enters on a sub-bar only after a main bar).
        Returns the fill rows (copy, [k, NFILL])."""
        st = self.state
        bar_open, done = self.sub_position
        if j != done or (j > 0 and bar_open != int(bar_open_ms)):
            where = "a main close" if bar_open < 0 else f"sub-bar {done - 1} of the bar opening at {bar_open}"
            raise RuntimeError(f"step_sub(bar {int(bar_open_ms)}, j={j}) out of order: the engine is after {where}")
        nsym = len(self.symbols)
        if prev_valid is None:
            if self.sub_entries:
                raise ValueError("step_sub needs prev_valid (the previous main bar's valid row) with entry sub-bars")
            prev_valid = np.zeros(nsym, np.uint8)
        self._room(1)
        before = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        sub = (_f64(sub_o).reshape(nsym, 1), _f64(sub_h).reshape(nsym, 1), _f64(sub_l).reshape(nsym, 1),
               _f64(sub_c).reshape(nsym, 1), _u8(sub_valid).reshape(nsym, 1), np.array([float(sub_close_ms)]))
        # step_subs runs sub-bar index 0 of this one-column window as sub-bar j of the bar
        step_one_sub(int(bar_open_ms), int(j), sub, st.feat, _u8(prev_valid), self._funding(funding), self.params,
                     self.btc_idx, self._book(), int(self.sub_exits), int(self.sub_entries))
        return self._collect(before)

    def step_close(self, bar_open_ms: int, o, h, lo, c, v, valid, prev_valid, funding=None, trade: bool = True,
                   n_sub: int | None = None) -> np.ndarray:
        """The main bar opening at ``bar_open_ms`` has closed (rows over symbols). ``n_sub``: how
        many sub-bars it has (None: as many as ``step_sub`` stepped; a mismatch is refused, as is a
        bar other than the one whose sub-bars were stepped). ``funding`` is charged here only when
        the bar has no sub-bars. Returns the fill rows."""
        st = self.state
        bar_open, done = self.sub_position
        if done > 0 and bar_open != int(bar_open_ms):
            raise RuntimeError(f"step_close(bar {int(bar_open_ms)}): the engine is inside the bar opening at "
                               f"{bar_open} (sub-bar {done - 1} stepped)")
        n_sub = done if n_sub is None else int(n_sub)
        if trade and n_sub != done:
            raise RuntimeError(f"step_close(bar {int(bar_open_ms)}): {done} of its {n_sub} sub-bars were stepped")
        self._room(1)
        before = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        close_bar(int(bar_open_ms), self.interval_ms, (_f64(o), _f64(h), _f64(lo), _f64(c), _f64(v)), _u8(valid),
                  _u8(prev_valid), self._funding(funding), self.params, self.wv, self.btc_idx, st.states, st.feat,
                  self._book(), n_sub, int(self.sub_exits), trade)
        if not trade and done > 0:
            # closed untraded (the trader's halt / too-old bar) after sub-bars were stepped: their
            # bookkeeping ends with the bar, as step_main_close ends it, so the next starts at j = 0
            st.pos[:, POS_SUB_FIRED] = 0.0
            st.pos[:, POS_SUB_MISSING] = 0.0
            st.acct[A_SUB_BAR_OPEN], st.acct[A_SUB_NEXT], st.acct[A_BAR_OPENS] = -1.0, 0.0, 0.0
        return self._collect(before)

    def step(self, bar_open_ms: int, o, h, lo, c, v, valid, prev_valid, funding=None,
             trade: bool = True, sub=None) -> np.ndarray:
        """Process one closed bar whole: its sub-bars, then its close; returns the fill rows (copy,
        [k, NFILL]). The same kernel calls as ``step_sub`` x k + ``step_close``, and as the replay.

        `sub` = (sub_o, sub_h, sub_l, sub_c, sub_valid [nsym, k], sub_close_ms [k]) of the sub-bars
        inside this bar, or None for a bar without sub-bars.
        """
        st = self.state
        nsym = len(self.symbols)
        bar_open, done = self.sub_position
        if done > 0:
            raise RuntimeError(f"step(bar {int(bar_open_ms)}): the engine is inside the bar opening at {bar_open} "
                               f"(sub-bar {done - 1} stepped); finish it with step_sub/step_close")
        if sub is None:
            z = np.zeros((nsym, 0))
            sub = (z, z, z, z, np.zeros((nsym, 0), np.uint8), np.zeros(0))
        k = int(sub[4].shape[1])
        self._room(k + 1)
        before = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        advance_bar(int(bar_open_ms), self.interval_ms, (_f64(o), _f64(h), _f64(lo), _f64(c), _f64(v)),
                    _u8(valid), _u8(prev_valid), self._funding(funding), self.params, self.wv, self.btc_idx,
                    st.states, st.feat, self._book(),
                    (_f64(sub[0]), _f64(sub[1]), _f64(sub[2]), _f64(sub[3]), _u8(sub[4]), _f64(sub[5])), k,
                    int(self.sub_exits), int(self.sub_entries), trade)
        return self._collect(before)

    def close_external(self, s: int, price: float, t_ms: int, reason: float = R_SYSTEM,
                       fraction: float = 1.0) -> np.ndarray:
        """Book a close that happened outside the engine (tools/flat_now.py on the paper DB, a
        protective stop resting on the exchange: live/protection.py): `fraction` of the position
        (>= 1: all of it) is closed at `price` with no slippage or fee, through the kernel's own
        close_position; returns the fill row (live mode then applies the exchange's real fee and pnl)."""
        params = self.params.copy()
        params[:, P_SLIPPAGE_BPS] = 0.0
        params[:, P_EXIT_SLIPPAGE_BPS] = 0.0
        params[:, P_TAKER_FEE_BPS] = 0.0
        st = self.state
        before = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        _close_position(st.pos, st.acct, params, s, float(t_ms), float(price), float(fraction), float(reason),
                        np.nan, np.nan, np.nan, self._fills, self._trades)
        k = int(st.acct[A_NFILLS])
        st.acct[A_NFILLS] = before + k
        return self._fills[:k].copy()

    def flatten(self, t_ms: int) -> np.ndarray:
        """Close every position now (reason `system`); returns the fill rows."""
        st = self.state
        before = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        flatten_all(int(t_ms), self.params, st.pos, st.acct, self._fills, self._trades)
        k = int(st.acct[A_NFILLS])
        st.acct[A_NFILLS] = before + k
        return self._fills[:k].copy()


def _f64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _u8(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.uint8)
