"""The kernel's view of a strategy config: one float64 vector per symbol.

Kernels (CUDA device functions and numba njit functions alike) cannot read pydantic models or
dicts, so every core key the decision kernel reads lives at a fixed index of a float64 vector.
Booleans are 0.0/1.0, enumerations are small integers (see ``ENUMS``). The order below is the
contract between ``strategy.config`` (which fills the vector) and ``strategy.kernel`` (which
reads it). Adding a key is one row of ``PARAM_SPECS`` (its index ``P.<LAST_KEY>`` follows)
plus the schema field and the rule that reads it; tests/test_params_layout.py proves that every
path lands at the index the kernel reads.
"""

from __future__ import annotations

from strategy.layout import CONF, MACD, declare

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

# Enumerations: YAML strings <-> kernel numbers (declared once, in strategy.layout).
ENUMS: dict[str, dict[str, int]] = {
    "trade.add_min_confidence": CONF.CODES,
    "trade.entry_min_confidence": CONF.CODES,
    "thresholds.entry.macd_hist_entry_mode": MACD.CODES,
}

PARAM_PATHS: tuple[str, ...] = tuple(p for p, _ in PARAM_SPECS)
PARAM_INDEX: dict[str, int] = {p: i for i, p in enumerate(PARAM_PATHS)}
NP: int = len(PARAM_SPECS)
WINDOW_PATHS: tuple[str, ...] = tuple(p for p, _ in WINDOW_SPECS)
NW: int = len(WINDOW_SPECS)


def kernel_name(path: str) -> str:
    """The kernel's name of a config path: its last key, upper case (``trade.sl_atr_mult`` ->
    ``SL_ATR_MULT``); keys of ``thresholds.ranging`` carry ``RANGING_`` (their last keys alone,
    ``adx_below`` or ``rsi_low``, would not say which rule they belong to)."""
    parts = path.split(".")
    name = parts[-1].upper()
    return f"RANGING_{name}" if parts[:2] == ["thresholds", "ranging"] else name


# The parameter vector's layout, derived from PARAM_SPECS: the kernel reads ``p[P.SL_ATR_MULT]``
# (p = params[s]); callers outside the kernel may import the flat ``P_SL_ATR_MULT``.
P = declare("P", tuple((kernel_name(path), path) for path, _ in PARAM_SPECS), globals(), "NP")
# The window vector's layout (W.EMA_FAST, W_EMA_FAST, ...), derived from WINDOW_SPECS.
W = declare("W", tuple((name, path) for name, path in (
    ("ema_fast", "indicators.ema_fast_window"), ("ema_slow", "indicators.ema_slow_window"),
    ("ema_macro", "indicators.ema_macro_window"), ("adx", "indicators.adx_window"),
    ("atr", "indicators.atr_window"), ("rsi", "indicators.rsi_window"), ("bb", "indicators.bb_window"),
    ("bb_width_avg", "indicators.bb_width_avg_window"), ("vol_sma", "indicators.vol_sma_window"),
    ("vol_trend", "indicators.vol_trend_window"), ("stoch_rsi", "indicators.stoch_rsi_window"),
    ("stoch_s1", "indicators.stoch_rsi_smooth1"), ("stoch_s2", "indicators.stoch_rsi_smooth2"),
)), globals(), "NW")
assert W.MEANINGS and tuple(W.MEANINGS.values()) == WINDOW_PATHS, "W must follow WINDOW_SPECS"
assert len(set(P.NAMES)) == NP, "two config paths map to one kernel name"


def encode_value(path: str, value: object) -> float:
    """One config value as the kernel sees it (bool -> 0/1, enum -> int, number -> float)."""
    if path in ENUMS:
        return float(ENUMS[path][str(value)])
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)  # type: ignore[arg-type]
