"""Array layouts of the kernel's state and outputs, and the enumerations stored in them.

Kernels keep all state in preallocated float64 arrays so that the same functions compile for a
CUDA thread and for a CPU loop without allocating. Each layout is ONE table below: a row is a
column, in column order. From each table come

- a namespace the kernel reads with qualified names (``POS.SIDE``, ``A.BALANCE``, ``FL.PRICE``,
  ``T.PNL``, ``M.SHARPE``; ``POS.N`` is the row width, ``POS.NAMES`` the column names); numba
  folds these module-attribute ints into constants, exactly as it folded the flat names;
- the flat names (``POS_SIDE``, ``NPOS``, ...) that callers outside the kernel import.

Enumerations (sides, confidence tiers, MACD modes, fill actions, reasons) are declared once each,
the same way: ``CONF.HIGH`` in the kernel, ``CONF.NAMES[2] == "high"`` in reports,
``CONF.CODES["high"] == 2`` when a config is encoded.
"""

from __future__ import annotations

import types


def declare(prefix: str, rows: tuple[tuple[str, str], ...], flat: dict | None = None,
            count: str = "") -> types.ModuleType:
    """A layout namespace from its table of (name, meaning) rows; column i is row i.

    With ``flat`` (a module's globals), also defines ``<prefix>_<NAME>`` and ``count`` there."""
    ns = types.ModuleType(prefix, f"layout {prefix}: " + ", ".join(n for n, _ in rows))
    for i, (name, _meaning) in enumerate(rows):
        setattr(ns, name.upper(), i)
    ns.N = len(rows)
    ns.NAMES = tuple(n for n, _ in rows)
    ns.MEANINGS = {n: m for n, m in rows}
    if flat is not None:
        for i, (name, _meaning) in enumerate(rows):
            flat[f"{prefix}_{name.upper()}"] = i
        flat[count] = len(rows)
    return ns


def enumeration(name: str, values: tuple[tuple[str, float], ...], label=str.lower) -> types.ModuleType:
    """An enumeration: ``E.LONG`` (the number the kernel stores), ``E.NAMES`` {int code: label},
    ``E.CODES`` {label: int code}."""
    ns = types.ModuleType(name, f"enumeration {name}: " + ", ".join(n for n, _ in values))
    for key, value in values:
        setattr(ns, key.upper(), value)
    ns.NAMES = {int(v): label(k) for k, v in values}
    ns.CODES = {label(k): int(v) for k, v in values}
    return ns


