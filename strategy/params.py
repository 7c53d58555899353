"""The kernel's view of a strategy config: one float64 vector per symbol.

Kernels (CUDA device functions and numba njit functions alike) cannot read pydantic models or
dicts, so every core key the decision kernel reads lives at a fixed index of a float64 vector.
Booleans are 0.0/1.0, enumerations are small integers (see ``ENUMS``). The order below is the
contract between ``strategy.config`` (which fills the vector) and ``strategy.kernel`` (which
reads it); the ``P_*`` index constants are plain module-level ints so numba folds them in.
"""

from __future__ import annotations

# (dot path under `global`, default). Order is the vector layout: append only.
PARAM_SPECS: tuple[tuple[str, object], ...] = (
    # --- trade: sizing and risk
    ("trade.allocation_pct", 0.03),
    ("trade.leverage", 2.0),
    ("trade.max_open_positions", 20),
    ("trade.max_total_margin_pct", 0.25),
    ("trade.min_notional_usd", 10.0),
    ("trade.bump_to_min_notional", True),
    ("trade.min_atr_pct", 0.003),
    ("trade.sl_atr_mult", 2.0),
    ("trade.tp_atr_mult", 6.0),
    ("trade.trailing_start_atr", 1.0),
    ("trade.trailing_distance_atr", 0.5),
    ("trade.enable_breakeven_stop", False),
    ("trade.breakeven_start_atr", 0.5),
    ("trade.breakeven_buffer_atr", 0.05),
    ("trade.enable_partial_tp", True),
    ("trade.tp_partial_pct", 0.7),
    ("trade.tp_partial_atr_mult", 1.0),
    ("trade.enable_pyramiding", True),
    ("trade.max_adds_per_symbol", 2),
    ("trade.add_fraction_of_base_margin", 0.5),
    ("trade.add_cooldown_minutes", 60.0),
    ("trade.add_min_profit_atr", 0.5),
    ("trade.add_min_confidence", "medium"),
    ("trade.reentry_cooldown_minutes", 60.0),
    ("trade.entry_min_confidence", "low"),
    ("trade.enable_dynamic_leverage", True),
    ("trade.leverage_low", 1.0),
    ("trade.leverage_medium", 5.0),
    ("trade.leverage_high", 5.0),
    ("trade.enable_dynamic_sizing", False),
    ("trade.confidence_mult_high", 1.0),
    ("trade.confidence_mult_medium", 0.7),
    ("trade.confidence_mult_low", 0.5),
    ("trade.enable_rsi_overextension_exit", True),
    ("trade.rsi_exit_ub_lo_profit", 80.0),
    ("trade.rsi_exit_lb_lo_profit", 20.0),
    ("trade.reverse_entry_signal", False),
    ("trade.slippage_bps", 10.0),
    ("trade.size_multiplier", 1.0),
    ("trade.taker_fee_bps", 4.5),
    ("trade.maker_fee_bps", 1.5),
    ("trade.simulate_funding", True),
    # --- filters
    ("filters.enable_extension_filter", True),
    ("filters.enable_ranging_filter", True),
    ("filters.require_btc_alignment", True),
    ("filters.require_volume_confirmation", False),
    ("filters.require_macro_alignment", False),
    ("filters.require_adx_rising", True),
    ("filters.adx_rising_saturation", 40.0),
    ("filters.use_stoch_rsi_filter", True),
    # --- thresholds
    ("thresholds.entry.min_adx", 22.0),
    ("thresholds.entry.max_dist_ema_fast", 0.04),
    ("thresholds.entry.btc_adx_override", 40.0),
    ("thresholds.entry.high_conf_volume_mult", 2.5),
    ("thresholds.entry.macd_hist_entry_mode", "accel"),
    ("thresholds.ranging.min_signals", 2),
    ("thresholds.ranging.adx_below", 21.0),
    ("thresholds.ranging.bb_width_ratio_below", 0.8),
    ("thresholds.ranging.rsi_low", 47.0),
    ("thresholds.ranging.rsi_high", 53.0),
    ("thresholds.tp_and_momentum.adx_strong_gt", 40.0),
    ("thresholds.tp_and_momentum.adx_weak_lt", 30.0),
    ("thresholds.tp_and_momentum.tp_mult_strong", 7.0),
    ("thresholds.tp_and_momentum.tp_mult_weak", 3.0),
    ("thresholds.tp_and_momentum.rsi_long_strong", 52.0),
    ("thresholds.tp_and_momentum.rsi_long_weak", 56.0),
    ("thresholds.tp_and_momentum.rsi_short_strong", 48.0),
    ("thresholds.tp_and_momentum.rsi_short_weak", 44.0),
    ("thresholds.stoch_rsi.block_long_if_k_gt", 0.85),
    ("thresholds.stoch_rsi.block_short_if_k_lt", 0.15),
)

# Indicator windows are not in the parameter vector: they select which precomputed indicator
# arrays a candidate reads (sweep) or how streaming indicators are sized (engine).
WINDOW_SPECS: tuple[tuple[str, int], ...] = (
    ("indicators.ema_fast_window", 20),
    ("indicators.ema_slow_window", 50),
    ("indicators.ema_macro_window", 200),
    ("indicators.adx_window", 14),
    ("indicators.atr_window", 14),
    ("indicators.rsi_window", 14),
    ("indicators.bb_window", 20),
    ("indicators.bb_width_avg_window", 30),
    ("indicators.vol_sma_window", 20),
    ("indicators.vol_trend_window", 5),
    ("indicators.stoch_rsi_window", 14),
    ("indicators.stoch_rsi_smooth1", 3),
    ("indicators.stoch_rsi_smooth2", 3),
)

