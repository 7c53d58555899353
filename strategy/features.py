"""Column layout of a feature row: everything the decision kernel reads about one symbol at one bar.

The canonical engine fills a row from streaming indicators; the sweep fills it by gathering from
precomputed indicator arrays. The kernel only ever sees rows, so both executions share one
decision path. An indicator that is not ready yet is NaN in its column.
"""

F_OPEN = 0
F_HIGH = 1
F_LOW = 2
F_CLOSE = 3
F_VOLUME = 4
F_EMA_FAST = 5
F_EMA_SLOW = 6
F_EMA_MACRO = 7
F_ADX = 8
F_ADX_POS = 9
F_ADX_NEG = 10
F_ADX_SLOPE = 11
F_ATR = 12
F_RSI = 13
F_BB_UPPER = 14
F_BB_LOWER = 15
F_BB_WIDTH = 16
F_BB_WIDTH_AVG = 17
F_MACD_HIST = 18
F_MACD_HIST_PREV = 19
F_STOCH_K = 20
F_STOCH_D = 21
F_VOL_SMA = 22
F_VOL_TREND = 23
NF = 24

FEATURE_NAMES: tuple[str, ...] = (
    "open", "high", "low", "close", "volume",
    "ema_fast", "ema_slow", "ema_macro",
    "adx", "adx_pos", "adx_neg", "adx_slope",
    "atr", "rsi",
    "bb_upper", "bb_lower", "bb_width", "bb_width_avg",
    "macd_hist", "macd_hist_prev",
    "stoch_rsi_k", "stoch_rsi_d",
    "vol_sma", "vol_trend",
)
assert len(FEATURE_NAMES) == NF