# --- per-symbol position state: pos[nsym, NPOS]
POS = declare("POS", (
    ("side", "0 flat, +1 long, -1 short (SIDE.*)"),
    ("size", "units of the asset (always >= 0)"),
    ("entry", "average entry price"),
    ("entry_atr", "ATR at the opening fill"),
    ("stop", "current stop level (trails, never loosens)"),
    ("tp1_done", "partial take-profit already taken (0/1)"),
    ("adds", "pyramid adds so far"),
    ("open_t", "open time (bar close ms of the opening bar)"),
    ("last_add_t", "time of the last open/add (for the add cooldown)"),
    ("margin", "margin in use"),
    ("base_margin", "margin of the opening fill (adds are a fraction of it)"),
    ("leverage", "leverage of the opening fill"),
    ("conf", "confidence at entry (CONF.*)"),
    ("tp_mult", "take-profit ATR multiple fixed at entry"),
    ("last_exit_t", "time of the last full close (reentry cooldown); survives the close"),
    ("last_close", "last valid close of the symbol (marks and end-of-data closes)"),
    ("trade_pnl", "realised price pnl of the current round trip"),
    ("trade_fees", "fees of the current round trip"),
    ("trade_funding", "funding paid by the current round trip (positive = paid)"),
    ("max_size", "largest size reached in the round trip"),
    ("entry_reason", "reason code of the opening fill (R.*)"),
    ("first_entry", "price of the opening fill"),
    ("stop_reason", "reason code a stop hit would carry (stop_loss / trailing_stop / breakeven_stop)"),
    ("ind_adx", "ADX at the last main-bar close (what the exits on the next exit sub-bars read)"),
    ("ind_adx_slope", "ADX slope at the last main-bar close"),
    ("ind_atr", "ATR at the last main-bar close"),
    ("ind_atr_slope", "ATR minus the ATR of the main-bar close before it"),
    ("ind_bbw_ratio", "Bollinger width / its average at the last main-bar close (1 when undefined)"),
    ("ind_rsi", "RSI at the last main-bar close"),
    ("hist_b1", "MACD histogram one main bar before the last noted one (NaN until seen while open)"),
    ("hist_b2", "... two bars before"),
    ("hist_b3", "... three bars before"),
    ("entry_adx_threshold", "the ADX the entry had to clear (the trend-exhaustion exit's level; 0 = none)"),
    ("last_exit_side", "side of the last full close (re-entry cooldown); survives the close"),
    ("last_exit_reason", "reason of the last full close (R.*); survives the close"),
    ("prev_close", "the symbol's close before this bar's (the anomaly filter); survives the close"),
    ("last_ema_slow", "the symbol's slow EMA at its last close; survives the close"),
    ("prev_ema_slow", "the symbol's slow EMA before this bar's (the BTC regime); survives the close"),
    ("seen_close", "the symbol's last close seen, main bar or sub-bar (the glitch guard's and a sub-bar "
                   "entry's previous price; kept on sub-bars while a position is open or with entry sub-bars); "
                   "survives the close"),
    ("sub_fired", "exit_fill close: what the last price-exit evaluation of this main bar did (0 none, 1 partial, "
                  "-1 skipped as a glitch): the smart exits at the main close run only on 0"),
    ("sub_missing", "an exit sub-bar of this main bar was missing while the position was open: the main close "
                    "also evaluates the main bar (1)"),
    ("last_ema_fast", "the symbol's fast EMA at its last close; survives the close"),
    ("prev_ema_fast", "the symbol's fast EMA before this bar's (pullback cross, breadth); survives the close"),
    ("signal_adx_threshold", "the ADX this bar's entry signal had to clear (ranking -> the open)"),
    ("funding_rate", "the symbol's funding rate per hour at its last settlement (0 = none yet); survives the close"),
), globals(), "NPOS")

# --- account state: acct[NACCT]
A = declare("A", (
    ("balance", "cash: initial + realised pnl - fees - funding"),
    ("equity", "mark-to-market equity at the last bar close"),
    ("peak", "equity high-water mark"),
    ("max_dd", "largest peak-to-trough fall, fraction"),
    ("fees", "fees paid"),
    ("funding", "funding paid (positive = paid)"),
    ("trades", "closed round trips"),
    ("wins", "round trips with a positive net pnl"),
    ("gross_profit", "sum of winning round trips' net pnl"),
    ("gross_loss", "sum of losing round trips' net loss (positive)"),
    ("realized", "sum of realised price pnl"),
    ("nfills", "fills recorded (may exceed the fills buffer: overflow)"),
    ("day", "UTC day index of the last bar seen (-1 before the first)"),
    ("day_eq", "equity at the close of the previous UTC day"),
    ("ret_n", "daily returns so far (Welford)"),
    ("ret_mean", "mean daily return (Welford)"),
    ("ret_m2", "sum of squared deviations of daily returns (Welford)"),
    ("ret_down_sq", "sum of squared negative daily returns (sortino)"),
    ("initial", "initial balance"),
    ("last_t", "close time of the last processed bar"),
    ("open_count", "open positions"),
    ("margin_used", "margin of all open positions"),
    ("sub_bar_open", "open time of the main bar whose sub-bars are being stepped (-1: none since the last main close)"),
    ("sub_next", "sub-bars of that main bar already stepped (the next one's index; 0 after a main close)"),
    ("bar_opens", "new positions opened in this main bar so far, its entry sub-bars included "
                  "([trade.max_entry_orders_per_loop])"),
), globals(), "NACCT")

