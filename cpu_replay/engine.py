"""The canonical engine: streaming indicators + the decision kernel, one closed bar at a time.

`advance_bar` is the single code path of the engine. `replay_loop` calls it for every bar of a
data set (compiled end to end, so a replay runs at millions of symbol-bars per second); the
trading daemon calls it once per new closed bar through `Engine.step`. Both therefore make the
same decisions from the same bars, bit for bit.
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
    A_EQUITY,
    A_NFILLS,
    NACCT,
    NFILL,
    NPOS,
    NTRADE,
    POS_LAST_CLOSE,
    POS_SIDE,
    POS_SIZE,
    R_SYSTEM,
)
from strategy.params import P_EXIT_SLIPPAGE_BPS, P_SLIPPAGE_BPS, P_TAKER_FEE_BPS

_init_state = KERNEL_CPU.init_state
_step_bar = KERNEL_CPU.step_bar
_finish = KERNEL_CPU.finish
_stream_init = STREAM.init
_stream_update = STREAM.update
_close_position = KERNEL_CPU.close_position


@numba.njit(cache=True)
def advance_bar(bar_open_ms, interval_ms, bar, valid, prev_valid, funding, params, wv, btc_idx, states, feat,
                book, exit_bars, trade):
    """Feed one bar (``bar`` = (o, h, lo, c, v), arrays over symbols) to the streaming indicators,
    then to the kernel (``book`` and ``exit_bars`` as in strategy.kernel.bar)."""
    o, h, lo, c, v = bar
    for s in range(o.shape[0]):
        if valid[s]:
            _stream_update(states[s], wv, o[s], h[s], lo[s], c[s], v[s], feat[s])
    if trade:
        _step_bar(bar_open_ms, bar_open_ms + interval_ms, feat, valid, prev_valid, funding, params, btc_idx,
                  book, exit_bars)


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
def replay_loop(times, interval_ms, bars, valid, funding, params, wv, btc_idx, states, feat, book, sub, equity,
                first_idx, start_idx, end_idx, curve, sym_notional):
    """Replay bars [first_idx, end_idx): indicators warm up from first_idx, trading starts at
    start_idx. first_idx = 1 resumes a checkpoint whose last processed bar is bar 0.
    ``bars`` = (o, h, lo, c, v) [nsym, nbar]; ``sub`` = (sub_o, sub_h, sub_l, sub_c, sub_valid [nsym, nbar, k],
    sub_close_ms [nbar, k], k): the exit-interval bars of every bar. ``equity[b]`` gets the equity
    marked at bar b's close; ``curve`` [nbar, NCURVE] and ``sym_notional`` [nsym, nbar] the rest of
    the account (record_bar) when they have rows, else nothing (a sweep-sized replay pays nothing)."""
    o, h, lo, c, v = bars
    sub_o, sub_h, sub_l, sub_c, sub_valid, sub_close_ms, nsub = sub
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
                     sub_close_ms[b], nsub),
                    b >= start_idx)
        equity[b] = acct[A_EQUITY]
        if curve.shape[0] > 0:
            record_bar(b, pos, acct, curve, sym_notional)
    _finish(pos, acct, fills, trades, params)


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
    """

    def __init__(self, params: np.ndarray, wv: np.ndarray, symbols: list[str], interval_ms: int,
                 initial_balance: float, state: EngineState | None = None, max_fills_per_bar: int = 256):
        self.symbols = list(symbols)
        self.params = np.ascontiguousarray(params, dtype=np.float64)
        self.wv = np.ascontiguousarray(wv, dtype=np.int64)
        self.interval_ms = int(interval_ms)
        self.btc_idx = self.symbols.index("BTC") if "BTC" in self.symbols else -1
        self.state = state or EngineState.fresh(len(self.symbols), self.wv, initial_balance)
        nsym = len(self.symbols)
        self._rank_score = np.zeros(nsym)
        self._rank_idx = np.zeros(nsym, np.int64)
        # a bar makes at most ~3 fills per symbol (partial TP, close, open/add): sized so that the
        # kernel can never overflow it (an overflow would be found only after state had moved)
        self._fills = np.zeros((max(max_fills_per_bar, 4 * nsym + 16), NFILL))
        self._trades = np.zeros((0, NTRADE))

    def step(self, bar_open_ms: int, o, h, lo, c, v, valid, prev_valid, funding=None,
             trade: bool = True, sub=None) -> np.ndarray:
        """Process one closed bar; returns the fill rows it produced (copy, [k, NFILL]).

        `sub` = (sub_o, sub_h, sub_l, sub_c, sub_valid [nsym, k], sub_close_ms [k]) of the exit-interval
        bars inside this bar, or None to check exits on the bar itself.
        """
        st = self.state
        nsym = len(self.symbols)
        funding_row = np.zeros(nsym) if funding is None else np.asarray(funding, dtype=np.float64)
        if sub is None:
            z = np.zeros((nsym, 0))
            sub = (z, z, z, z, np.zeros((nsym, 0), np.uint8), np.zeros(0))
        before_fills = st.acct[A_NFILLS]
        st.acct[A_NFILLS] = 0.0
        book = (st.pos, st.acct, self._rank_score, self._rank_idx, self._fills, self._trades)
        exit_bars = (_f64(sub[0]), _f64(sub[1]), _f64(sub[2]), _f64(sub[3]), _u8(sub[4]), _f64(sub[5]),
                     int(sub[4].shape[1]))
        advance_bar(int(bar_open_ms), self.interval_ms, (_f64(o), _f64(h), _f64(lo), _f64(c), _f64(v)),
                    _u8(valid), _u8(prev_valid), funding_row, self.params, self.wv, self.btc_idx, st.states,
                    st.feat, book, exit_bars, trade)
        k = int(st.acct[A_NFILLS])
        if k > self._fills.shape[0]:
            raise RuntimeError(f"{k} fills in one bar exceed the engine's per-bar buffer")
        st.acct[A_NFILLS] = before_fills + k
        return self._fills[:k].copy()

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
