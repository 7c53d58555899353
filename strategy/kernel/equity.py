"""Equity: marks, drawdown, daily returns and the metrics row.

Rules:
- Equity = balance + the open positions' unrealised pnl at each symbol's last close; a symbol
  with no bar keeps its last close as its mark.
- Drawdown is measured at every bar close from the equity high-water mark.
- A daily return is the change of equity between the last bar closes of two UTC days (the first
  day against the initial balance); sharpe and sortino annualise their mean by sqrt(365).
- Profit factor = gross profit / gross loss of the closed round trips (net of fees and funding);
  999 when there is profit and no loss.
"""

from __future__ import annotations

import math

from strategy.kernel.registry import MS_PER_DAY, PF_NO_LOSS, SQRT_365, kernel_function
from strategy.layout import POS, A, M


@kernel_function
def mark_equity(pos, acct):
    """Balance plus the unrealised pnl of every open position at its last close."""
    equity = acct[A.BALANCE]
    for s in range(pos.shape[0]):
        ps = pos[s]
        if ps[POS.SIDE] != 0.0:
            equity += (ps[POS.LAST_CLOSE] - ps[POS.ENTRY]) * ps[POS.SIZE] * ps[POS.SIDE]
    return equity


@kernel_function
def note_equity(acct, equity):
    """Equity at a bar close: high-water mark and max drawdown."""
    acct[A.EQUITY] = equity
    if equity > acct[A.PEAK]:
        acct[A.PEAK] = equity
    if acct[A.PEAK] > 0.0:
        dd = (acct[A.PEAK] - equity) / acct[A.PEAK]
        if dd > acct[A.MAX_DD]:
            acct[A.MAX_DD] = dd


@kernel_function
def note_daily_return(acct, equity):
    """Welford update with one daily return (equity at a UTC day's last bar close)."""
    prev = acct[A.DAY_EQ]
    r = equity / prev - 1.0 if prev > 0.0 else 0.0
    n = acct[A.RET_N] + 1.0
    delta = r - acct[A.RET_MEAN]
    acct[A.RET_MEAN] += delta / n
    acct[A.RET_M2] += delta * (r - acct[A.RET_MEAN])
    acct[A.RET_N] = n
    if r < 0.0:
        acct[A.RET_DOWN_SQ] += r * r
    acct[A.DAY_EQ] = equity


@kernel_function
def roll_day(acct, bar_open_ms):
    """A bar of a new UTC day books the previous day's return (equity at its last close)."""
    day = float(bar_open_ms // MS_PER_DAY)
    if day != acct[A.DAY]:
        if acct[A.DAY] >= 0.0:
            note_daily_return(acct, acct[A.EQUITY])
        acct[A.DAY] = day


@kernel_function
def write_metrics(acct, out):
    """The metrics row (``M`` layout) of a finished run."""
    initial = acct[A.INITIAL]
    trades = acct[A.TRADES]
    out[M.TOTAL_PNL] = acct[A.BALANCE] - initial
    out[M.TOTAL_TRADES] = trades
    out[M.WIN_RATE] = acct[A.WINS] / trades if trades > 0.0 else 0.0
    if acct[A.GROSS_LOSS] > 0.0:
        out[M.PROFIT_FACTOR] = acct[A.GROSS_PROFIT] / acct[A.GROSS_LOSS]
    elif acct[A.GROSS_PROFIT] > 0.0:
        out[M.PROFIT_FACTOR] = PF_NO_LOSS
    else:
        out[M.PROFIT_FACTOR] = 0.0
    out[M.MAX_DD] = acct[A.MAX_DD]
    n = acct[A.RET_N]
    mean = acct[A.RET_MEAN]
    sharpe = 0.0
    if n > 1.0:
        std = math.sqrt(acct[A.RET_M2] / (n - 1.0))
        if std > 0.0:
            sharpe = mean / std * SQRT_365
    out[M.SHARPE] = sharpe
    sortino = 0.0
    if n > 0.0:
        down = math.sqrt(acct[A.RET_DOWN_SQ] / n)
        if down > 0.0:
            sortino = mean / down * SQRT_365
        elif mean > 0.0:
            sortino = PF_NO_LOSS
    out[M.SORTINO] = sortino
    out[M.TOTAL_FEES] = acct[A.FEES]
    out[M.TOTAL_FUNDING] = acct[A.FUNDING]
    out[M.FINAL_BALANCE] = acct[A.BALANCE]
    out[M.NFILLS] = acct[A.NFILLS]