# Enumerations: YAML strings <-> kernel integers.
ENUMS: dict[str, dict[str, int]] = {
    "trade.add_min_confidence": {"low": 0, "medium": 1, "high": 2},
    "trade.entry_min_confidence": {"low": 0, "medium": 1, "high": 2},
    "thresholds.entry.macd_hist_entry_mode": {"accel": 0, "sign": 1, "none": 2},
}

PARAM_PATHS: tuple[str, ...] = tuple(p for p, _ in PARAM_SPECS)
PARAM_INDEX: dict[str, int] = {p: i for i, p in enumerate(PARAM_PATHS)}
NP: int = len(PARAM_SPECS)
WINDOW_PATHS: tuple[str, ...] = tuple(p for p, _ in WINDOW_SPECS)
NW: int = len(WINDOW_SPECS)

# Window vector indices (the order of WINDOW_SPECS).
W_EMA_FAST = 0
W_EMA_SLOW = 1
W_EMA_MACRO = 2
W_ADX = 3
W_ATR = 4
W_RSI = 5
W_BB = 6
W_BB_WIDTH_AVG = 7
W_VOL_SMA = 8
W_VOL_TREND = 9
W_STOCH_RSI = 10
W_STOCH_S1 = 11
W_STOCH_S2 = 12

# Parameter vector indices (the order of PARAM_SPECS). Checked against PARAM_SPECS in tests.
P_ALLOCATION_PCT = 0
P_LEVERAGE = 1
P_MAX_OPEN_POSITIONS = 2
P_MAX_TOTAL_MARGIN_PCT = 3
P_MIN_NOTIONAL_USD = 4
P_BUMP_TO_MIN_NOTIONAL = 5
P_MIN_ATR_PCT = 6
P_SL_ATR_MULT = 7
P_TP_ATR_MULT = 8
P_TRAILING_START_ATR = 9
P_TRAILING_DISTANCE_ATR = 10
P_ENABLE_BREAKEVEN_STOP = 11
P_BREAKEVEN_START_ATR = 12
P_BREAKEVEN_BUFFER_ATR = 13
P_ENABLE_PARTIAL_TP = 14
P_TP_PARTIAL_PCT = 15
P_TP_PARTIAL_ATR_MULT = 16
P_ENABLE_PYRAMIDING = 17
P_MAX_ADDS_PER_SYMBOL = 18
P_ADD_FRACTION_OF_BASE_MARGIN = 19
P_ADD_COOLDOWN_MINUTES = 20
P_ADD_MIN_PROFIT_ATR = 21
P_ADD_MIN_CONFIDENCE = 22
P_REENTRY_COOLDOWN_MINUTES = 23
P_ENTRY_MIN_CONFIDENCE = 24
P_ENABLE_DYNAMIC_LEVERAGE = 25
P_LEVERAGE_LOW = 26
P_LEVERAGE_MEDIUM = 27
P_LEVERAGE_HIGH = 28
P_ENABLE_DYNAMIC_SIZING = 29
P_CONFIDENCE_MULT_HIGH = 30
P_CONFIDENCE_MULT_MEDIUM = 31
P_CONFIDENCE_MULT_LOW = 32
P_ENABLE_RSI_OVEREXTENSION_EXIT = 33
P_RSI_EXIT_UB_LO_PROFIT = 34
P_RSI_EXIT_LB_LO_PROFIT = 35
P_REVERSE_ENTRY_SIGNAL = 36
P_SLIPPAGE_BPS = 37
P_SIZE_MULTIPLIER = 38
P_TAKER_FEE_BPS = 39
P_MAKER_FEE_BPS = 40
P_SIMULATE_FUNDING = 41
P_ENABLE_EXTENSION_FILTER = 42
P_ENABLE_RANGING_FILTER = 43
P_REQUIRE_BTC_ALIGNMENT = 44
P_REQUIRE_VOLUME_CONFIRMATION = 45
P_REQUIRE_MACRO_ALIGNMENT = 46
P_REQUIRE_ADX_RISING = 47
P_ADX_RISING_SATURATION = 48
P_USE_STOCH_RSI_FILTER = 49
P_MIN_ADX = 50
P_MAX_DIST_EMA_FAST = 51
P_BTC_ADX_OVERRIDE = 52
P_HIGH_CONF_VOLUME_MULT = 53
P_MACD_HIST_ENTRY_MODE = 54
P_RANGING_MIN_SIGNALS = 55
P_RANGING_ADX_BELOW = 56
P_RANGING_BB_WIDTH_RATIO_BELOW = 57
P_RANGING_RSI_LOW = 58
P_RANGING_RSI_HIGH = 59
P_ADX_STRONG_GT = 60
P_ADX_WEAK_LT = 61
P_TP_MULT_STRONG = 62
P_TP_MULT_WEAK = 63
P_RSI_LONG_STRONG = 64
P_RSI_LONG_WEAK = 65
P_RSI_SHORT_STRONG = 66
P_RSI_SHORT_WEAK = 67
P_BLOCK_LONG_IF_K_GT = 68
P_BLOCK_SHORT_IF_K_LT = 69


def encode_value(path: str, value: object) -> float:
    """One config value as the kernel sees it (bool -> 0/1, enum -> int, number -> float)."""
    if path in ENUMS:
        return float(ENUMS[path][str(value)])
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)  # type: ignore[arg-type]
