"""Column layout of a feature row: everything the decision kernel reads about one symbol at one bar.

The canonical engine fills a row from streaming indicators; the sweep fills it by gathering from
precomputed indicator arrays. The kernel only ever sees rows, so both executions share one
decision path. An indicator that is not ready yet is NaN in its column.
"""

from strategy.layout import declare

F = declare("F", (
    ("open", "bar open"),
    ("high", "bar high"),
    ("low", "bar low"),
    ("close", "bar close"),
    ("volume", "bar volume"),
    ("ema_fast", "EMA(indicators.ema_fast_window) of the close"),
    ("ema_slow", "EMA(indicators.ema_slow_window) of the close"),
    ("ema_macro", "EMA(indicators.ema_macro_window) of the close"),
    ("adx", "ADX(indicators.adx_window)"),
    ("adx_pos", "+DI"),
    ("adx_neg", "-DI"),
    ("adx_slope", "ADX minus its previous value"),
    ("atr", "ATR(indicators.atr_window)"),
    ("rsi", "RSI(indicators.rsi_window)"),
    ("bb_upper", "upper Bollinger band"),
    ("bb_lower", "lower Bollinger band"),
    ("bb_width", "Bollinger width (upper - lower) / close"),
    ("bb_width_avg", "mean Bollinger width over indicators.bb_width_avg_window"),
    ("macd_hist", "MACD histogram"),
    ("macd_hist_prev", "MACD histogram of the previous bar"),
    ("stoch_rsi_k", "stochastic RSI %K"),
    ("stoch_rsi_d", "stochastic RSI %D"),
    ("vol_sma", "SMA of the volume (indicators.vol_sma_window)"),
    ("vol_trend", "volume SMA minus its value indicators.vol_trend_window bars ago"),
    ("avg_atr", "mean ATR over the last thresholds.entry.ave_avg_atr_window bars (the AVE rule)"),
    ("ema_slow_slope", "(slow EMA - slow EMA thresholds.entry.slow_drift_slope_window bars before) / close"),
    ("bar_count", "bars of the symbol so far, this one included (the per-symbol warm-up)"),
), globals(), "NF")
# historical short names of two columns
F.STOCH_K, F.STOCH_D = F.STOCH_RSI_K, F.STOCH_RSI_D
F_STOCH_K, F_STOCH_D = F.STOCH_K, F.STOCH_D  # noqa: F821 - F_* are defined by declare()

FEATURE_NAMES: tuple[str, ...] = F.NAMES
