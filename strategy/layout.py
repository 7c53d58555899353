"""Array layouts of the kernel's state and outputs (shared by the engine, the sweep and reports).

Kernels keep all state in preallocated float64 arrays so that the same functions compile for a
CUDA thread and for a CPU loop without allocating. Column constants are plain ints.
"""

# --- per-symbol position state: pos[nsym, NPOS]
POS_SIDE = 0            # 0 flat, +1 long, -1 short
POS_SIZE = 1            # units of the asset (always >= 0)
POS_ENTRY = 2           # average entry price
POS_ENTRY_ATR = 3       # ATR at the opening fill
POS_STOP = 4            # current stop level (trails, never loosens)
POS_TP1_DONE = 5        # partial take-profit already taken (0/1)
POS_ADDS = 6            # pyramid adds so far
POS_OPEN_T = 7          # open time (bar close ms of the opening bar)
POS_LAST_ADD_T = 8      # time of the last open/add (for the add cooldown)
POS_MARGIN = 9          # margin in use
POS_BASE_MARGIN = 10    # margin of the opening fill (adds are a fraction of it)
POS_LEVERAGE = 11
POS_CONF = 12           # confidence at entry: 0 low, 1 medium, 2 high
POS_TP_MULT = 13        # take-profit ATR multiple fixed at entry
POS_LAST_EXIT_T = 14    # time of the last full close (reentry cooldown); survives the close
POS_LAST_CLOSE = 15     # last valid close of the symbol (marks and end-of-data closes)
POS_TRADE_PNL = 16      # realised price pnl of the current round trip
POS_TRADE_FEES = 17     # fees of the current round trip
POS_TRADE_FUNDING = 18  # funding paid by the current round trip (positive = paid)
POS_MAX_SIZE = 19       # largest size reached in the round trip
POS_ENTRY_REASON = 20   # reason code of the opening fill
POS_FIRST_ENTRY = 21    # price of the opening fill
POS_STOP_REASON = 22    # reason code a stop hit would carry (stop_loss / trailing_stop / breakeven_stop)
NPOS = 23

# --- account state: acct[NACCT]
A_BALANCE = 0           # cash: initial + realised pnl - fees - funding
A_EQUITY = 1            # mark-to-market equity at the last bar close
A_PEAK = 2              # equity high-water mark
A_MAX_DD = 3            # largest peak-to-trough fall, fraction
A_FEES = 4
A_FUNDING = 5
A_TRADES = 6            # closed round trips
A_WINS = 7
A_GROSS_PROFIT = 8
A_GROSS_LOSS = 9
A_REALIZED = 10         # sum of realised price pnl
A_NFILLS = 11           # fills recorded (may exceed the fills buffer: overflow)
A_DAY = 12              # UTC day index of the last bar seen (-1 before the first)
A_DAY_EQ = 13           # equity at the close of the previous UTC day
A_RET_N = 14            # daily returns so far (Welford)
A_RET_MEAN = 15
A_RET_M2 = 16
A_RET_DOWN_SQ = 17      # sum of squared negative daily returns (sortino)
A_INITIAL = 18
A_LAST_T = 19           # close time of the last processed bar
A_OPEN_COUNT = 20       # open positions
A_MARGIN_USED = 21
NACCT = 22

# --- fills (the decision trace): fills[max_fills, NFILL]
FL_T = 0
FL_SYM = 1
FL_ACTION = 2           # ACT_* below
FL_SIDE = 3             # +1 long / -1 short (side of the position)
FL_PRICE = 4            # fill price after slippage
FL_SIZE = 5
FL_NOTIONAL = 6
FL_FEE = 7
FL_PNL = 8              # realised price pnl of this fill (0 for OPEN/ADD)
FL_REASON = 9           # R_* below
FL_CONF = 10
FL_BALANCE = 11         # balance after the fill
FL_ATR = 12
FL_ADX = 13
FL_RSI = 14
FL_DECISION_PRICE = 15  # price before slippage
NFILL = 16

ACT_OPEN = 1
ACT_ADD = 2
ACT_REDUCE = 3
ACT_CLOSE = 4
ACT_FUNDING = 5
ACTION_NAMES = {1: "OPEN", 2: "ADD", 3: "REDUCE", 4: "CLOSE", 5: "FUNDING"}

# --- closed round trips: trades[max_trades, NTRADE]
T_SYM = 0
T_SIDE = 1
T_ENTRY_T = 2
T_EXIT_T = 3
T_ENTRY_PRICE = 4       # average entry price at the close
T_EXIT_PRICE = 5        # price of the final closing fill
T_SIZE = 6              # largest size held
T_NOTIONAL = 7          # entry notional at the largest size
T_PNL = 8               # net: price pnl - fees - funding
T_FEES = 9
T_FUNDING = 10
T_ENTRY_REASON = 11
T_EXIT_REASON = 12
T_CONF = 13
T_ADDS = 14
T_GROSS_PNL = 15        # price pnl only
NTRADE = 16

# --- reason codes
R_SIGNAL = 1
R_PYRAMID = 2
R_STOP_LOSS = 3
R_TRAILING_STOP = 4
R_TAKE_PROFIT_PARTIAL = 5
R_TAKE_PROFIT = 6
R_TREND_FLIP = 7
R_RSI_OVEREXTENSION = 8
R_END_OF_DATA = 9
R_FUNDING = 10
R_BREAKEVEN_STOP = 11
R_SYSTEM = 12
REASON_NAMES = {
    1: "signal", 2: "pyramid", 3: "stop_loss", 4: "trailing_stop", 5: "take_profit_partial",
    6: "take_profit", 7: "trend_flip", 8: "rsi_overextension", 9: "end_of_data", 10: "funding",
    11: "breakeven_stop", 12: "system",
}

CONF_NAMES = {0: "low", 1: "medium", 2: "high"}

# --- metrics row written by the kernel for one candidate: metrics[NM]
M_TOTAL_PNL = 0
M_TOTAL_TRADES = 1
M_WIN_RATE = 2
M_PROFIT_FACTOR = 3
M_MAX_DD = 4
M_SHARPE = 5
M_SORTINO = 6
M_TOTAL_FEES = 7
M_TOTAL_FUNDING = 8
M_FINAL_BALANCE = 9
M_NFILLS = 10
NM = 11
METRIC_NAMES = (
    "total_pnl", "total_trades", "win_rate", "profit_factor", "max_drawdown_pct", "sharpe",
    "sortino", "total_fees", "total_funding", "final_balance", "fills",
)