# --- fills (the decision trace): fills[max_fills, NFILL]
FL = declare("FL", (
    ("t", "fill time (bar close ms, or the exit sub-bar's close)"),
    ("sym", "symbol index"),
    ("action", "ACT.*"),
    ("side", "+1 long / -1 short (side of the position)"),
    ("price", "fill price after slippage"),
    ("size", "units filled"),
    ("notional", "price x size"),
    ("fee", "fee of this fill"),
    ("pnl", "realised price pnl of this fill (0 for OPEN/ADD)"),
    ("reason", "R.*"),
    ("conf", "confidence tier (CONF.*)"),
    ("balance", "balance after the fill"),
    ("atr", "ATR at the decision (NaN for system fills)"),
    ("adx", "ADX at the decision"),
    ("rsi", "RSI at the decision"),
    ("decision_price", "price before slippage"),
), globals(), "NFILL")

# --- closed round trips: trades[max_trades, NTRADE]
T = declare("T", (
    ("sym", "symbol index"),
    ("side", "+1 long / -1 short"),
    ("entry_t", "open time"),
    ("exit_t", "time of the final closing fill"),
    ("entry_price", "average entry price at the close"),
    ("exit_price", "price of the final closing fill"),
    ("size", "largest size held"),
    ("notional", "entry notional at the largest size"),
    ("pnl", "net: price pnl - fees - funding"),
    ("fees", "fees of the round trip"),
    ("funding", "funding of the round trip"),
    ("entry_reason", "R.* of the opening fill"),
    ("exit_reason", "R.* of the closing fill"),
    ("conf", "confidence at entry"),
    ("adds", "pyramid adds"),
    ("gross_pnl", "price pnl only"),
), globals(), "NTRADE")

# --- metrics row written by the kernel for one candidate: metrics[NM]
M = declare("M", (
    ("total_pnl", "final balance - initial balance"),
    ("total_trades", "closed round trips"),
    ("win_rate", "wins / trades"),
    ("profit_factor", "gross profit / gross loss"),
    ("max_dd", "max drawdown, fraction"),
    ("sharpe", "annualised sharpe of daily returns"),
    ("sortino", "annualised sortino of daily returns"),
    ("total_fees", "fees"),
    ("total_funding", "funding"),
    ("final_balance", "balance at the end"),
    ("nfills", "fills made"),
), globals(), "NM")
METRIC_NAMES = (
    "total_pnl", "total_trades", "win_rate", "profit_factor", "max_drawdown_pct", "sharpe",
    "sortino", "total_fees", "total_funding", "final_balance", "fills",
)
assert len(METRIC_NAMES) == M.N

# --- enumerations (the numbers the kernel stores, and their names)
SIDE = enumeration("SIDE", (("long", 1.0), ("short", -1.0), ("flat", 0.0)), label=str.upper)
CONF = enumeration("CONF", (("low", 0.0), ("medium", 1.0), ("high", 2.0)))
MACD = enumeration("MACD", (("accel", 0.0), ("sign", 1.0), ("none", 2.0)))
# engine.exit_fill: exits decided on the (sub-)bar close and filled there, or on the range at the level
EXIT_FILL = enumeration("EXIT_FILL", (("close", 0.0), ("touch", 1.0)))
ACT = enumeration("ACT", (("open", 1), ("add", 2), ("reduce", 3), ("close", 4), ("funding", 5)), label=str.upper)
R = enumeration("R", (
    ("signal", 1), ("pyramid", 2), ("stop_loss", 3), ("trailing_stop", 4), ("take_profit_partial", 5),
    ("take_profit", 6), ("trend_flip", 7), ("rsi_overextension", 8), ("end_of_data", 9), ("funding", 10),
    ("breakeven_stop", 11), ("system", 12), ("trend_exhaustion", 13), ("ema_macro_breakdown", 14),
    ("stagnation", 15), ("tsme", 16), ("mmde", 17), ("signal_flip", 18),
    # live only: the exchange's resting protective stop closed the position (live/protection.py)
    ("protective_stop", 19),
    ("funding_headwind", 20),
))

ACT_OPEN, ACT_ADD, ACT_REDUCE, ACT_CLOSE, ACT_FUNDING = ACT.OPEN, ACT.ADD, ACT.REDUCE, ACT.CLOSE, ACT.FUNDING
ACTION_NAMES = ACT.NAMES
REASON_NAMES = R.NAMES
CONF_NAMES = CONF.NAMES
for _code, _name in R.NAMES.items():
    globals()[f"R_{_name.upper()}"] = _code
del _code, _name
