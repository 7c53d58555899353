"""`run_replay`: the canonical CPU replay of one config over a data set, as a report dict.

The factory, the walk-forward and slippage gates, the replay-alignment gate and the
`backtester replay` command all call this one function.
"""

from __future__ import annotations

import math

import numpy as np

from cpu_replay.engine import NCURVE, EngineState, replay_loop
from cpu_replay.report import (
    daily_returns,
    equity_curve,
    metrics_to_dict,
    per_symbol_stats,
    trace_checksum,
    utc_days,
    with_utc,
)
from cpu_replay.state_io import apply_init_state
from cpu_replay.subbars import SubBarError, SubBars, build_sub_bars
from marketdata.candles import exclude_symbols
from marketdata.sanity import iso_ms
from marketdata.subbars import sub_bar_plan
from strategy.kernel import KERNEL_CPU
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
    A_MAX_DD,
    A_NFILLS,
    A_PEAK,
    A_REALIZED,
    A_RET_DOWN_SQ,
    A_RET_M2,
    A_RET_MEAN,
    A_RET_N,
    A_SUB_NEXT,
    A_TRADES,
    A_WINS,
    NFILL,
    NM,
    NTRADE,
    POS_LAST_CLOSE,
    POS_SIDE,
    POS_SIZE,
)
from strategy.params import P_EXIT_SLIPPAGE_BPS, P_SLIPPAGE_BPS
from strategy.records import fill_dicts, trade_dicts


class ReplayError(ValueError):
    """A replay request that cannot run (one-line message for the operator)."""


def window_indices(times: np.ndarray, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """Bars whose open time is in [start_ms, end_ms): indices [start_idx, end_idx)."""
    start_idx = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
    end_idx = len(times) if end_ms is None else int(np.searchsorted(times, end_ms, side="left"))
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ReplayError(f"--start ({start_ms}) must be before --end ({end_ms})")
    if end_idx <= start_idx:
        raise ReplayError("no bars in the requested time window")
    return start_idx, end_idx


def check_engine_intervals(cfg, md, exit_md) -> tuple[int, int]:
    """Refuse what the engine cannot honour rather than silently ignore it; returns the sub-bar
    mode (exits on sub-bars, entries on sub-bars) as 0/1. ``exit_md`` holds the sub-bar candles
    (of the finer exit and/or entry interval)."""
    try:
        sub_iv, exit_sub, entry_sub = sub_bar_plan(md.interval, cfg.entry_interval, cfg.exit_interval)
    except SubBarError as exc:
        raise ReplayError(str(exc)) from None
    if sub_iv is None:
        return 0, 0
    key = "exit_interval" if exit_sub else "entry_interval"
    if exit_md is None:
        raise ReplayError(f"global.engine.{key}={sub_iv} needs the {sub_iv} candles "
                          f"(pass --exit-candles-db, or set {key} to null)")
    if exit_md.interval != sub_iv:
        raise ReplayError(f"{key[:-9]} candles are {exit_md.interval} but global.engine.{key}={sub_iv}")
    return int(exit_sub), int(entry_sub)


def replay_params(cfg, symbols: list[str], slippage_bps: float | None) -> np.ndarray:
    params = np.ascontiguousarray(cfg.params_matrix(symbols), dtype=np.float64)
    if slippage_bps is not None:
        if not (math.isfinite(slippage_bps) and slippage_bps >= 0):
            raise ReplayError(f"--slippage-bps must be a finite number >= 0 (got {slippage_bps})")
        # a stress level is worse fills on both legs: entries and exits alike
        params[:, P_SLIPPAGE_BPS] = float(slippage_bps)
        params[:, P_EXIT_SLIPPAGE_BPS] = float(slippage_bps)
    return params


def window_start(resume: EngineState) -> EngineState:
    """A copy of a trader's checkpoint whose counters start afresh, so the report (fills, trades,
    pnl, drawdown) describes the replayed window; positions, balance and indicators carry over."""
    state = resume.copy()
    acct = state.acct
    for key in (A_NFILLS, A_TRADES, A_WINS, A_GROSS_PROFIT, A_GROSS_LOSS, A_FEES, A_FUNDING, A_REALIZED, A_MAX_DD,
                A_RET_N, A_RET_MEAN, A_RET_M2, A_RET_DOWN_SQ):
        acct[key] = 0.0
    acct[A_INITIAL] = acct[A_BALANCE]
    acct[A_PEAK] = acct[A_EQUITY]
    acct[A_DAY] = -1.0
    acct[A_DAY_EQ] = acct[A_EQUITY]
    return state


def _run(md, params, wv, funding, initial_balance, init_state, start_idx, end_idx, max_fills, max_trades,
         sub: SubBars, resume: EngineState | None = None, with_curve: bool = False, sub_mode=(0, 0)):
    symbols = list(md.symbols)
    if resume is not None:
        state = window_start(resume)
    else:
        state = EngineState.fresh(len(symbols), wv, initial_balance)
    if init_state is not None:
        apply_init_state(state, init_state, symbols, params)
    first_idx = 1 if resume is not None else 0
    fills = np.zeros((max_fills, NFILL))
    trades = np.zeros((max_trades, NTRADE))
    equity = np.full(len(md.times), np.nan)
    nsym = len(symbols)
    nbar = len(md.times) if with_curve else 0
    curve = np.full((nbar, NCURVE), np.nan)   # the per-bar account beside the equity (engine.record_bar)
    sym_notional = np.zeros((nsym, nbar))
    start_account = account_at(state)
    book = (state.pos, state.acct, np.zeros(nsym), np.zeros(nsym, np.int64), fills, trades)
    replay_loop(md.times.astype(np.int64), int(md.interval_ms), (md.open, md.high, md.low, md.close, md.volume),
                md.valid, funding, params, wv, symbols.index("BTC") if "BTC" in symbols else -1, state.states,
                state.feat, book, (sub.open, sub.high, sub.low, sub.close, sub.valid, sub.close_ms, sub.k),
                (int(sub_mode[0]), int(sub_mode[1])), equity,
                first_idx, max(start_idx, first_idx), end_idx, curve, sym_notional)
    return state, fills, trades, equity, (curve, sym_notional, start_account)


def account_at(state: EngineState) -> dict:
    """The account before the first replayed bar, in equity_curve's columns (a resumed checkpoint
    may start with open positions)."""
    pos, acct = state.pos, state.acct
    notional = np.where(pos[:, POS_SIDE] != 0.0, pos[:, POS_SIZE] * pos[:, POS_LAST_CLOSE] * pos[:, POS_SIDE], 0.0)
    notional = np.nan_to_num(notional)
    return {"equity": float(acct[A_EQUITY]), "balance": float(acct[A_BALANCE]),
            "exposure": float(np.abs(notional).sum()), "open_positions": float(np.count_nonzero(pos[:, POS_SIDE])),
            "by_symbol": notional}


def run_replay(cfg, md, *, funding: np.ndarray | None = None, initial_balance: float = 10_000.0,
               slippage_bps: float | None = None, start_ms: int | None = None, end_ms: int | None = None,
               with_trades: bool = True, init_state: dict | None = None, exit_md=None,
               resume: EngineState | None = None, with_equity: bool = False) -> dict:
    """Replay `cfg` over `md` with the canonical engine; see the module docstring.

    `exit_md`: candles of the config's finer exit and/or entry interval (same symbols): the
    sub-bars inside each main bar, on which exits (and entries) are then decided as each closes.
    `resume`: a trader's engine checkpoint taken after bar 0 of `md` (same symbols, same windows):
    the replay continues from it bit for bit instead of warming up from scratch.
    `with_equity`: add `equity_curve`, the engine's per-bar marked-to-market equity (report.equity_curve).
    """
    if not (math.isfinite(initial_balance) and initial_balance > 0):
        raise ReplayError(f"--initial-balance must be a finite number > 0 (got {initial_balance})")
    if resume is not None and init_state is not None:
        raise ReplayError("give either an init state or an engine checkpoint to resume, not both")
    if resume is not None and resume.acct[A_SUB_NEXT] > 0:
        raise ReplayError(f"the engine checkpoint was taken inside a bar (after its sub-bar "
                          f"{int(resume.acct[A_SUB_NEXT]) - 1}); resume from one taken at a main close")
    if resume is not None and resume.pos.shape[0] != len(md.symbols):
        raise ReplayError(f"the engine checkpoint holds {resume.pos.shape[0]} symbols, the data {len(md.symbols)}")
    md, funding = exclude_symbols(md, cfg.watchlist_exclude, funding)
    symbols = list(md.symbols)
    if not symbols:
        raise ReplayError("no symbols to replay (all excluded by watchlist_exclude?)")
    sub_mode = check_engine_intervals(cfg, md, exit_md)
    if sub_mode != (0, 0):
        try:
            sub = build_sub_bars(md, exit_md)
        except SubBarError as exc:
            raise ReplayError(str(exc)) from None
        sub.exits, sub.entries = bool(sub_mode[0]), bool(sub_mode[1])
    else:
        sub = SubBars.none(len(symbols), len(md.times))
    params = replay_params(cfg, symbols, slippage_bps)
    wv = np.ascontiguousarray(cfg.windows(), dtype=np.int64)
    if funding is None:
        funding = np.zeros(md.close.shape)
    funding = np.ascontiguousarray(funding, dtype=np.float64)
    start_idx, end_idx = window_indices(md.times, start_ms, end_ms)
    end_idx = max(start_idx, min(end_idx, sub.covered))  # a bar whose exit bars are not all in waits
    max_fills = max(1024, len(symbols) * (end_idx - start_idx) // 16)
    state, fills, trades, equity, account = _run(md, params, wv, funding, initial_balance, init_state,
                                                 start_idx, end_idx, max_fills, max_fills, sub, resume, with_equity,
                                                 sub_mode)
    n_fills, n_trades = int(state.acct[A_NFILLS]), int(state.acct[A_TRADES])
    if n_fills > max_fills or n_trades > max_fills:   # buffers overflowed: rerun with exact sizes
        state, fills, trades, equity, account = _run(md, params, wv, funding, initial_balance, init_state,
                                                     start_idx, end_idx, n_fills, n_trades, sub, resume, with_equity,
                                                     sub_mode)
    metrics = np.zeros(NM)
    KERNEL_CPU.write_metrics(state.acct, metrics)
    fills, trades = fills[:n_fills], trades[:n_trades]
    report = _report(cfg, md, metrics, state, fills, trades, equity, start_idx, end_idx, params, with_trades)
    if with_equity:
        first = max(start_idx, 1 if resume is not None else 0)
        curve, sym_notional, start = account
        report["equity_curve"] = equity_curve(md.times, md.interval_ms, equity, curve, sym_notional, symbols,
                                              first, end_idx, start, report["final_balance"])
    return report


def _report(cfg, md, metrics, state, fills, trades, equity, start_idx, end_idx, params, with_trades):
    symbols = list(md.symbols)
    m = metrics_to_dict(metrics)
    initial = float(state.acct[A_INITIAL])
    final = float(state.acct[A_BALANCE])
    report = {
        **m,
        "initial_balance": initial,
        "final_balance": final,
        "return_pct": (final / initial - 1.0) * 100.0 if initial > 0 else 0.0,
        "slippage_bps": float(params[0, P_SLIPPAGE_BPS]),
        "config_id": cfg.config_id,
        "interval": md.interval,
        "symbols": symbols,
        "start_ms": int(md.times[start_idx]),
        "end_ms": int(md.times[end_idx - 1] + md.interval_ms),
        "bars": int(end_idx - start_idx),
        "per_symbol": per_symbol_stats(trades, symbols),
        "trace_checksum": trace_checksum(fills),
        "fills_count": int(len(fills)),
        "daily_returns": daily_returns(md.times, equity, start_idx, end_idx, initial, final),
    }
    report["max_drawdown_pct"] = m["max_drawdown_pct"]
    report["start_utc"], report["end_utc"] = iso_ms(report["start_ms"]), iso_ms(report["end_ms"])
    report["daily_return_days"] = utc_days(md.times, start_idx, end_idx)
    if with_trades:
        report["trades"] = [with_utc(t) for t in trade_dicts(trades, symbols)]
        report["fills"] = [with_utc(f) for f in fill_dicts(fills, symbols)]
    return report
